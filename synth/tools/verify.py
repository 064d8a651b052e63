"""`python -m synth.verify DIR`: prove a shard folder is intact, on-schema and truly 3D-consistent.

Checks, in order:
1. manifest.json (mfl-manifest/1): every listed shard exists with the recorded size and
   sha256; no finished shard lies in the folder unlisted; keys are unique across shards;
   each shard holds exactly the keys the manifest lists; no pose is missing (none failed to
   render, no gap in the shard sequence, every shard but the last accounts for all its
   indices as samples or listed input skips).
2. every sample (or ``--samples N`` spread evenly over the set) decodes with
   ``MultiViewSample.decode`` and matches the schema: rgba for every view, depth for every
   view when the source renders depth (mouse, object), valid cameras, pose/joints for mice.
3. geometry (samples with depth): cross-view consistency (synth.tools.geometry_checks): median
   forward-backward reprojection error in pixels, depth disagreement (relative, world units,
   mm), share of points that contradict another view, depth-vs-alpha agreement; and for
   mouse samples the IoU of alpha with the body mesh rebuilt from pose.npy (skipped, with
   the reason, when the model is unavailable). Both IoUs forgive a 1 px band along the
   outline (``--iou-band-px``): edge pixels dominate small images, and the same limits
   must hold for a clean render at 64 px as at 128 px and above.

Prints a table per sample and a summary; ``--json`` writes the full report. Exit status 0
when everything passes, 1 when anything fails, 2 when the folder cannot be read at all.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mousefacelift.shards import (MANIFEST_NAME, MultiViewSample, SampleError, ShardError, atomic_write_json,
                                  iter_shard, list_shards, read_manifest, shard_sha256)
from synth.real.body_prior import DEPTH_SOURCE as BODY_FIT_DEPTH
from synth.tools import geometry_checks as gc
from synth.tools.tables import fmt, format_table

log = logging.getLogger("synth.verify")

SOURCES_WITH_DEPTH = ("mouse", "object")
REQUIRED_ARRAYS = {"mouse": ("pose", "joints")}


@dataclass
class SampleResult:
    shard: str
    key: str
    source: str | None = None
    views: int = 0
    size: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    consistency: dict[str, Any] | None = None
    mesh_iou: list[float] | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


@dataclass
class VerifyReport:
    directory: str
    thresholds: dict[str, float]
    config: dict[str, Any]
    source: str | None = None
    problems: list[str] = field(default_factory=list)          # folder / manifest / shard level
    shards: list[dict[str, Any]] = field(default_factory=list)
    samples: list[SampleResult] = field(default_factory=list)
    samples_total: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems and all(s.passed for s in self.samples)

    def summary(self) -> dict[str, Any]:
        geo = [s.consistency for s in self.samples if s.consistency]
        ious = [min(s.mesh_iou) for s in self.samples if s.mesh_iou]

        def med(name):
            vals = [g[name] for g in geo if g.get(name) is not None]
            return float(np.median(vals)) if vals else None

        def worst(name, fn=max):
            vals = [g[name] for g in geo if g.get(name) is not None]
            return float(fn(vals)) if vals else None

        skipped: dict[str, int] = {}
        for s in self.samples:
            for n in s.notes:
                skipped[n] = skipped.get(n, 0) + 1
        return {
            "passed": self.passed, "samples_in_set": self.samples_total, "samples_checked": len(self.samples),
            "samples_failed": sum(not s.passed for s in self.samples), "shards": len(self.shards),
            "shards_failed": sum(not sh["ok"] for sh in self.shards),
            "samples_with_geometry": len(geo),
            "reproj_px_median": med("reproj_px_median"), "reproj_px_worst_view_max": worst("reproj_px_worst_view"),
            "depth_rel_median": med("depth_rel_median"), "depth_abs_median": med("depth_abs_median"),
            "depth_mm_median": med("depth_mm_median"), "conflict_frac_worst_view_max": worst("conflict_frac_worst_view"),
            "depth_alpha_iou_min": worst("depth_alpha_iou_min", min),
            "mesh_iou_samples": len(ious), "mesh_iou_median": float(np.median(ious)) if ious else None,
            "mesh_iou_min": float(min(ious)) if ious else None, "notes": skipped,
            "samples_per_s": len(self.samples) / self.seconds if self.seconds > 0 else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "passed": self.passed, "source": self.source,
                "thresholds": self.thresholds, "config": self.config, "problems": self.problems,
                "summary": self.summary(), "shards": self.shards, "samples": [s.to_dict() for s in self.samples]}


# -- checks ----------------------------------------------------------------------------------
def check_shard_files(directory: Path, manifest: dict) -> tuple[list[dict], list[str]]:
    """Existence, size and sha256 of each listed shard; unlisted shards; duplicate keys."""
    results, problems = [], []
    listed = set()
    seen_keys: dict[str, str] = {}
    for i, rec in enumerate(manifest["shards"]):
        name = rec.get("name") if isinstance(rec, dict) else None
        if not name:
            problems.append(f"{MANIFEST_NAME}: shards[{i}] has no name")
            continue
        listed.add(name)
        r = {"name": name, "ok": True, "problems": [], "samples": rec.get("samples"), "bytes": rec.get("bytes")}
        path = directory / name
        if not path.is_file():
            r["problems"].append(f"{name}: listed in {MANIFEST_NAME} but missing from {directory}")
        else:
            size = path.stat().st_size
            if rec.get("bytes") is not None and size != int(rec["bytes"]):
                r["problems"].append(f"{name}: {size} bytes on disk, manifest says {rec['bytes']}")
            digest = shard_sha256(path)
            if rec.get("sha256") and digest != rec["sha256"]:
                r["problems"].append(f"{name}: sha256 {digest[:16]}… differs from the manifest's {str(rec['sha256'])[:16]}…"
                                     " (the file was changed or damaged after it was written)")
        keys = rec.get("keys") or []
        if rec.get("samples") is not None and len(keys) != int(rec["samples"]):
            r["problems"].append(f"{name}: manifest lists {len(keys)} keys but {rec['samples']} samples")
        for k in keys:
            if k in seen_keys:
                r["problems"].append(f"{name}: key {k!r} also in {seen_keys[k]}")
            seen_keys[k] = name
        r["ok"] = not r["problems"]
        results.append(r)
    for p in list_shards(directory):
        if p.name not in listed:
            problems.append(f"{p.name}: finished shard in the folder but not listed in {MANIFEST_NAME} "
                            "(rebuild it with mousefacelift.shards.rebuild_manifest)")
    return results, problems


def check_completeness(manifest: dict) -> list[str]:
    """Poses the set is missing: indices that failed to render (listed with ``retry``; the
    next run of the render command renders them), and gaps in the shard sequence. Every shard
    but the last accounts for ``samples_per_shard`` indices, as samples or as input skips."""
    problems = []
    per_shard: dict[int, list[dict]] = {}
    for e in manifest.get("skipped") or []:
        if isinstance(e, dict) and e.get("shard") is not None:
            per_shard.setdefault(int(e["shard"]), []).append(e)
    recs = sorted((r for r in manifest["shards"] if isinstance(r, dict) and r.get("index") is not None),
                  key=lambda r: int(r["index"]))
    S = manifest.get("samples_per_shard")
    for n, r in enumerate(recs):
        entries = per_shard.get(int(r["index"]), [])
        failed = [e for e in entries if e.get("retry")]
        if failed:
            problems.append(f"{r.get('name')}: {len(failed)} pose(s) failed to render and are missing (first: index "
                            f"{failed[0].get('index')}: {failed[0].get('reason')}); re-run the render command "
                            "that made this folder to render them")
            continue
        held = int(r.get("samples") or 0) + len(entries)
        if isinstance(S, int) and n < len(recs) - 1 and held != S:
            problems.append(f"{r.get('name')}: accounts for {held} of its {S} indices (samples + listed skips); "
                            "poses are missing")
    have = {int(r["index"]) for r in recs}
    gaps = sorted(set(range(max(have) + 1)) - have) if have else []
    if gaps:
        problems.append(f"{MANIFEST_NAME}: shards {gaps[:10]}{'...' if len(gaps) > 10 else ''} are missing from the "
                        "sequence (a run that did not finish, or a cluster job not run yet); re-run the command "
                        "that made this folder")
    return problems


def check_schema(sample: MultiViewSample, manifest_source: str | None) -> list[str]:
    """Schema rules beyond what decode enforces (source-dependent members)."""
    problems = []
    src = sample.meta.get("source")
    if manifest_source and src != manifest_source:
        problems.append(f"meta.source is {src!r} but the manifest says {manifest_source!r}")
    if src in SOURCES_WITH_DEPTH and sample.depth is None:
        problems.append(f"source {src!r} renders depth but the sample has no {{vv}}.depth.png members")
    for name in REQUIRED_ARRAYS.get(src, ()):
        if name not in sample.arrays:
            problems.append(f"missing member {name}.npy (required for source {src!r})")
    for i, cam in enumerate(sample.cameras):
        if sample.depth is not None:
            z_origin = cam.w2c[2, 3]
            if z_origin <= 0:
                problems.append(f"view {i} ({cam.name}): the world origin is behind the camera (z={z_origin:.3f})")
    return problems


def check_geometry(sample: MultiViewSample, res: SampleResult, th: gc.Thresholds, cfg: gc.ConsistencyConfig,
                   mesh_iou: bool = True) -> None:
    if sample.depth is None:
        res.notes.append(f"geometry skipped: no depth (source={sample.meta.get('source')})")
        return
    try:
        rep = gc.cross_view_consistency(sample, cfg)
    except ValueError as e:
        res.problems.append(str(e))
        return
    c = rep.to_dict()
    res.consistency = c
    limits = [("reproj_px_median", c["reproj_px_median"], th.reproj_px_median, "px", False),
              ("reproj_px_worst_view", c["reproj_px_worst_view"], th.reproj_px_worst_view, "px", False),
              ("depth_rel_median", c["depth_rel_median"], th.depth_rel_median, "", False),
              ("conflict_frac_worst_view", c["conflict_frac_worst_view"], th.conflict_frac_worst_view, "", False),
              ("depth_alpha_iou_min", c["depth_alpha_iou_min"], th.depth_alpha_iou_min, "", True)]
    if sample.meta.get("depth_source") == BODY_FIT_DEPTH:
        # depth of a body fitted to keypoints, alpha from the masks: where they disagree measures the
        # fit, not the data; cameras and depth are still checked against each other
        limits = [lim for lim in limits if lim[0] not in ("conflict_frac_worst_view", "depth_alpha_iou_min")]
        res.notes.append("approximate depth (body fitted to keypoints): contradiction and depth-vs-alpha limits not applied")
    for name, value, limit, unit, is_min in limits:
        bad = value < limit if is_min else value > limit
        if bad:
            where = f" (worst view {rep.worst_view}: {sample.cameras[rep.worst_view].name})" if "view" in name else ""
            res.problems.append(f"{name} = {fmt(value, 4)}{unit} {'below' if is_min else 'above'} the limit "
                                f"{fmt(limit, 4)}{unit}{where}")
    if not mesh_iou:
        return
    verts, faces, why = gc.rebuild_mesh(sample)
    if verts is None:
        res.notes.append(f"mesh IoU skipped: {why}")
        return
    ious = gc.mesh_alpha_iou(sample, verts, faces, cfg)
    res.mesh_iou = ious
    worst = int(np.argmin(ious))
    if ious[worst] < th.mesh_iou_min:
        res.problems.append(f"mesh_iou = {ious[worst]:.3f} below {th.mesh_iou_min} in view {worst} "
                            f"({sample.cameras[worst].name}): alpha does not match the body rebuilt from pose.npy")


def _pick(total: int, n: int | None) -> set[int]:
    if n is None or n >= total:
        return set(range(total))
    if n <= 0:
        return set()
    return set(int(round(x)) for x in np.linspace(0, total - 1, n))


def verify_dir(directory: str | Path, samples: int | None = None, thresholds: gc.Thresholds | None = None,
               cfg: gc.ConsistencyConfig | None = None, mesh_iou: bool = True, progress: bool = True,
               geometry: bool = True) -> VerifyReport:
    """Run every check on a shard folder (module docstring) and return the report."""
    t0 = time.perf_counter()
    directory = Path(directory)
    th, cfg = thresholds or gc.Thresholds(), cfg or gc.ConsistencyConfig()
    report = VerifyReport(directory=str(directory), thresholds=asdict(th), config=asdict(cfg))
    if directory.is_dir() and not (directory / MANIFEST_NAME).exists():
        found = list_shards(directory)
        if found:
            raise ShardError(f"{directory / MANIFEST_NAME} not found, but the folder holds {len(found)} finished "
                             "shard(s): re-running the render command that made them (same --out) rebuilds it from "
                             "their sidecars and renders only what is missing; then verify again")
    manifest = read_manifest(directory)             # ShardError: the caller decides (exit 2)
    report.source = manifest.get("source")
    shard_results, report.problems = check_shard_files(directory, manifest)
    report.problems += check_completeness(manifest)
    report.shards = shard_results
    for sh in shard_results:
        report.problems.extend(sh["problems"])
    records = {r["name"]: r for r in manifest["shards"] if isinstance(r, dict) and r.get("name")}
    report.samples_total = sum(int(r.get("samples") or 0) for r in records.values())
    chosen = _pick(report.samples_total, samples)
    bar = tqdm(total=len(chosen), desc="verify", unit="sample", disable=not progress)
    g = 0
    for sh in shard_results:
        name = sh["name"]
        path = directory / name
        if not path.is_file():
            g += int(records[name].get("samples") or 0)
            continue
        log.info("checking %s", name)
        keys_found = []
        try:
            for fields in iter_shard(path):
                key = fields.get("__key__", "?")
                keys_found.append(key)
                if g in chosen:
                    bar.update(1)
                    report.samples.append(_check_sample(fields, name, report.source, th, cfg, mesh_iou, geometry))
                g += 1
        except ShardError as e:
            report.problems.append(str(e))
            sh["ok"] = False
        expected = list(records[name].get("keys") or [])
        if keys_found != expected and sh["ok"]:
            missing = sorted(set(expected) - set(keys_found))
            extra = sorted(set(keys_found) - set(expected))
            msg = f"{name}: samples differ from the manifest"
            msg += f"; missing {missing[:5]}" if missing else ""
            msg += f"; unlisted {extra[:5]}" if extra else ""
            msg += "; order differs" if not missing and not extra else ""
            report.problems.append(msg)
            sh["ok"] = False
    bar.close()
    report.seconds = time.perf_counter() - t0
    return report


def _check_sample(fields: dict, shard: str, source: str | None, th, cfg, mesh_iou: bool,
                  geometry: bool = True) -> SampleResult:
    t = time.perf_counter()
    res = SampleResult(shard=shard, key=str(fields.get("__key__", "?")))
    try:
        sample = MultiViewSample.decode(fields, where=shard)
    except (SampleError, ValueError) as e:
        res.problems.append(str(e))
        res.seconds = time.perf_counter() - t
        return res
    res.source = sample.meta.get("source")
    res.views = sample.num_views
    res.size = f"{sample.rgba.shape[2]}x{sample.rgba.shape[1]}"
    res.problems += check_schema(sample, source)
    if geometry:
        check_geometry(sample, res, th, cfg, mesh_iou=mesh_iou)
    else:
        res.notes.append("geometry skipped: --schema-only")
    res.seconds = time.perf_counter() - t
    return res


# -- presentation ------------------------------------------------------------------------------
def render_text(report: VerifyReport, max_problem_lines: int = 40) -> str:
    rows = []
    for s in report.samples:
        c = s.consistency or {}
        rows.append([s.key, s.views, s.size, c.get("reproj_px_median"), c.get("reproj_px_worst_view"),
                     c.get("depth_rel_median"), c.get("depth_mm_median"), c.get("conflict_frac_worst_view"),
                     min(s.mesh_iou) if s.mesh_iou else None, "PASS" if s.passed else "FAIL"])
    out = [format_table(["sample", "views", "size", "reproj px", "worst view px", "depth rel", "depth mm",
                         "conflict", "mesh IoU", "status"], rows,
                        title=f"samples ({len(report.samples)} of {report.samples_total} checked)")]
    sm = report.summary()
    th = report.thresholds
    out.append("")
    out.append(format_table(["figure", "value", "limit"], [
        ["shards (failed)", f"{sm['shards']} ({sm['shards_failed']})", ""],
        ["samples checked (failed)", f"{sm['samples_checked']} ({sm['samples_failed']})", ""],
        ["reprojection error, median px", sm["reproj_px_median"], f"<= {th['reproj_px_median']}"],
        ["reprojection error, worst view px", sm["reproj_px_worst_view_max"], f"<= {th['reproj_px_worst_view']}"],
        ["depth disagreement, median rel", sm["depth_rel_median"], f"<= {th['depth_rel_median']}"],
        ["depth disagreement, median units", sm["depth_abs_median"], ""],
        ["depth disagreement, median mm", sm["depth_mm_median"], ""],
        ["contradicting points, worst view", sm["conflict_frac_worst_view_max"], f"<= {th['conflict_frac_worst_view']}"],
        ["depth-vs-alpha IoU, min", sm["depth_alpha_iou_min"], f">= {th['depth_alpha_iou_min']}"],
        ["alpha-vs-mesh IoU, median (min)", f"{fmt(sm['mesh_iou_median'])} ({fmt(sm['mesh_iou_min'])})"
         if sm["mesh_iou_samples"] else "-", f">= {th['mesh_iou_min']}"],
        ["samples/s", sm["samples_per_s"], ""],
    ], title="summary"))
    for note, n in sm["notes"].items():
        out.append(f"note: {note} ({n} sample{'s' if n != 1 else ''})")
    problems = list(report.problems) + [f"{s.shard}:{s.key}: {p}" for s in report.samples for p in s.problems]
    if problems:
        out.append("")
        out.append(f"problems ({len(problems)}):")
        out += [f"  - {p}" for p in problems[:max_problem_lines]]
        if len(problems) > max_problem_lines:
            out.append(f"  ... and {len(problems) - max_problem_lines} more (see --json)")
    out.append("")
    out.append(f"RESULT: {'PASS' if report.passed else 'FAIL'}  ({report.directory})")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synth.verify", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path, help="shard folder (holds manifest.json)")
    p.add_argument("--samples", type=int, default=None, help="check at most N samples, spread evenly (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help=f"override a pass/fail limit; names: {', '.join(asdict(gc.Thresholds()))}")
    p.add_argument("--points-per-view", type=int, default=gc.ConsistencyConfig.points_per_view,
                   help="pixels back-projected per view (more = slower, less noisy)")
    p.add_argument("--iou-band-px", type=int, default=gc.ConsistencyConfig.iou_band_px,
                   help="mask IoUs forgive disagreement within this many pixels of the outline (0 = plain IoU)")
    p.add_argument("--no-mesh-iou", action="store_true", help="skip the alpha-vs-body-mesh IoU")
    p.add_argument("--schema-only", action="store_true", help="checksums and schema only, no geometry (fast)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    try:
        th = gc.Thresholds().override(args.set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.iou_band_px < 0:
        print(f"error: --iou-band-px must be >= 0, got {args.iou_band_px}", file=sys.stderr)
        return 2
    cfg = gc.ConsistencyConfig(points_per_view=args.points_per_view, iou_band_px=args.iou_band_px)
    try:
        report = verify_dir(args.directory, args.samples, th, cfg, mesh_iou=not args.no_mesh_iou,
                            progress=not args.quiet, geometry=not args.schema_only)
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_text(report))
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        log.info("report written to %s", args.json)
    return 0 if report.passed else 1
