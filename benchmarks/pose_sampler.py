"""Pose sampler throughput (rejection test and ground placement included) and rejection rate.

    python benchmarks/pose_sampler.py [--models procedural mammal] [--n 4000] [--batch 1000] [--threads 1]

Prints poses/s of wall time and of process CPU time (the latter is robust to other jobs
sharing the cores; with 2 torch threads, wall >= CPU/2), the rejection rate (rejected
candidates / candidates), forced poses (no candidate passed in max_attempts) and the
rejection reasons. 'mammal' is skipped when $MOUSEFACELIFT_MAMMAL_DIR is unset.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mousefacelift.body import PoseSampler, load_body_model  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["procedural", "mammal"])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default); 1 avoids "
                    "OpenMP spinning inflating CPU time on a shared machine")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    print(f"torch threads {torch.get_num_threads()}, {a.n} poses in batches of {a.batch}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'model':<12} {'poses/s':>9} {'per CPU-s':>9} {'reject rate':>11} {'forced':>7}  reasons")
    for spec in a.models:
        if spec == "mammal" and not os.environ.get("MOUSEFACELIFT_MAMMAL_DIR"):
            print(f"{spec:<12} skipped: MOUSEFACELIFT_MAMMAL_DIR not set")
            continue
        model = load_body_model(spec)
        sampler = PoseSampler(model)
        sampler.sample(np.arange(a.batch), seed=a.seed + 1)                   # warm-up
        t, c = time.perf_counter(), time.process_time()
        cand = rej = forced = 0
        reasons: dict[str, int] = {}
        for s in range(0, a.n, a.batch):
            b = sampler.sample(np.arange(s, min(s + a.batch, a.n)), seed=a.seed)
            cand += b.stats["candidates"]
            rej += b.stats["rejected"]
            forced += b.stats["forced"]
            for k, v in b.stats["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
        dt, dc = time.perf_counter() - t, time.process_time() - c
        print(f"{model.name:<12} {a.n / dt:>9.0f} {a.n / dc:>9.0f} {rej / cand:>11.3f} {forced:>7}  {reasons}")


if __name__ == "__main__":
    main()
