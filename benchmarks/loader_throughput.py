"""Data loader throughput vs the training step rate it must feed.

Writes sphere shards at the training resolution (32 views per sample, like the default rig,
256² by default), then measures for each configuration the examples/s one DataLoader worker
produces (8 views: decode, resize, composite, view choice, augmentation) and for 0..N workers
the batches/s the trainer receives. Against it: the step rate of the tiny model (forward +
render + loss + backward on this machine) at the same size, and — for GPU planning — the
samples/s a worker must deliver for a given GPU step rate (``--gpu-samples-per-s``).

    python benchmarks/loader_throughput.py --size 256 --samples 24 --workers 0 1 2
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from mousefacelift.analytic import write_sphere_shards
from mousefacelift.config import load_typed
from train.data import DataConfig, TrainStream, example_config, make_train_loader, shard_sets_from_cfg


def data_cfg(shards, size, workers, augment, batch) -> DataConfig:
    return load_typed(DataConfig, "data", "base", {"shards": shards, "resolution": size, "num_workers": workers,
                                                   "batch_size": batch, "augment": {"enabled": augment}})


def time_stream(cfg, n):
    it = iter(TrainStream(shard_sets_from_cfg(cfg), example_config(cfg), seed=0))
    next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - t)


def time_loader(cfg, n_batches):
    it = iter(make_train_loader(cfg, seed=0))
    next(it)
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * cfg.batch_size / (time.perf_counter() - t)


def time_train_step(size, steps):
    from mousefacelift.cameras import make_rig, stack_cameras
    from mousefacelift.inference import predict
    from mousefacelift.models import build_model
    model = build_model("tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B, V, Vin = 1, 8, 4
    imgs = torch.rand(B, Vin, 3, size, size)
    K, c2w = stack_cameras(make_rig("sphere8", size=size))
    K, c2w = K[None], c2w[None]
    target = torch.rand(B, V, 3, size, size)

    def step():
        out = predict(model, imgs, K[:, :Vin], c2w[:, :Vin], K, c2w, background=torch.ones(3)).render
        loss = ((out.rgb - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=24, help="samples written (32 views each)")
    ap.add_argument("--measure", type=int, default=24, help="examples timed per configuration")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-steps", type=int, default=2, help="tiny-model steps timed (0 = skip)")
    ap.add_argument("--gpu-samples-per-s", type=float, default=64.0,
                    help="samples/s one GPU consumes at the production size (for the 'workers needed' line)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_sphere_shards(tmp, samples=args.samples, per_shard=8, size=args.size, rig="sphere32")
        print(f"wrote {args.samples} samples x 32 views at {args.size}^2 in {time.perf_counter() - t:.1f}s")
        rows = []
        for aug in (False, True):
            r = time_stream(data_cfg(tmp, args.size, 0, aug, 1), args.measure)
            rows.append((f"1 stream, in-process, augment={'on' if aug else 'off'}", r))
        for w in args.workers:
            cfg = data_cfg(tmp, args.size, w, True, 1)
            rows.append((f"DataLoader num_workers={w}, augment=on", time_loader(cfg, args.measure)))
        print(f"\n| loader configuration (8 of 32 views, {args.size}^2) | samples/s |")
        print("| --- | ---: |")
        for name, r in rows:
            print(f"| {name} | {r:.1f} |")
        per_worker = rows[1][1]
        if args.train_steps:
            sps = time_train_step(args.size, args.train_steps)
            print(f"\ntiny model train step (B=1, 4 in / 8 out, {args.size}^2, CPU torch splat, 1 thread): "
                  f"{sps:.2f} steps/s = {sps:.2f} samples/s -> loader headroom x{per_worker / sps:.1f} per worker")
        need = args.gpu_samples_per_s / per_worker
        print(f"a GPU consuming {args.gpu_samples_per_s:.0f} samples/s needs ~{need:.1f} loader workers at "
              f"{per_worker:.1f} samples/s/worker")


if __name__ == "__main__":
    main()
