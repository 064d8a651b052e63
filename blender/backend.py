"""SceneSpec -> Cycles renders -> numpy arrays: the project's one Blender backend.

``BlenderRenderer`` keeps one Blender scene per process and reuses it across calls: the
subject mesh is updated in place (vertex coordinates only while the topology is
unchanged), materials/world/lights only get new socket values, persistent data keeps
Cycles' scene between renders, and every view is rendered by moving one camera, with the render region cropped to the
subject's projected box (the rest of the frame is empty film; halves the view time). Each view's
passes (combined RGBA, depth, normal, diffuse albedo) land in an uncompressed multilayer EXR in
a RAM-backed temp folder and are read straight back into numpy (see ``docs/benchmarks.md`` for
why and how fast). The linear views of a sample are then developed together: one exposure
metered over all of them, the scene's view transform (``SceneSpec.exposure``), 8-bit sRGB;
views listed in ``SceneSpec.arena_views`` are rendered once more inside a lab arena
(:mod:`blender.arena`). All convention changes happen in :mod:`blender.conventions`.

Usage::

    from blender.quality import load_quality

    with BlenderRenderer(load_quality("train")) as r:
        views = r.render(scene_spec)      # RenderedViews: rgba, depth, normal, timings
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import bpy
import mathutils
import numpy as np

from mousefacelift.cameras import Camera
from mousefacelift.scene import MeshSpec, SceneSpec
from mousefacelift.shards.atomic import pid_alive

from .conventions import (blender_camera_params, camera_normals, develop_views, developed_srgb8, distort_views,
                          meter_sums, planar_depth, subject_border)
from .devices import configure_device
from .exr import read_exr
from .materials import FLOW_ATTRIBUTE, HAIR_ATTRIBUTE, SlotMaterial, set_image_pixels
from .quality import QualityPreset
from .world import HdrError, WorldRig

log = logging.getLogger(__name__)
VIEW_LAYER = "mfl"
CLIP_START = 1e-3          # world units; the subject sits ~2.7 units away, metric rigs ~1000
CLIP_END = 1e5
BORDER_MARGIN_PX = 1.0     # extra pixels around the subject's box, beyond the pixel filter's reach
__all__ = ["BlenderRenderer", "RenderedViews", "HdrError", "MeshSlot", "quiet_stdout"]


@dataclass
class RenderedViews:
    """What one :meth:`BlenderRenderer.render` call returns (arrays indexed by view)."""

    rgba: np.ndarray            # uint8 [V,H,W,4], sRGB, straight alpha = coverage
    depth: np.ndarray           # float32 [V,H,W] planar camera z (world units), 0 = no surface
    normal: np.ndarray          # float32 [V,H,W,3] OpenCV camera-space unit normals, 0 where empty
    cameras: list[Camera]
    seconds_render: float       # inside Blender's render calls
    seconds_other: float        # scene updates, reading passes, conversions
    device: str = "CPU"
    exposure: dict | None = None        # what develop_views did (also written to the scene's meta["exposure"])
    linear: np.ndarray | None = None    # float32 [V,H,W,4] premultiplied linear RGBA (only with keep_linear)
    meter: tuple[float, float] = (0.0, 0.0)   # summed conventions.meter_sums of the views


@contextlib.contextmanager
def quiet_stdout():
    """Silence Blender's per-sample progress lines (C-level stdout) during a render."""
    try:
        sys.stdout.flush()
        fd = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)
        os.close(devnull)


TMP_PREFIX = "mfl_blender_"


def clean_stale_tmpdirs(base: str | None = None) -> list[str]:
    """Remove ``mfl_blender_<pid>_*`` folders whose process is gone. A renderer killed before
    ``close()`` (SIGKILL, a crash) cannot remove its own folder, and in /dev/shm it holds RAM
    until reboot; the next renderer on the host removes it. Returns the removed paths."""
    base = base or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        pid = name[len(TMP_PREFIX):].split("_", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        path = os.path.join(base, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d temp folder(s) of renderers that did not exit cleanly: %s", len(removed), removed[:5])
    return removed


def _ram_tmpdir() -> str:
    """A fresh RAM-backed folder for the pass files, named after this process so that one a
    killed process leaves behind can be recognised (and removed) later."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    clean_stale_tmpdirs(base)
    return tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}_", dir=base)


def read_view_passes(ch: dict, cam: Camera, path: str = "EXR"):
    """One view's EXR channels -> (premultiplied linear RGBA, premultiplied diffuse albedo RGB,
    planar depth, OpenCV camera normals); the fast and the naive path read passes with this."""
    pre = f"{VIEW_LAYER}."

    def get(name):
        try:
            return ch[pre + name]                 # EXR row 0 is the top row, as in numpy images
        except KeyError:
            raise RuntimeError(f"render pass {pre + name!r} missing from {path} (have {sorted(ch)})") from None

    premul = np.stack([get(f"Combined.{c}") for c in "RGBA"], axis=-1)
    albedo = np.stack([get(f"DiffCol.{c}") for c in "RGB"], axis=-1)
    depth = planar_depth(get("Depth.Z"))
    normal = camera_normals(np.stack([get(f"Normal.{c}") for c in "XYZ"], axis=-1), cam.w2c, depth > 0)
    return premul, albedo, depth, normal


class MeshSlot:
    """One reusable Blender mesh object (plus its material slots and texture image)."""

    def __init__(self, scene, index: int):
        self.mesh = bpy.data.meshes.new(f"mfl_mesh_{index}")
        self.obj = bpy.data.objects.new(f"mfl_mesh_{index}", self.mesh)
        scene.collection.objects.link(self.obj)
        self.index = index
        self.faces: np.ndarray | None = None
        self.nverts = -1
        self.materials: list[SlotMaterial] = []
        self.texture: bpy.types.Image | None = None

    def update(self, spec: MeshSpec) -> bool:
        """Bring the Blender mesh to ``spec``; returns True when the topology was rebuilt."""
        v = np.ascontiguousarray(spec.vertices, dtype=np.float32)
        f = np.ascontiguousarray(spec.faces, dtype=np.int32)
        me = self.mesh
        rebuilt = not (self.faces is not None and self.nverts == len(v) and self.faces.shape == f.shape
                       and np.array_equal(self.faces, f))
        if rebuilt:
            me.clear_geometry()
            me.vertices.add(len(v))
            me.loops.add(f.size)
            me.polygons.add(len(f))
            me.loops.foreach_set("vertex_index", f.ravel())
            me.polygons.foreach_set("loop_start", np.arange(0, f.size, 3, dtype=np.int32))
            self.faces, self.nverts = f.copy(), len(v)
        me.vertices.foreach_set("co", v.ravel())
        # Material slots must exist before material_index is written: on a mesh with fewer
        # slots Blender clamps the indices, so a fresh renderer's first pose was shaded
        # with region 0's material everywhere (skin rendered as fur).
        self._ensure_slots(len(spec.regions))
        me.polygons.foreach_set("material_index", np.asarray(spec.face_region, dtype=np.int32))
        me.polygons.foreach_set("use_smooth", np.full(len(f), bool(spec.smooth)))
        if spec.uv is not None:
            uvl = me.uv_layers.get("UVMap") or me.uv_layers.new(name="UVMap")
            uvl.data.foreach_set("uv", np.ascontiguousarray(spec.uv, dtype=np.float32).ravel())
        elif me.uv_layers.get("UVMap") is not None:
            me.uv_layers.remove(me.uv_layers["UVMap"])
        for name, values in ((FLOW_ATTRIBUTE, spec.flow), (HAIR_ATTRIBUTE, spec.hair)):
            attr = me.attributes.get(name)
            if values is not None:
                if attr is None:
                    attr = me.attributes.new(name, "FLOAT_VECTOR", "POINT")
                attr.data.foreach_set("vector", np.ascontiguousarray(values, dtype=np.float32).ravel())
            elif attr is not None:
                me.attributes.remove(attr)
        me.update()
        self._apply_materials(spec)
        return rebuilt

    def _ensure_slots(self, n: int) -> None:
        while len(self.materials) < n:
            self.materials.append(SlotMaterial(f"mfl_mat_{self.index}_{len(self.materials)}"))
        slots = self.obj.data.materials
        want = [m.material for m in self.materials[:n]]
        if list(slots) != want:
            slots.clear()
            for m in want:
                slots.append(m)

    def _apply_materials(self, spec: MeshSpec) -> None:
        tex = None
        if spec.texture is not None:
            if spec.uv is None:
                raise ValueError(f"mesh {spec.name!r}: a texture needs per-corner uv coordinates")
            arr = np.asarray(spec.texture)
            if self.texture is None:
                self.texture = bpy.data.images.new(f"mfl_tex_{self.index}", arr.shape[1], arr.shape[0], alpha=True)
            set_image_pixels(self.texture, arr)
            tex = self.texture
        for mat, region in zip(self.materials, spec.regions):
            mat.apply(spec.materials[region], tex)


class BlenderRenderer:
    """A persistent Cycles scene that turns :class:`SceneSpec` objects into arrays.

    One per process (bpy has one global state): creating it resets Blender to an empty
    factory scene. ``preset`` is the resolved quality (see :mod:`blender.quality`); every
    camera is rendered at its own image size. ``threads`` = 0 uses all cores.
    """

    _open: "BlenderRenderer | None" = None

    def __init__(self, preset: QualityPreset, device: str = "auto", threads: int = 0):
        if BlenderRenderer._open is not None:
            raise RuntimeError("a BlenderRenderer is already open in this process (bpy has one global scene); "
                               "close() it first")
        if not isinstance(preset, QualityPreset):
            raise TypeError(f"preset: expected a blender.quality.QualityPreset, got {type(preset).__name__}")
        self.preset = preset
        if int(threads) < 0:
            raise ValueError(f"threads: expected >= 0 (0 = all cores), got {threads}")
        self.threads = int(threads)
        self._tmp = _ram_tmpdir()
        self._closed = False
        # a process that ends without close() (sys.exit, SIGTERM turned into SystemExit) still removes it
        self._rm_tmp = functools.partial(shutil.rmtree, self._tmp, ignore_errors=True)
        atexit.register(self._rm_tmp)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = bpy.context.scene
        self.device = configure_device(self.scene, device)
        self._configure_scene()
        self.world = WorldRig(self.scene, self.preset.env_map_resolution)
        cam_data = bpy.data.cameras.new("mfl_camera")
        self.camera = bpy.data.objects.new("mfl_camera", cam_data)
        self.scene.collection.objects.link(self.camera)
        self.scene.camera = self.camera
        self._meshes: list[MeshSlot] = []
        self._arena = None            # blender.arena.ArenaRig, built on the first scene with arena views
        self.exr_bytes = 0            # bytes of pass files read so far (for the benchmark's raw-size figure)
        self.keep_linear = False      # also return the linear RGBA (benchmarks compare view transforms on it)
        BlenderRenderer._open = self
        log.info("Blender %s ready: quality=%s samples=%d device=%s threads=%s tmp=%s", bpy.app.version_string,
                 self.preset.name, self.preset.samples, self.device, self.threads or "all", self._tmp)

    # -- setup ---------------------------------------------------------------------------
    def _configure_scene(self) -> None:
        sc, p = self.scene, self.preset
        r = sc.render
        r.engine = "CYCLES"
        r.film_transparent = True
        r.use_persistent_data = True
        r.resolution_percentage = 100
        r.use_compositing = False
        r.use_sequencer = False
        r.use_file_extension = True
        r.threads_mode = "FIXED" if self.threads else "AUTO"
        if self.threads:
            r.threads = self.threads
        im = r.image_settings
        im.file_format = "OPEN_EXR_MULTILAYER"
        im.color_depth = "32"
        im.exr_codec = "NONE"
        sc.view_settings.view_transform = "Standard"   # colour is converted to sRGB in numpy
        c = sc.cycles
        c.samples = p.samples
        c.use_adaptive_sampling = p.adaptive_threshold > 0
        if p.adaptive_threshold > 0:
            c.adaptive_threshold = p.adaptive_threshold
            c.adaptive_min_samples = p.adaptive_min_samples
        c.use_denoising = p.denoiser != "NONE"
        if c.use_denoising:
            c.denoiser = p.denoiser
            c.denoising_input_passes = "RGB_ALBEDO_NORMAL"
            c.denoising_prefilter = p.denoise_prefilter
        c.max_bounces = p.max_bounces
        c.diffuse_bounces = p.diffuse_bounces
        c.glossy_bounces = p.glossy_bounces
        c.transmission_bounces = p.transmission_bounces
        c.transparent_max_bounces = p.transparent_bounces
        c.filter_width = p.filter_width
        c.seed = 0
        vl = sc.view_layers[0]
        vl.name = VIEW_LAYER
        vl.use_pass_combined = True
        vl.use_pass_z = True
        vl.use_pass_normal = True
        vl.use_pass_diffuse_color = True      # albedo for the exposure's incident-light metering
        r.filepath = os.path.join(self._tmp, "view.exr")

    # -- rendering -----------------------------------------------------------------------
    @staticmethod
    def _cameras(scene: SceneSpec) -> list[Camera]:
        cams = list(scene.cameras)
        sizes = {(c.width, c.height) for c in cams}
        if len(sizes) != 1:
            raise ValueError(f"scene {scene.key!r}: all cameras must share one image size to stack views, got {sorted(sizes)}")
        return cams

    def _set_camera(self, cam: Camera) -> None:
        p = blender_camera_params(cam)
        d = self.camera.data
        d.type = "PERSP"
        d.sensor_fit = "HORIZONTAL"
        d.sensor_width = p.sensor_width_mm
        d.lens = p.lens_mm
        d.shift_x, d.shift_y = p.shift_x, p.shift_y
        d.clip_start, d.clip_end = CLIP_START, CLIP_END
        r = self.scene.render
        if (r.resolution_x, r.resolution_y) != (p.width, p.height):
            r.resolution_x, r.resolution_y = p.width, p.height
        r.pixel_aspect_x, r.pixel_aspect_y = p.pixel_aspect_x, p.pixel_aspect_y
        self.camera.matrix_world = mathutils.Matrix(p.matrix_world.tolist())

    def _set_border(self, border) -> None:
        """Render only ``border`` (see :func:`conventions.subject_border`); the full frame if None.
        The image keeps its full size (no crop): pixels outside stay empty film."""
        r = self.scene.render
        if border is None:
            r.use_border = False
            return
        if border[1] <= border[0] or border[3] <= border[2]:
            border = (0.0, 1.0 / r.resolution_x, 0.0, 1.0 / r.resolution_y)   # nothing visible: one pixel
        r.use_border, r.use_crop_to_border = True, False
        r.border_min_x, r.border_max_x, r.border_min_y, r.border_max_y = border

    def _read_passes(self, path: str, cam: Camera):
        self.exr_bytes += os.path.getsize(path)
        ch = read_exr(path)
        os.remove(path)
        return read_view_passes(ch, cam, path)

    def render(self, scene: SceneSpec) -> RenderedViews:
        """Render every camera of ``scene``; see :class:`RenderedViews` for the outputs."""
        if self._closed:
            raise RuntimeError("BlenderRenderer.render() called after close()")
        t0 = time.perf_counter()
        scene.validate()
        cams = self._cameras(scene)
        while len(self._meshes) < len(scene.meshes):
            self._meshes.append(MeshSlot(self.scene, len(self._meshes)))
        for i, slot in enumerate(self._meshes):
            slot.obj.hide_render = i >= len(scene.meshes)
            if i < len(scene.meshes):
                slot.update(scene.meshes[i])
        self.world.apply(scene.environment)
        self.world.apply_lights(list(scene.area_lights))
        V, H, W = len(cams), cams[0].height, cams[0].width
        linear = np.zeros((V, H, W, 4), np.float32)
        meter = np.zeros(2)
        depth = np.zeros((V, H, W), np.float32)
        normal = np.zeros((V, H, W, 3), np.float32)
        t_render = 0.0
        path = self.scene.render.filepath
        points = None
        if self.preset.crop_to_subject:
            points = np.concatenate([np.asarray(m.vertices, np.float64).reshape(-1, 3) for m in scene.meshes])
        margin = BORDER_MARGIN_PX + self.preset.filter_width
        for v, cam in enumerate(cams):
            self._set_camera(cam)
            self._set_border(None if points is None else subject_border(cam, points, margin))
            t = time.perf_counter()
            with quiet_stdout():
                bpy.ops.render.render(write_still=True)
            t_render += time.perf_counter() - t
            linear[v], albedo, depth[v], normal[v] = self._read_passes(path, cam)
            meter += meter_sums(linear[v], albedo)
        rgba, exposure = develop_views(linear, (float(meter[0]), float(meter[1])), scene.exposure)
        if exposure is not None:
            scene.meta["exposure"] = exposure
        if scene.arena_views:
            t = time.perf_counter()
            scene.arrays["arena_rgb"] = self._render_arena(scene, cams, exposure)
            t_render += time.perf_counter() - t
        if any(c.dist is not None for c in cams):
            rgba, depth, normal = distort_views(rgba, depth, normal, cams)
        total = time.perf_counter() - t0
        return RenderedViews(rgba, depth, normal, cams, t_render, total - t_render, self.device, exposure,
                             linear if self.keep_linear else None, (float(meter[0]), float(meter[1])))

    def _render_arena(self, scene: SceneSpec, cams: list[Camera], exposure: dict | None) -> np.ndarray:
        """The arena views again inside the lab arena, full frame, no alpha, developed with the
        clean views' exposure: uint8 [len(arena_views), H, W, 3]."""
        from .arena import ArenaRig

        if self._arena is None:
            self._arena = ArenaRig(self.scene)
        self._arena.apply(scene.arena)
        gain = exposure["exposure"] if exposure else 1.0
        transform = exposure["view_transform"] if exposure else "standard"
        r = self.scene.render
        out = []
        self._arena.show(True)
        r.film_transparent = False
        try:
            for v in scene.arena_views:
                cam = cams[int(v)]
                self._set_camera(cam)
                self._set_border(None)
                # a camera under the floor films through it (an acrylic floor seen from below)
                self._arena.floor.hide_render = bool(cam.center[2] <= scene.arena.floor_z)
                with quiet_stdout():
                    bpy.ops.render.render(write_still=True)
                premul = self._read_passes(r.filepath, cam)[0]
                premul[..., 3] = 1.0
                view = developed_srgb8(premul, gain, transform)
                if cam.dist is not None:
                    view = distort_views(view[None], np.zeros(view.shape[:2] + (1,), np.float32)[None, ..., 0],
                                         np.zeros(view.shape[:2] + (3,), np.float32)[None], [cam])[0][0]
                out.append(view[..., :3])
        finally:
            self._arena.show(False)
            r.film_transparent = True
        return np.stack(out)

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Free Blender's scene data and the temp folder; the renderer cannot be used after."""
        if self._closed:
            return
        self._closed = True
        self._rm_tmp()
        atexit.unregister(self._rm_tmp)
        try:
            bpy.ops.wm.read_factory_settings(use_empty=True)
        finally:
            if BlenderRenderer._open is self:
                BlenderRenderer._open = None

    def __enter__(self) -> "BlenderRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            if not self._closed:
                shutil.rmtree(self._tmp, ignore_errors=True)
        except Exception:
            pass
