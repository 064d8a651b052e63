"""The pure-torch reference renderer against gsplat on the same scenes (max pixel error),
plus timings of both, and of the batched torch path against a per-view loop.

On a machine without CUDA or without gsplat it says so and only times the torch path.

    python benchmarks/splat_vs_gsplat.py [--size 128] [--views 8] [--gaussians 20000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mousefacelift.cameras import make_rig, stack_cameras  # noqa: E402
from mousefacelift.gaussians import Gaussians  # noqa: E402
from mousefacelift.splat import gsplat_available, render  # noqa: E402


def scene(n: int, seed: int, device) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians(means=(torch.rand(1, n, 3, generator=gen) * 2 - 1) * 0.7,
                  scales=torch.rand(1, n, 3, generator=gen) * 0.03 + 0.005,
                  rotations=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=gen), dim=-1),
                  opacities=torch.rand(1, n, 1, generator=gen) * 0.9 + 0.05,
                  sh=torch.randn(1, n, 1, 3, generator=gen) * 0.5)
    return g.to(device)


def timed(fn, repeats: int):
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, (time.perf_counter() - t) / repeats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--gaussians", type=int, default=20000)
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    K, c2w = stack_cameras(make_rig(f"sphere{args.views}", size=args.size, seed=1))
    K, c2w = K[None].to(device), c2w[None].to(device)
    have = gsplat_available()
    print(f"# device {device}; gsplat {'available' if have else 'NOT available (needs CUDA + pip install gsplat): only the torch reference is timed'}")
    print(f"# {args.gaussians} Gaussians, {args.views} views of {args.size}px, CPU may be shared with other jobs")
    print("| scene | torch batched s | torch per-view loop s | loop/batched | gsplat s | torch/gsplat | max |rgb| err | max |alpha| err | max depth err |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    H = W = args.size
    for s in range(args.scenes):
        g = scene(args.gaussians, s, device)
        ref, t_b = timed(lambda: render(g, K, c2w, H, W, backend="torch"), args.repeats)
        _, t_l = timed(lambda: [render(g, K[:, v:v + 1], c2w[:, v:v + 1], H, W, backend="torch")
                                for v in range(args.views)], args.repeats)
        row = f"| {s} | {t_b:.3f} | {t_l:.3f} | {t_l / t_b:.2f} |"
        if have:
            gs, t_g = timed(lambda: render(g, K, c2w, H, W, backend="gsplat"), args.repeats)
            both = (ref.alpha > 0.5) & (gs.alpha > 0.5)
            derr = float((ref.depth - gs.depth).abs()[both].max()) if both.any() else float("nan")
            row += (f" {t_g:.4f} | {t_b / t_g:.1f} | {float((ref.rgb - gs.rgb).abs().max()):.2e} |"
                    f" {float((ref.alpha - gs.alpha).abs().max()):.2e} | {derr:.2e} |")
        else:
            row += " n/a | n/a | n/a | n/a | n/a |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
