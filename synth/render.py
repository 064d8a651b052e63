"""``python -m synth.render --poses N``: random-pose, HDR-lit multi-view mouse renders -> shards.

Work unit = shard k (pose indices [k*S, min((k+1)*S, N))). Shards are split over cluster
jobs (k % num_jobs == job) and then, dynamically, over local worker processes, each
holding one Blender scene and recycled every K poses. Re-running the same command renders
only the shards that are not complete; a folder made with another config is refused
unless ``--force-config``. Every pose index draws its randomness from (seed, index) only,
so the output does not depend on how the work was split.

A shard is complete when every index is a sample or a listed input skip (a broken mesh
file: permanent). A pose that failed to render (e.g. an unreadable HDR map) is listed with
``retry: true``: its shard is published but not complete, the run ends with a warning and
exit status 1, and the next run renders that shard again. On resume every complete shard
is hashed and one whose sha256 no longer matches its record is rendered again.

Examples::

    python -m synth.render --poses 8 --quality preview          # a quick look, ./shards
    python -m synth.render --poses 100000 --workers 8 --out /data/mouse
    sbatch --array=0-99 --wrap "python -m synth.render --poses 100000 --out /data/mouse"
    python -m synth.render --poses 64 rig.radius=3.0 lighting.strength_range=[0.5,2]   # hydra overrides
"""
from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger("synth.render")


class RenderError(RuntimeError):
    """A bad input or a failed run; printed as one clear message, exit status 2."""


# -- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m synth.render",
        description="Render randomly posed, HDR-lit multi-view mice into WebDataset shards (mfl-sample/1). "
                    "Extra KEY=VALUE arguments are hydra overrides of configs/render.yaml.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--poses", type=int, help="number of pose indices N (0..N-1) [config run.poses]")
    p.add_argument("--out", help="output folder [config run.out]")
    p.add_argument("--workers", type=int, help="local worker processes, one Blender scene each [run.workers]")
    p.add_argument("--num-shards", "--num-jobs", dest="num_jobs", type=int,
                   help="split the shard list into this many cluster jobs (default: SLURM_ARRAY_TASK_COUNT, "
                        "JOB_COMPLETIONS, or 1)")
    p.add_argument("--shard-index", "--job-index", dest="job_index", type=int,
                   help="which part this job renders (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX)")
    p.add_argument("--model", help="body model: 'procedural' (built in) or a MAMMAL model folder [body_model]")
    p.add_argument("--seed", type=int, help="base seed [seed]")
    p.add_argument("--quality", help="preview | train | final (configs/quality/) [preset]")
    p.add_argument("--resolution", type=int, help="square image size in pixels (default: the quality preset's)")
    p.add_argument("--samples", type=int, help="Cycles samples per pixel (default: the quality preset's)")
    p.add_argument("--rig", help="camera rig: a configs/rig/ name or any make_rig spec (sphere32, mv6, sphere26+mv6)")
    p.add_argument("--hdri-folder", help="extra folder of .hdr/.exr maps added to the built-in pool [lighting.hdri.folder]")
    p.add_argument("--samples-per-shard", type=int, help="poses per shard S [samples_per_shard]")
    p.add_argument("--recycle-every", type=int, help="restart a worker after this many poses [run.recycle_every]")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), help="Cycles device [run.device]")
    p.add_argument("--threads", type=int, help="Cycles threads per worker; 0 = cores / workers [run.threads]")
    p.add_argument("--force-config", action="store_true",
                   help="accept a config that differs from the output folder's manifest: its shards are re-rendered")
    p.add_argument("--dry-run", action="store_true", help="validate inputs and print the plan, render nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("overrides", nargs="*", help="hydra overrides KEY=VALUE of configs/render.yaml")
    return p


def rig_override(name: str) -> str:
    """``--rig NAME`` as a hydra override: a configs/rig/ file, else a make_rig spec."""
    from mousefacelift.config import configs_dir

    file_name = name.replace("+", "_")
    if (configs_dir() / "rig" / f"{file_name}.yaml").is_file():
        return f"rig={file_name}"
    return f"rig.name={name}"


def overrides_from_args(a: argparse.Namespace) -> list[str]:
    """Flags -> hydra overrides (flags first, so free KEY=VALUE arguments win)."""
    ov: list[str] = []
    if a.rig is not None:
        ov.append(rig_override(a.rig))
    simple = {"poses": "run.poses", "out": "run.out", "workers": "run.workers", "model": "body_model", "seed": "seed",
              "quality": "preset", "resolution": "resolution", "samples": "samples",
              "samples_per_shard": "samples_per_shard", "recycle_every": "run.recycle_every",
              "device": "run.device", "hdri_folder": "lighting.hdri.folder", "threads": "run.threads", "num_jobs": "run.num_jobs", "job_index": "run.job_index"}
    for attr, key in simple.items():
        v = getattr(a, attr)
        if v is not None:
            ov.append(f"{key}={quote_value(v)}")
    for o in a.overrides:
        if "=" not in o:
            raise RenderError(f"argument {o!r}: expected a KEY=VALUE config override (see configs/render.yaml)")
        ov.append(o)
    return ov


def quote_value(v) -> str:
    """A flag value quoted for a hydra ``key=value`` override where it needs it."""
    s = str(v)
    if isinstance(v, str) and any(c in s for c in " ,[]{}=:'\"\\") or s == "":
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return s


# -- validation ------------------------------------------------------------------------------
def validate_config(cfg) -> None:
    """Clear errors for impossible values before any work starts (names the key and the value)."""
    from mousefacelift.cameras import make_rig
    from synth.mouse.compose import is_mvinput, mvinput_sections

    run = cfg["run"]
    checks = [("run.poses (--poses)", run["poses"], 1), ("samples_per_shard (--samples-per-shard)", cfg["samples_per_shard"], 1),
              ("run.workers (--workers)", run["workers"], 1), ("run.recycle_every (--recycle-every)", run["recycle_every"], 1)]
    for name, value, lo in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise RenderError(f"{name} must be an integer >= {lo}, got {value!r}")
    for name in ("resolution", "samples"):
        v = cfg.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise RenderError(f"{name} must be a positive integer or null, got {v!r}")
    _validate_values(cfg)
    try:
        extra = mvinput_sections(cfg["rig"]) if is_mvinput(cfg["rig"]["name"]) else {}
        make_rig(str(cfg["rig"]["name"]), size=8, radius=float(cfg["rig"]["radius"]), fov_deg=float(cfg["rig"]["fov_deg"]),
                 **extra)
    except ValueError as e:
        raise RenderError(f"--rig: {e}") from None
    if (cfg.get("input_look") or {}).get("enabled") and not is_mvinput(cfg["rig"]["name"]):
        raise RenderError(f"input_look.enabled=true: the input look needs the mvinput rig (view 0 = the input), "
                          f"got rig.name={cfg['rig']['name']!r}")
    m = str(cfg["body_model"])
    if m not in ("procedural", "mammal") and not Path(m).expanduser().is_dir():
        raise RenderError(f"--model {m!r}: not 'procedural' and not an existing folder (expected the MAMMAL mouse "
                          "model folder holding mouse.pkl and mouse_txt/)")


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate_values(cfg) -> None:
    """Range, type and path checks of the values the workers use. Without them a bad value
    (a compression level of 42, a prefix that climbs out of --out) surfaces only inside the
    workers, after the output folder was set up; here it is one line before anything is written."""
    from mousefacelift.shards import SOURCES

    def need(ok: bool, key: str, value, expected: str) -> None:
        if not ok:
            raise RenderError(f"{key}={value!r}: expected {expected}")

    run, enc = cfg["run"], cfg.get("encode") or {}
    prefix = cfg.get("prefix")
    need(isinstance(prefix, str) and bool(_NAME_RE.match(prefix)), "prefix", prefix,
         "a plain name of letters, digits, '_' and '-' (shards are written as PREFIX-NNNNNN.tar inside --out)")
    need(cfg.get("source") in SOURCES, "source", cfg.get("source"), f"one of {list(SOURCES)}")
    need(_is_int(cfg.get("seed")) and cfg["seed"] >= 0, "seed", cfg.get("seed"), "an integer >= 0")
    level = enc.get("png_compress_level")
    need(_is_int(level) and 0 <= level <= 9, "encode.png_compress_level", level, "an integer in 0..9 (zlib level)")
    need(isinstance(enc.get("normals"), bool), "encode.normals", enc.get("normals"), "true or false")
    fill = (cfg.get("normalize") or {}).get("fill")
    need(_is_number(fill) and 0 < fill <= 1, "normalize.fill", fill, "a number in (0, 1]")
    need(_is_number(cfg.get("depth_margin")) and cfg["depth_margin"] >= 0, "depth_margin", cfg.get("depth_margin"),
         "a number >= 0 (world units)")
    need(run.get("device") in ("auto", "cpu", "gpu"), "run.device", run.get("device"), "auto, cpu or gpu")
    need(_is_int(run.get("threads")) and run["threads"] >= 0, "run.threads", run.get("threads"),
         "an integer >= 0 (0 = all cores / workers)")
    need(_is_number(run.get("stale_tmp_hours")) and run["stale_tmp_hours"] >= 0, "run.stale_tmp_hours",
         run.get("stale_tmp_hours"), "a number of hours >= 0")
    need(str(run.get("out") or "").strip() != "", "run.out", run.get("out"), "an output folder path")


def _device_threads(run: dict) -> int:
    t = int(run.get("threads") or 0)
    if t > 0:
        return t
    return max(1, (os.cpu_count() or 1) // max(1, int(run["workers"])))


# -- the run ---------------------------------------------------------------------------------
def run(cfg, *, force: bool = False, dry_run: bool = False, log_level: int = logging.INFO) -> dict:
    """Render the shards this job owns that are not complete yet. Returns a summary dict."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from mousefacelift.config import to_container
    from mousefacelift import shards as S
    from synth.mouse import workers as W
    from synth.mouse.dataset import render_dataset

    plain = to_container(cfg)
    validate_config(plain)
    try:
        dataset = render_dataset(plain)
    except ValueError as e:
        raise RenderError(str(e)) from None
    run_cfg = plain["run"]
    N, Ssz = int(run_cfg["poses"]), int(plain["samples_per_shard"])
    try:
        slot = W.resolve_job(run_cfg.get("num_jobs"), run_cfg.get("job_index"))
    except ValueError as e:
        raise RenderError(f"cluster partitioning: {e}") from None

    # Compose one scene in the parent: loads the body model, the pose sampler, the coat and
    # the HDRI pool, so a bad model folder / HDR folder stops here, before any worker starts.
    try:
        composer = W.make_composer(plain, dataset)
        # a source may define its own check (a mesh folder's first file may be a skipped one)
        getattr(composer, "preflight", lambda: composer.compose(0))()
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError, KeyError, pickle.UnpicklingError) as e:
        # UnpicklingError: the body model's restricted unpickler refused a global (or the file is no pickle)
        raise RenderError(f"cannot prepare the scene: {type(e).__name__}: {e}") from None
    chash = composer.config_hash
    header = {"source": plain["source"], "prefix": plain["prefix"], "samples_per_shard": Ssz, "seed": int(plain["seed"]),
              "config": dataset.config, "config_hash": chash, "generator": dict(plain["generator"])}

    out = Path(str(run_cfg["out"])).expanduser()
    if not (dry_run and not out.exists()):     # a dry run creates nothing
        try:
            S.check_writable_dir(out)
        except S.ShardError as e:
            raise RenderError(str(e)) from None
        if not dry_run:
            S.clean_stale_tmp(out, stale_after_s=float(run_cfg["stale_tmp_hours"]) * 3600)

    mine = W.job_shards(N, Ssz, slot.num_jobs, slot.job_index)
    existing = S.complete_shards(out, prefix=plain["prefix"]) if out.exists() else {}
    other = sorted(k for k, r in existing.items() if r.config_hash != chash)
    try:
        if (out / S.MANIFEST_NAME).exists():
            S.check_header(S.read_manifest(out), header, str(out / S.MANIFEST_NAME))
        if other:
            raise S.ManifestMismatch(f"{out}: shards {other[:5]}{'...' if len(other) > 5 else ''} were rendered with "
                                     f"another config (this run's config_hash is {chash}); use another --out folder, "
                                     "or --force-config to re-render them with the new config")
    except S.ManifestMismatch as e:
        if not force:
            raise RenderError(str(e)) from None
        log.warning("--force-config: %s", e)
        if not dry_run:
            S.rebuild_manifest(out, header, prefix=plain["prefix"], config_hash=chash)
    except S.ShardError as e:
        raise RenderError(str(e)) from None

    # A run killed between a shard's sidecar and its manifest update leaves a complete shard
    # that manifest.json does not list: rebuild the manifest from the sidecars (under the lock).
    if not dry_run:
        ours = {k for k, r in existing.items() if r.config_hash == chash}
        listed = set()
        if (out / S.MANIFEST_NAME).exists():
            listed = {int(s["index"]) for s in S.read_manifest(out)["shards"]}
        if ours - listed:
            log.info("manifest.json does not list complete shards %s (an earlier run was stopped between a shard "
                     "and its manifest update); rebuilding it from the sidecars", sorted(ours - listed)[:10])
            S.rebuild_manifest(out, header, prefix=plain["prefix"], config_hash=chash)

    def complete(k: int) -> bool:
        r = existing.get(k)
        return r is not None and r.config_hash == chash and W.shard_is_complete(r, len(W.shard_indices(k, N, Ssz)))

    retry = {k: W.retry_entries(existing[k].skipped) for k in mine if k in existing and existing[k].config_hash == chash}
    retry = {k: v for k, v in retry.items() if v}
    if retry:
        log.warning("%d pose(s) in shards %s failed to render in an earlier run; rendering those shards again (%s)",
                    sum(len(v) for v in retry.values()), sorted(retry)[:10], _reasons([e for v in retry.values() for e in v]))
    damaged = _damaged_shards(out, [k for k in mine if complete(k)], existing) if out.exists() else []
    for k in damaged:
        existing.pop(k, None)
    todo = [k for k in mine if not complete(k)]
    todo_poses = sum(len(W.shard_indices(k, N, Ssz)) for k in todo)
    workers = max(1, min(int(run_cfg["workers"]), len(todo)))
    threads = _device_threads(run_cfg)
    log.info("%s: %d poses in %d shards of %d; this job (%s: %d of %d) owns %d shards, %d already complete, "
             "%d to render (%d poses) with %d worker(s) x %d thread(s); quality %s, %dpx, rig %s, config %s",
             out, N, W.num_shards(N, Ssz), Ssz, slot.origin, slot.job_index, slot.num_jobs, len(mine),
             len(mine) - len(todo), len(todo), todo_poses, workers, threads, plain["preset"], dataset.image_size,
             plain["rig"]["name"], chash)
    summary = {"out": str(out), "config_hash": chash, "job": slot.job_index, "num_jobs": slot.num_jobs,
               "shards_owned": len(mine), "shards_todo": len(todo), "poses_todo": todo_poses, "rendered_shards": [],
               "damaged_shards": [S.shard_name(plain["prefix"], k) for k in damaged],
               "poses_rendered": 0, "poses_skipped": [], "poses_failed": [], "seconds": 0.0}
    if dry_run or not todo:
        if not todo:
            log.info("nothing to do: every shard of this job is complete")
        return summary

    pool = _Pool(todo, workers, dict(cfg=plain, dataset=dataset, out_dir=str(out), poses=N, header=header,
                                     recycle_every=int(run_cfg["recycle_every"]), threads=threads,
                                     device=str(run_cfg["device"]), force=force, log_level=log_level))
    t0 = time.perf_counter()
    try:
        with logging_redirect_tqdm(), tqdm(total=todo_poses, unit="pose", desc="render", dynamic_ncols=True,
                                          file=sys.stderr, smoothing=0.1) as bar:
            pool.run(bar)
    except KeyboardInterrupt:
        raise RenderError("interrupted; finished shards are intact, re-run the same command to resume") from None
    finally:
        pool.stop()
    if pool.fatal is not None:
        raise RenderError(f"{pool.fatal}\nFinished shards in {out} are intact; fix the problem and re-run the same "
                          "command to render only what is missing")
    summary["seconds"] = time.perf_counter() - t0
    summary["rendered_shards"] = sorted(pool.names)
    summary["stage_seconds"] = dict(pool.stage_seconds)
    total = sum(pool.stage_seconds.values())
    if total > 0:
        log.info("time per pose by stage (worker side): %s; outside Blender's render calls: %.1f%%",
                 ", ".join(f"{k} {v / max(todo_poses, 1):.2f} s" for k, v in pool.stage_seconds.items()),
                 100 * (1 - pool.stage_seconds.get("blender", 0.0) / total))
    m = S.read_manifest(out)
    recs = pool.records
    failed = [{**e, "shard": r["name"]} for r in recs for e in W.retry_entries(r["skipped"])]
    skipped = [{**e, "shard": r["name"]} for r in recs for e in r["skipped"] if not e.get("retry")]
    summary.update(poses_rendered=sum(int(r["samples"]) for r in recs), poses_skipped=skipped, poses_failed=failed)
    log.info("done: %d shards in %.1f s (%.3f poses/s): %d of %d poses rendered, %d skipped (unusable input, listed "
             "in the manifest), %d failed; manifest %s lists %d shards", len(pool.finished), summary["seconds"],
             todo_poses / max(summary["seconds"], 1e-9), summary["poses_rendered"], todo_poses, len(skipped),
             len(failed), out / S.MANIFEST_NAME, len(m["shards"]))
    if skipped:
        log.info("skipped: %s", _reasons(skipped))
    if failed:
        log.warning("%d pose(s) failed to render (%s): shards %s are not complete; re-run the same command to "
                    "render them", len(failed), _reasons(failed), sorted({e["shard"] for e in failed})[:10])
    return summary


def _reasons(entries: list[dict], limit: int = 3) -> str:
    """The distinct reasons of skip/failure entries with their counts, most frequent first."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[str(e.get("reason"))] = counts.get(str(e.get("reason")), 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    text = "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in top[:limit])
    return text + (f"; and {len(top) - limit} other reason(s)" if len(top) > limit else "")


def _damaged_shards(out: Path, ks: list[int], existing: dict) -> list[int]:
    """Complete shards whose bytes no longer hash to the sha256 recorded when they were written
    (the manifest's record, else the sidecar's). A size check alone misses a flipped bit, and
    resume would keep the damaged shard for good; these are rendered again."""
    from mousefacelift import shards as S

    recorded: dict[str, str] = {}
    if (out / S.MANIFEST_NAME).exists():
        try:
            recorded = {str(r.get("name")): str(r.get("sha256")) for r in S.read_manifest(out)["shards"]
                        if isinstance(r, dict)}
        except S.ShardError:
            recorded = {}
    damaged = []
    if ks:
        log.info("checking the sha256 of %d complete shard(s)", len(ks))
    for k in ks:
        rec = existing[k]
        want = recorded.get(rec.name) or rec.sha256
        try:
            got = S.shard_sha256(out / rec.name)
        except (OSError, S.ShardError) as e:
            log.warning("shard %s cannot be read (%s); rendering it again", rec.name, e)
            damaged.append(k)
            continue
        if got != want or got != rec.sha256:
            log.warning("shard %s: sha256 %s... differs from the recorded %s... (changed or damaged on disk); "
                        "rendering it again", rec.name, got[:16], want[:16])
            damaged.append(k)
    return damaged


class _Pool:
    """Local worker processes pulling shard indices from one queue (dynamic load balancing).

    A worker that exits normally (recycled after K poses, or no work left) is replaced while
    shards remain; one that dies mid-shard has that shard queued again once; a second failure,
    or a fatal error (bad input, disk full), stops the run."""

    def __init__(self, todo: list[int], workers: int, worker_kwargs: dict):
        from synth.mouse import workers as W

        self.W = W
        self.ctx = mp.get_context("spawn")
        self.tasks, self.results = self.ctx.Queue(), self.ctx.Queue()
        for k in todo:
            self.tasks.put(k)
        self.todo = list(todo)
        self.kw = worker_kwargs
        self.procs: list = [None] * workers
        self.current: list = [None] * workers     # shard index each slot is rendering
        self.slot_of: dict[int, int] = {}
        self.finished: set[int] = set()
        self.names: list[str] = []
        self.records: list[dict] = []                 # sidecar records of the shards finished in this run
        self.retries: dict[int, int] = {}
        self.fatal: str | None = None
        self.next_id = 0
        self.bar = None
        self.stage_seconds: dict[str, float] = {}     # compose / blender / readback / encode / write, summed

    def spawn(self, i: int) -> None:
        wid = self.next_id
        self.next_id += 1
        self.slot_of[wid] = i
        self.current[i] = None
        self.procs[i] = self.W.start_worker(self.ctx, self.W.WorkerArgs(worker_id=wid, **self.kw), self.tasks, self.results)

    def handle(self, msg: tuple) -> None:
        kind, wid = msg[0], msg[1]
        i = self.slot_of.get(wid)
        if kind == "start":
            self.current[i] = msg[2]
        elif kind == "pose":
            self.bar.update(1)
            for stage, secs in (msg[4] if len(msg) > 4 else {}).items():
                self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + secs
        elif kind == "shard":
            k, rec, secs = msg[2], msg[3], msg[4]
            self.finished.add(k)
            self.current[i] = None
            self.names.append(rec["name"])
            self.records.append(rec)
            n_failed = len(self.W.retry_entries(rec["skipped"]))
            n_skipped = len(rec["skipped"]) - n_failed
            skipped = "".join(f" ({n} {what})" for n, what in ((n_skipped, "skipped"), (n_failed, "failed, not complete"))
                              if n)
            log.info("shard %s: %d samples%s, %.2f MB, %.1f s", rec["name"], rec["samples"], skipped,
                     rec["bytes"] / 1e6, secs)
        elif kind == "error":
            _, _, k, text, is_fatal, tb = msg
            log.debug("worker %d traceback:\n%s", wid, tb)
            if is_fatal:
                self.fatal = self.fatal or text
            else:
                log.error("worker %d failed on shard %s: %s", wid, k, text)

    def run(self, bar) -> None:
        self.bar = bar
        for i in range(len(self.procs)):
            self.spawn(i)
        while len(self.finished) < len(self.todo) and self.fatal is None:
            for msg in self.W.drain(self.results, timeout=0.5):
                self.handle(msg)
            for i, p in enumerate(self.procs):
                if self.fatal is not None or p is None or p.is_alive():
                    continue
                p.join()
                for msg in self.W.drain(self.results, timeout=0.2):   # late messages of the dead worker
                    self.handle(msg)
                if self.fatal is not None:
                    break
                k, self.procs[i], self.current[i] = self.current[i], None, None
                if k is not None and k not in self.finished:
                    self.retries[k] = self.retries.get(k, 0) + 1
                    if self.retries[k] > 1:
                        self.fatal = f"shard {k} failed twice (last worker exit code {p.exitcode}); see the log above"
                        break
                    log.warning("a worker exited (code %s) during shard %d; rendering it again", p.exitcode, k)
                    self.tasks.put(k)
                busy = sum(1 for c in self.current if c is not None)
                if len(self.finished) + busy < len(self.todo):
                    self.spawn(i)

    def stop(self) -> None:
        self.W.stop_workers(self.procs)


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    level = logging.DEBUG if a.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from mousefacelift.config import ConfigError, compose

    try:
        cfg = compose("render", overrides_from_args(a))
        summary = run(cfg, force=a.force_config, dry_run=a.dry_run, log_level=level)
    except (RenderError, ConfigError) as e:
        print(f"synth.render: error: {e}", file=sys.stderr)
        return 2
    return incomplete_status(summary, "synth.render")


def incomplete_status(summary: dict, prog: str) -> int:
    """Exit status of a finished run: 1, with a final warning line, when poses failed to render
    (their shards are published but not complete, so the run did not produce the whole set)."""
    failed = summary.get("poses_failed") or []
    if not failed:
        return 0
    print(f"{prog}: warning: {len(failed)} of {summary['poses_todo']} poses failed to render ({_reasons(failed)}); "
          f"shards {sorted({e['shard'] for e in failed})[:10]} are not complete: fix the cause and re-run the same "
          "command to render them", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
