"""Real-ingest failure modes, before and after: fake recordings with known truth, ingested
with the former mask defaults and with the current ones.

    python benchmarks/real_failure_modes.py --calib label3d_dannce.mat [--downscale 4] [--frames 6] \
        [--modes walk rest_albino ...] [--work DIR]

Each mode is a ``synth.fake_capture`` recording (raster renderer) of one failure seen on real
data. Each is ingested twice: ``before`` = per-pixel median background, no graph cut, no
relative threshold (the former defaults); ``after`` = configs/real/ingest.yaml as it is; some
modes add a row with the empty-arena shot (``--background``) or without the relative
threshold (``rel_thr=0``: the tail/reflection trade-off). Printed per row: frame sets
written of those selected, the camera named as disagreeing in most frame sets (from the
split's cameras_dropped.json), the mean and minimum IoU of the masks against the true
silhouettes (all cameras and frames; what ingest computes, recomputed here on the captured
frames), and from ``check_round_trip`` the body-size (scale) error and the origin error
against the truth body box.
"""
from __future__ import annotations

import argparse
import json
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
from synth.real.ingest import CAMERAS_DROPPED_NAME, ingest, resolve_inputs  # noqa: E402
from synth.real.masks import MaskConfig, MaskProvider  # noqa: E402

ALBINO = {"floor": "bedding", "greyscale": True, "fur_color": (0.92, 0.9, 0.88), "skin_color": (0.95, 0.7, 0.7)}
BEFORE = {"background": "median", "grabcut": False, "relative_threshold": 0.0}


def modes(cal) -> dict[str, dict]:
    """name -> (fake capture overrides, ingest extras)."""
    names = [c.name for c in cal.cameras]
    return {
        "walk": {"capture": {}, "extra": [("after,rel_thr=0", {"relative_threshold": 0.0})]},
        "rest_albino": {"capture": {"rest": True, **ALBINO}, "background_row": True},
        "rest_black_checker": {"capture": {"rest": True}, "background_row": True},
        "reflection": {"capture": {"reflection": 0.35}, "extra": [("after,rel_thr=0", {"relative_threshold": 0.0})]},
        "copied_calibration": {"capture": {"copy_calibration": (names[1], names[2])},
                               "extra": [("after,rel_thr=0", {"relative_threshold": 0.0})]},
        "world_arbitrary_json": {"capture": {"world_frame": "arbitrary"}},
        "anipose_toml": {"capture": {"calibration_format": "anipose"}},
        "anipose_toml_world_arbitrary": {"capture": {"calibration_format": "anipose", "world_frame": "arbitrary"}},
    }


def mask_iou(cap: Path, names: list[str], mcfg: MaskConfig, background: list[Path] | None) -> tuple[float, float]:
    src = [FrameSource(cap / "frames" / n) for n in names]
    truth = [FrameSource(cap / "masks" / n) for n in names]
    mp = MaskProvider(src, None, mcfg, backgrounds=[FrameSource(p) for p in background] if background else None)
    ious = []
    for i in range(len(src)):
        for f in range(len(src[i])):
            m, t = mp(i, f, rgb(src[i][f])), threshold_mask(truth[i][f], 127)
            ious.append((m & t).sum() / max((m | t).sum(), 1))
    return float(np.mean(ious)), float(np.min(ious))


def run_mode(name: str, spec: dict, calib: Path, work: Path, downscale: int, frames: int) -> list[dict]:
    cap = work / name
    cfg = replace(load_typed(FakeCaptureConfig, "real", "fake_capture"), frames=frames, downscale=downscale,
                  renderer="raster", **spec["capture"])
    truth = make_fake_capture(cap, load_calibration(calib), cfg)
    cal_file = cap / truth["calibration_file"]
    cal = load_calibration(cal_file, units="mm")
    names = [c.name for c in cal.cameras]
    variants = [("before", BEFORE, None), ("after", {}, None), *((n, m, None) for n, m in spec.get("extra", []))]
    if spec.get("background_row"):
        variants.append(("after+--background", {}, resolve_inputs([str(cap / "background")], names, "background")))
    rows = []
    for label, masks, bg in variants:
        overrides = ["normalize.size=64", "splits.train=[0,1]", "splits.val=[1,1]", "splits.test=[1,1]",
                     *(f"masks.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in masks.items())]
        icfg, where = load_yaml("real", "ingest", overrides)
        out = work / f"{name}-{label.replace('+--', '-').replace(',', '-').replace('=', '')}"
        t0 = time.perf_counter()
        rep = ingest(cal, resolve_inputs([str(cap / "frames")], names, "frames"), out, icfg, None, where, bg)
        secs = time.perf_counter() - t0
        written = sum(r["written"] for r in rep.values())
        selected = sum(r["frames"] for r in rep.values())
        dropped = json.loads((out / "train" / CAMERAS_DROPPED_NAME).read_text()) if (
            out / "train" / CAMERAS_DROPPED_NAME).exists() else {"cameras": {}, "frame_sets": 0}
        bad = [k for k, n in dropped["cameras"].items() if 2 * n > max(dropped["frame_sets"], 1)]
        iou_mean, iou_min = mask_iou(cap, names, typed_masks(icfg, where), bg)
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
