"""Samples without Blender: a mesh rasterized from a rig with the numpy z-buffer.

Why: the data tools (verify, inspect, export) and their tests and benchmarks need shards
whose geometry is exactly known, fast to make and free of renderer noise. Depth and alpha
come straight from :func:`mousefacelift.meshraster.rasterize` (planar z, pixel centres), so a
correct sample is consistent to the precision of the 16-bit depth encoding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mousefacelift.cameras import Camera, make_rig
from mousefacelift.meshraster import face_normals, rasterize
from mousefacelift.sample import SCHEMA, MultiViewSample
from mousefacelift.scene import depth_range_for

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
    m = {"schema": SCHEMA, "source": source, "mm_per_unit": mm_per_unit, "generator": "synth.testdata"}
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


def write_samples(out_dir: str | Path, samples: Sequence[MultiViewSample], samples_per_shard: int = 2,
                  prefix: str = "test", source: str | None = None) -> dict:
    """Write samples into shards + manifest with the project's ShardWriter; returns the manifest."""
    from synth.shards import ShardWriter, read_manifest

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    source = source or (samples[0].meta.get("source") if samples else "object")
    header = {"source": source, "prefix": prefix, "samples_per_shard": samples_per_shard, "seed": 0,
              "config": {"generator": "synth.testdata"}, "config_hash": "testdata", "generator": "synth.testdata"}
    for k in range(0, len(samples), samples_per_shard):
        with ShardWriter(out_dir, k // samples_per_shard, prefix=prefix, header=header) as w:
            for s in samples[k:k + samples_per_shard]:
                w.write(s.encode())
    return read_manifest(out_dir)
