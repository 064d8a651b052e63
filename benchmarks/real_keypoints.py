"""3D keypoints for the real ingest, measured on the DANNCE markerless_mouse_1 labels (81 poses, 6 cameras, mm).

    MOUSEFACELIFT_DANNCE_DIR=../shared/assets/dannce_markerless_mouse_1 python benchmarks/real_keypoints.py [--frames 20]

1. up direction (synth.real.keypoints.estimate_up) on the labels moved by 50 random rigid
   transforms per frame count N (random frame subsets): angle to the true up (DANNCE world: +Z);
2. project_seeds against the Label3D 2D labels (reprojections of the 3D labels through the
   distorted cameras): pixel error;
3. body prior (procedural model fitted per frame) rendered into every camera at full size:
   share of the 2D hand labels on its silhouette;
4. per-camera keypoint scores with those silhouettes as masks, for the true calibration and
   for every "camera k holds camera j's calibration" pair (30): is k named worst, and by what margin.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.io
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mousefacelift.dannce import default_label_file, load_dannce_cameras  # noqa: E402
from synth.real.body_prior import BodyPrior  # noqa: E402
from synth.real.keypoints import (KeypointTrack, camera_keypoint_scores, estimate_up, keypoint_mask_agreement,  # noqa: E402
                                  load_keypoints, load_keypoints_config, project_seeds)


def angle(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b), -1, 1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20, help="labelled frames fitted and rendered for 3-4")
    a = ap.parse_args()
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    cfg = load_keypoints_config()
    path = default_label_file()
    t = load_keypoints(path)
    cams = load_dannce_cameras(path)

    print("1. up direction: 50 random rigid transforms per N (random frame subsets)")
    for N in (5, 10, 20, 40, 81):
        rng = np.random.default_rng(N)
        errs, conf = [], []
        for k in range(50):
            R = Rotation.random(random_state=1000 * N + k).as_matrix()
            sel = np.sort(rng.choice(len(t), N, replace=False))
            moved = KeypointTrack(t.points[sel] @ R.T + rng.normal(0, 500, 3), t.names, t.frames[sel], "mm")
            e = estimate_up(moved, cfg.up)
            errs.append(angle(e.up, R @ [0, 0, 1]))
            conf.append(e.confidence)
        errs = np.array(errs)
        print(f"   N={N:2d}: error deg median {np.median(errs):.2f} p90 {np.percentile(errs, 90):.2f} max {errs.max():.2f}; "
              f"confidence median {np.median(conf):.2f} min {np.min(conf):.2f}")

    print("2. project_seeds vs Label3D 2D labels, px")
    m = scipy.io.loadmat(str(path))
    labels2d = {}
    for ci, c in enumerate(cams):
        lab = m["labelData"][ci, 0][0, 0]
        p2 = np.asarray(lab["data_2d"], float).reshape(-1, 22, 2)
        fr = np.asarray(lab["data_frame"]).reshape(-1)
        labels2d[c.name] = (p2, fr)
        e = np.concatenate([np.linalg.norm(project_seeds(t, int(f), c) - p2[k], axis=1) for k, f in enumerate(fr)])
        print(f"   {c.name}: max {np.nanmax(e):.4f} over {np.isfinite(e).sum()} labels")

    sel = t.frames[np.linspace(0, len(t) - 1, a.frames).round().astype(int)]
    t0 = time.perf_counter()
    prior = BodyPrior.fit(t, cams, cfg.body_prior, frames=sel)
    res = np.array(list(prior.residual_mm.values()))
    print(f"3. body prior ({cfg.body_prior.model}, {cfg.body_prior.fit_iters} steps): {len(prior.poses)}/{len(sel)} "
          f"frames fitted in {time.perf_counter() - t0:.1f} s, residual mm median {np.median(res):.2f} max {res.max():.2f}")
    t0 = time.perf_counter()
    masks = [{int(f): prior.silhouette(int(f), i) for f in sel if prior.has(int(f))} for i in range(len(cams))]
    print(f"   {sum(len(x) for x in masks)} silhouettes at 1152x1024 in {time.perf_counter() - t0:.1f} s")
    for tol in (0, 3, 10):
        shares = [keypoint_mask_agreement(masks[ci][int(f)], p2[k], tol)
                  for ci, c in enumerate(cams) for p2, fr in [labels2d[c.name]] for k, f in enumerate(fr)
                  if int(f) in masks[ci]]
        print(f"   2D hand labels on the silhouette, tolerance {tol:2d} px: mean share {np.nanmean(shares):.3f}")

    tol = cfg.seeds.tolerance_px
    good = camera_keypoint_scores(t, masks, cams, tol)
    print("4. keypoint camera scores, true calibration: " + ", ".join(f"{k} {v:.3f}" for k, v in good.items()))
    rows = []
    for k in range(len(cams)):
        for j in range(len(cams)):
            if j != k:
                bad = list(cams)
                bad[k] = replace(cams[j], name=cams[k].name)
                sc = camera_keypoint_scores(t, masks, bad, tol)
                others = [v for n, v in sc.items() if n != cams[k].name]
                rows.append((sc[cams[k].name], min(others), min(sc, key=sc.get) == cams[k].name))
    b, o = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    print(f"   copied calibration, {len(rows)} pairs: copied camera score median {np.median(b):.3f} max {b.max():.3f}; "
          f"lowest other camera min {o.min():.3f}; copied camera named worst in {sum(r[2] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
