"""`python -m synth.export --format facelift`: shards <-> FaceLift's (GS-LRM) directory layout.

Export (so the original FaceLift code can train on this data)::

    python -m synth.export --format facelift DIR OUT [--size 512] [--samples N]

writes, per sample, ``OUT/{key}/images/cam_{i:03d}.png`` (RGBA, straight alpha, resized to
``size`` x ``size``) and ``OUT/{key}/opencv_cameras.json``::

    {"scene_name": key, "frames": [{"w", "h", "fx", "fy", "cx", "cy",
      "w2c": 4x4 OpenCV world-to-camera, "file_path": "images/cam_000.png"}, ...],
     "mfl_meta": the sample's meta.json minus views (so an import restores it)}

and the sample's arrays as ``OUT/{key}/{name}.npy`` (pose, joints; FaceLift ignores them)

plus ``OUT/data_list.txt`` (one absolute sample folder per line: FaceLift's dataset_path
file). Intrinsics are rescaled with exactly the image (``Camera.resized``). FaceLift has no
depth or normal channels; they are not exported.

Import (FaceLift folders -> shards, e.g. data prepared for FaceLift elsewhere)::

    python -m synth.export --format facelift --import FACELIFT_DIR OUT_SHARD_DIR --source real
        [--mm-per-unit X] [--samples-per-shard 64] [--prefix P]

Every write is atomic (a sample folder is built under a temporary name and renamed; shards
go through mousefacelift.shards.ShardWriter).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from mousefacelift.cameras import Camera
from mousefacelift.facelift_views import (CAMERAS_JSON, IMAGE_DIR, frame_record, image_name, inside_folder,
                                          read_views)
from mousefacelift.shards import (MultiViewSample, SCHEMA, SOURCES, SampleError, ShardError, ShardWriter,
                                  atomic_write_bytes, check_writable_dir)
from mousefacelift.shards.atomic import atomic_dir
from mousefacelift.viz import resize_rgba
from synth.tools.inspect import iter_samples

log = logging.getLogger("synth.export")

DATA_LIST = "data_list.txt"
DEFAULT_SIZE = 512            # FaceLift / GS-LRM training resolution
RESAMPLE = "lanczos"          # what FaceLift's own loader uses when it resizes


# -- export ----------------------------------------------------------------------------------
def facelift_frames(cameras: list[Camera]) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(cameras):
        if c.dist is not None:
            raise ValueError(f"view {i} ({c.name}) has lens distortion; FaceLift expects undistorted pinhole "
                             "images (undistort at ingest)")
        out.append(frame_record(c, image_name(i)))
    return out


def export_sample(sample: MultiViewSample, out_dir: Path, size: int | None = DEFAULT_SIZE) -> Path:
    """Write one sample as a FaceLift folder ``out_dir/{key}``; returns it."""
    H, W = sample.rgba.shape[1:3]
    if size is not None and H != W:
        raise ValueError(f"{sample.key}: images are {W}x{H}; FaceLift needs square images (use --size none "
                         "to keep them as they are, or crop at ingest)")
    target = out_dir / sample.key
    with atomic_dir(target) as tmp:
        (tmp / IMAGE_DIR).mkdir()
        cams = []
        for i, cam in enumerate(sample.cameras):
            rgba = sample.rgba[i]
            if size is not None and (size, size) != (W, H):
                rgba = resize_rgba(rgba, (size, size), RESAMPLE)
                cam = cam.resized(size, size)
            Image.fromarray(rgba, mode="RGBA").save(tmp / image_name(i), format="PNG")
            cams.append(cam)
        meta = {k: v for k, v in sample.meta.items() if k != "views"}
        doc = {"scene_name": sample.key, "frames": facelift_frames(cams), "mfl_meta": meta}
        (tmp / CAMERAS_JSON).write_text(json.dumps(doc, indent=1))
        for name, arr in sample.arrays.items():      # pose.npy, joints.npy: FaceLift ignores them
            np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
    return target


def export_facelift(shards: str | Path, out_dir: str | Path, size: int | None = DEFAULT_SIZE,
                    samples: int | None = None, progress: bool = True) -> list[Path]:
    """Export a shard folder (or one shard) to FaceLift's layout; returns the sample folders."""
    out = check_writable_dir(out_dir)
    done: list[Path] = []
    bar = tqdm(desc="export", unit="sample", total=samples, disable=not progress)
    for shard, fields in iter_samples(shards):
        if samples is not None and len(done) >= samples:
            break
        sample = MultiViewSample.decode(fields, where=shard)
        done.append(export_sample(sample, out, size).resolve())
        bar.update(1)
    bar.close()
    if not done:
        raise ShardError(f"{shards}: no samples to export")
    atomic_write_bytes(out / DATA_LIST, ("\n".join(str(p) for p in done) + "\n").encode())
    log.info("exported %d samples to %s (list: %s)", len(done), out, out / DATA_LIST)
    return done


# -- import ----------------------------------------------------------------------------------
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]")


def sample_dirs(root: str | Path) -> list[Path]:
    """FaceLift sample folders: those named in ``data_list.txt`` when present, else every
    sub-folder holding an opencv_cameras.json (sorted), or the folder itself."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if (root / CAMERAS_JSON).is_file():
        return [root]
    lst = root / DATA_LIST
    if lst.is_file():
        dirs = []
        for n, line in enumerate(lst.read_text().splitlines(), 1):
            if line.strip():
                p = Path(line.strip())
                p = p if p.is_absolute() else root / p
                if not (p / CAMERAS_JSON).is_file():
                    # lists written on another machine: fall back to the folder name beside the list
                    alt = root / p.name
                    if not (alt / CAMERAS_JSON).is_file():
                        raise FileNotFoundError(f"{lst}:{n}: {p} has no {CAMERAS_JSON}")
                    p = alt
                dirs.append(p)
        return dirs
    dirs = sorted(p for p in root.iterdir() if (p / CAMERAS_JSON).is_file())
    if not dirs:
        raise FileNotFoundError(f"{root}: no {DATA_LIST} and no sub-folder with {CAMERAS_JSON}")
    return dirs


def check_import_paths(dirs: list[Path]) -> None:
    """Every frame's file_path of every folder, before anything is written."""
    for d in dirs:
        path = d / CAMERAS_JSON
        try:
            frames = json.loads(path.read_text())["frames"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue          # read_facelift_sample names that problem in its place
        for i, f in enumerate(frames if isinstance(frames, list) else []):
            if isinstance(f, dict) and "file_path" in f:
                inside_folder(d, f["file_path"], f"{path} frames[{i}]")


def read_facelift_sample(folder: Path, source: str | None = None, mm_per_unit: float | None = None) -> MultiViewSample:
    """One FaceLift folder -> MultiViewSample (no depth). ``source``/``mm_per_unit`` override or
    supply what the folder's ``mfl_meta`` (present when we exported it) does not say."""
    doc, rgba, cams = read_views(folder)
    path = folder / CAMERAS_JSON
    meta = dict(doc.get("mfl_meta") or {})
    meta["schema"] = SCHEMA
    if source:
        meta["source"] = source
    if mm_per_unit:
        meta["mm_per_unit"] = float(mm_per_unit)
    if meta.get("source") not in SOURCES:
        raise SampleError(f"{path}: source unknown; pass --source ({'/'.join(SOURCES)})")
    if not meta.get("mm_per_unit"):
        raise SampleError(f"{path}: mm_per_unit unknown; pass --mm-per-unit (millimetres per world unit)")
    meta.setdefault("imported_from", str(folder))
    arrays = {}
    for f in sorted(folder.glob("*.npy")):
        inside_folder(folder, f.name, str(folder), "array file")     # a symlink leading out is refused too
        try:
            arrays[f.stem] = np.load(f, allow_pickle=False)
        except ValueError as e:
            raise SampleError(f"{f}: not a plain numeric .npy ({e})") from None
    key = str(doc.get("scene_name") or folder.name)
    key = _KEY_BAD.sub("_", key)
    return MultiViewSample(key=key, meta=meta, rgba=rgba, cameras=cams, arrays=arrays).validate()


def import_facelift(root: str | Path, out_dir: str | Path, source: str | None = None, mm_per_unit: float | None = None,
                    samples_per_shard: int = 64, prefix: str | None = None, progress: bool = True) -> int:
    """FaceLift folders -> shards + manifest in ``out_dir``; returns the number of samples."""
    dirs = sample_dirs(root)
    check_import_paths(dirs)
    out = check_writable_dir(out_dir)
    first = read_facelift_sample(dirs[0], source, mm_per_unit)
    src = first.meta["source"]
    if src in ("mouse", "object"):
        log.warning("FaceLift folders carry no depth: these %s samples will hold RGBA and cameras only "
                    "(synth.verify expects depth for rendered sources; import as --source real to mark them "
                    "depth-free)", src)
    prefix = prefix or src
    header = {"source": src, "prefix": prefix, "samples_per_shard": samples_per_shard, "seed": None,
              "config": {"imported_from": str(Path(root).resolve()), "format": "facelift"},
              "config_hash": hashlib.sha256("\n".join(d.name for d in dirs).encode()).hexdigest()[:16],
              "generator": "synth.export --import"}
    n = 0
    bar = tqdm(desc="import", unit="sample", total=len(dirs), disable=not progress)
    for k in range(0, len(dirs), samples_per_shard):
        with ShardWriter(out, k // samples_per_shard, prefix=prefix, header=header) as w:
            for d in dirs[k:k + samples_per_shard]:
                s = first if d == dirs[0] else read_facelift_sample(d, source, mm_per_unit)
                if s.meta["source"] != src:
                    raise SampleError(f"{d}: source {s.meta['source']!r} differs from the set's {src!r}")
                w.write(s.encode())
                n += 1
                bar.update(1)
    bar.close()
    log.info("imported %d samples into %s", n, out)
    return n


# -- CLI -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synth.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=["facelift"], default="facelift", help="target layout")
    p.add_argument("--import", dest="do_import", action="store_true",
                   help="the reverse: read FaceLift folders (SRC) and write shards (DST)")
    p.add_argument("src", type=Path, help="shard folder or shard (export) / FaceLift folder (import)")
    p.add_argument("dst", type=Path, help="output folder")
    p.add_argument("--size", default=str(DEFAULT_SIZE), help="export: square image size, or 'none' to keep")
    p.add_argument("--samples", type=int, default=None, help="export: at most N samples")
    p.add_argument("--source", choices=list(SOURCES), default=None, help="import: source of the samples")
    p.add_argument("--mm-per-unit", type=float, default=None, help="import: millimetres per world unit")
    p.add_argument("--samples-per-shard", type=int, default=64, help="import: samples per shard")
    p.add_argument("--prefix", default=None, help="import: shard name prefix (default: the source)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    try:
        if args.do_import:
            n = import_facelift(args.src, args.dst, args.source, args.mm_per_unit, args.samples_per_shard,
                                args.prefix, progress=not args.quiet)
            print(f"imported {n} samples into {args.dst}")
        else:
            size = None if str(args.size).lower() == "none" else int(args.size)
            if size is not None and size <= 0:
                raise ValueError(f"--size must be positive or 'none', got {size}")
            done = export_facelift(args.src, args.dst, size, args.samples, progress=not args.quiet)
            print(f"exported {len(done)} samples to {args.dst} ({DATA_LIST} lists them)")
        return 0
    except (ShardError, SampleError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
