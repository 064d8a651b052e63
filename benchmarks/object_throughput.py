"""Object source throughput: procedural generation, mesh-file loading, and Blender rendering.

    python benchmarks/object_throughput.py [--objects 4] [--resolution 128] [--rig sphere8] [--quality preview]

Prints one table: objects/s for each stage side by side (generation and loading without
Blender; rendering = compose + Cycles + encode, per object with all its views).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--rig", default="sphere8")
    ap.add_argument("--quality", default="preview")
    a = ap.parse_args()

    from mousefacelift.config import compose, to_container
    from mousefacelift.shards import MultiViewSample
    from synth.objects.generate import load_mesh_file, procedural_object
    from synth.render_objects import ObjectComposer

    rows = []
    n_gen = 4 * a.objects
    t = time.perf_counter()
    faces = [len(procedural_object(i, 0)[0][0].faces) for i in range(n_gen)]
    dt = time.perf_counter() - t
    rows.append(("procedural generation", n_gen, dt, f"{np.mean(faces):.0f} faces/object"))

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(n_gen):
            m = trimesh.creation.icosphere(subdivisions=4)
            m.visual.face_colors = np.random.default_rng(i).integers(0, 255, (len(m.faces), 4))
            p = Path(d) / f"m{i}.{('glb', 'ply', 'obj')[i % 3]}"
            m.export(p)
            paths.append(p)
        t = time.perf_counter()
        for p in paths:
            load_mesh_file(p)
        rows.append(("mesh-file loading (glb/ply/obj, 5k faces)", n_gen, time.perf_counter() - t, ""))

    from blender.backend import BlenderRenderer

    cfg = to_container(compose("objects/render", [f"rig.name={a.rig}", f"resolution={a.resolution}",
                                                  f"preset={a.quality}"]))
    comp = ObjectComposer(cfg)
    with BlenderRenderer(comp.dataset.quality, device="cpu") as r:
        r.render(comp.compose(10_000))   # warm-up: scene build, HDR load
        t = time.perf_counter()
        for i in range(a.objects):
            s = comp.compose(i)
            v = r.render(s)
            MultiViewSample(key=s.key, meta=s.meta, rgba=v.rgba, cameras=s.cameras, depth=v.depth,
                            normal=v.normal).encode()
        dt = time.perf_counter() - t
    views = len(comp.compose(0).cameras)
    rows.append((f"render {a.quality} {a.resolution}px x {views} views (compose+Cycles+encode)", a.objects, dt,
                 f"{a.objects * views / dt:.2f} views/s"))

    print(f"{'stage':60s} {'objects':>8s} {'seconds':>9s} {'objects/s':>10s}  note")
    for name, n, dt, note in rows:
        print(f"{name:60s} {n:8d} {dt:9.2f} {n / dt:10.2f}  {note}")
    base = rows[0][1] / rows[0][2]
    print(f"ratio render/generation: {(rows[-1][1] / rows[-1][2]) / base:.4f}")


if __name__ == "__main__":
    main()
