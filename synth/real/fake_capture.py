"""A fake real recording with known truth: the proof of ``synth.ingest_real`` without videos.

A procedural mouse (``mousefacelift.body``) walks a few steps through a calibrated rig (the
real DANNCE 6-camera rig by default, optionally downscaled for CI). Per camera and frame:

1. the mouse is rendered as an ideal pinhole at the calibrated fx, fy, cx, cy (off-centre
   principal point) with transparent film — Blender (``renderer: blender``) or the numpy
   z-buffer with Lambert shading (``renderer: raster``, no bpy needed) — on a canvas padded
   so the lens distortion never pulls in pixels from outside it;
2. an arena-like background is ray-cast analytically for the same camera: a textured floor
   disc (z = 0, Z up), a low wall ring and a dim room beyond;
3. mouse over arena is warped into the calibrated camera (skew + radial/tangential
   distortion) by remapping, and a little sensor noise is added.

Written out: ``frames/{camera}/NNNNNN.png``, ``masks/{camera}/NNNNNN.png`` (the true
silhouettes), ``background/{camera}/000000.png`` (the empty arena, for ``--background``),
``calibration.json`` (OpenCV layout, mm; or ``calibration.toml``, anipose, without units or
up), ``truth_calibration.json`` (the true cameras) and ``truth.json`` +
``truth_vertices.npy`` / ``truth_faces.npy`` (mouse mesh per frame in mm; with ``keypoints``
also ``pose-3d.csv``, the 22 keypoints as anipose writes them), which
:func:`check_round_trip` compares against what ``synth.ingest_real`` recovered. The truth
normalisation follows the framing rule ingest follows (:mod:`mousefacelift.framing`): the
box of the mesh WITHOUT THE TAIL (known here per vertex) sets centre and scale.

    python -m synth.fake_capture --calib label3d_dannce.mat --out OUT --downscale 4

Failure modes of real recordings, each off by default (configs/real/fake_capture.yaml): a
resting mouse (``--rest``), a floor reflection (``--reflection``), a copied camera
calibration (``--copy-calibration``), an arbitrary world frame (``--world-frame arbitrary``),
an anipose calibration file (``--calibration-format anipose``), and an albino mouse on dark
bedding in grey-scale (``--floor bedding --greyscale`` with a white ``fur_color``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from mousefacelift.cameras import Camera
from mousefacelift.config import ConfigError, load_typed
from mousefacelift.framing import body_box, normalization
from mousefacelift.imaging import pinhole, pixels_to_normalized
from mousefacelift.scene import AreaLightSpec, EnvironmentSpec, MaterialSpec, MeshSpec, SceneSpec, depth_range_for
from mousefacelift.shards import atomic_write_bytes, atomic_write_json
from synth.real.calibration import Calibration, load_calibration, save_calibration
from synth.real.frames import write_image_folder
from synth.real.normalize import Normalization, rotation_to_z

log = logging.getLogger("synth.fake_capture")


@dataclass
class FakeCaptureConfig:
    """Settings of the fake recording; values and their meaning: configs/real/fake_capture.yaml."""

    frames: int
    downscale: int
    seed: int
    renderer: Literal["blender", "raster"]
    quality: str
    mouse_scale: float
    arena_center_mm: tuple[float, float]
    path_radius_mm: float
    arena_radius_mm: float
    wall_height_mm: float
    checker_mm: float
    noise_sigma: float
    canvas_pad: float
    fur_color: tuple[float, float, float]
    skin_color: tuple[float, float, float]
    fill: float
    floor: Literal["checker", "bedding"]
    greyscale: bool
    rest: bool
    rest_breathing: float
    rest_tail_sweep_deg: float
    reflection: float
    world_frame: Literal["rig", "arbitrary"]
    calibration_format: Literal["json", "anipose"]
    copy_calibration: tuple[str, str] | None
    keypoints: bool
    keypoint_noise_mm: float

    def __post_init__(self):
        if self.renderer not in ("blender", "raster"):
            raise ValueError(f"fake capture renderer: expected blender or raster, got {self.renderer!r}")
        if self.frames < 1 or self.downscale < 1:
            raise ValueError(f"fake capture: frames and downscale must be >= 1, got {self.frames}, {self.downscale}")
        if not 0 <= self.reflection <= 1:
            raise ValueError(f"fake capture reflection: expected a strength in [0, 1], got {self.reflection}")
        if self.floor not in ("checker", "bedding"):
            raise ValueError(f"fake capture floor: expected checker or bedding, got {self.floor!r}")
        if self.world_frame not in ("rig", "arbitrary"):
            raise ValueError(f"fake capture world_frame: expected rig or arbitrary, got {self.world_frame!r}")
        if self.keypoint_noise_mm < 0:
            raise ValueError(f"fake capture keypoint_noise_mm: expected >= 0, got {self.keypoint_noise_mm}")
        if self.calibration_format not in ("json", "anipose"):
            raise ValueError("fake capture calibration_format: expected json or anipose, got "
                             f"{self.calibration_format!r}")


# -- the mouse ----------------------------------------------------------------------------
def mouse_track(model, cfg: FakeCaptureConfig, keep: np.ndarray | None = None) -> list[np.ndarray]:
    """Mouse vertices in mm (rig world) per frame: rest pose walking along a circle; with
    ``cfg.rest`` it stays at the circle's first point instead, breathing (the body, ``keep``,
    swells by ``rest_breathing`` across its long axis) while the tail sweeps sideways by up to
    ``rest_tail_sweep_deg`` about its root: what a per-pixel median absorbs."""
    rng = np.random.default_rng(cfg.seed)
    out = []
    phase0 = rng.uniform(0, 2 * math.pi)
    rest, _ = _rest_mm(model, cfg)
    for k in range(cfg.frames):
        local = rest
        if cfg.rest:
            local = _resting_pose(rest, keep, k, cfg)
            phase = phase0
            yaw = phase + math.pi / 2
        else:
            phase = phase0 + 2 * math.pi * k / max(cfg.frames, 1)
            yaw = phase + math.pi / 2 + rng.normal(0, 0.2)       # heading roughly along the path
        c, s = math.cos(yaw), math.sin(yaw)
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        pos = np.array([*cfg.arena_center_mm, 0.0]) + cfg.path_radius_mm * np.array([math.cos(phase), math.sin(phase), 0])
        out.append(local @ R.T + pos)
    return out


def _resting_pose(rest: np.ndarray, keep: np.ndarray | None, k: int, cfg: FakeCaptureConfig) -> np.ndarray:
    """Frame ``k`` of a resting mouse (body along +x, tail towards -x): breathing and a tail sweep."""
    v = rest.copy()
    body = np.ones(len(v), bool) if keep is None else np.asarray(keep, bool)
    c = (v[body].min(0) + v[body].max(0)) / 2
    breath = 1.0 + cfg.rest_breathing * math.sin(2 * math.pi * k / 5.0)
    v[body, 1:] = c[1:] + (v[body, 1:] - c[1:]) * breath
    tail = ~body
    if tail.any():
        root = v[tail][np.argmax(v[tail, 0])]                      # the tail vertex nearest the body
        # swung from its root: the whole tail moves, its first tenth bending into the sweep
        reach = np.clip((root[0] - v[tail, 0]) / max(0.1 * float(np.ptp(v[tail, 0])), 1e-9), 0, 1)
        ang = math.radians(cfg.rest_tail_sweep_deg) * math.sin(2 * math.pi * k / max(cfg.frames, 2) + 0.5) * reach
        d = v[tail, :2] - root[:2]
        ca, sa = np.cos(ang), np.sin(ang)
        v[tail, 0] = root[0] + ca * d[:, 0] - sa * d[:, 1]
        v[tail, 1] = root[1] + sa * d[:, 0] + ca * d[:, 1]
    return v


def _rest_mm(model, cfg: FakeCaptureConfig) -> tuple[np.ndarray, np.ndarray]:
    """The rest vertices and the rest DANNCE keypoints in mm, placed as :func:`mouse_track`
    places the mouse before moving it (scaled, centred in x and y)."""
    from mousefacelift.body import PoseParams

    out = model.pose(PoseParams.rest(model, batch=1))
    scale = model.mm_per_unit * cfg.mouse_scale
    verts = out.vertices[0].detach().cpu().numpy().astype(np.float64) * scale
    kps = out.keypoints[0].detach().cpu().numpy().astype(np.float64) * scale
    shift = np.zeros(3)
    shift[:2] = (verts[:, :2].min(0) + verts[:, :2].max(0)) / 2
    return verts - shift, kps - shift


def keypoint_weights(model, cfg: FakeCaptureConfig, neighbours: int = 12) -> np.ndarray:
    """[22,N] weights that give the body model's DANNCE keypoints from its vertices: each rest
    keypoint as the affine combination (weights summing to 1, least norm) of its nearest rest
    vertices, so it follows the mesh exactly under any rigid motion (and closely under the
    breathing and the tail sweep of a resting mouse)."""
    rest, kp = _rest_mm(model, cfg)
    W = np.zeros((len(kp), len(rest)))
    for j, p in enumerate(kp):
        idx = np.argsort(np.linalg.norm(rest - p, axis=1))[:neighbours]
        A = np.vstack([rest[idx].T, np.ones(len(idx))])               # [4,K]: sum w v = p, sum w = 1
        W[j, idx] = np.linalg.lstsq(A, np.append(p, 1.0), rcond=None)[0]
    return W


def write_pose3d_csv(path: Path, points: np.ndarray, names: Sequence[str]) -> None:
    """An anipose ``pose-3d`` CSV: per frame ``<part>_x,_y,_z,_error,_ncams,_score`` and ``fnum``."""
    cols = [f"{n}_{s}" for n in names for s in ("x", "y", "z", "error", "ncams", "score")] + ["fnum"]
    lines = [",".join(cols)]
    for f, P in enumerate(points):
        row = []
        for x, y, z in P:
            row += [f"{x:.4f}", f"{y:.4f}", f"{z:.4f}", "0.0", "6", "1.0"]
        lines.append(",".join(row + [str(f)]))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def truth_normalization(verts_mm: np.ndarray, up: np.ndarray, fill: float,
                        keep: np.ndarray | None = None) -> tuple[Normalization, np.ndarray, np.ndarray]:
    """The normalisation ingest should recover, by the framing rule: the box (in the up-aligned
    frame) of the vertices where ``keep`` is true (the body without the tail) centred, its
    longest half-extent = ``fill``. Also returns that body box in mm, up-aligned frame."""
    R = rotation_to_z(up)
    lo, hi = body_box(verts_mm @ R.T, keep)
    centre, scale = normalization(lo, hi, fill)
    return Normalization(center_mm=centre @ R, mm_per_unit=1 / scale, up_rotation=R), lo, hi


def _materials(model, cfg: FakeCaptureConfig) -> dict[str, MaterialSpec]:
    mats = {}
    for name in model.region_names:
        if name == "fur":
            mats[name] = MaterialSpec(base_color=cfg.fur_color, roughness=0.8, sheen=0.4, pattern="noise",
                                      pattern_scale=0.05, pattern_strength=0.15)
        elif name == "eye":
            mats[name] = MaterialSpec(base_color=(0.02, 0.02, 0.02), roughness=0.1, coat=0.8)
        else:
            mats[name] = MaterialSpec(base_color=cfg.skin_color, roughness=0.5, subsurface=0.2)
    return mats


# -- rendering the mouse --------------------------------------------------------------------
def _raster_views(verts: np.ndarray, faces: np.ndarray, face_region: np.ndarray, colors: np.ndarray,
                  cams: Sequence[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """Numpy z-buffer + Lambert shading (light from above the camera) -> rgba float, depth."""
    from mousefacelift.meshraster import face_normals, rasterize

    fn = face_normals(verts, faces)
    rgba, depth = [], []
    for cam in cams:
        d, fid, mask = rasterize(verts, faces, cam.K, cam.w2c, cam.width, cam.height)
        n_cam = fn @ cam.w2c[:3, :3].T
        light = np.array([0.3, -0.6, -0.75])
        light /= np.linalg.norm(light)
        shade = 0.35 + 0.65 * np.clip(-(n_cam @ light), 0, 1)
        img = np.zeros((cam.height, cam.width, 4))
        f = fid[mask]
        img[mask, :3] = colors[face_region[f]] * shade[f, None] * 255
        img[mask, 3] = 255
        rgba.append(img)
        depth.append(d)
    return np.stack(rgba), np.stack(depth)


def render_mouse(verts_n: np.ndarray, model, cams_n: Sequence[Camera], cfg: FakeCaptureConfig,
                 renderer=None, mirrored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """RGBA (float 0..255, straight alpha) and planar depth of the mouse for pinhole cameras
    in the normalised truth frame; ``mirrored``: the vertices are a mirror image (the faces are
    turned so that normals still point out)."""
    mats = _materials(model, cfg)
    faces = np.asarray(model.faces)
    if mirrored:
        faces = faces[:, ::-1].copy()
    if cfg.renderer == "raster":
        colors = np.array([mats[r].base_color for r in model.region_names])
        return _raster_views(verts_n, faces, np.asarray(model.face_regions), colors, cams_n)
    lo, hi = verts_n.min(0), verts_n.max(0)
    scene = SceneSpec(meshes=[MeshSpec(vertices=verts_n.astype(np.float32), faces=faces,
                                       face_region=np.asarray(model.face_regions), regions=list(model.region_names),
                                       materials=mats)],
                      cameras=depth_range_for(cams_n, lo, hi),
                      environment=EnvironmentSpec(color=(0.55, 0.55, 0.55), strength=1.0),
                      area_lights=[AreaLightSpec(position=(0.0, 0.0, 6.0), size=4.0, power_w=600.0)],
                      key="fake_capture")
    out = renderer.render(scene)
    return out.rgba.astype(np.float64), out.depth


# -- the arena ------------------------------------------------------------------------------
def arena_background(cam_mm: Camera, cfg: FakeCaptureConfig, rng: np.random.Generator) -> np.ndarray:
    """Ray-cast arena for the calibrated (distorted) camera: RGB float [H,W,3] 0..255."""
    H, W = cam_mm.height, cam_mm.width
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    xn = pixels_to_normalized(cam_mm, np.stack([u.ravel(), v.ravel()], -1))
    d_cam = np.concatenate([xn, np.ones((len(xn), 1))], 1)
    d = d_cam @ cam_mm.w2c[:3, :3]                      # camera -> world directions (R^T d)
    o = cam_mm.center
    centre = np.array(cfg.arena_center_mm)
    img = np.empty((len(d), 3))
    # room: dim gradient with elevation
    elev = d[:, 2] / np.linalg.norm(d, axis=1)
    img[:] = (np.array([40.0, 42, 48]) + 30 * elev[:, None])
    # low wall: cylinder radius R around the arena centre, 0 <= z <= wall height (inner face)
    dx, dy = d[:, 0], d[:, 1]
    ox, oy = o[0] - centre[0], o[1] - centre[1]
    a = dx * dx + dy * dy
    b = 2 * (ox * dx + oy * dy)
    c = ox * ox + oy * oy - cfg.arena_radius_mm ** 2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_far = (-b + np.sqrt(np.maximum(disc, 0))) / (2 * a)
        t_near = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    for t in (t_far, t_near):
        z = o[2] + t * d[:, 2]
        hit = (disc > 0) & (t > 0) & (z >= 0) & (z <= cfg.wall_height_mm)
        ang = np.arctan2(o[1] + t * dy - centre[1], o[0] + t * dx - centre[0])
        stripe = (np.floor(ang / (2 * math.pi) * 72) % 2)[:, None]
        if cfg.floor == "bedding":      # clear acrylic: the dim room shows through, faint seams
            img[hit] = img[hit] + 6 + 4 * stripe[hit]
        else:
            img[hit] = (np.array([150.0, 155, 165]) + 25 * stripe)[hit]
    # floor: z = 0 inside the disc, checker tiles with per-tile tint and fine grain
    with np.errstate(invalid="ignore", divide="ignore"):
        t = -o[2] / d[:, 2]
    p = o[None, :2] + t[:, None] * d[:, :2]
    on = (d[:, 2] < 0) & (np.linalg.norm(p - centre, axis=1) <= cfg.arena_radius_mm)
    if cfg.floor == "bedding":
        # dark bedding: small chips (2 mm cells) of random brightness over a dark base, as under an albino mouse
        ci = np.floor(p[on] / 2.0).astype(np.int64)
        chip = rng.uniform(-9, 9, size=(256, 256))[ci[:, 0] % 256, ci[:, 1] % 256]
        img[on] = np.array([34.0, 33, 31]) + chip[:, None]
    else:
        ti = np.floor(p[on] / cfg.checker_mm).astype(np.int64)
        tint = rng.uniform(-18, 18, size=(64, 64))[ti[:, 0] % 64, ti[:, 1] % 64]
        check = ((ti[:, 0] + ti[:, 1]) % 2)[:, None]
        grain = 8 * np.sin(p[on, 0] * 0.9) * np.sin(p[on, 1] * 1.3)
        img[on] = np.array([200.0, 190, 170]) - 55 * check + (tint + grain)[:, None]
    return np.clip(img, 0, 255).reshape(H, W, 3)


def distort_into(image: np.ndarray, pin: Camera, real: Camera) -> np.ndarray:
    """Warp an ideal-pinhole image (camera ``pin``) into the calibrated camera ``real``
    (skew + distortion): every real pixel centre is undistorted and looked up in ``pin``.
    Only intrinsics matter: both must be the same physical camera (extrinsics may differ by
    the world frame they are written in)."""
    H, W = real.height, real.width
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    xn = pixels_to_normalized(real, np.stack([u.ravel(), v.ravel()], -1))
    uv = xn @ pin.K[:2, :2].T + pin.K[:2, 2]
    coords = np.stack([uv[:, 1] - 0.5, uv[:, 0] - 0.5])
    img = image if image.ndim == 3 else image[..., None]
    out = [ndimage.map_coordinates(img[..., ch].astype(np.float32), coords, order=1, mode="constant", cval=0.0)
           for ch in range(img.shape[-1])]
    return np.stack(out, -1).reshape(H, W, -1)


# -- the whole recording --------------------------------------------------------------------
def make_fake_capture(out_dir: str | Path, calibration: Calibration, cfg: FakeCaptureConfig) -> dict:
    """Write the fake recording (see module docstring) and return its truth."""
    from mousefacelift.body import load_body_model
    from synth.mouse.compose import body_keep

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cams_mm = calibration.cameras_mm()
    if cfg.downscale > 1:
        cams_mm = [c.resized(c.width // cfg.downscale, c.height // cfg.downscale) for c in cams_mm]
    model = load_body_model("procedural")
    keep = body_keep(model)
    track = mouse_track(model, cfg, keep)
    rng = np.random.default_rng(cfg.seed + 1)
    backgrounds = [arena_background(c, cfg, rng) for c in cams_mm]
    # the written world: the rig's, or (world_frame: arbitrary) moved by a random rigid transform
    world = _world_transform(cfg)
    up_w = world[:3, :3] @ np.asarray(calibration.up, np.float64)
    renderer = None
    if cfg.renderer == "blender":
        from blender.backend import BlenderRenderer
        from blender.quality import load_quality

        renderer = BlenderRenderer(load_quality(cfg.quality), device="cpu")
    frames = {c.name: [] for c in cams_mm}
    masks = {c.name: [] for c in cams_mm}
    truths = []
    mirror = np.diag([1.0, 1.0, -1.0])            # the floor plane z = 0 of the rig world
    try:
        for k, verts_mm in enumerate(track):
            tn, _, _ = truth_normalization(verts_mm, calibration.up, cfg.fill, keep)
            verts_n = tn.points_to_norm(verts_mm)
            pins = []
            for c in cams_mm:
                pad = int(round(cfg.canvas_pad * max(c.width, c.height)))
                pins.append(tn.camera(pinhole(c)).cropped(-pad, -pad, c.width + 2 * pad, c.height + 2 * pad))
            rgba, _ = render_mouse(verts_n, model, pins, cfg, renderer)
            refl = (render_mouse(tn.points_to_norm(verts_mm @ mirror), model, pins, cfg, renderer, mirrored=True)[0]
                    if cfg.reflection > 0 else [None] * len(pins))
            for cam, pin, img, bg, rimg in zip(cams_mm, pins, rgba, backgrounds, refl):
                if rimg is not None:
                    # the floor's mirror image of the mouse at lower contrast: in the frame, not in the mask
                    rw = distort_into(rimg, pin, cam)
                    ra = cfg.reflection * np.clip(rw[..., 3:4] / 255.0, 0, 1)
                    bg = rw[..., :3] * ra + bg * (1 - ra)
                warped = distort_into(img, pin, cam)
                a = np.clip(warped[..., 3:4] / 255.0, 0, 1)
                comp = warped[..., :3] * a + bg * (1 - a)      # straight alpha over the arena
                if cfg.greyscale:
                    comp = comp @ np.array([0.299, 0.587, 0.114])
                comp += rng.normal(0, cfg.noise_sigma, size=comp.shape)
                frames[cam.name].append(np.clip(np.rint(comp), 0, 255).astype(np.uint8))
                masks[cam.name].append(((a[..., 0] > 0.5) * 255).astype(np.uint8))
            verts_w = verts_mm @ world[:3, :3].T + world[:3, 3]
            tw, blo, bhi = truth_normalization(verts_w, up_w, cfg.fill, keep)
            truths.append({"frame": k, "center_mm": tw.center_mm.tolist(), "mm_per_unit": tw.mm_per_unit,
                           "fill": cfg.fill, "body_box_mm": [blo.tolist(), bhi.tolist()]})
            log.info("fake frame %d/%d rendered (%s)", k + 1, len(track), cfg.renderer)
    finally:
        if renderer is not None:
            renderer.close()
    for c, bg in zip(cams_mm, backgrounds):
        write_image_folder(out / "frames" / c.name, frames[c.name])
        write_image_folder(out / "masks" / c.name, masks[c.name])
        # the empty arena (what --background takes), with the same sensor noise and colour mode
        empty = bg @ np.array([0.299, 0.587, 0.114]) if cfg.greyscale else bg
        empty = empty + rng.normal(0, cfg.noise_sigma, size=empty.shape)
        write_image_folder(out / "background" / c.name, [np.clip(np.rint(empty), 0, 255).astype(np.uint8)])
    true_cal = Calibration(cameras=[_moved(c, world) for c in cams_mm], units="mm", up=up_w)
    save_calibration(out / TRUE_CALIBRATION, true_cal)
    written = _written_calibration(true_cal, cfg)
    cal_name = "calibration.toml" if cfg.calibration_format == "anipose" else "calibration.json"
    for stale in ("calibration.toml", "calibration.json"):
        if stale != cal_name and (out / stale).exists():
            (out / stale).unlink()
    save_calibration(out / cal_name, written)       # .toml: anipose's layout
    verts_written = np.stack([v @ world[:3, :3].T + world[:3, 3] for v in track])
    if cfg.keypoints:
        # what a 3D pose tracker (anipose, sleap-anipose, DANNCE) would give: the 22 keypoints, in the written world
        W = keypoint_weights(model, cfg)
        kps = np.einsum("jn,fnc->fjc", W, verts_written)
        kps = kps + np.random.default_rng(cfg.seed + 2).normal(0, cfg.keypoint_noise_mm, kps.shape)
        write_pose3d_csv(out / "pose-3d.csv", kps, model.keypoint_names)
    _save_npy(out / "truth_vertices.npy", verts_written.astype(np.float32))
    _save_npy(out / "truth_faces.npy", np.asarray(model.faces, dtype=np.int64))
    truth = {"frames": truths, "cameras": [c.name for c in cams_mm], "config": asdict(cfg),
             "calibration": str(calibration.path), "calibration_file": cal_name, "units": "mm",
             "world_from_rig": world.tolist(), "up": up_w.tolist()}
    atomic_write_json(out / "truth.json", truth)
    return truth


TRUE_CALIBRATION = "truth_calibration.json"


def _world_transform(cfg: FakeCaptureConfig) -> np.ndarray:
    """4x4 rig -> written world: identity, or a random rigid motion (up no longer +Z)."""
    T = np.eye(4)
    if cfg.world_frame == "arbitrary":
        from scipy.spatial.transform import Rotation

        rng = np.random.default_rng(cfg.seed + 7)
        R = Rotation.random(random_state=int(rng.integers(2 ** 31))).as_matrix()
        if abs(R[2, 2]) > 0.9:                  # make sure up really moves away from +Z
            R = Rotation.from_euler("x", 60, degrees=True).as_matrix() @ R
        T[:3, :3] = R
        T[:3, 3] = rng.uniform(-500, 500, 3)
    return T


def _moved(cam: Camera, world: np.ndarray) -> Camera:
    """``cam`` expressed in the world ``X' = world @ X`` (rigid)."""
    return replace(cam, w2c=cam.w2c @ np.linalg.inv(world))


def _written_calibration(true_cal: Calibration, cfg: FakeCaptureConfig) -> Calibration:
    """What the recording's calibration file says: the truth, or (``copy_calibration``
    [src, dst]) with camera dst's calibration replaced by camera src's, name kept — a real
    fixture error the frames know nothing of."""
    cams = list(true_cal.cameras)
    if cfg.copy_calibration:
        names = [c.name for c in cams]
        src, dst = (str(n) for n in cfg.copy_calibration)
        for n in (src, dst):
            if n not in names:
                raise ValueError(f"fake capture copy_calibration: no camera {n!r} (cameras: {names})")
        cams[names.index(dst)] = replace(cams[names.index(src)], name=dst)
    # an anipose file states no up: its readers assume +Z
    return Calibration(cameras=cams, units="mm", up=true_cal.up)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


# -- the check ------------------------------------------------------------------------------
def check_round_trip(capture_dir: str | Path, shard_dirs: Sequence[str | Path], thresholds=None) -> dict:
    """Compare ingested samples with the truth of a fake capture.

    Per frame: origin error (mm, against the truth body-box centre), scale error (%, against
    the truth body box at the ``fill`` the ingest recorded), camera reprojection error (px:
    truth mesh points through the original calibrated camera, then undistorted, turned by the
    recorded rotation into the virtual camera and projected with its K, versus the same points
    through the ingested camera), alpha/silhouette IoU against the truth mesh rasterised with
    the ingested cameras, and ``synth.verify``'s cross-view check on the sample with the truth
    depth rendered for the same views (``thresholds``: a
    ``synth.tools.geometry_checks.Thresholds``, default verify's own).
    """
    from mousefacelift.meshraster import rasterize
    from mousefacelift.shards import MultiViewSample, iter_shard, list_shards
    from synth.tools import geometry_checks as gc
    from synth.tools.verify import SampleResult, check_geometry

    cap = Path(capture_dir)
    truth = json.loads((cap / "truth.json").read_text())
    verts_all = np.load(cap / "truth_vertices.npy", allow_pickle=False).astype(np.float64)
    faces = np.load(cap / "truth_faces.npy", allow_pickle=False)
    # the true cameras (a copied calibration in the written file must not judge the ingest)
    true_file = cap / TRUE_CALIBRATION if (cap / TRUE_CALIBRATION).exists() else cap / "calibration.json"
    cal = load_calibration(true_file)
    cams_mm = {c.name: c for c in cal.cameras_mm()}
    rows = []
    for d in shard_dirs:
        for shard in list_shards(d):
            for fields in iter_shard(shard):
                s = MultiViewSample.decode(fields, where=str(shard))
                k = int(s.meta["frame"])
                t = truth["frames"][k]
                nm = s.meta["normalization"]
                est = Normalization(center_mm=np.asarray(nm["center_mm"]), mm_per_unit=float(nm["mm_per_unit"]),
                                    up_rotation=np.asarray(nm["up_rotation"]))
                verts_mm = verts_all[k]
                pts_mm = verts_mm[:: max(1, len(verts_mm) // 500)]
                reproj, ious, depth = [], [], []
                verts_n = est.points_to_norm(verts_mm)
                for cam, warp, rgba in zip(s.cameras, s.meta["warps"], s.rgba):
                    orig = cams_mm[cam.name]
                    uv_d, _ = orig.project(pts_mm)
                    xn = pixels_to_normalized(orig, uv_d)
                    ray = np.concatenate([xn, np.ones((len(xn), 1))], 1) @ np.asarray(warp["rotation_from_capture"]).T
                    uv_expect = ray[:, :2] / ray[:, 2:] @ cam.K[:2, :2].T + cam.K[:2, 2]
                    uv_got, _ = cam.project(est.points_to_norm(pts_mm))
                    reproj.append(float(np.median(np.linalg.norm(uv_got - uv_expect, axis=1))))
                    z, _, m = rasterize(verts_n, faces, cam.K, cam.w2c, cam.width, cam.height)
                    ious.append(gc.iou(m, rgba[..., 3] >= 128))
                    near, far = cam.depth_range
                    depth.append(np.where((z >= near) & (z <= far), z, 0.0).astype(np.float32))
                with_depth = replace(s, depth=np.stack(depth))
                res = SampleResult(key=s.key, shard=str(shard))
                check_geometry(with_depth, res, thresholds or gc.Thresholds(), gc.ConsistencyConfig(), mesh_iou=False)
                if "fill" not in t or "fill" not in nm:
                    raise ValueError(f"{cap}: the truth or sample {s.key} has no 'fill' (made before the body-box "
                                     "framing rule); make the capture and its ingest again")
                # like with like: the truth scale at the fill this ingest used
                truth_mpu = float(t["mm_per_unit"]) * float(t["fill"]) / float(nm["fill"])
                rows.append({"key": s.key, "frame": k,
                             "origin_err_mm": float(np.linalg.norm(est.center_mm - np.asarray(t["center_mm"]))),
                             "scale_err_pct": 100.0 * (est.mm_per_unit / truth_mpu - 1.0),
                             "camera_reproj_px": max(reproj), "alpha_iou_min": float(min(ious)),
                             "verify_problems": list(res.problems),
                             "verify_reproj_px_median": (res.consistency or {}).get("reproj_px_median"),
                             "verify_depth_alpha_iou_min": (res.consistency or {}).get("depth_alpha_iou_min")})
    if not rows:
        raise ValueError(f"no ingested samples found in {[str(d) for d in shard_dirs]}")
    summary = {"samples": len(rows),
               "origin_err_mm_max": max(r["origin_err_mm"] for r in rows),
               "origin_err_mm_mean": float(np.mean([r["origin_err_mm"] for r in rows])),
               "scale_err_pct_max_abs": max(abs(r["scale_err_pct"]) for r in rows),
               "scale_err_pct_mean": float(np.mean([r["scale_err_pct"] for r in rows])),
               "camera_reproj_px_max": max(r["camera_reproj_px"] for r in rows),
               "alpha_iou_min": min(r["alpha_iou_min"] for r in rows),
               "verify_failures": sum(bool(r["verify_problems"]) for r in rows)}
    return {"summary": summary, "samples": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synth.fake_capture", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calib", required=True, help="rig calibration (.mat DANNCE, OpenCV .json/.yaml, anipose .toml)")
    ap.add_argument("--out", required=True, help="output folder of the fake recording")
    ap.add_argument("--units", default=None, help="expected calibration units (asserted against the file)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--downscale", type=int, default=None)
    ap.add_argument("--renderer", choices=("blender", "raster"), default=None)
    ap.add_argument("--seed", type=int, default=None)
    # failure modes of real recordings (configs/real/fake_capture.yaml has each one's meaning)
    ap.add_argument("--rest", action="store_true", default=None,
                    help="the mouse rests; only breathing and the tail move")
    ap.add_argument("--reflection", type=float, default=None, help="floor reflection strength in [0, 1] (0 = none)")
    ap.add_argument("--world-frame", dest="world_frame", choices=("rig", "arbitrary"), default=None)
    ap.add_argument("--calibration-format", dest="calibration_format", choices=("json", "anipose"), default=None)
    ap.add_argument("--copy-calibration", dest="copy_calibration", nargs=2, metavar=("SRC", "DST"), default=None,
                    help="write camera DST's calibration as a copy of camera SRC's")
    ap.add_argument("--floor", choices=("checker", "bedding"), default=None)
    ap.add_argument("--greyscale", action="store_true", default=None)
    ap.add_argument("--keypoints", action="store_true", default=None, help="also write pose-3d.csv (true 3D keypoints)")
    ap.add_argument("--check", nargs="*", default=None, metavar="SHARD_DIR",
                    help="instead of making a recording, compare ingested shard folders with --out's truth")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="any key of configs/real/fake_capture.yaml, e.g. path_radius_mm=75")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.check is not None:
        rep = check_round_trip(args.out, args.check)
        print(json.dumps(rep["summary"], indent=1))
        return 0 if rep["summary"]["verify_failures"] == 0 else 1
    flags = ("frames", "downscale", "renderer", "seed", "rest", "reflection", "world_frame", "calibration_format",
             "floor", "greyscale", "keypoints")
    given = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    overrides = [*args.overrides, *(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in given.items())]
    if args.copy_calibration:
        overrides.append("copy_calibration=[{},{}]".format(*(json.dumps(n) for n in args.copy_calibration)))
    try:
        cfg = load_typed(FakeCaptureConfig, "real", "fake_capture", overrides)
    except ConfigError as e:
        ap.error(str(e))
    make_fake_capture(args.out, load_calibration(args.calib, units=args.units), cfg)
    print(f"fake recording written to {args.out}")
    return 0
