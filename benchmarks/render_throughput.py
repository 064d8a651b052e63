"""Render throughput: the naive Blender loop vs the BlenderRenderer fast path, in one run.

Both render the same scenes, composed exactly as ``python -m synth.render`` composes them
(``--model``: the procedural or the MAMMAL mouse; coat with fur strands, lights, the
``sphere32`` rig with its framing, the camera-like exposure), and equalise exactly three settings: resolution, samples and denoiser (plus what the
output requires: transparent film, depth/normal passes, and the same thread count):
- naive (``blender.naive.render_naive``): what a user writes first: a fresh factory scene
  per pose, Blender's defaults for everything else, one ``render(write_still=True)`` per
  view writing a multilayer EXR (default ZIP codec) to disk and reading it back;
- fast (``BlenderRenderer``): one persistent scene reused across poses with the quality
  preset's engineering choices (persistent data, fixed env importance map, bounces,
  adaptive threshold, denoiser prefilter, render region cropped to the subject, /dev/shm).
Each is compared with a high-sample reference rendered with Blender's default bounces and
a DIFFERENT seed (so neither path's noise pattern correlates with it), over the first
``--ref-views`` views of each pose: RMSE and PSNR over the reference's foreground, so
speed is not bought with noise. ``--before KEY=VALUE ...`` adds a row for the fast path with
those preset values (e.g. the preset's previous settings), so a change is measured
before/after in the same run. Also reports the bytes of a 32-view sample at 256^2
encoded with MultiViewSample.encode(), and the per-stage profile of the fast path.

    python -m benchmarks.render_throughput --poses 2 --views 32 --size 256 --quality train \
        --model $MOUSEFACELIFT_MAMMAL_DIR --before denoise_prefilter=ACCURATE adaptive_min_samples=0
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import replace

import numpy as np

from blender.backend import BlenderRenderer
from blender.naive import render_naive
from blender.quality import load_quality
from mousefacelift.shards import SCHEMA, MultiViewSample
from mousefacelift.scene import SceneSpec

log = logging.getLogger("render_throughput")


def mouse_scenes(n: int, views: int, size: int, seed: int, model: str = "procedural",
                 overrides: tuple[str, ...] = ()) -> list[SceneSpec]:
    """Pose indices 0..n-1 composed by synth.render's MouseComposer at ``size`` pixels, keeping
    ``views`` cameras spread evenly over the config's rig (sphere32)."""
    import torch

    from mousefacelift.config import compose, to_container
    from synth.mouse import workers as W
    from synth.mouse.dataset import render_dataset

    torch.set_num_threads(1)
    cfg = to_container(compose("render", [f"body_model={model}", f"resolution={size}", f"seed={seed}", *overrides]))
    composer = W.make_composer(cfg, render_dataset(cfg))
    scenes = []
    for i in range(n):
        sc = composer.compose(i)
        step = max(1, len(sc.cameras) // views)
        scenes.append(replace(sc, cameras=sc.cameras[::step][:views], key=f"bench_{i:04d}"))
    return scenes


def naive(scenes, samples, denoiser, threads):
    """Fresh factory scene per pose, Blender defaults, per-view EXR files on disk (cwd)."""
    outs, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mfl_naive_", dir=".") as disk:
        for sc in scenes:
            outs.append(render_naive(sc, samples, denoiser, threads, disk))
    return outs, time.perf_counter() - t0


def fast(scenes, preset, threads):
    outs = []
    r = BlenderRenderer(preset, device="cpu", threads=threads)
    t0 = time.perf_counter()          # process-level setup is paid once per worker, not per pose
    try:
        for sc in scenes:
            outs.append(r.render(sc))
        return outs, time.perf_counter() - t0, r.exr_bytes
    finally:
        r.close()


def reference(scenes, preset, threads, seed):
    """High-sample renders: Blender's default bounces, tight adaptive threshold, full frame,
    ACCURATE prefilter, and a seed neither path uses."""
    outs = []
    with BlenderRenderer(preset, device="cpu", threads=threads) as r:
        c = r.scene.cycles
        c.seed = seed
        c.max_bounces, c.diffuse_bounces, c.glossy_bounces, c.transmission_bounces = 12, 4, 4, 12
        c.adaptive_threshold = 0.005
        c.denoising_prefilter = "ACCURATE"
        r.preset = replace(r.preset, crop_to_subject=False)
        for sc in scenes:
            outs.append(r.render(sc))
    return outs


def fg_error(test, ref) -> tuple[float, float]:
    """RMSE (0-255 scale) and PSNR of premultiplied RGB + alpha over the reference foreground.

    Premultiplied, because that is what any composite shows: the straight colour of a pixel
    with 2% coverage comes from a sample or two and is noise by nature.
    """
    def premul(x):
        x = x.astype(np.float64)
        return np.concatenate([x[..., :3] * x[..., 3:] / 255.0, x[..., 3:]], axis=-1)

    errs = []
    for a, b in zip(test, ref):
        m = b.rgba[..., 3] > 0
        diff = premul(a.rgba)[m] - premul(b.rgba)[m]
        errs.append(diff ** 2)
    mse = float(np.concatenate(errs).mean())
    return mse ** 0.5, 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--poses", type=int, default=2)
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--size", type=int, default=None, help="image size (default: the preset's resolution)")
    ap.add_argument("--samples", type=int, default=None, help="path samples (default: the preset's)")
    ap.add_argument("--ref-samples", type=int, default=512)
    ap.add_argument("--ref-views", type=int, default=3, help="views per pose compared with the reference")
    ap.add_argument("--ref-seed", type=int, default=7919, help="Cycles seed of the reference (both paths use 0)")
    ap.add_argument("--quality", default="train", help="the fast path's preset; its denoiser is given to naive too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encode-views", type=int, default=32, help="views of the bytes-per-sample measurement")
    ap.add_argument("--encode-size", type=int, default=256)
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="procedural", help="body model: 'procedural' or a MAMMAL model folder")
    ap.add_argument("--before", nargs="*", default=[], metavar="KEY=VALUE",
                    help="also time the fast path with these quality-preset values (before/after in one run)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    preset = load_quality(a.quality)
    size = a.size or preset.resolution
    samples = a.samples or preset.samples
    before = {}
    for kv in a.before:
        key, sep, value = kv.partition("=")
        if not sep or key not in preset.settings():
            raise SystemExit(f"--before {kv!r}: expected KEY=VALUE with KEY a quality preset field "
                             f"({', '.join(preset.settings())})")
        kind = type(getattr(preset, key))
        before[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    scenes = mouse_scenes(a.poses, a.views, size, a.seed, a.model)
    nviews = sum(len(sc.cameras) for sc in scenes)
    load0 = os.getloadavg()
    fast_out, t_fast, _ = fast(scenes, preset.with_overrides(samples=samples), a.threads)
    if before:
        before_out, t_before, _ = fast(scenes, replace(preset.with_overrides(samples=samples), **before), a.threads)
    # naive and the reference develop with the fast path's metered exposure (the reference
    # sees only some views, so metering them alone would expose it differently)
    scenes = [replace(sc, exposure=replace(sc.exposure, fixed_ev=o.exposure["exposure_ev"]))
              if sc.exposure is not None and o.exposure else sc for sc, o in zip(scenes, fast_out)]
    naive_out, t_naive = naive(scenes, samples, preset.denoiser, a.threads)
    ref_scenes = [replace(sc, cameras=sc.cameras[:a.ref_views]) for sc in scenes]
    ref_out = reference(ref_scenes, preset.with_overrides(samples=a.ref_samples), a.threads, a.ref_seed)

    def first(outs):
        return [replace(o, rgba=o.rgba[:a.ref_views]) for o in outs]
    rm_f, ps_f = fg_error(first(fast_out), ref_out)
    rm_n, ps_n = fg_error(first(naive_out), ref_out)
    rm_fn, ps_fn = fg_error(first(fast_out), first(naive_out))
    if before:
        rm_b, ps_b = fg_error(first(before_out), ref_out)
    load1 = os.getloadavg()
    render_f = sum(o.seconds_render for o in fast_out)
    render_n = sum(o.seconds_render for o in naive_out)

    print(f"\nrender throughput: {a.poses} {a.model!r} poses x {a.views} views at {size}^2, {samples} samples, "
          f"denoiser {preset.denoiser}, fast path preset {a.quality!r}, {a.threads} threads, CPU; "
          f"reference {a.ref_samples} samples, seed {a.ref_seed}, first {a.ref_views} views of each pose; "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f} (1 min)")
    print("| path  | s/view | views/s | ratio | s/view in render calls | RMSE vs ref (0-255) | PSNR vs ref (dB) |")
    print("| ----- | ------ | ------- | ----- | ---------------------- | ------------------- | ---------------- |")
    print(f"| naive | {t_naive / nviews:6.3f} | {nviews / t_naive:7.2f} | 1.00x | {render_n / nviews:22.3f} "
          f"| {rm_n:19.2f} | {ps_n:16.2f} |")
    if before:
        render_b = sum(o.seconds_render for o in before_out)
        print(f"| fast before ({', '.join(a.before)}) | {t_before / nviews:6.3f} | {nviews / t_before:7.2f} | "
              f"{t_naive / t_before:4.2f}x | {render_b / nviews:22.3f} | {rm_b:19.2f} | {ps_b:16.2f} |")
    print(f"| fast  | {t_fast / nviews:6.3f} | {nviews / t_fast:7.2f} | {t_naive / t_fast:4.2f}x | "
          f"{render_f / nviews:22.3f} | {rm_f:19.2f} | {ps_f:16.2f} |")
    print(f"fast vs naive directly: RMSE {rm_fn:.2f}, PSNR {ps_fn:.2f} dB")
    if a.skip_encode:
        return
    # bytes per encoded sample and the time outside Blender's rendering, at the shard size
    enc = mouse_scenes(1, a.encode_views, a.encode_size, a.seed + 1000, a.model)[0]
    e_out, t_e, exr_bytes = fast([enc], preset.with_overrides(samples=samples), a.threads)
    o = e_out[0]
    t0 = time.perf_counter()
    sample = MultiViewSample(key=enc.key, meta={"schema": SCHEMA, "source": "mouse", "mm_per_unit": 1.0},
                             rgba=o.rgba, cameras=enc.cameras, depth=o.depth, normal=o.normal)
    fields = sample.encode()
    t_encode = time.perf_counter() - t0
    nbytes = sum(len(v) for v in fields.values() if isinstance(v, (bytes, bytearray)))
    outside = (o.seconds_other + t_encode) / (o.seconds_render + o.seconds_other + t_encode)
    print(f"\nencoded sample ({a.encode_views} views at {a.encode_size}^2, rgba+depth+normal PNG): "
          f"{nbytes / 1e6:.2f} MB vs {exr_bytes / 1e6:.2f} MB of uncompressed float EXR passes "
          f"({exr_bytes / nbytes:.0f}x smaller)")
    print(f"time outside Blender's rendering for that sample (pass reading, conversion, encoding): "
          f"{outside:.1%} (render {o.seconds_render:.2f} s, other {o.seconds_other:.2f} s, encode {t_encode:.2f} s)")


if __name__ == "__main__":
    main()
