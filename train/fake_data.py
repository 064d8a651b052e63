"""Blender-free mfl-sample/1 shards of an analytic textured sphere, for tests and benchmarks.

Why: the trainer's tests and the loader benchmark need real shards (PNG members, depth,
manifest) in seconds and on any machine. Each sample is a sphere (random centre and radius
inside [-1,1]^3) whose colour is a smooth function of the surface direction plus a
latitude/longitude checker, so image features are identifiable across views; depth is the
exact planar camera z of the ray-sphere hit. Written with ``webdataset.TarWriter`` to a
temporary name then renamed, with a ``manifest.json`` in the mfl-manifest/1 layout.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import webdataset as wds

from mousefacelift.cameras import make_rig, camera_rays, stack_cameras
from mousefacelift.sample import SCHEMA, MultiViewSample


def sphere_sample(key: str, *, rig: str = "sphere32", size: int = 64, seed: int = 0, source: str = "mouse",
                  with_depth: bool = True) -> MultiViewSample:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-0.2, 0.2, size=3)
    radius = float(rng.uniform(0.5, 0.8))
    cams = make_rig(rig, size=size, seed=rng)
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
        from dataclasses import replace
        cams = [replace(c, depth_range=r) for c, r in zip(cams, ranges)]
    meta = {"schema": SCHEMA, "source": source, "mm_per_unit": 50.0, "seed": int(seed),
            "generator": "train.fake_data.sphere_sample", "sphere": {"centre": centre.tolist(), "radius": radius}}
    return MultiViewSample(key=key, meta=meta, rgba=rgba, cameras=cams, depth=depth)


def write_sphere_shards(out_dir: str, *, samples: int, per_shard: int, prefix: str = "sphere", size: int = 64,
                        rig: str = "sphere32", seed: int = 0, source: str = "mouse", with_depth: bool = True) -> list[str]:
    """Write ``samples`` sphere samples as ``{prefix}-{k:06d}.tar`` shards + manifest.json; returns paths."""
    os.makedirs(out_dir, exist_ok=True)
    entries, paths = [], []
    for k, start in enumerate(range(0, samples, per_shard)):
        name = f"{prefix}-{k:06d}.tar"
        path = os.path.join(out_dir, name)
        tmp = path + ".tmp"
        keys = []
        with wds.TarWriter(tmp) as w:
            for i in range(start, min(samples, start + per_shard)):
                key = f"{source}_{i:09d}"
                w.write(sphere_sample(key, rig=rig, size=size, seed=seed * 1_000_003 + i, source=source,
                                      with_depth=with_depth).encode())
                keys.append(key)
        os.replace(tmp, path)
        raw = open(path, "rb").read()
        entries.append({"name": name, "index": k, "samples": len(keys), "bytes": len(raw),
                        "sha256": hashlib.sha256(raw).hexdigest(), "keys": keys})
        paths.append(path)
    manifest = {"schema": "mfl-manifest/1", "source": source, "prefix": prefix, "samples_per_shard": per_shard,
                "seed": seed, "config": {"rig": rig, "size": size}, "generator": "train.fake_data",
                "config_hash": hashlib.sha256(json.dumps({"rig": rig, "size": size}).encode()).hexdigest()[:16],
                "shards": entries, "skipped": []}
    tmp = os.path.join(out_dir, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))
    return paths
