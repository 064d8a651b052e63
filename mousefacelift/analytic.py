"""Analytic subjects rendered without Blender: exactly known geometry in seconds.

Why: the data tools (verify, inspect, export), the training stream and their tests and
benchmarks need real ``mfl-sample/1`` samples whose geometry is exactly known, fast to make
and free of renderer noise. Two subjects:

- a mesh (the asymmetric stand-in :func:`critter_mesh`, or any mesh) rasterized from a rig
  with the numpy z-buffer (:func:`rasterize_sample`): depth and alpha come straight from
  :func:`mousefacelift.meshraster.rasterize` (planar z, pixel centres), so a correct sample
  is consistent to the precision of the 16-bit depth encoding;
- a textured sphere ray-cast analytically (:func:`sphere_sample`).

Shards of them are written through :mod:`mousefacelift.shards` like every other shard.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import numpy as np

from .cameras import Camera, camera_rays, load_input_views, load_target_layout, make_rig, stack_cameras
from .meshraster import face_normals, rasterize
from .scene import depth_range_for
from .shards import SCHEMA, MultiViewSample, write_samples

LIGHT_DIR = np.array([0.4, 0.3, 0.87]) / np.linalg.norm([0.4, 0.3, 0.87])


def _ellipsoid(center, radii, subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(s.vertices) * np.asarray(radii) + np.asarray(center), np.asarray(s.faces)


def critter_mesh(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An asymmetric stand-in subject inside [-1,1]^3: body, head towards +X, an ear on +Y,
    a tail towards -X (so a rotated or shifted camera cannot look consistent by symmetry).
    Returns vertices [N,3], faces [F,3], part id per face [F]."""
    parts = [((-0.1, 0.0, -0.1), (0.6, 0.35, 0.3)),     # body
             ((0.55, 0.0, 0.05), (0.25, 0.2, 0.2)),     # head (+X)
             ((0.5, 0.18, 0.27), (0.08, 0.03, 0.1)),    # ear (+Y side)
             ((-0.8, 0.0, -0.25), (0.22, 0.04, 0.04))]  # tail (-X)
    verts, faces, part = [], [], []
    offset = 0
    for k, (c, r) in enumerate(parts):
        v, f = _ellipsoid(c, r, subdivisions)
        verts.append(v)
        faces.append(f + offset)
        part.append(np.full(len(f), k))
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(part)


PART_COLORS = np.array([[0.55, 0.42, 0.3], [0.6, 0.45, 0.35], [0.9, 0.6, 0.6], [0.85, 0.6, 0.6]])


def rasterize_sample(key: str, vertices: np.ndarray, faces: np.ndarray, cameras: Sequence[Camera],
                     face_colors: np.ndarray | None = None, meta: dict | None = None,
                     arrays: dict | None = None, source: str = "object", mm_per_unit: float = 50.0,
                     with_depth: bool = True) -> MultiViewSample:
    """Render ``vertices``/``faces`` from ``cameras`` (Lambert-shaded RGBA, depth, camera-space
    normals) into a :class:`MultiViewSample`; depth ranges are fitted to the mesh bounds."""
    lo, hi = vertices.min(0), vertices.max(0)
    cams = depth_range_for(cameras, lo, hi)
    fn = face_normals(vertices, faces)
    colors = np.full((len(faces), 3), 0.7) if face_colors is None else np.asarray(face_colors)
    V, H, W = len(cams), cams[0].height, cams[0].width
    rgba = np.zeros((V, H, W, 4), np.uint8)
    depth = np.zeros((V, H, W), np.float32)
    normal = np.zeros((V, H, W, 3), np.float32)
    for v, cam in enumerate(cams):
        d, fid, mask = rasterize(vertices, faces, cam.K, cam.w2c, W, H)
        f = fid[mask]
        n_world = fn[f]
        to_cam = cam.center - vertices[faces[f, 0]]
        n_world = np.where((np.sum(n_world * to_cam, axis=1) < 0)[:, None], -n_world, n_world)
        shade = 0.25 + 0.75 * np.clip(n_world @ LIGHT_DIR, 0, 1)
        rgba[v][mask, :3] = np.clip(colors[f] * shade[:, None] * 255 + 0.5, 0, 255).astype(np.uint8)
        rgba[v][mask, 3] = 255
        depth[v] = d
        normal[v][mask] = n_world @ cam.w2c[:3, :3].T
    m = {"schema": SCHEMA, "source": source, "mm_per_unit": mm_per_unit, "generator": "mousefacelift.analytic"}
    m.update(meta or {})
    return MultiViewSample(key=key, meta=m, rgba=rgba, cameras=cams, depth=depth if with_depth else None,
                           normal=normal if with_depth else None, arrays=dict(arrays or {})).validate()


def critter_sample(key: str, rig: str = "sphere32", size: int = 64, seed: int = 0, source: str = "object",
                   with_depth: bool = True, subdivisions: int = 3) -> MultiViewSample:
    """The stand-in subject seen from a named rig (see :func:`critter_mesh`)."""
    v, f, part = critter_mesh(subdivisions)
    cams = make_rig(rig, size=size, seed=seed)
    joints = np.array([[-0.1, 0.0, -0.1], [0.55, 0.0, 0.05], [-0.8, 0.0, -0.25]], np.float32)
    return rasterize_sample(key, v, f, cams, face_colors=PART_COLORS[part], source=source,
                            meta={"seed": seed, "rig": rig}, arrays={"joints": joints}, with_depth=with_depth)


def sphere_sample(key: str, *, rig: str = "sphere32", size: int = 64, seed: int = 0, source: str = "mouse",
                  with_depth: bool = True) -> MultiViewSample:
    """A textured sphere (random centre and radius inside [-1,1]^3) seen from a named rig, depth
    the exact planar camera z of the ray-sphere hit; colour varies smoothly with the surface
    direction plus a latitude/longitude checker, so features are identifiable across views."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-0.2, 0.2, size=3)
    radius = float(rng.uniform(0.5, 0.8))
    sections = {}
    if rig == "mvinput":    # the input distribution and target layout of configs/rig/mvinput.yaml
        sections = {"input_views": load_input_views(), "target_layout": load_target_layout()}
    cams = make_rig(rig, size=size, seed=rng, **sections)
    K, c2w = stack_cameras(cams)
    o, d = camera_rays(K.double(), c2w.double(), size, size)
    o, d = o.numpy(), d.numpy()
    oc = o - centre
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius * radius)
    hit = disc > 0
    t = np.where(hit, -b - np.sqrt(np.maximum(disc, 0)), 0.0)
    p = o + t[..., None] * d
    n = (p - centre) / radius
    lon = np.arctan2(n[..., 1], n[..., 0])
    lat = np.arcsin(np.clip(n[..., 2], -1, 1))
    checker = ((np.floor(lon / (np.pi / 6)) + np.floor(lat / (np.pi / 6))) % 2)[..., None]
    base = rng.uniform(0.2, 0.9, size=3)
    color = np.clip(0.55 * (0.5 + 0.5 * n) + 0.45 * base * (0.5 + 0.5 * checker), 0, 1)
    rgba = np.zeros((len(cams), size, size, 4), np.uint8)
    rgba[..., :3] = np.where(hit[..., None], np.rint(color * 255), 0).astype(np.uint8)
    rgba[..., 3] = np.where(hit, 255, 0).astype(np.uint8)
    depth = None
    if with_depth:
        # planar z = distance along the optical axis
        zaxis = c2w[:, None, None, :3, 2].double().numpy()
        z = ((p - o) * zaxis).sum(-1)
        depth = np.where(hit, z, 0.0).astype(np.float32)
        ranges = [(float(np.linalg.norm(c.center)) - 1.8, float(np.linalg.norm(c.center)) + 1.8) for c in cams]
        cams = [replace(c, depth_range=r) for c, r in zip(cams, ranges)]
    meta = {"schema": SCHEMA, "source": source, "mm_per_unit": 50.0, "seed": int(seed),
            "generator": "mousefacelift.analytic.sphere_sample", "sphere": {"centre": centre.tolist(), "radius": radius}}
    return MultiViewSample(key=key, meta=meta, rgba=rgba, cameras=cams, depth=depth)


def write_sphere_shards(out_dir: str, *, samples: int, per_shard: int, prefix: str = "sphere", size: int = 64,
                        rig: str = "sphere32", seed: int = 0, source: str = "mouse", with_depth: bool = True) -> list[str]:
    """``samples`` sphere samples as ``{prefix}-{k:06d}.tar`` shards + manifest.json; returns the shard paths."""
    items = [sphere_sample(f"{source}_{i:09d}", rig=rig, size=size, seed=seed * 1_000_003 + i, source=source,
                           with_depth=with_depth) for i in range(samples)]
    manifest = write_samples(out_dir, items, samples_per_shard=per_shard, prefix=prefix, source=source,
                             generator=f"mousefacelift.analytic.sphere rig={rig} size={size} seed={seed}")
    return [os.path.join(out_dir, s["name"]) for s in manifest["shards"]]
