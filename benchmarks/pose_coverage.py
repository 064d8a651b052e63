"""Realism figure: how close do sampled poses come to real, hand-labelled mouse poses?

    python benchmarks/pose_coverage.py [--model mammal] [--n 1000 10000] [--seed 0] [--held-out 21] [--compare-hand-set]

For each of the 81 hand-labelled DANNCE poses (22 keypoints, mm) the best-matching sampled
pose is found after a similarity alignment (rotation, translation, scale; Umeyama) of the
sampled DANNCE-22 keypoints onto the labelled ones (unlabelled points ignored); the error
is the mean keypoint distance in mm. Printed: median and 90th percentile over the 81 poses,
for each sample count, on all labelled poses and on the last ``--held-out`` frames by frame
number (the poses benchmarks/fit_dannce_poses.py did not fit; its statistics tune the
sampler, so the all-poses figure is optimistic). Lower is better. The rest pose alone is
shown as a baseline; ``--compare-hand-set`` adds the sampler without the fitted statistics.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mousefacelift.body import PoseParams, PoseSampler, load_body_model, load_pose_config  # noqa: E402
from mousefacelift.dannce import default_label_file, load_labelled_keypoints  # noqa: E402


def best_matches(real: np.ndarray, samples: np.ndarray, chunk: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free similarity alignment (Umeyama) of every sample onto every real pose.

    real [R,K,3] (NaN = unlabelled), samples [S,K,3] -> per real pose the best mean-keypoint
    error [R] (real units), the index of the best sample [R] and its rotation [R,3,3]
    (sample -> real frame), from which benchmarks/pose_realism.py reads how far the best
    match had to be tilted."""
    R = len(real)
    best = np.full(R, np.inf)
    best_i = np.zeros(R, np.int64)
    best_rot = np.tile(np.eye(3), (R, 1, 1))
    for r in range(R):
        ok = np.all(np.isfinite(real[r]), axis=1)
        Y = torch.as_tensor(real[r, ok], dtype=torch.float64)                       # [k,3]
        for s0 in range(0, len(samples), chunk):
            X = torch.as_tensor(samples[s0:s0 + chunk][:, ok], dtype=torch.float64)  # [S,k,3]
            mx, my = X.mean(1, keepdim=True), Y.mean(0, keepdim=True)
            Xc, Yc = X - mx, Y - my
            C = Yc[None].transpose(1, 2) @ Xc / Xc.shape[1]                         # [S,3,3]
            U, Sv, Vh = torch.linalg.svd(C)
            d = torch.sign(torch.linalg.det(U @ Vh))
            D = torch.ones_like(Sv)
            D[:, 2] = d
            Rm = U @ torch.diag_embed(D) @ Vh
            var = (Xc ** 2).sum(dim=(1, 2)) / Xc.shape[1]
            scale = (Sv * D).sum(1) / var
            aligned = scale[:, None, None] * (Xc @ Rm.transpose(1, 2)) + my
            err = torch.linalg.norm(aligned - Y[None], dim=-1).mean(1)
            i = int(err.argmin())
            if float(err[i]) < best[r]:
                best[r], best_i[r], best_rot[r] = float(err[i]), s0 + i, Rm[i].numpy()
    return best, best_i, best_rot


def best_match_errors(real: np.ndarray, samples: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """real [R,K,3] (NaN = unlabelled), samples [S,K,3] -> best mean-keypoint error [R] (real units)."""
    return best_matches(real, samples, chunk)[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mammal", help="mammal ($MOUSEFACELIFT_MAMMAL_DIR), a folder, or procedural")
    ap.add_argument("--labels", default=None, help="label3d_dannce.mat (default $MOUSEFACELIFT_DANNCE_DIR/...)")
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--poses-config", default="default", help="a name in configs/poses/ or a YAML file")
    ap.add_argument("--held-out", type=int, default=21, help="last N labelled frames (by frame number) reported apart")
    ap.add_argument("--compare-hand-set", action="store_true", help="also sample without the fitted statistics")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    labels = a.labels or default_label_file()
    lab = load_labelled_keypoints(labels)
    real = lab.points
    held = np.zeros(len(real), bool)
    if a.held_out:
        held[lab.chronological()[-a.held_out:]] = True
    model = load_body_model(a.model)
    cfg = load_pose_config(a.poses_config)
    samplers = [("sampled", PoseSampler(model, cfg))]
    if a.compare_hand_set:
        samplers.insert(0, ("hand-set", PoseSampler(model, {**cfg, "fitted": None})))
    rows = []
    rest = model.pose(PoseParams.rest(model), with_vertices=False).keypoints.numpy()
    rows.append(("rest pose", 1, best_match_errors(real, rest), 0.0))
    for name, sampler in samplers:
        for n in a.n:
            t = time.perf_counter()
            batch = sampler.sample(np.arange(n), seed=a.seed)
            kp = np.concatenate([model.pose(batch.params.index(slice(i, i + 4096)), with_vertices=False).keypoints.numpy()
                                 for i in range(0, n, 4096)])
            rows.append((name, n, best_match_errors(real, kp), time.perf_counter() - t))
    fitted = "fitted statistics" if samplers[-1][1].fitted else "no fitted statistics for this model"
    print(f"pose coverage vs {len(real)} labelled DANNCE poses ({int(held.sum())} held out = last by frame number), "
          f"model {model.name}, seed {a.seed}, sampler with {fitted}")
    print(f"{'poses':<10} {'N':>7} {'median mm':>10} {'p90 mm':>8} {'held-out med':>12} {'held-out p90':>12} {'time s':>7}")
    for name, n, e, dt in rows:
        h = e[held] if held.any() else e
        print(f"{name:<10} {n:>7} {np.median(e):>10.2f} {np.percentile(e, 90):>8.2f} {np.median(h):>12.2f} "
              f"{np.percentile(h, 90):>12.2f} {dt:>7.1f}")


if __name__ == "__main__":
    main()
