"""Fur-structure coat vs the smooth coat: side-by-side crops and the render cost, in one run.

Composes mice exactly as ``python -m synth.render`` does (MAMMAL by default), then renders
every scene twice with the same renderer, lights, cameras and exposure: once with the coat
as configured (hair-clump relief along the body's hair flow, clump colour variation,
anisotropic highlights) and once with the strands removed (``strands``/``anisotropy``/
``strand_color`` 0, no hair coordinates: the smooth sheen coat). The two are interleaved per pose
so load changes hit both alike. Prints s/view of each and writes a PNG of crops
(smooth | fur for each row).

    python -m benchmarks.fur_cost --poses 4 --views 4 --size 256 --quality train \\
        --model $MOUSEFACELIFT_MAMMAL_DIR --sheet docs/figures/render_fur_before_after.png
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace

import numpy as np


def smooth_coat(scene):
    """The same scene with the coat's strand structure removed."""
    meshes = []
    for m in scene.meshes:
        mats = {k: replace(v, strands=0.0, strand_color=0.0, anisotropy=0.0) for k, v in m.materials.items()}
        meshes.append(replace(m, materials=mats, flow=None, hair=None))
    return replace(scene, meshes=meshes, meta=dict(scene.meta))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--poses", type=int, default=4)
    ap.add_argument("--views", type=int, default=4, help="views per pose, spread evenly over the rig")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quality", default="train")
    ap.add_argument("--model", default=os.environ.get("MOUSEFACELIFT_MAMMAL_DIR", "procedural"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first", type=int, default=0, help="first pose index")
    ap.add_argument("--sheet", default=None, help="write the smooth | fur crops here")
    ap.add_argument("--tile", type=int, default=200, help="crop size in the sheet (pixels)")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of configs/render.yaml")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from benchmarks.exposure_clipping import crop_square, render_config
    from blender.backend import BlenderRenderer, quiet_stdout
    from synth.mouse import workers as W
    from synth.mouse.dataset import render_dataset

    torch.set_num_threads(1)
    cfg = render_config(a)
    ds = render_dataset(cfg)
    composer = W.make_composer(cfg, ds)
    load0 = os.getloadavg()
    secs = {"smooth": 0.0, "fur": 0.0}
    rows, nviews = [], 0
    with BlenderRenderer(ds.quality, device="cpu", threads=a.threads) as r:
        for i in range(a.first, a.first + a.poses):
            sc = composer.compose(i)
            step = max(1, len(sc.cameras) // a.views)
            sc = replace(sc, cameras=sc.cameras[::step][:a.views])
            pair = [("smooth", smooth_coat(sc)), ("fur", sc)]
            if i % 2:
                pair.reverse()
            out = {}
            for name, s in pair:
                with quiet_stdout():
                    o = r.render(s)
                secs[name] += o.seconds_render + o.seconds_other
                out[name] = o
            nviews += len(sc.cameras)
            fam = sc.meta["appearance"]["family"]
            for v in range(len(sc.cameras)):
                rows.append((fam, out["smooth"].rgba[v], out["fur"].rgba[v]))
    load1 = os.getloadavg()
    s, f = secs["smooth"] / nviews, secs["fur"] / nviews
    print(f"\nfur coat cost: {a.poses} {cfg['body_model']!r} poses x {a.views} views at {a.size}^2, preset "
          f"{a.quality!r} ({ds.quality.samples} spp, {ds.quality.denoiser}), {a.threads} threads, same renderer, "
          f"interleaved; load average {load0[0]:.1f} -> {load1[0]:.1f} (1 min)")
    print("| coat | s/view | ratio |")
    print("| ---- | ------ | ----- |")
    print(f"| smooth (sheen + noise) | {s:.3f} | 1.00x |")
    print(f"| fur (strands along the hair flow) | {f:.3f} | {f / s:.2f}x |")
    if a.sheet:
        import cv2

        lines = [np.concatenate([crop_square(sm, a.tile), crop_square(fu, a.tile)], 1) for _, sm, fu in rows]
        cols = 2 if len(lines) > 3 else 1
        while len(lines) % cols:
            lines.append(np.zeros_like(lines[0]))
        grid = [np.concatenate(lines[k::cols], 0) for k in range(cols)]
        sheet = np.concatenate([np.pad(g, ((0, 0), (0, 6), (0, 0)), constant_values=255) for g in grid], 1)
        cv2.imwrite(a.sheet, sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {a.sheet}: pairs of smooth | fur crops ({', '.join(f for f, _, _ in rows[::a.views])})")


if __name__ == "__main__":
    main()
