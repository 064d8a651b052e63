"""The naive Blender loop a user writes first: the baseline of ``benchmarks/render_throughput.py``.

Per pose: a fresh factory scene; Blender's DEFAULT render settings except the three things
the benchmark equalises (resolution, samples, denoiser) and what the output itself
requires (Cycles on the CPU, a transparent film so alpha is coverage, the depth and normal
passes, the same thread count as the fast path); then one
``bpy.ops.render.render(write_still=True)`` per view writing a multilayer EXR (Blender's
default ZIP codec) to a folder on disk, read back from disk.

Everything else stays at Blender's default on purpose (automatic world importance map,
light tree, adaptive threshold 0.01, 12/4/4 bounces, tiles, no persistent data, the
denoiser's ACCURATE prefilter): those are the fast path's engineering choices, and the
benchmark's quality column checks that they do not buy speed with noise. The scene
*content* (mesh, materials, HDRI, lights, cameras) is built with the same builders as the
fast path, so both render the same picture.
"""
from __future__ import annotations

import os
import time

import bpy
import mathutils
import numpy as np

from mousefacelift.scene import SceneSpec

from .backend import VIEW_LAYER, MeshSlot, RenderedViews, quiet_stdout, read_view_passes
from .conventions import blender_camera_params, develop_views, meter_sums
from .exr import read_exr
from .world import WorldRig


def render_naive(spec: SceneSpec, samples: int, denoiser: str, threads: int, out_dir: str) -> RenderedViews:
    """Render every camera of ``spec`` the naive way; EXRs go to ``out_dir`` (on disk)."""
    t0 = time.perf_counter()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    # the three equalised settings (resolution: the cameras' own image size)
    cams = list(spec.cameras)
    scene.cycles.samples = int(samples)
    scene.cycles.use_denoising = denoiser != "NONE"
    if denoiser != "NONE":
        scene.cycles.denoiser = denoiser
    # what the output requires (alpha = coverage, depth and normals), and a fair CPU share
    r.film_transparent = True
    vl = scene.view_layers[0]
    vl.name = VIEW_LAYER
    vl.use_pass_z = True
    vl.use_pass_normal = True
    vl.use_pass_diffuse_color = True                          # the exposure's metering
    if threads:
        r.threads_mode, r.threads = "FIXED", int(threads)
    r.image_settings.file_format = "OPEN_EXR_MULTILAYER"       # codec and depth: Blender's defaults
    # the scene content, same builders as the fast path (world importance map: Blender's default)
    for i, mesh in enumerate(spec.meshes):
        MeshSlot(scene, i).update(mesh)
    world = WorldRig(scene, None)
    world.apply(spec.environment)
    world.apply_lights(list(spec.area_lights))
    cam_obj = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj

    V, H, W = len(cams), cams[0].height, cams[0].width
    linear = np.zeros((V, H, W, 4), np.float32)
    meter = np.zeros(2)
    depth = np.zeros((V, H, W), np.float32)
    normal = np.zeros((V, H, W, 3), np.float32)
    t_render = 0.0
    for v, cam in enumerate(cams):
        p = blender_camera_params(cam)
        d = cam_obj.data
        d.sensor_fit, d.sensor_width, d.lens = "HORIZONTAL", p.sensor_width_mm, p.lens_mm
        d.shift_x, d.shift_y = p.shift_x, p.shift_y
        d.clip_start, d.clip_end = 1e-3, 1e5
        r.resolution_x, r.resolution_y, r.resolution_percentage = p.width, p.height, 100
        r.pixel_aspect_x, r.pixel_aspect_y = p.pixel_aspect_x, p.pixel_aspect_y
        cam_obj.matrix_world = mathutils.Matrix(p.matrix_world.tolist())
        path = os.path.join(out_dir, f"{spec.key}_{v:03d}.exr")
        r.filepath = path
        t = time.perf_counter()
        with quiet_stdout():
            bpy.ops.render.render(write_still=True)
        t_render += time.perf_counter() - t
        linear[v], albedo, depth[v], normal[v] = read_view_passes(read_exr(path), cam, path)
        meter += meter_sums(linear[v], albedo)
    rgba, exposure = develop_views(linear, (float(meter[0]), float(meter[1])), spec.exposure)
    total = time.perf_counter() - t0
    return RenderedViews(rgba, depth, normal, cams, t_render, total - t_render, "CPU", exposure,
                         meter=(float(meter[0]), float(meter[1])))
