"""CPU speed of the pure-torch splatting renderer (forward, forward+backward).

Workload = what the trainer asks of it with the tiny model: ``--inputs`` input views of
S x S pixels give N = inputs * S^2 pixel-aligned Gaussians, rendered into ``--views``
supervised views of S x S. The cloud is the untrained tiny GS-LRM's own output on a
deterministic ring of cameras (every Gaussian on its pixel ray at the origin's depth,
scale ~0.03, opacity ~0.12: everything visible, nothing terminates early -- the load at
the start of training), so the figures are comparable across commits.

Prints one table (median of ``--repeats`` after one warm-up) and the load average.
Before/after comparisons run this same script at two commits (see docs/benchmarks.md).

    python benchmarks/splat_cpu_speed.py --sizes 64 128 256 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mousefacelift.cameras import make_rig, stack_cameras  # noqa: E402
from mousefacelift.inference import reconstruct  # noqa: E402
from mousefacelift.models import build_model  # noqa: E402
from mousefacelift.splat import render  # noqa: E402


def model_cloud(size: int, inputs: int, views: int, seed: int):
    """The tiny model's untrained output for ``inputs`` ring views, plus ``views`` targets."""
    torch.manual_seed(seed)
    model = build_model("tiny").eval()
    cams = make_rig(f"ring{views}", size=size)
    K, c2w = stack_cameras(cams)
    idx = torch.arange(0, views, max(1, views // inputs))[:inputs]
    imgs = torch.rand(1, inputs, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        g = reconstruct(model, imgs, K[None, idx], c2w[None, idx])
    return g.detach(), K[None], c2w[None]


def time_it(fn, repeats: int) -> float:
    fn()                                   # warm-up (allocator, first-call costs)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--inputs", type=int, default=4, help="input views -> N = inputs * size^2 Gaussians")
    ap.add_argument("--views", type=int, default=8, help="rendered (supervised) views")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backward-max-size", type=int, default=256, help="skip forward+backward above this size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {args.threads} threads, load average before: "
          f"{' '.join('%.2f' % x for x in os.getloadavg())} (shared CPU)")
    print("| size | Gaussians | views | forward ms | forward+backward ms |")
    print("| --- | --- | --- | --- | --- |", flush=True)
    for size in args.sizes:
        g, K, c2w = model_cloud(size, args.inputs, args.views, args.seed)
        params = [t.clone().requires_grad_(True) for t in (g.means, g.scales, g.rotations, g.opacities, g.sh)]
        w = torch.rand(1, args.views, 3, size, size, generator=torch.Generator().manual_seed(1))

        def fwd():
            with torch.no_grad():
                render(g, K, c2w, size, size)

        def fwd_bwd():
            from mousefacelift.gaussians import Gaussians
            out = render(Gaussians(*params), K, c2w, size, size)
            ((out.rgb * w).sum() + out.alpha.sum() + out.depth.sum()).backward()

        f = time_it(fwd, args.repeats)
        fb = time_it(fwd_bwd, args.repeats) if size <= args.backward_max_size else float("nan")
        print(f"| {size} | {g.num_gaussians:,} | {args.views} | {f:.0f} | {fb:.0f} |", flush=True)
    print(f"# load average after: {' '.join('%.2f' % x for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
