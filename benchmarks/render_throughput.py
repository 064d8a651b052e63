"""Render throughput: the naive Blender loop vs the BlenderRenderer fast path, in one run.

Both render the same posed procedural mice (PoseSampler), the same cameras, lights, coat,
resolution, samples and denoiser:
- naive: what a user writes first: a factory-reset scene built from scratch for every
  pose, no persistent data, one render call per view writing a multilayer EXR to disk
  (a temp folder on the normal file system) and reading it back;
- fast:  one BlenderRenderer reused across poses (mesh updated in place, persistent data,
  EXR passes in /dev/shm).
Each is compared with a high-sample reference render (RMSE and PSNR over the reference's
foreground), so speed is not bought with noise. Also reports the bytes of a 32-view sample
at 256^2 encoded with MultiViewSample.encode() against the raw EXR bytes, and the share of
time spent outside Blender's own rendering (reading passes, conversions, encoding).

    python -m benchmarks.render_throughput --poses 3 --views 8 --size 128 --threads 2
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np

from blender.backend import BlenderRenderer
from mousefacelift.body import PoseSampler, load_body_model
from mousefacelift.cameras import make_rig
from mousefacelift.sample import SCHEMA, MultiViewSample
from mousefacelift.scene import MeshSpec, SceneSpec, depth_range_for
from synth.appearance import AppearanceSampler
from synth.lighting import LightingSampler

log = logging.getLogger("render_throughput")


def mouse_scenes(n: int, views: int, size: int, seed: int) -> list[SceneSpec]:
    """Posed procedural mice normalised into [-0.9, 0.9]^3, with coat, lights and a sphere rig."""
    model = load_body_model("procedural")
    batch = PoseSampler(model).sample(np.arange(n), seed=seed)
    verts = np.asarray(model.pose(batch.params).vertices, dtype=np.float64)
    faces = np.asarray(model.faces)
    regions = np.asarray(model.face_regions)
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        v = verts[i]
        lo, hi = v.min(0), v.max(0)
        v = (v - (lo + hi) / 2) * (1.8 / (hi - lo).max())
        mats, _ = AppearanceSampler().sample(rng)
        env, lights, _ = LightingSampler().sample(rng)
        cams = make_rig(f"sphere{views}", size=size, seed=seed + i)
        cams = depth_range_for(cams, v.min(0), v.max(0))
        mesh = MeshSpec(vertices=v, faces=faces, face_region=regions, regions=list(model.region_names), materials=mats)
        scenes.append(SceneSpec(meshes=[mesh], cameras=cams, environment=env, area_lights=lights, key=f"bench_{i:04d}"))
    return scenes


def naive(scenes, samples, threads, quality):
    """Fresh factory scene per pose, no persistent data, per-view EXR files on disk."""
    outs, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mfl_naive_", dir=".") as disk:
        for sc in scenes:
            r = BlenderRenderer(quality=quality, device="cpu", samples=samples, threads=threads)
            try:
                r.scene.render.use_persistent_data = False
                r.scene.render.filepath = f"{disk}/view.exr"
                outs.append(r.render(sc))
            finally:
                r.close()
    return outs, time.perf_counter() - t0


def fast(scenes, samples, threads, quality):
    outs = []
    r = BlenderRenderer(quality=quality, device="cpu", samples=samples, threads=threads)
    t0 = time.perf_counter()          # process-level setup is paid once per worker, not per pose
    try:
        for sc in scenes:
            outs.append(r.render(sc))
        return outs, time.perf_counter() - t0, r.exr_bytes
    finally:
        r.close()


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
    ap.add_argument("--poses", type=int, default=3)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--ref-samples", type=int, default=512)
    ap.add_argument("--quality", default="train", help="preset for bounces/denoiser/adaptive threshold")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encode-views", type=int, default=32, help="views of the bytes-per-sample measurement")
    ap.add_argument("--encode-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scenes = mouse_scenes(a.poses, a.views, a.size, a.seed)
    nviews = a.poses * a.views
    fast_out, t_fast, _ = fast(scenes, a.samples, a.threads, a.quality)
    naive_out, t_naive = naive(scenes, a.samples, a.threads, a.quality)
    ref_out, _, _ = fast(scenes, a.ref_samples, a.threads, a.quality)
    rm_f, ps_f = fg_error(fast_out, ref_out)
    rm_n, ps_n = fg_error(naive_out, ref_out)
    render_f = sum(o.seconds_render for o in fast_out)

    # bytes per encoded sample and the time outside Blender's rendering, at the shard size
    enc = mouse_scenes(1, a.encode_views, a.encode_size, a.seed + 1000)[0]
    e_out, t_e, exr_bytes = fast([enc], a.samples, a.threads, a.quality)
    o = e_out[0]
    t0 = time.perf_counter()
    sample = MultiViewSample(key=enc.key, meta={"schema": SCHEMA, "source": "mouse", "mm_per_unit": 1.0},
                             rgba=o.rgba, cameras=enc.cameras, depth=o.depth, normal=o.normal)
    fields = sample.encode()
    t_encode = time.perf_counter() - t0
    nbytes = sum(len(v) for v in fields.values() if isinstance(v, (bytes, bytearray)))
    outside = (o.seconds_other + t_encode) / (o.seconds_render + o.seconds_other + t_encode)

    print(f"\nrender throughput: {a.poses} poses x {a.views} views at {a.size}^2, {a.samples} samples, "
          f"preset {a.quality} (denoiser etc.), {a.threads} threads, CPU; reference {a.ref_samples} samples")
    print(f"| path  | s/view | views/s | ratio | RMSE vs ref (0-255) | PSNR vs ref (dB) |")
    print(f"| ----- | ------ | ------- | ----- | ------------------- | ---------------- |")
    print(f"| naive | {t_naive / nviews:6.3f} | {nviews / t_naive:7.2f} | 1.00x | {rm_n:19.2f} | {ps_n:16.2f} |")
    print(f"| fast  | {t_fast / nviews:6.3f} | {nviews / t_fast:7.2f} | {t_naive / t_fast:4.2f}x | {rm_f:19.2f} | {ps_f:16.2f} |")
    print(f"fast path: {render_f / t_fast:.0%} of its time inside Blender's render calls")
    print(f"\nencoded sample ({a.encode_views} views at {a.encode_size}^2, rgba+depth+normal PNG): "
          f"{nbytes / 1e6:.2f} MB vs {exr_bytes / 1e6:.2f} MB of uncompressed float EXR passes "
          f"({exr_bytes / nbytes:.0f}x smaller)")
    print(f"time outside Blender's rendering for that sample (pass reading, conversion, encoding): "
          f"{outside:.1%} (render {o.seconds_render:.2f} s, other {o.seconds_other:.2f} s, encode {t_encode:.2f} s)")


if __name__ == "__main__":
    main()
