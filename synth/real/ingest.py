"""`python -m synth.ingest_real`: a calibrated multi-camera recording -> ``source=real`` shards.

    python -m synth.ingest_real --calib label3d_dannce.mat --videos cam1.mp4 ... cam6.mp4 --out shards/real
    python -m synth.ingest_real --calib cams.yaml --frames rec/frames --masks rec/masks --out shards/real \
        normalize.size=512 frames.step=5

``--calib`` reads DANNCE ``.mat``, OpenCV ``.json``/``.yaml`` and anipose / sleap-anipose
``calibration.toml`` (which states no length unit: give ``--units``).
``--videos``/``--frames``/``--masks`` take one path per camera in calibration order, or a
single folder holding one entry per camera named after it (``Camera1/``, ``Camera1.mp4``; or,
as anipose names them, ending in ``-NAME``/``camNAME``: ``rec1-camA.mp4`` for camera ``A``).
Without ``--masks`` the mouse is found by background subtraction (synth/real/masks.py) against
an empty-arena shot per camera when ``--background`` gives one (an image, a video or an image
folder per camera, resolved like ``--videos``), else against a background estimated from the
recording (``masks.background``: a resting mouse is not absorbed), refined by a graph cut;
or by the user's own model (``masks.model``).

Output: ``OUT/{train,val,test}/real-{k:06d}.tar`` + manifest.json per split (mousefacelift.shards:
atomic, resumable — shards already complete with the same config are not redone). Frame
sets that cannot be normalised (no mouse, masks that disagree, a hull implausible for a mouse)
are skipped with the reason in the manifest. A camera that disagrees with the others is left
out of that frame set and named (log, printed summary, ``meta.normalization.cameras_dropped``,
and the split's manifest.json ``notes``: kind ``camera_dropped``); one that disagrees in most frame
sets is reported once more at the end. Exits non-zero when
nothing was written. See synth/real/normalize.py for the normalisation and the checks.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from mousefacelift.config import config_hash, load_yaml, typed
from mousefacelift.shards import (ShardError, ShardWriter, check_writable_dir, complete_shards, read_manifest,
                                  rebuild_manifest, shard_sha256)
from synth.real.body_prior import KeypointInputs, add_body_depth, prepare_keypoints
from synth.real.calibration import Calibration, load_calibration
from synth.real.frames import FrameSource, rgb
from synth.real.masks import MaskConfig, MaskModelError, MaskProvider, SeedFn
from synth.real.keypoints import keypoint_mask_agreement, load_keypoints_config, project_seeds
from synth.real.normalize import NormalizeConfig, build_real_sample, normalize_frame_set

log = logging.getLogger("synth.ingest_real")
GENERATOR = {"name": "synth.ingest_real", "version": 1}


@dataclass(frozen=True)
class FrameRange:
    """Which frames of the recording become samples: ``start``, ``stop`` (null = the end), ``step``."""

    start: int
    stop: int | None
    step: int


@dataclass(frozen=True)
class RunConfig:
    """How the ingest is run (not part of the config hash)."""

    out: str


@dataclass(frozen=True)
class IngestConfig:
    """configs/real/ingest.yaml, typed (values and their meaning are documented there)."""

    units: str | None
    prefix: str
    samples_per_shard: int
    frames: FrameRange
    splits: dict[str, tuple[float, float]]
    split_gap_frames: int
    normalize: NormalizeConfig
    masks: MaskConfig
    run: RunConfig


def resolve_inputs(spec: Sequence[str] | None, cameras: Sequence[str], what: str) -> list[Path] | None:
    """One path per camera: a list in calibration order, or one folder with an entry per camera name."""
    if not spec:
        return None
    paths = [Path(s) for s in spec]
    if len(paths) == len(cameras):
        return paths
    if len(paths) == 1 and paths[0].is_dir():
        entries = {e.stem if e.is_file() else e.name: e for e in paths[0].iterdir()}
        found = {c: entries[c] for c in cameras if c in entries}
        for c in cameras:
            if c in found:
                continue
            # anipose names videos after the session with the camera last ("rec1-camA.mp4" for camera "A")
            tail = re.compile(r"(?:^|[^0-9A-Za-z]|cam)" + re.escape(c) + r"$", re.IGNORECASE)
            hits = [k for k in entries if tail.search(k) and entries[k] not in found.values()]
            if len(hits) > 1:
                raise ValueError(f"--{what} {paths[0]}: camera {c!r} matches several entries {sorted(hits)}; "
                                 "keep one entry per camera")
            if hits:
                found[c] = entries[hits[0]]
        missing = [c for c in cameras if c not in found]
        if not missing:
            return [found[c] for c in cameras]
        raise ValueError(f"--{what} {paths[0]}: no entry for cameras {missing} (have {sorted(entries)}); expected one "
                         "sub-folder or file per camera, named as in the calibration (or ending in '-NAME'/'camNAME')")
    raise ValueError(f"--{what}: got {len(paths)} paths for {len(cameras)} cameras ({list(cameras)}); give one per camera "
                     "in calibration order, or one folder with an entry per camera")


def split_frames(frames: Sequence[int], splits: Mapping[str, Sequence[float]], gap: int) -> dict[str, list[int]]:
    """Temporal split of the selected frames by fractions of their range; drops frames within
    ``gap`` selected frames of a boundary."""
    n = len(frames)
    out: dict[str, list[int]] = {}
    for name, (lo, hi) in splits.items():
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"splits.{name}: expected 0 <= from <= to <= 1, got [{lo}, {hi}]")
        a, b = int(round(lo * n)), int(round(hi * n))
        if a > 0:
            a += gap
        if b < n:
            b -= gap
        out[name] = list(frames[a:max(a, b)])
    seen: dict[int, str] = {}
    for name, fr in out.items():
        for f in fr:
            if f in seen:
                raise ValueError(f"splits {seen[f]!r} and {name!r} overlap (frame {f})")
            seen[f] = name
    return out


def ingest(calibration: Calibration, frame_paths: list[Path], out_dir: str | Path, cfg: Mapping[str, Any],
           mask_paths: list[Path] | None = None, where: str = "ingest config",
           background_paths: list[Path] | None = None, seeds: SeedFn | None = None,
           keypoints: str | Path | None = None, keypoint_overrides: Sequence[str] = ()) -> dict:
    """Ingest a recording with ``cfg`` (the plain ingest config, whose hash identifies the data;
    ``where`` names it in errors); returns {split: {"written": n, "skipped": n, "shards": n}}.
    ``background_paths``: an empty-arena shot per camera; ``seeds(cam_index, frame_index)``:
    projected keypoints [J,2] (pixels) or None, see :class:`synth.real.masks.MaskProvider`;
    ``keypoints``: a 3D keypoint file of the recording (configs/real/keypoints.yaml with
    ``keypoint_overrides``): up direction, mask seeds, per-camera agreement, body-fit depth."""
    ic = typed(IngestConfig, cfg, where)
    norm_cfg = ic.normalize
    cams = calibration.cameras_mm()
    if len(frame_paths) != len(cams):
        raise ValueError(f"{len(frame_paths)} frame sources for {len(cams)} calibrated cameras")
    sources = [FrameSource(p) for p in frame_paths]
    given = [FrameSource(p) for p in mask_paths] if mask_paths else None
    n = min(len(s) for s in sources + (given or []))
    if len({len(s) for s in sources}) > 1:
        log.warning("cameras have different frame counts %s; using the first %d", [len(s) for s in sources], n)
    fr = ic.frames
    stop = n if fr.stop is None else min(fr.stop, n)
    selected = list(range(fr.start, stop, fr.step))
    if not selected:
        raise ValueError(f"no frames selected: frames.start={fr.start} stop={stop} step={fr.step} "
                         f"of a {n}-frame recording")
    splits = split_frames(selected, ic.splits, ic.split_gap_frames)
    kin = None
    hashed = {k: v for k, v in cfg.items() if k != "run"}
    if keypoints is not None:
        kcfg = load_keypoints_config(overrides=list(keypoint_overrides))
        kin = prepare_keypoints(keypoints, calibration, selected, kcfg)
        log.info("keypoints %s: up %s from the %s", keypoints, np.round(kin.up, 4).tolist(), kin.up_info["source"])
        calibration = replace(calibration, up=kin.up)
        if seeds is None:
            seeds = lambda i, f: kin.seeds(f, cams[i])   # noqa: E731
        # the keypoints change the data (up, masks, depth): they are part of its identity
        hashed["keypoints"] = {"file": Path(keypoints).name, "sha256": shard_sha256(keypoints), "config": asdict(kcfg)}
    backgrounds = [FrameSource(p) for p in background_paths] if background_paths else None
    prior = None
    if kin is not None:
        prior = lambda i, f: kin.prior.silhouette(f, i) if kin.prior.has(f) else None   # noqa: E731
    masks = MaskProvider(sources, given, ic.masks, backgrounds=backgrounds, seeds=seeds, prior=prior)
    chash = config_hash(hashed)
    S = ic.samples_per_shard
    prefix = ic.prefix
    header = {"source": "real", "prefix": prefix, "samples_per_shard": S, "seed": 0, "config": hashed,
              "config_hash": chash, "generator": GENERATOR}
    report = {}
    for split, frames in splits.items():
        out = check_writable_dir(Path(out_dir) / split)
        done = complete_shards(out, prefix=prefix, config_hash=chash)
        split_header = {**header, "split": split}
        if done and not _manifest_lists(out, done):
            # a run stopped between a shard and its manifest update, or manifest.json was deleted
            log.info("%s: manifest.json does not list every complete shard; rebuilding it from the sidecars", out)
            rebuild_manifest(out, split_header, prefix=prefix, config_hash=chash)
        n_shards = (len(frames) + S - 1) // S
        written = skipped = 0
        reasons: list[str] = []
        cams_dropped: dict[str, int] = {}
        for k in tqdm(range(n_shards), desc=f"ingest {split}", unit="shard", disable=n_shards < 2):
            if k in done:
                log.info("%s shard %d already complete, skipped (resume)", split, k)
                continue
            with ShardWriter(out, k, prefix=prefix, header=split_header) as w:
                for f in frames[k * S:(k + 1) * S]:
                    try:
                        sample = _frame_sample(f, split, sources, masks, cams, calibration, norm_cfg, chash, kin)
                    except ValueError as e:
                        w.skip(f, str(e))
                        skipped += 1
                        reasons.append(f"frame {f}: {e}")
                        log.warning("frame %d skipped: %s", f, e)
                        continue
                    for name, d in sample.meta["normalization"]["cameras_dropped"].items():
                        cams_dropped[name] = cams_dropped.get(name, 0) + 1
                        w.note(f, "camera_dropped", camera=name, score=d["score"])
                        log.warning("frame %d: camera %s dropped, it disagrees with the others (score %s)", f, name,
                                    d["score"])
                    w.write(sample.encode())
                    written += 1
        held = sum(r.samples for k, r in complete_shards(out, prefix=prefix, config_hash=chash).items() if k < n_shards)
        report[split] = {"frames": len(frames), "written": written, "skipped": skipped, "shards": n_shards,
                         "samples": held, "first_skip": reasons[0] if reasons else None,
                         "cameras_dropped": cams_dropped}
        log.info("%s: %d frames -> %d samples written, %d skipped, %d shards in %s", split, len(frames), written,
                 skipped, n_shards, out)
    for line in persistent_bad_cameras(report):
        log.error("%s", line)
    return report


def persistent_bad_cameras(report: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per camera that was dropped as disagreeing in most of the frame sets processed
    by this run: that is a calibration (or camera) fault, not a bad frame."""
    total = sum(r["written"] + r["skipped"] for r in report.values())
    counts: dict[str, int] = {}
    for r in report.values():
        for name, n in r["cameras_dropped"].items():
            counts[name] = counts.get(name, 0) + n
    return [f"camera {name} disagrees with the other cameras in {n} of {total} frame sets and was left out of them: "
            "its calibration is likely wrong (e.g. a copy of another camera's); fix it or drop the camera"
            for name, n in sorted(counts.items()) if total and 2 * n > total]


def _manifest_lists(out: Path, done: Mapping[int, Any]) -> bool:
    """Whether the folder's manifest.json exists and lists every complete shard in ``done``."""
    try:
        listed = {int(r["index"]) for r in read_manifest(out)["shards"]}
    except (ShardError, KeyError, TypeError, ValueError):
        return False
    return set(done) <= listed


def _frame_sample(f: int, split: str, sources, masks: MaskProvider, cams, calibration: Calibration,
                  norm_cfg: NormalizeConfig, chash: str, kin: KeypointInputs | None = None):
    frames = [rgb(s[f]) for s in sources]
    ms = masks.frame_set(f, frames)
    views, norm, diag = normalize_frame_set(frames, ms, cams, calibration.up, norm_cfg)
    meta = {"index": int(f), "frame": int(f), "split": split, "seed": 0, "generator": GENERATOR, "config_hash": chash,
            "calibration": calibration.path, "calibration_units": calibration.units,
            "mask_source": masks.source, "cameras": [c.name for c in cams]}
    bg = {c.name: b for c, b in zip(cams, masks.background_info) if b is not None}
    if bg:
        meta["mask_background"] = bg
    flags = {cams[i].name: msg for (i, k), msg in masks.flags.items() if k == f}
    if flags:
        meta["mask_flags"] = flags
    if kin is not None:
        meta["up"] = kin.up_info
        if kin.track.has(f):
            tol = kin.cfg.seeds.tolerance_px
            agree = {c.name: keypoint_mask_agreement(m, project_seeds(kin.track, f, c), tol) for c, m in zip(cams, ms)}
            meta["keypoint_agreement"] = {k: round(v, 4) for k, v in agree.items() if np.isfinite(v)}
    sample = build_real_sample(f"real_{f:09d}", views, norm, diag, meta)
    if kin is not None and kin.cfg.body_prior.depth:
        sample = add_body_depth(sample, kin.prior, f, norm, kin.cfg.body_prior.depth_min_alpha)
    return sample


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m synth.ingest_real", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--calib", required=True, help="label3d_dannce.mat, OpenCV cams.json / cams.yaml, or anipose calibration.toml")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", nargs="+", help="one video per camera (or one folder of them)")
    src.add_argument("--frames", nargs="+", help="one image folder per camera (or one folder of them)")
    ap.add_argument("--masks", nargs="+", help="given masks: one video/image folder per camera (or one folder of them)")
    ap.add_argument("--background", nargs="+", help="empty-arena shot per camera: an image, a video or an image folder "
                    "per camera (or one folder with an entry per camera); its median is the background")
    ap.add_argument("--keypoints", default=None, help="3D keypoints of the recording (sleap-anipose points3d.h5, anipose "
                    "pose-3d .csv, DANNCE save_data_AVG.mat / label3d_dannce.mat): up direction, mask seeds, per-camera "
                    "agreement, body-fit depth; settings in configs/real/keypoints.yaml, overridden as keypoints.KEY=VALUE")
    ap.add_argument("--out", default=None, help="output folder (split sub-folders are created); default run.out")
    ap.add_argument("--units", default=None, help="calibration units (mm|cm|m): asserted against the file; required for an "
                    "anipose calibration.toml that does not state them")
    ap.add_argument("--config", default="ingest", help="a name in configs/real/ or a YAML file (default: ingest)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides (normalize.size=512 frames.step=5 ...)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        kp_over = [o[len("keypoints."):] for o in args.overrides if o.startswith("keypoints.")]
        cfg, where = load_yaml("real", args.config, [o for o in args.overrides if not o.startswith("keypoints.")])
        ic = typed(IngestConfig, cfg, where)
        cal = load_calibration(args.calib, units=args.units or ic.units)
        names = [c.name for c in cal.cameras]
        frame_paths = resolve_inputs(args.videos or args.frames, names, "videos" if args.videos else "frames")
        mask_paths = resolve_inputs(args.masks, names, "masks")
        background_paths = resolve_inputs(args.background, names, "background")
        out = args.out or ic.run.out
        t0 = time.perf_counter()
        report = ingest(cal, frame_paths, out, cfg, mask_paths, where, background_paths, keypoints=args.keypoints,
                        keypoint_overrides=kp_over)
    except (ValueError, FileNotFoundError, ShardError, MaskModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, r in report.items():
        gone = ", ".join(f"{k} in {n}" for k, n in sorted(r["cameras_dropped"].items()))
        print(f"{split:6s} {r['frames']:6d} frames  {r['written']:6d} written  {r['skipped']:5d} skipped  "
              f"{r['shards']:4d} shards" + (f"  cameras dropped: {gone}" if gone else ""))
    for line in persistent_bad_cameras(report):
        print(f"WARNING: {line}", file=sys.stderr)
    if not sum(r["samples"] for r in report.values()):
        # an empty set is never what was asked for: every frame set was skipped (or none selected)
        first = next((r["first_skip"] for r in report.values() if r["first_skip"]), None)
        total = sum(r["frames"] for r in report.values())
        why = (f"all {total} selected frame sets were skipped" + (f" (first: {first})" if first else "")
               if total else "no frame falls into any split (check frames.* and splits.*)")
        print(f"error: no sample written to {out}: {why}; check the calibration, masks and frames", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - t0:.1f}s -> {out}")
    return 0
