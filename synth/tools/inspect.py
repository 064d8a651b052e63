"""`python -m synth.inspect`: look at shards — a contact sheet of one sample, or statistics of a set.

    python -m synth.inspect DIR_OR_SHARD [--key KEY] [--out sheet.png] [--views 0,4,8] [--tile 128]
    python -m synth.inspect DIR_OR_SHARD --stats [--samples N] [--json stats.json]

The contact sheet shows, for every view (columns, wrapped every ``--per-row`` views), four
rows: RGBA over a checkerboard (transparency visible), depth colour-mapped on one scale for
all views (near = red, far = blue, background black), camera-space normals, and the alpha
mask; each column is labelled with its view name, the title gives key, source, pose family,
coat, lighting and the depth scale.

``--stats`` summarises a shard set: pose families, coat families, lighting (HDRI names,
strengths), frame coverage (alpha fraction, bounding-box fill per view), depth ranges.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from mousefacelift import viz
from mousefacelift.shards import MultiViewSample, SampleError, ShardError, atomic_write_json, iter_shard, list_shards
from synth.mouse import meta as M
from synth.tools.tables import fmt, format_table

log = logging.getLogger("synth.inspect")

ROWS = ("rgba", "depth", "normal", "mask")


@dataclass
class SheetStyle:
    """Contact-sheet layout: tile size (px, views are resized to it), views per line, label column."""

    tile: int = 128
    per_row: int = 8
    row_label_width: int = 48


# -- finding samples -------------------------------------------------------------------------
def shard_paths(target: str | Path) -> list[Path]:
    """A shard file, or every finished shard of a folder (sorted)."""
    p = Path(target)
    if p.is_file():
        return [p]
    if p.is_dir():
        shards = list_shards(p)
        if not shards:
            raise ShardError(f"{p}: no shard files ({{prefix}}-NNNNNN.tar) in this folder")
        return shards
    raise ShardError(f"{p}: no such shard or folder")


def iter_samples(target: str | Path) -> Iterator[tuple[str, dict]]:
    for path in shard_paths(target):
        for fields in iter_shard(path):
            yield path.name, fields


def find_sample(target: str | Path, key: str | None = None) -> MultiViewSample:
    """Decode the sample ``key`` (or the first one) from a shard or folder."""
    seen = 0
    for shard, fields in iter_samples(target):
        seen += 1
        if key is None or fields.get("__key__") == key:
            return MultiViewSample.decode(fields, where=shard)
    if key is None:
        raise ShardError(f"{target}: the shards hold no samples")
    raise ShardError(f"{target}: no sample with key {key!r} among {seen} samples")


# -- contact sheet ---------------------------------------------------------------------------
def describe(meta: dict) -> dict[str, Any]:
    """The handful of generator facts a person wants next to a picture (None = not recorded)."""
    return {"source": meta.get("source"), "family": M.pose_family(meta), "coat": M.coat_family(meta),
            "hdri": M.environment(meta), "strength": M.light_strength(meta),
            "area_lights": M.area_light_count(meta), "mm_per_unit": meta.get("mm_per_unit")}


def _resize(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if img.shape[1] == size[0] and img.shape[0] == size[1]:
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def contact_sheet(sample: MultiViewSample, views: list[int] | None = None,
                  style: SheetStyle | None = None) -> np.ndarray:
    """uint8 RGB picture of one sample (module docstring). ``views`` picks a subset."""
    style = style or SheetStyle()
    views = list(range(sample.num_views)) if views is None else list(views)
    bad = [v for v in views if not 0 <= v < sample.num_views]
    if bad:
        raise ValueError(f"{sample.key}: view indices {bad} out of range 0..{sample.num_views - 1}")
    H, W = sample.rgba.shape[1:3]
    scale = style.tile / max(H, W)
    tw, th = max(1, round(W * scale)), max(1, round(H * scale))
    valid = sample.depth[views] > 0 if sample.depth is not None else None
    lo = hi = None
    if valid is not None and valid.any():
        dv = sample.depth[views][valid]
        lo, hi = float(dv.min()), float(dv.max())
    tiles, labels, row_labels = [], [], []
    for start in range(0, len(views), style.per_row):
        chunk = views[start:start + style.per_row]
        block = {r: [] for r in ROWS}
        for v in chunk:
            rgba = sample.rgba[v]
            block["rgba"].append(viz.composite_over_checkerboard(viz.resize_rgba(rgba, (tw, th))))
            if sample.depth is not None:
                block["depth"].append(_resize(viz.colorize_depth(sample.depth[v], lo, hi), (tw, th), nearest=True))
            else:
                block["depth"].append(None)
            if sample.normal is not None:
                block["normal"].append(_resize(viz.normals_to_rgb(sample.normal[v], rgba[..., 3] > 0), (tw, th),
                                               nearest=True))
            else:
                block["normal"].append(None)
            block["mask"].append(_resize(viz.mask_to_rgb(rgba[..., 3]), (tw, th)))
        for r in ROWS:
            tiles.append(block[r])
            labels.append([_short_name(sample.cameras[v].name, v) for v in chunk] if r == "rgba" else [""] * len(chunk))
            row_labels.append(r if (r != "depth" or sample.depth is not None) and
                              (r != "normal" or sample.normal is not None) else f"({r})")
    d = describe(sample.meta)
    facts = [f"{sample.key}", f"source {d['source']}", f"{sample.num_views} views {W}x{H}"]
    facts += [f"{k} {fmt(d[k])}" for k in ("family", "coat", "hdri", "strength") if d[k] is not None]
    if lo is not None:
        facts.append(f"depth {lo:.2f} (red) .. {hi:.2f} (blue) units")
    return viz.image_grid(tiles, row_labels=row_labels, col_labels=labels, title="  |  ".join(facts),
                          row_label_width=style.row_label_width)


def _short_name(name: str, v: int) -> str:
    """'003_sphere_az12.3_el4.5' -> '003 az12 el5' so labels fit a tile."""
    parts = name.split("_")
    az = next((p for p in parts if p.startswith("az")), None)
    el = next((p for p in parts if p.startswith("el")), None)
    if az and el:
        try:
            return f"{v:03d} az{float(az[2:]):.0f} el{float(el[2:]):.0f}"
        except ValueError:
            pass
    return name or f"{v:03d}"


def sheet_size(num_views: int, height: int, width: int, style: SheetStyle | None = None,
               grid: viz.GridStyle | None = None) -> tuple[int, int]:
    """(height, width) in pixels of the contact sheet of a sample (for callers and tests)."""
    style, grid = style or SheetStyle(), grid or viz.GridStyle()
    scale = style.tile / max(height, width)
    tw, th = max(1, round(width * scale)), max(1, round(height * scale))
    lines = -(-num_views // style.per_row)
    cols = min(num_views, style.per_row)
    rows = lines * len(ROWS)
    return (grid.title_height + rows * (th + grid.label_height + grid.pad) + grid.pad,
            style.row_label_width + cols * (tw + grid.pad) + grid.pad)


# -- statistics ------------------------------------------------------------------------------
def coverage(alpha: np.ndarray, threshold: int = 128) -> tuple[float, float]:
    """(share of the frame covered, share of the frame filled by the subject's bounding box)."""
    m = alpha >= threshold
    if not m.any():
        return 0.0, 0.0
    ys, xs = np.nonzero(m)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return float(m.mean()), float(box / m.size)


def _label(x) -> str:
    return "(not recorded)" if x is None else str(x)


def collect_stats(target: str | Path, samples: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Statistics of a shard set (module docstring); decodes at most ``samples`` samples."""
    families, coats, hdris, sources, sizes = Counter(), Counter(), Counter(), Counter(), Counter()
    strengths, alpha_frac, bbox_fill, near, far, views_n, empty_views = [], [], [], [], [], [], 0
    errors: list[str] = []
    n = 0
    bar = tqdm(desc="stats", unit="sample", total=samples, disable=not progress)
    for shard, fields in iter_samples(target):
        if samples is not None and n >= samples:
            break
        try:
            s = MultiViewSample.decode(fields, where=shard)
        except SampleError as e:
            errors.append(str(e))
            continue
        n += 1
        bar.update(1)
        d = describe(s.meta)
        sources[str(d["source"])] += 1
        families[_label(d["family"])] += 1
        coats[_label(d["coat"])] += 1
        hdris[_label(d["hdri"])] += 1
        if isinstance(d["strength"], (int, float)):
            strengths.append(float(d["strength"]))
        sizes[f"{s.rgba.shape[2]}x{s.rgba.shape[1]}"] += 1
        views_n.append(s.num_views)
        for v in range(s.num_views):
            a, b = coverage(s.rgba[v, ..., 3])
            alpha_frac.append(a)
            bbox_fill.append(b)
            empty_views += a == 0
            if s.depth is not None:
                dv = s.depth[v][s.depth[v] > 0]
                if dv.size:
                    near.append(float(dv.min()))
                    far.append(float(dv.max()))
    bar.close()

    def dist(x):
        if not x:
            return None
        a = np.asarray(x)
        return {"min": float(a.min()), "p05": float(np.percentile(a, 5)), "median": float(np.median(a)),
                "p95": float(np.percentile(a, 95)), "max": float(a.max())}

    return {"target": str(target), "samples": n, "decode_errors": errors, "sources": dict(sources),
            "image_sizes": dict(sizes), "views_per_sample": dist(views_n), "pose_families": dict(families),
            "coat_families": dict(coats), "hdri": dict(hdris), "light_strength": dist(strengths),
            "alpha_fraction": dist(alpha_frac), "bbox_fill": dist(bbox_fill), "empty_views": int(empty_views),
            "depth_near": dist(near), "depth_far": dist(far)}


def render_stats(st: dict[str, Any]) -> str:
    out = [f"{st['samples']} samples from {st['target']}  (sources: {st['sources']}, sizes: {st['image_sizes']})", ""]
    for title, key in (("pose family", "pose_families"), ("coat family", "coat_families"), ("HDRI", "hdri")):
        counts = st[key]
        total = max(sum(counts.values()), 1)
        rows = [[k, c, f"{100 * c / total:.1f}%"] for k, c in sorted(counts.items(), key=lambda kv: -kv[1])]
        out += [format_table([title, "samples", "share"], rows), ""]
    rows = []
    for label, key in (("views per sample", "views_per_sample"), ("light strength", "light_strength"),
                       ("alpha fraction per view", "alpha_fraction"), ("bbox fill per view", "bbox_fill"),
                       ("nearest depth per view", "depth_near"), ("farthest depth per view", "depth_far")):
        d = st[key]
        rows.append([label] + ([d["min"], d["p05"], d["median"], d["p95"], d["max"]] if d else [None] * 5))
    out.append(format_table(["figure", "min", "p05", "median", "p95", "max"], rows))
    if st["empty_views"]:
        out.append(f"warning: {st['empty_views']} views show no subject at all")
    for e in st["decode_errors"][:10]:
        out.append(f"decode error: {e}")
    return "\n".join(out)


# -- CLI -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synth.inspect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", type=Path, help="a shard .tar or a shard folder")
    p.add_argument("--key", default=None, help="sample key (default: the first sample)")
    p.add_argument("--out", type=Path, default=None, help="contact sheet PNG (default: KEY.sheet.png here)")
    p.add_argument("--views", default=None, help="comma-separated view indices (default: all)")
    p.add_argument("--tile", type=int, default=SheetStyle.tile, help="tile size in pixels")
    p.add_argument("--per-row", type=int, default=SheetStyle.per_row, help="views per line of the sheet")
    p.add_argument("--stats", action="store_true", help="summary statistics of the shard set instead of a sheet")
    p.add_argument("--samples", type=int, default=None, help="--stats: at most N samples")
    p.add_argument("--json", type=Path, default=None, help="--stats: also write the statistics as JSON")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    try:
        if args.stats:
            st = collect_stats(args.target, args.samples, progress=not args.quiet)
            print(render_stats(st))
            if args.json:
                atomic_write_json(args.json, st)
            return 0 if st["samples"] and not st["decode_errors"] else 1
        sample = find_sample(args.target, args.key)
        views = [int(v) for v in args.views.split(",")] if args.views else None
        sheet = contact_sheet(sample, views, SheetStyle(tile=args.tile, per_row=args.per_row))
        out = args.out or Path(f"{sample.key}.sheet.png")
        viz.save_png(out, sheet)
        print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {sample.num_views if views is None else len(views)} views"
              f" of {sample.key})")
        return 0
    except (ShardError, SampleError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
