"""Foreground clipping before/after the camera-like exposure, from the SAME renders.

Renders MAMMAL (or procedural) mice composed exactly as ``python -m synth.render`` composes
them (coat, lights, rig, framing, exposure offset) with a quality preset's sampling, keeps
each view's linear premultiplied RGBA, and develops it twice:

- before: the plain conversion (exposure 1, values above 1 clip, sRGB: ``straight_srgb8``);
- after: the render config's ``exposure`` section (AgX + incident-metered exposure per
  sample + random offset: ``develop_views``, what the renderer writes into shards).

Clipped share of a view = foreground pixels (alpha > 0.5) with any channel >= 254 in the
straight sRGB8 output, over its foreground pixels. Prints the distribution over views
(p50/p95/max) and over samples (mean of views; worst view), per coat family, and the mean
foreground level so a darker image is visible as such. ``--sheet`` writes a before/after
figure (first views of some samples, cropped to the subject).

    python -m benchmarks.exposure_clipping --poses 24 --views 8 --size 128 --quality train \\
        --model $MOUSEFACELIFT_MAMMAL_DIR --sheet docs/figures/render_exposure_before_after.png
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import replace

import numpy as np

from blender.conventions import clipped_share, develop_views, straight_srgb8


def mean_level(rgba8: np.ndarray) -> float:
    fg = rgba8[..., 3] >= 128
    return float(rgba8[..., :3][fg].mean()) if fg.any() else float("nan")


def crop_square(rgba8: np.ndarray, size: int, bg: int = 64) -> np.ndarray:
    """The subject's box as a square RGB crop over a grey background, resized to ``size``."""
    import cv2

    a = rgba8[..., 3] >= 8
    if not a.any():
        return np.full((size, size, 3), bg, np.uint8)
    ys, xs = np.nonzero(a)
    c = ((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2)
    half = int(max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + 3)
    pad = np.pad(rgba8, ((half, half), (half, half), (0, 0)))
    y0, x0 = int(c[0]), int(c[1])                      # box centre in the padded image minus half
    crop = pad[y0:y0 + 2 * half, x0:x0 + 2 * half].astype(np.float32)
    rgb = crop[..., :3] * crop[..., 3:] / 255 + bg * (1 - crop[..., 3:] / 255)
    return cv2.resize(np.clip(rgb, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA)


def render_config(a) -> dict:
    """The render config these benchmarks compose from their common arguments."""
    from mousefacelift.config import compose, to_container

    return to_container(compose("render", [f"body_model={a.model}", f"preset={a.quality}", f"resolution={a.size}",
                                           f"seed={a.seed}", *a.overrides]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--poses", type=int, default=24)
    ap.add_argument("--views", type=int, default=8, help="views per pose, spread evenly over the rig's views")
    ap.add_argument("--size", type=int, default=128, help="image size (the preset's sampling settings are kept)")
    ap.add_argument("--quality", default="train")
    ap.add_argument("--model", default=os.environ.get("MOUSEFACELIFT_MAMMAL_DIR", "procedural"),
                    help="body model: a MAMMAL folder (default $MOUSEFACELIFT_MAMMAL_DIR) or 'procedural'")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", default=None, help="write a before/after PNG here")
    ap.add_argument("--sheet-rows", type=int, default=6)
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of configs/render.yaml")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from blender.backend import BlenderRenderer, quiet_stdout
    from synth.mouse import workers as W
    from synth.mouse.dataset import render_dataset

    torch.set_num_threads(1)
    cfg = render_config(a)
    if cfg.get("exposure") is None:
        raise SystemExit("exposure_clipping: the render config has no 'exposure' section to compare with")
    ds = render_dataset(cfg)
    composer = W.make_composer(cfg, ds)
    load0 = os.getloadavg()
    before, after, lv_b, lv_a, fams, evs, rows = [], [], [], [], [], [], []
    t_render, nviews = 0.0, 0
    with BlenderRenderer(ds.quality, device="cpu", threads=a.threads) as r:
        r.keep_linear = True
        for i in range(a.poses):
            sc = composer.compose(i)
            step = max(1, len(sc.cameras) // a.views)
            sc = replace(sc, cameras=sc.cameras[::step][:a.views])
            with quiet_stdout():
                out = r.render(sc)
            t_render += out.seconds_render + out.seconds_other
            nviews += len(sc.cameras)
            b = np.stack([straight_srgb8(x) for x in out.linear])
            af, rec = develop_views(out.linear, out.meter, sc.exposure)
            assert np.array_equal(af, out.rgba)            # the benchmark's "after" is what shards get
            before.append([clipped_share(x) for x in b])
            after.append([clipped_share(x) for x in af])
            lv_b.append(np.nanmean([mean_level(x) for x in b]))
            lv_a.append(np.nanmean([mean_level(x) for x in af]))
            fams.append(sc.meta["appearance"]["family"] + ("/sky" if sc.meta["lighting"]["sky"] else "")
                        + f"+{len(sc.meta['lighting']['area_lights'])}L")
            evs.append(rec["exposure_ev"])
            if len(rows) < a.sheet_rows:
                rows.append((b, af))
    load1 = os.getloadavg()
    B, A = np.array(before), np.array(after)
    pct = lambda x: np.percentile(x, [50, 95, 100]) * 100     # noqa: E731

    print(f"\nforeground clipping (any channel >= 254/255 where alpha > 0.5): {a.poses} {cfg['body_model']!r} samples "
          f"x {A.shape[1]} views at {a.size}^2, preset {a.quality!r} ({ds.quality.samples} spp, "
          f"{ds.quality.denoiser}), seed {a.seed}; {nviews / t_render:.2f} views/s ({t_render / nviews:.2f} s/view); "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f} (1 min)")
    ex = cfg["exposure"]
    print(f"after = view_transform {ex['view_transform']}, key {ex['key']}, offset_ev {ex['offset_ev']} "
          f"(drawn exposure: {np.min(evs):+.2f} .. {np.max(evs):+.2f} EV, median {np.median(evs):+.2f})")
    print("| output | per view p50 | per view p95 | per view max | sample mean p95 | views > 2% | mean fg level |")
    print("| ------ | ------------ | ------------ | ------------ | --------------- | ---------- | ------------- |")
    for name, X, lv in (("before (standard, exposure 1)", B, lv_b), ("after (AgX, metered)", A, lv_a)):
        p = pct(X.ravel())
        print(f"| {name} | {p[0]:.2f}% | {p[1]:.2f}% | {p[2]:.2f}% | {np.percentile(X.mean(1), 95) * 100:.2f}% "
              f"| {(X > 0.02).mean() * 100:.1f}% | {np.nanmean(lv):.1f} |")
    print("\nper sample (coat/sky+area lights): before mean/worst view -> after mean/worst view, exposure EV")
    for i in np.argsort(-B.max(1))[:10]:
        print(f"  {i:3d} {fams[i]:<18} {B[i].mean() * 100:5.1f}% / {B[i].max() * 100:5.1f}%  ->  "
              f"{A[i].mean() * 100:5.2f}% / {A[i].max() * 100:5.2f}%   {evs[i]:+.2f}")
    if a.sheet:
        import cv2

        tile, lines = 160, []
        for b, af in rows:
            k = int(np.argmax([clipped_share(x) for x in b]))
            lines.append(np.concatenate([crop_square(b[k], tile), crop_square(af[k], tile)], 1))
        sheet = np.concatenate(lines, 0)
        cv2.imwrite(a.sheet, sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"\nwrote {a.sheet}: left before, right after; per row the sample's worst view (before)")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
