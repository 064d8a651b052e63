"""Throughput of synth.verify on synthetic shards (rasterized stand-in subject, no Blender).

    python benchmarks/verify_throughput.py [--samples 4] [--views 32] [--size 256]

Times, in one run on the same shards: checksums + decode + schema only, the full check
(cross-view geometry) at the default and at a lighter points-per-view setting, and prints
samples/s and ratios. The CPU may be shared: compare rows of one run, not across runs.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from synth.tools import geometry_checks as gc  # noqa: E402
from synth.tools.tables import format_table  # noqa: E402
from mousefacelift.analytic import critter_sample  # noqa: E402
from mousefacelift.shards import write_samples  # noqa: E402
from synth.tools.verify import verify_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2, help="best of N timings per mode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        samples = [critter_sample(f"obj_{i:06d}", rig=f"sphere{args.views}", size=args.size, seed=i)
                   for i in range(args.samples)]
        write_samples(tmp, samples, samples_per_shard=2)
        make_s = time.perf_counter() - t0
        nbytes = sum(p.stat().st_size for p in Path(tmp).glob("*.tar"))
        modes = [("checksums + decode + schema", dict(geometry=False), gc.ConsistencyConfig()),
                 ("full, 3000 points/view (default)", {}, gc.ConsistencyConfig()),
                 ("full, 1000 points/view", {}, gc.ConsistencyConfig(points_per_view=1000))]
        rows, base = [], None
        for name, kw, cfg in modes:
            best = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                rep = verify_dir(tmp, cfg=cfg, progress=False, **kw)
                best = min(best, time.perf_counter() - t)
            assert rep.passed, rep.problems + [p for s in rep.samples for p in s.problems]
            sps = args.samples / best
            base = base or sps
            sm = rep.summary()
            rows.append([name, round(best / args.samples, 3), round(sps, 2), round(sps / base, 2),
                         sm["reproj_px_median"], sm["reproj_px_worst_view_max"], sm["depth_rel_median"]])
    print(f"{args.samples} samples x {args.views} views at {args.size}^2, {nbytes / args.samples / 1e6:.2f} MB/sample "
          f"(made in {make_s:.1f} s)")
    print(format_table(["mode", "s/sample", "samples/s", "vs schema-only", "reproj px", "worst view px", "depth rel"],
                       rows))
    print()
    print(sensitivity(samples[0]))


def sensitivity(sample, degrees=(0.0, 0.25, 0.5, 1.0, 2.0), view: int = 3) -> str:
    """How the figures respond when one camera is turned by a few tenths of a degree."""
    from dataclasses import replace

    from mousefacelift.shards import MultiViewSample

    th = gc.Thresholds()
    rows = []
    for deg in degrees:
        s = MultiViewSample.decode(sample.encode())
        c = s.cameras[view]
        a = math.radians(deg)
        R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        w2c = c.w2c.copy()
        w2c[:3, :3] = R @ w2c[:3, :3]
        w2c[:3, 3] = -w2c[:3, :3] @ c.center
        s.cameras[view] = replace(c, w2c=w2c)
        r = gc.cross_view_consistency(s)
        fails = r.reproj_px_worst_view > th.reproj_px_worst_view or r.conflict_frac_worst_view > th.conflict_frac_worst_view
        rows.append([deg, r.reproj_px_median, r.reproj_px_worst_view, r.conflict_frac_worst_view, r.worst_view,
                     "FAIL" if fails else "pass"])
    return format_table(["view %d turned by deg" % view, "reproj px", "worst view px", "conflict worst view",
                         "worst view", "verdict"], rows, title="sensitivity (one sample)")


if __name__ == "__main__":
    main()
