"""Pose realism: would a camera see a mouse standing, rearing or walking on the floor?

    python benchmarks/pose_realism.py [--model mammal] [--n 10000] [--seed 0] [--json out.json]

pose_coverage.py aligns each sampled pose to a real one with a free rotation and scale, so a
sampled pose that only matches when tipped over still counts. This benchmark measures, on
``--n`` sampled poses against the hand-labelled DANNCE poses (lab frame, millimetres, the arena
floor at z = 0), with the real labels' own value beside each figure:

- best match, free rotation (Umeyama similarity) and upright (rotation about the vertical
  only, plus translation and scale, as a camera sees the animal): median and p90 over the real
  poses of the best mean-keypoint error in mm; for the real labels, each pose against the
  other real poses (leave one out; there are only ~80, so that figure is pessimistic);
- tilt of the free best match: how far its rotation tips the vertical (0 for the real poses);
- paws on the floor: paw keypoints (fore and hind) within 4 mm of the lowest one (unlabelled
  paws count as off the floor, as they do for the real poses);
- fore paws up: share of poses whose lower fore paw is > 10 mm above the lowest hind paw, per
  family (a walking mouse has them on the floor);
- tail-tip height: Tail(end) keypoint above the floor, median and p90;
- floor penetration: how far the lowest mesh vertex lies below z = 0 (sampled poses only);
- which families the best matches come from, and the median best-match scale (real size /
  sampled size under the upright alignment: 1 = the sampled mice are the real mouse's size).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mousefacelift.body import PoseSampler, load_body_model, load_pose_config  # noqa: E402
from mousefacelift.dannce import default_label_file, load_labelled_keypoints  # noqa: E402
from pose_coverage import best_matches  # noqa: E402

PAWS = ("ForepawL", "ForepawR", "HindpawL", "HindpawR")
FLOOR_MM = 4.0          # a paw within this of the lowest paw is on the floor
FORE_UP_MM = 10.0       # a fore paw this far above the lowest hind paw is off the floor
PENETRATION_MM = 1.0    # allowed depth of any mesh part below the floor


def upright_matches(real: np.ndarray, samples: np.ndarray, chunk: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best match per real pose under rotation about +Z only (plus translation and uniform scale).

    real [R,K,3] (NaN = unlabelled), samples [S,K,3] -> best mean error [R], best sample index [R]
    and its scale [R]. Closed form: with both point sets centred, the yaw maximising the
    correlation is atan2(sum x*y' - y*x', sum x*x' + y*y'), then the least-squares scale."""
    R = len(real)
    best = np.full(R, np.inf)
    best_i = np.zeros(R, np.int64)
    best_s = np.ones(R)
    for r in range(R):
        ok = np.all(np.isfinite(real[r]), axis=1)
        Y = real[r, ok] - real[r, ok].mean(0)                                       # [k,3]
        for s0 in range(0, len(samples), chunk):
            X = samples[s0:s0 + chunk][:, ok].astype(np.float64)
            X = X - X.mean(1, keepdims=True)                                         # [S,k,3]
            a = (X[..., 0] * Y[:, 0] + X[..., 1] * Y[:, 1]).sum(1)
            b = (X[..., 0] * Y[:, 1] - X[..., 1] * Y[:, 0]).sum(1)
            th = np.arctan2(b, a)
            c, s = np.cos(th)[:, None], np.sin(th)[:, None]
            RX = np.stack([c * X[..., 0] - s * X[..., 1], s * X[..., 0] + c * X[..., 1], X[..., 2]], -1)
            scale = np.clip((RX * Y).sum((1, 2)) / np.maximum((X ** 2).sum((1, 2)), 1e-12), 1e-6, None)
            err = np.linalg.norm(scale[:, None, None] * RX - Y, axis=-1).mean(1)
            i = int(err.argmin())
            if err[i] < best[r]:
                best[r], best_i[r], best_s[r] = err[i], s0 + i, scale[i]
    return best, best_i, best_s


def tilt_deg(rot: np.ndarray) -> np.ndarray:
    """Angle [deg] by which rotations [N,3,3] tip the vertical axis."""
    return np.rad2deg(np.arccos(np.clip(rot[:, 2, 2], -1, 1)))


def leave_one_out(real: np.ndarray, upright: bool) -> np.ndarray:
    """Each real pose's best match among the other real poses (keypoints labelled in both)."""
    out = np.full(len(real), np.inf)
    for r in range(len(real)):
        for q in range(len(real)):
            if q == r:
                continue
            ok = np.all(np.isfinite(real[r]), 1) & np.all(np.isfinite(real[q]), 1)
            if ok.sum() < 6:
                continue
            tgt = np.where(ok[:, None], real[r], np.nan)[None]
            src = np.where(ok[:, None], real[q], 0.0)[None]
            e = upright_matches(tgt, src)[0] if upright else best_matches(tgt, src)[0]
            out[r] = min(out[r], float(e[0]))
    return out


def floor_figures(kp_mm: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Per pose [N]: paws within FLOOR_MM of the lowest paw, lower fore paw height above the
    lowest hind paw, tail-tip height above z = 0 (keypoints [N,22,3] in mm, floor at z = 0)."""
    ix = {n: names.index(n) for n in names}
    paws = kp_mm[:, [ix[p] for p in PAWS], 2]
    lowest = np.nanmin(paws, axis=1)
    on = np.nan_to_num(paws - lowest[:, None], nan=np.inf) <= FLOOR_MM
    fore = np.nanmin(paws[:, :2], axis=1) - np.nanmin(paws[:, 2:], axis=1)
    return {"paws_on_floor": on.sum(1).astype(float), "fore_up_mm": fore,
            "tail_tip_mm": kp_mm[:, ix["Tail(end)"], 2]}


def sample_figures(model, sampler: PoseSampler, n: int, seed: int, chunk: int = 1000, mesh_chunk: int = 250):
    """Keypoints [n,22,3] mm, lowest vertex z [n] mm, families, and the sampling rate (poses/s)."""
    kps, zmin, fam = [], [], []
    t_sample = 0.0
    for s0 in range(0, n, chunk):
        t = time.perf_counter()
        b = sampler.sample(np.arange(s0, min(s0 + chunk, n)), seed=seed)
        t_sample += time.perf_counter() - t
        fam += b.family
        with torch.no_grad():
            for m0 in range(0, b.params.batch_size, mesh_chunk):
                out = model.pose(b.params.index(slice(m0, m0 + mesh_chunk)))
                kps.append(out.keypoints.double().numpy() * model.mm_per_unit)
                zmin.append(out.vertices[..., 2].min(dim=1).values.double().numpy() * model.mm_per_unit)
    return np.concatenate(kps), np.concatenate(zmin), np.array(fam), n / max(t_sample, 1e-9)


def evaluate(model, sampler: PoseSampler, real: np.ndarray, n: int, seed: int) -> dict:
    """All figures for one model (see the module docstring); plain floats/lists for JSON."""
    names = list(model.keypoint_names)
    kp, zmin, fam, rate = sample_figures(model, sampler, n, seed)
    e_free, i_free, rot = best_matches(real, kp)
    e_up, i_up, s_up = upright_matches(real, kp)
    fl = floor_figures(kp, names)
    pen = -zmin
    fams = list(sampler.family_names)
    fore_up = {f: float(np.mean(fl["fore_up_mm"][fam == f] > FORE_UP_MM)) for f in fams if np.any(fam == f)}
    return {
        "model": model.name, "n": n, "seed": seed, "sampler_poses_per_s": round(rate, 1),
        "free_median_mm": float(np.median(e_free)), "free_p90_mm": float(np.percentile(e_free, 90)),
        "upright_median_mm": float(np.median(e_up)), "upright_p90_mm": float(np.percentile(e_up, 90)),
        "tilt_median_deg": float(np.median(tilt_deg(rot))), "tilt_p90_deg": float(np.percentile(tilt_deg(rot), 90)),
        "upright_scale_median": float(np.median(s_up)),
        "paws_on_floor_mean": float(fl["paws_on_floor"].mean()),
        "fore_up_share": float(np.mean(fl["fore_up_mm"] > FORE_UP_MM)), "fore_up_share_by_family": fore_up,
        "tail_tip_median_mm": float(np.median(fl["tail_tip_mm"])), "tail_tip_p90_mm": float(np.percentile(fl["tail_tip_mm"], 90)),
        "penetration_share_over_1mm": float(np.mean(pen > PENETRATION_MM)),
        "penetration_p99_9_mm": float(np.percentile(pen, 99.9)), "penetration_max_mm": float(pen.max()),
        "family_share": {f: float(np.mean(fam == f)) for f in fams},
        "best_match_families_free": {f: int(np.sum(fam[i_free] == f)) for f in fams},
        "best_match_families_upright": {f: int(np.sum(fam[i_up] == f)) for f in fams},
    }


def real_figures(real: np.ndarray, names: list[str]) -> dict:
    fl = floor_figures(real, names)
    e_free, e_up = leave_one_out(real, upright=False), leave_one_out(real, upright=True)
    return {"free_median_mm": float(np.median(e_free)), "free_p90_mm": float(np.percentile(e_free, 90)),
            "upright_median_mm": float(np.median(e_up)), "upright_p90_mm": float(np.percentile(e_up, 90)),
            "tilt_median_deg": 0.0, "tilt_p90_deg": 0.0,
            "paws_on_floor_mean": float(fl["paws_on_floor"].mean()),
            "fore_up_share": float(np.mean(np.nan_to_num(fl["fore_up_mm"], nan=0.0) > FORE_UP_MM)),
            "tail_tip_median_mm": float(np.nanmedian(fl["tail_tip_mm"])),
            "tail_tip_p90_mm": float(np.nanpercentile(fl["tail_tip_mm"], 90))}


ROWS = [("best match, upright: median mm", "upright_median_mm"), ("best match, upright: p90 mm", "upright_p90_mm"),
        ("best match, free rotation: median mm", "free_median_mm"), ("best match, free rotation: p90 mm", "free_p90_mm"),
        ("tilt of free best match: median deg", "tilt_median_deg"), ("tilt of free best match: p90 deg", "tilt_p90_deg"),
        ("paws on the floor (of 4), mean", "paws_on_floor_mean"), ("fore paws > 10 mm up, share", "fore_up_share"),
        ("tail-tip height: median mm", "tail_tip_median_mm"), ("tail-tip height: p90 mm", "tail_tip_p90_mm"),
        ("floor penetration > 1 mm, share", "penetration_share_over_1mm"),
        ("floor penetration p99.9 mm", "penetration_p99_9_mm"), ("floor penetration max mm", "penetration_max_mm"),
        ("upright best-match scale (real/sampled), median", "upright_scale_median"),
        ("sampler poses/s (this process)", "sampler_poses_per_s")]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["procedural", "mammal"],
                    help="procedural, mammal ($MOUSEFACELIFT_MAMMAL_DIR; skipped when unset) or a MAMMAL folder")
    ap.add_argument("--labels", default=None, help="label3d_dannce.mat (default $MOUSEFACELIFT_DANNCE_DIR/...)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--poses-config", default="default", help="a name in configs/poses/ or a YAML file")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = one core)")
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = ap.parse_args(argv)
    if a.n < 1:
        ap.error(f"--n must be >= 1, got {a.n}")
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    lab = load_labelled_keypoints(a.labels or default_label_file())
    real = lab.points
    cfg = load_pose_config(a.poses_config)
    results = {"real": real_figures(real, list(lab.names))}
    for spec in a.models:
        if spec == "mammal" and not os.environ.get("MOUSEFACELIFT_MAMMAL_DIR"):
            print("mammal skipped: MOUSEFACELIFT_MAMMAL_DIR not set")
            continue
        model = load_body_model(spec)
        results[model.name] = evaluate(model, PoseSampler(model, cfg), real, a.n, a.seed)
    cols = [k for k in results if k != "real"] + ["real"]
    print(f"pose realism: {a.n} sampled poses (seed {a.seed}) vs {len(real)} labelled DANNCE poses; "
          f"load average {os.getloadavg()[0]:.2f}; real = the labels themselves (leave-one-out for matches)")
    print(f"{'figure':<50}" + "".join(f"{c:>12}" for c in cols))
    for label, key in ROWS:
        cells = []
        for c in cols:
            v = results[c].get(key)
            cells.append(f"{'-':>12}" if v is None else f"{v:>12.3g}" if abs(v) < 100 else f"{v:>12.0f}")
        print(f"{label:<50}" + "".join(cells))
    for c in cols[:-1]:
        r = results[c]
        print(f"{c}: family share " + ", ".join(f"{f} {v:.2f}" for f, v in r["family_share"].items()))
        print(f"{c}: fore paws > 10 mm up by family " + ", ".join(f"{f} {v:.2f}" for f, v in r["fore_up_share_by_family"].items()))
        print(f"{c}: best matches by family (free) {r['best_match_families_free']}")
        print(f"{c}: best matches by family (upright) {r['best_match_families_upright']}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
