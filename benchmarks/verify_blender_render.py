"""Cross-view consistency of real Blender renders, measured by synth.verify.

    python benchmarks/verify_blender_render.py --poses 2 --size 128 --out OUT
    python -m synth.verify OUT

Why this exists beside `python -m synth.render`: it renders the procedural mouse through
the Blender backend with plain per-region materials and a flat world, so the geometry
(cameras, planar depth, alpha, pose.npy -> mesh) can be checked even where the appearance
and lighting randomisation is not wanted. Sample metadata follows synth.compose (body_model,
normalization, mm_per_unit, pose.family). Needs bpy.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mousefacelift.body import PoseSampler, load_body_model  # noqa: E402
from mousefacelift.cameras import make_rig  # noqa: E402
from mousefacelift.shards import SCHEMA, MultiViewSample  # noqa: E402
from mousefacelift.scene import EnvironmentSpec, MaterialSpec, MeshSpec, SceneSpec, depth_range_for  # noqa: E402

FILL = 0.9        # the subject's longest half-extent in world units (as synth.compose)
REGION_COLORS = {"fur": (0.35, 0.27, 0.2), "ear_skin": (0.8, 0.55, 0.55), "paw_skin": (0.85, 0.6, 0.6),
                 "tail_skin": (0.8, 0.6, 0.6), "nose_skin": (0.85, 0.55, 0.55), "eye": (0.02, 0.02, 0.02)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--poses", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rig", default="sphere32")
    ap.add_argument("--quality", default="preview")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from blender.backend import BlenderRenderer
    from blender.quality import load_quality
    from mousefacelift.shards import ShardWriter, check_writable_dir

    out = check_writable_dir(args.out)
    model = load_body_model("procedural")
    batch = PoseSampler(model).sample(indices=np.arange(args.poses), seed=0)
    import torch
    with torch.no_grad():
        verts_all = model.pose(batch.params).vertices.numpy().astype(np.float64)
    params = batch.params.to_array()
    header = {"source": "mouse", "prefix": "mouse", "samples_per_shard": args.poses, "seed": 0,
              "config": vars(args) | {"out": str(args.out)}, "config_hash": "verify_blender_render",
              "generator": "benchmarks/verify_blender_render.py"}
    t0 = time.perf_counter()
    with BlenderRenderer(load_quality(args.quality), device="cpu") as r, \
            ShardWriter(out, 0, prefix="mouse", header=header) as w:
        for i in range(args.poses):
            v = verts_all[i]
            center = (v.min(0) + v.max(0)) / 2
            scale = FILL / np.abs(v - center).max()
            wv = (v - center) * scale
            cams = depth_range_for(make_rig(args.rig, size=args.size, seed=i), wv.min(0), wv.max(0))
            mats = {n: MaterialSpec(base_color=REGION_COLORS.get(n, (0.5, 0.5, 0.5)), roughness=0.6)
                    for n in model.region_names}
            mesh = MeshSpec(vertices=wv.astype(np.float32), faces=np.asarray(model.faces),
                            face_region=np.asarray(model.face_regions), regions=list(model.region_names),
                            materials=mats, name="mouse")
            meta = {"schema": SCHEMA, "source": "mouse", "index": i, "seed": 0, "body_model": model.name,
                    "mm_per_unit": float(model.mm_per_unit) / scale,
                    "normalization": {"center": center.tolist(), "scale": float(scale)},
                    "pose": {"family": batch.family[i]}, "lighting": {"hdri": None, "strength": 1.0}}
            scene = SceneSpec(meshes=[mesh], cameras=cams, environment=EnvironmentSpec(color=(0.8, 0.8, 0.8)),
                              meta=meta, key=f"mouse_{i:09d}").validate()
            views = r.render(scene)
            s = MultiViewSample(key=scene.key, meta=meta, rgba=views.rgba, cameras=views.cameras, depth=views.depth,
                                normal=views.normal, arrays={"pose": params[i], "joints": np.zeros((1, 3), np.float32)})
            w.write(s.encode())
            print(f"pose {i}: {len(cams)} views in {views.seconds_render:.1f} s render + {views.seconds_other:.1f} s other")
    print(f"wrote {args.poses} samples to {out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
