"""Fit the body models to the DANNCE hand-labelled poses and write the sampler's fitted statistics.

    MOUSEFACELIFT_MAMMAL_DIR=../shared/assets/mammal_mouse \\
    MOUSEFACELIFT_DANNCE_DIR=../shared/assets/dannce_markerless_mouse_1 \\
    python benchmarks/fit_dannce_poses.py [--models procedural mammal] [--train 60] \\
        [--out configs/poses/fitted_dannce.yaml]

What it does, per model (mousefacelift.body.fit, one animal so one shared set of bone scales):
1. fits the first ``--train`` labelled frames by frame number (a temporal split: the last
   frames are held out so benchmarks/pose_coverage.py can report coverage on poses the
   statistics never saw) and prints the fit residual on the train and held-out frames;
2. base stance = the mean fitted segment angles (flex/twist/abd, left/right pooled since the
   sampler mirrors them) of the standing poses only (the lower fore paw label at most 10 mm above
   the hind paws: a stance averaged with rears would lift the fore paws), replacing the hand-set
   stance;
3. assigns every fitted pose to its most likely behaviour family under the sampler's own
   per-family Gaussians (family weight x angle and body-pitch likelihoods, with the
   family's gait, pitch compensation, bend and common variation included), then re-centres
   and re-scales each family from its poses: mean offset from the stance and spread, both
   shrunk toward the hand-set values with ``prior_count`` pseudo-poses (families with no
   real poses keep theirs), spread net of the variation the sampler adds on top; and each
   family's assigned poses themselves (and their mirror images) as exemplars, which the
   sampler perturbs (a kernel density over real poses; configs/poses/default.yaml: exemplars).
The result is written atomically as YAML that configs/poses/default.yaml names under
``fitted:``; every value records where it came from.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mousefacelift.body import PoseSampler, load_body_model, load_pose_config  # noqa: E402
from mousefacelift.body.fit import FitConfig, body_euler, fit_keypoints  # noqa: E402
from mousefacelift.body.poses import load_fitted  # noqa: E402
from mousefacelift.config import configs_dir  # noqa: E402
from mousefacelift.dannce import default_label_file, load_labelled_keypoints  # noqa: E402

log = logging.getLogger("fit_dannce_poses")
COMPS = ("flex", "twist", "abd")
# Segments the 22 keypoints observe (jaw and digits are not; they keep the hand-set values),
# and the components whose spread is observed (twist of a single bone barely moves a keypoint).
OBSERVED = ("spine_lumbar", "spine_thoracic", "neck", "head", "ear_l", "ear_r", "tail", "hip", "knee", "ankle",
            "scapula", "shoulder", "elbow", "wrist")
SPREAD_COMPS = ("flex", "abd")
PRIOR_COUNT = 5.0      # pseudo-poses of the hand-set family values in the shrinkage
MIN_STD_DEG = 3.0      # floor of a re-estimated family spread (degrees)
ASSIGN_FLOOR_DEG = 8.0  # added in quadrature to every family std while assigning poses
ROUNDS = 3             # assignment / re-estimation rounds
FORE_UP_MM = 10.0      # a labelled pose whose lower fore paw is higher than this above the hind paws is not standing


base_segment = PoseSampler.base_segment


def pooled_angles(seg_names: list[str], ang_deg: np.ndarray) -> dict[str, np.ndarray]:
    """{base segment: [n,3] degrees}, left and right limbs pooled (the sampler mirrors them)."""
    out: dict[str, list] = {}
    for i, s in enumerate(seg_names):
        out.setdefault(base_segment(s), []).append(ang_deg[:, i])
    return {k: np.concatenate(v) for k, v in out.items()}


def family_terms(sampler: PoseSampler, fam_idx: int, pitch_deg: np.ndarray):
    """Deterministic mean [n,S,3] (compensation, gait mean) and extra variance [S,3] (gait,
    bend, common) the sampler adds for a family, in degrees, per segment of the sampler."""
    spec = sampler.families[fam_idx]
    S = len(sampler.seg_names)
    n = len(pitch_deg)
    det = np.zeros((n, S, 3))
    var = np.rad2deg(sampler.common[..., 1]) ** 2 * np.ones((S, 3))
    for base, k in spec["compensate"].items():
        for i, s in enumerate(sampler.seg_names):
            if base_segment(s) == base:
                det[:, i, 0] += k * pitch_deg
    g = spec["gait"]
    if g:
        amp = g.get("amplitude", {})
        for limb in g.get("offsets", {}):
            side = limb[-1]
            segs = ("hip", "knee", "ankle") if limb.startswith("hind") else ("shoulder", "elbow", "wrist")
            for k, base in enumerate(segs):
                i = sampler.seg_names.index(f"{base}_{side}")
                a = float(amp.get(base, 0.0)) * (1 if k <= 1 else -0.7)
                if k == 0:                       # a sin(phase): mean 0, variance a^2/2
                    var[i, 0] += a * a / 2
                else:                            # a max(0, cos): mean a/pi, variance a^2 (1/4 - 1/pi^2)
                    det[:, i, 0] += a / math.pi
                    var[i, 0] += a * a * (0.25 - 1 / math.pi ** 2)
        sway = float(g.get("spine_sway", 0))
        var[sampler.seg_names.index("spine_lumbar"), 2] += sway * sway / 2
    bend_std = math.degrees(spec["bend"][1])
    for name, share in (("spine_lumbar", 0.3), ("spine_thoracic", 0.3), ("neck", 0.2), ("tail", 0.6)):
        var[sampler.seg_names.index(name), 2] += (bend_std * share) ** 2
    return det, var


def mirrored(seg_names: list[str], ang_deg: np.ndarray) -> np.ndarray:
    """The left-right mirror image of fitted poses [n,S,3]: a mouse is symmetric, so which way
    the labelled mouse happened to turn must not bias the sampler (axial twist/abd change sign,
    left and right limbs swap; the sampler's per-side sign convention makes that a plain swap)."""
    out = ang_deg.copy()
    for i, s in enumerate(seg_names):
        if s.endswith(("_l", "_r")):
            out[:, i] = ang_deg[:, seg_names.index(s[:-1] + ("r" if s.endswith("_l") else "l"))]
        else:
            out[:, i, 1:] *= -1
    return out


def standing_frames(points: np.ndarray, names=None) -> np.ndarray:
    """[n] bool: labelled poses standing on four paws (the lower fore paw at most FORE_UP_MM above
    the lowest hind paw; poses with both fore paws unlabelled count as not standing)."""
    from mousefacelift.dannce import KEYPOINT_NAMES
    names = list(names or KEYPOINT_NAMES)
    z = points[..., 2]
    fore = np.nanmin(z[:, [names.index("ForepawL"), names.index("ForepawR")]], axis=1) if len(z) else z[:, 0]
    hind = np.nanmin(z[:, [names.index("HindpawL"), names.index("HindpawR")]], axis=1)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(fore - hind, nan=np.inf) <= FORE_UP_MM


def tail_direction(points: np.ndarray, names=None) -> np.ndarray:
    """[n,2] degrees per labelled pose: the tail's heading (Tail(base) -> Tail(end), horizontal) from the
    body axis (SpineF -> SpineM), counter-clockwise seen from above > 0, and its elevation (Tail(base) -> Tail(mid)); unlabelled
    points give the typical values (0, -3)."""
    from mousefacelift.dannce import KEYPOINT_NAMES
    names = list(names or KEYPOINT_NAMES)
    ix = {n: names.index(n) for n in ("SpineF", "SpineM", "Tail(base)", "Tail(mid)", "Tail(end)")}
    body = points[:, ix["SpineM"], :2] - points[:, ix["SpineF"], :2]
    tail = points[:, ix["Tail(end)"], :2] - points[:, ix["Tail(base)"], :2]
    head = np.degrees(np.arctan2(body[:, 0] * tail[:, 1] - body[:, 1] * tail[:, 0], (body * tail).sum(1)))
    d = points[:, ix["Tail(mid)"]] - points[:, ix["Tail(base)"]]
    elev = np.degrees(np.arctan2(d[:, 2], np.linalg.norm(d[:, :2], axis=1)))
    return np.stack([np.nan_to_num(head, nan=0.0), np.nan_to_num(elev, nan=-3.0)], 1)


def tune(model, sampler: PoseSampler, ang_deg: np.ndarray, pitch_deg: np.ndarray, standing: np.ndarray | None = None,
         tail_deg: np.ndarray | None = None) -> dict:
    """Stance and per-family overrides (degrees) from fitted segment angles [n,S,3] and pitch [n]
    (pooled with their mirror images; counts below are of real poses). The stance is the mean of
    the ``standing`` poses only (all poses when None): rears would lift a standing mouse's fore paws."""
    seg = sampler.seg_names
    standing = np.ones(len(ang_deg), bool) if standing is None else np.asarray(standing, bool)
    if not standing.any():
        raise ValueError("tune: no standing pose to take the stance from")
    ang_deg = np.concatenate([ang_deg, mirrored(seg, ang_deg)])
    pitch_deg = np.concatenate([pitch_deg, pitch_deg])
    standing = np.concatenate([standing, standing])
    tail_deg = np.tile([0.0, -3.0], (len(standing) // 2, 1)) if tail_deg is None else np.asarray(tail_deg, float)
    tail_deg = np.concatenate([tail_deg, tail_deg * [-1.0, 1.0]])          # the mirror image turns the other way
    n = len(ang_deg)
    pooled = pooled_angles(seg, ang_deg[standing])
    stance = {b: {c: [round(float(pooled[b][:, k].mean()), 2), 0.0] for k, c in enumerate(COMPS)} for b in OBSERVED}
    stance_tab = np.rad2deg(sampler.dist_table(stance, "stance")[..., 0])          # [S,3]
    common_mean = np.rad2deg(sampler.dist_table(sampler.cfg.get("common", {}), "common")[..., 0])
    hand = []
    for f in sampler.family_names:
        spec = sampler.cfg["families"][f]
        hand.append({"table": np.rad2deg(sampler.dist_table(spec.get("segments", {}), f)),
                     "pitch": list(spec.get("pitch_up", [0, 0]))})
    w = np.diff(np.concatenate([[0.0], sampler.family_cdf]))
    obs = np.array([base_segment(s) in OBSERVED for s in seg])
    ex_idx = [i for i, s in enumerate(seg) if base_segment(s) in OBSERVED and base_segment(s) != "tail"]
    current = [{"table": h["table"].copy(), "pitch": list(h["pitch"])} for h in hand]
    assign = np.zeros(n, int)
    for _ in range(ROUNDS):
        ll = np.full((n, len(current)), -np.inf)
        for f, cur in enumerate(current):
            if w[f] <= 0:
                continue
            det, var = family_terms(sampler, f, pitch_deg)
            mu = stance_tab + common_mean + cur["table"][..., 0] + det
            v = cur["table"][..., 1] ** 2 + var + ASSIGN_FLOOR_DEG ** 2
            z = (ang_deg - mu) ** 2 / v + np.log(v)
            ll[:, f] = np.log(w[f]) - 0.5 * z[:, obs][:, :, [0, 2]].sum((1, 2))
            pm, ps = cur["pitch"]
            pv = ps ** 2 + ASSIGN_FLOOR_DEG ** 2
            ll[:, f] += -0.5 * ((pitch_deg - pm) ** 2 / pv + np.log(pv))
        assign = ll.argmax(1)
        new = []
        for f, h in enumerate(hand):
            sel = assign == f
            k = float(sel.sum()) / 2                                                    # real poses
            tab = h["table"].copy()
            pitch = list(h["pitch"])
            if k > 0:
                det, var = family_terms(sampler, f, pitch_deg[sel])
                resid = ang_deg[sel] - stance_tab - common_mean - det                  # [k,S,3]
                for i in np.nonzero(obs)[0]:
                    for c in range(3):
                        m = resid[:, i, c].mean()
                        tab[i, c, 0] = (k * m + PRIOR_COUNT * h["table"][i, c, 0]) / (k + PRIOR_COUNT)
                        if COMPS[c] in SPREAD_COMPS:
                            vd = max(resid[:, i, c].var() - var[i, c], MIN_STD_DEG ** 2)
                            tab[i, c, 1] = math.sqrt((k * vd + PRIOR_COUNT * h["table"][i, c, 1] ** 2) / (k + PRIOR_COUNT))
                if h["pitch"] != [0, 0] or sampler.families[f]["compensate"]:
                    pm = (k * pitch_deg[sel].mean() + PRIOR_COUNT * h["pitch"][0]) / (k + PRIOR_COUNT)
                    pv = max(pitch_deg[sel].var(), MIN_STD_DEG ** 2)
                    pitch = [pm, math.sqrt((k * pv + PRIOR_COUNT * h["pitch"][1] ** 2) / (k + PRIOR_COUNT))]
            new.append({"table": tab, "pitch": pitch, "n": round(k, 1)})
        current = new
    families = {}
    for f, cur in zip(sampler.family_names, current):
        if cur["n"] == 0:
            families[f] = {"assigned": 0}
            continue
        segs = {}
        for b in OBSERVED:
            i = next(j for j, s in enumerate(seg) if base_segment(s) == b)
            segs[b] = {c: [round(float(cur["table"][i, k, 0]), 2), round(float(cur["table"][i, k, 1]), 2)]
                       for k, c in enumerate(COMPS)}
        entry = {"assigned": cur["n"], "segments": segs}
        if cur["pitch"] != [0, 0]:
            entry["pitch_up"] = [round(float(cur["pitch"][0]), 2), round(float(cur["pitch"][1]), 2)]
        # exemplars: each assigned real pose (and its mirror image) as [pitch, then per exemplar
        # segment flex, twist, abd], degrees, deviation from stance + common mean
        sel = np.nonzero(assign == sampler.family_names.index(f))[0]
        dev = ang_deg[sel][:, ex_idx] - stance_tab[ex_idx] - common_mean[ex_idx]          # [k,E,3]
        entry["exemplars"] = [[round(float(pitch_deg[i]), 1)] + [round(float(x), 1) for x in d.reshape(-1)]
                              + [round(float(x), 1) for x in tail_deg[i]] for i, d in zip(sel, dev)]
        families[f] = entry
    return {"stance": stance, "exemplar_segments": [seg[i] for i in ex_idx], "families": families}


def write_yaml_atomic(path: Path, header: str, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(header)
            yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None, width=110)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["procedural", "mammal"])
    ap.add_argument("--labels", default=None, help="label3d_dannce.mat (default $MOUSEFACELIFT_DANNCE_DIR/...)")
    ap.add_argument("--train", type=int, default=60, help="fit the first N labelled frames (by frame number)")
    ap.add_argument("--poses-config", default="default", help="hand-set pose config: a name in configs/poses/ or a YAML file")
    ap.add_argument("--out", default=str(configs_dir() / "poses" / "fitted_dannce.yaml"))
    ap.add_argument("--iters", type=int, default=FitConfig.iters)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    labels = a.labels or default_label_file()
    lab = load_labelled_keypoints(labels)
    order = lab.chronological()
    train, held = order[:a.train], order[a.train:]
    cfg = load_pose_config(a.poses_config)
    cfg_plain = {**cfg, "fitted": None}                      # tune from the hand-set values
    models_out, summary = {}, []
    for spec in a.models:
        if spec == "mammal" and not os.environ.get("MOUSEFACELIFT_MAMMAL_DIR"):
            log.warning("mammal skipped: MOUSEFACELIFT_MAMMAL_DIR not set")
            continue
        model = load_body_model(spec)
        sampler = PoseSampler(model, cfg_plain)
        fcfg = FitConfig(iters=a.iters, shared_shape=True)
        t = time.perf_counter()
        fit = fit_keypoints(model, lab.points[train], fcfg, cfg_plain, progress=True)
        t_fit = time.perf_counter() - t
        fit_all = fit_keypoints(model, lab.points, fcfg, cfg_plain)
        res_held = fit_all.residual_mm[np.isin(np.arange(len(lab.points)), held)]
        ang = np.rad2deg(fit.seg_angles)
        pitch = np.rad2deg(body_euler(fit.rotation)[:, 1])
        tuned = tune(model, sampler, ang, pitch, standing_frames(lab.points[train], lab.names),
                     tail_direction(lab.points[train], lab.names))
        kp_med = np.nanmedian(fit.keypoint_error_mm, axis=0)
        models_out[model.name] = {
            "fit": {"poses": len(train), "residual_mm_median": round(float(np.median(fit.residual_mm)), 2),
                    "residual_mm_p90": round(float(np.percentile(fit.residual_mm, 90)), 2),
                    "held_out_residual_mm_median": round(float(np.median(res_held)), 2),
                    "keypoint_residual_mm_median": {n: round(float(e), 1) for n, e in zip(model.keypoint_names, kp_med)},
                    "mm_per_model_unit": round(float(np.median(fit.scale)), 1),
                    "bone_scale": {n: round(float(b), 3) for n, b in zip(model.bone_group_names, fit.params.bone_scale[0].tolist())},
                    "pitch_up_deg": {"median": round(float(np.median(pitch)), 1),
                                     "p10": round(float(np.percentile(pitch, 10)), 1),
                                     "p90": round(float(np.percentile(pitch, 90)), 1)},
                    "seconds": round(t_fit, 1)},
            **tuned,
        }
        summary.append((model.name, fit, res_held, t_fit, tuned))
    header = (
        "# GENERATED by benchmarks/fit_dannce_poses.py -- do not edit by hand; re-run the script.\n"
        f"# Command: python benchmarks/fit_dannce_poses.py --train {a.train} --models {' '.join(a.models)}\n"
        f"# Generated {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}.\n"
        "# Origin of every value: the body model fitted (mousefacelift.body.fit, shared bone scales) to the\n"
        f"# first {a.train} hand-labelled DANNCE poses by frame number in label3d_dannce.mat (frames\n"
        f"# {int(lab.frames[train].min())}..{int(lab.frames[train].max())}); the last {len(held)} frames "
        f"({int(lab.frames[held].min()) if len(held) else '-'}..{int(lab.frames[held].max()) if len(held) else '-'}) are held out.\n"
        "#   fit:      residuals (mm, mean over labelled keypoints per pose), fitted similarity scale, bone scales.\n"
        "#   stance:   per segment, the mean fitted angle [mean, 0] in degrees (flex/twist/abd in the joint\n"
        "#             frames, left/right pooled) over the standing poses (fore paws on the floor); the sampler\n"
        "#             adds it to every pose (replaces the hand stance).\n"
        "#   families: poses assigned to their most likely family; per segment [mean offset from the stance,\n"
        f"#             std] in degrees, shrunk toward the hand-set values with {PRIOR_COUNT:g} pseudo-poses, spread\n"
        f"#             net of the gait/bend/common variation the sampler adds, floored at {MIN_STD_DEG:g} deg;\n"
        "#             pitch_up [mean, std] likewise. 'assigned: 0' = no real pose, hand-set values kept.\n"
        "#             exemplars: per assigned pose (and mirror) [pitch_up, then flex/twist/abd of each of\n"
        "#             exemplar_segments as deviation from stance + common mean, then the labelled tail's\n"
        "#             heading from the body axis and elevation], degrees.\n")
    out = Path(a.out)
    old = {}
    if out.exists():                                  # keep models not re-fitted in this run
        old = load_fitted(out.resolve())["models"]
    write_yaml_atomic(out, header, {"source": {"labels": Path(labels).name, "train_frames": [int(f) for f in lab.frames[train]],
                                               "held_out_frames": [int(f) for f in lab.frames[held]]},
                                    "models": {**old, **models_out}})
    print(f"wrote {out}")
    print(f"{'model':<12} {'fit s':>6} {'train med mm':>12} {'train p90':>9} {'held-out med':>12}  families (assigned)")
    for name, fit, res_held, t_fit, tuned in summary:
        fams = {f: v["assigned"] for f, v in tuned["families"].items()}
        print(f"{name:<12} {t_fit:>6.1f} {np.median(fit.residual_mm):>12.2f} {np.percentile(fit.residual_mm, 90):>9.2f} "
              f"{np.median(res_held):>12.2f}  {fams}")


if __name__ == "__main__":
    main()
