"""Real-ingest failure modes, before and after: fake recordings with known truth, ingested
with the former mask defaults and with the current ones.

    python benchmarks/real_failure_modes.py --calib label3d_dannce.mat [--downscale 4] [--frames 6] \
        [--modes walk rest_albino ...] [--work DIR]

Each mode is a ``synth.fake_capture`` recording (raster renderer) of one failure seen on real
data. Each is ingested twice: ``before`` = per-pixel median background, no graph cut, no
relative threshold (the former defaults); ``after`` = configs/real/ingest.yaml as it is; some
modes add a row with the empty-arena shot (``--background``), without the relative
threshold (``rel_thr=0``: the tail/reflection trade-off) or with the recording's 3D keypoints
(``--keypoints``: the true keypoints with 1 mm noise, as a tracker gives them). Printed per
row: frame sets written of those selected, the camera named as disagreeing in most frame
sets (from the notes of the split's manifest.json), the mean and minimum IoU of the masks against the true
silhouettes (all cameras and frames; what ingest computes, recomputed here on the captured
frames), and from ``check_round_trip`` the body-size (scale) error and the origin error
against the truth body box.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mousefacelift.config import load_typed, load_yaml  # noqa: E402
from mousefacelift.imaging import threshold_mask  # noqa: E402
from synth.real.calibration import load_calibration  # noqa: E402
from synth.real.fake_capture import FakeCaptureConfig, check_round_trip, make_fake_capture  # noqa: E402
from synth.real.frames import FrameSource, rgb  # noqa: E402
from mousefacelift.shards import read_manifest  # noqa: E402
from synth.real.body_prior import prepare_keypoints  # noqa: E402
from synth.real.ingest import ingest, resolve_inputs  # noqa: E402
from synth.real.keypoints import load_keypoints_config  # noqa: E402
from synth.real.masks import MaskConfig, MaskProvider  # noqa: E402

ALBINO = {"floor": "bedding", "greyscale": True, "fur_color": (0.92, 0.9, 0.88), "skin_color": (0.95, 0.7, 0.7)}
BEFORE = {"background": "median", "grabcut": False, "relative_threshold": 0.0}


def modes(cal) -> dict[str, dict]:
    """name -> (fake capture overrides, ingest extras)."""
    names = [c.name for c in cal.cameras]
    return {
        "walk": {"capture": {}, "extra": [("after,rel_thr=0", {"relative_threshold": 0.0})]},
        "rest_albino": {"capture": {"rest": True, **ALBINO}, "background_row": True},
        "rest_black_checker": {"capture": {"rest": True}, "background_row": True, "keypoint_row": True},
        "reflection": {"capture": {"reflection": 0.35}, "extra": [("after,rel_thr=0", {"relative_threshold": 0.0})]},
        "copied_calibration": {"capture": {"copy_calibration": (names[1], names[2])},
                               "extra": [("after,rel_thr=0", {"relative_threshold": 0.0})], "keypoint_row": True},
        "world_arbitrary_json": {"capture": {"world_frame": "arbitrary"}},
        "anipose_toml": {"capture": {"calibration_format": "anipose"}},
        "anipose_toml_world_arbitrary": {"capture": {"calibration_format": "anipose", "world_frame": "arbitrary"},
                                         "keypoint_row": True},
    }


def mask_iou(cap: Path, names: list[str], mcfg: MaskConfig, background: list[Path] | None,
             seeds=None, prior=None) -> tuple[float, float]:
    src = [FrameSource(cap / "frames" / n) for n in names]
    truth = [FrameSource(cap / "masks" / n) for n in names]
    mp = MaskProvider(src, None, mcfg, backgrounds=[FrameSource(p) for p in background] if background else None,
                      seeds=seeds, prior=prior)
    ious = []
    for f in range(min(len(s) for s in src)):
        for m, tr in zip(mp.frame_set(f, [rgb(s[f]) for s in src]), truth):     # as the ingest does
            t = threshold_mask(tr[f], 127)
            ious.append((m & t).sum() / max((m | t).sum(), 1))
    return float(np.mean(ious)), float(np.min(ious))


def run_mode(name: str, spec: dict, calib: Path, work: Path, downscale: int, frames: int) -> list[dict]:
    cap = work / name
    cfg = replace(load_typed(FakeCaptureConfig, "real", "fake_capture"), frames=frames, downscale=downscale,
                  renderer="raster", keypoints=True, keypoint_noise_mm=1.0, **spec["capture"])
    truth = make_fake_capture(cap, load_calibration(calib), cfg)
    cal_file = cap / truth["calibration_file"]
    cal = load_calibration(cal_file, units="mm")
    names = [c.name for c in cal.cameras]
    variants = [("before", BEFORE, None, False), ("after", {}, None, False),
                *((n, m, None, False) for n, m in spec.get("extra", []))]
    if spec.get("background_row"):
        variants.append(("after+--background", {}, resolve_inputs([str(cap / "background")], names, "background"), False))
    if spec.get("keypoint_row"):
        variants.append(("after+--keypoints", {}, None, True))
    rows = []
    for label, masks, bg, kp in variants:
        overrides = ["normalize.size=64", "splits.train=[0,1]", "splits.val=[1,1]", "splits.test=[1,1]",
                     *(f"masks.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in masks.items())]
        icfg, where = load_yaml("real", "ingest", overrides)
        out = work / f"{name}-{label.replace('+--', '-').replace(',', '-').replace('=', '')}"
        t0 = time.perf_counter()
        rep = ingest(cal, resolve_inputs([str(cap / "frames")], names, "frames"), out, icfg, None, where, bg,
                     keypoints=cap / "pose-3d.csv" if kp else None)
        secs = time.perf_counter() - t0
        written = sum(r["written"] for r in rep.values())
        selected = sum(r["frames"] for r in rep.values())
        notes = read_manifest(out / "train")["notes"] if (out / "train" / "manifest.json").exists() else []
        dropped: dict[str, int] = {}
        for n in notes:
            if n["kind"] == "camera_dropped":
                dropped[n["camera"]] = dropped.get(n["camera"], 0) + 1
        bad = [k for k, n in dropped.items() if 2 * n > max(written, 1)]
        seeds = prior = None
        if kp:
            kin = prepare_keypoints(cap / "pose-3d.csv", cal, list(range(frames)), load_keypoints_config())
            cams = cal.cameras_mm()
            seeds = lambda i, f: kin.seeds(f, cams[i])   # noqa: E731
            prior = lambda i, f: kin.prior.silhouette(f, i) if kin.prior.has(f) else None   # noqa: E731
        iou_mean, iou_min = mask_iou(cap, names, typed_masks(icfg, where), bg, seeds, prior)
        row = {"mode": name, "variant": label, "written": written, "selected": selected, "bad_camera": bad,
               "mask_iou_mean": iou_mean, "mask_iou_min": iou_min, "scale_err_pct": None, "origin_err_mm": None,
               "ingest_s": secs}
        if written:
            s = check_round_trip(cap, [out / "train"])["summary"]
            row["scale_err_pct"], row["origin_err_mm"] = s["scale_err_pct_mean"], s["origin_err_mm_mean"]
        rows.append(row)
        print(fmt(row), flush=True)
    return rows


def typed_masks(icfg: dict, where: str) -> MaskConfig:
    from mousefacelift.config import typed

    return typed(MaskConfig, icfg["masks"], f"{where} masks")


HEADER = (f"{'mode':30s} {'variant':20s} {'written':>9s} {'bad camera':>12s} {'mask IoU mean/min':>18s} "
          f"{'body size err %':>15s} {'origin err mm':>13s}")


def fmt(r: dict) -> str:
    size = "-" if r["scale_err_pct"] is None else f"{r['scale_err_pct']:+.1f}"
    origin = "-" if r["origin_err_mm"] is None else f"{r['origin_err_mm']:.1f}"
    bad = ",".join(r["bad_camera"]) or "no"
    return (f"{r['mode']:30s} {r['variant']:20s} {r['written']:>4d}/{r['selected']:<4d} {bad:>12s} "
            f"{r['mask_iou_mean']:>9.3f}/{r['mask_iou_min']:.3f} {size:>15s} {origin:>13s}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calib", required=True, help="rig calibration of the fake recordings (e.g. DANNCE label3d_dannce.mat)")
    ap.add_argument("--downscale", type=int, default=4)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--modes", nargs="*", default=None, help="subset of the modes (default: all)")
    ap.add_argument("--work", default=None, help="keep the recordings and shards here (default: a temporary folder)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    all_modes = modes(load_calibration(args.calib))
    chosen = args.modes or list(all_modes)
    unknown = sorted(set(chosen) - set(all_modes))
    if unknown:
        ap.error(f"unknown modes {unknown}; known: {list(all_modes)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        print(HEADER)
        for name in chosen:
            run_mode(name, all_modes[name], Path(args.calib), work, args.downscale, args.frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
