"""Shard planning and the render worker process of ``python -m synth.render``.

Why processes: each worker holds one persistent Blender scene (``blender.backend``), which
is not thread-safe and grows memory over thousands of poses; a worker is therefore a
separate (spawned) process that takes shards from a shared queue and exits after about
``recycle_every`` poses (at a shard boundary), and the parent starts a fresh one in its place.
"""
from __future__ import annotations

import ctypes
import logging
import os
import queue as queue_mod
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from synth.mouse.dataset import RenderDataset

log = logging.getLogger(__name__)


# -- planning ------------------------------------------------------------------------------
def num_shards(poses: int, samples_per_shard: int) -> int:
    return -(-int(poses) // int(samples_per_shard))


def shard_indices(k: int, poses: int, samples_per_shard: int) -> range:
    """Pose indices of shard ``k``: [k*S, min((k+1)*S, N))."""
    return range(k * samples_per_shard, min((k + 1) * samples_per_shard, poses))


def job_shards(poses: int, samples_per_shard: int, num_jobs: int = 1, job_index: int = 0) -> list[int]:
    """The shards cluster job ``job_index`` of ``num_jobs`` owns: k % num_jobs == job_index."""
    if num_jobs < 1 or not 0 <= job_index < num_jobs:
        raise ValueError(f"job index {job_index} is not in [0, {num_jobs}) (num jobs {num_jobs})")
    return [k for k in range(num_shards(poses, samples_per_shard)) if k % num_jobs == job_index]


@dataclass(frozen=True)
class JobSlot:
    num_jobs: int
    job_index: int
    origin: str     # where the values came from (flags / SLURM / Kubernetes), for the log


def resolve_job(num_jobs: int | None, job_index: int | None, env: Mapping[str, str] = os.environ) -> JobSlot:
    """Cluster partition from explicit values, else SLURM array variables, else a Kubernetes
    indexed job's JOB_COMPLETION_INDEX (with the count from --num-shards or $JOB_COMPLETIONS)."""
    def _int(name: str, value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={value!r}: expected an integer") from None

    if job_index is not None or num_jobs is not None:
        if job_index is None or num_jobs is None:
            if num_jobs is not None and job_index is None and ("SLURM_ARRAY_TASK_ID" in env or "JOB_COMPLETION_INDEX" in env):
                pass   # count from the flag, index from the environment (below)
            else:
                raise ValueError("--num-shards and --shard-index go together (split the shard list into "
                                 "NUM parts and render part INDEX)")
        else:
            slot = JobSlot(_int("--num-shards", num_jobs), _int("--shard-index", job_index), "flags")
            return _check(slot)
    if "SLURM_ARRAY_TASK_ID" in env:
        tid = _int("SLURM_ARRAY_TASK_ID", env["SLURM_ARRAY_TASK_ID"])
        tmin = _int("SLURM_ARRAY_TASK_MIN", env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = num_jobs if num_jobs is not None else env.get("SLURM_ARRAY_TASK_COUNT")
        if count is None:
            raise ValueError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; pass --num-shards")
        return _check(JobSlot(_int("SLURM_ARRAY_TASK_COUNT", count), tid - tmin, "SLURM array"))
    if "JOB_COMPLETION_INDEX" in env:
        count = num_jobs if num_jobs is not None else env.get("JOB_COMPLETIONS")
        if count is None:
            raise ValueError("JOB_COMPLETION_INDEX is set (Kubernetes indexed job) but the number of jobs is not: "
                             "pass --num-shards N or set JOB_COMPLETIONS=N in the pod spec")
        return _check(JobSlot(_int("JOB_COMPLETIONS", count), _int("JOB_COMPLETION_INDEX", env["JOB_COMPLETION_INDEX"]),
                              "Kubernetes indexed job"))
    return JobSlot(1, 0, "single job")


def _check(slot: JobSlot) -> JobSlot:
    if slot.num_jobs < 1:
        raise ValueError(f"number of jobs must be >= 1, got {slot.num_jobs} ({slot.origin})")
    if not 0 <= slot.job_index < slot.num_jobs:
        raise ValueError(f"job index {slot.job_index} is not in [0, {slot.num_jobs}) ({slot.origin})")
    return slot


# -- worker process ------------------------------------------------------------------------
@dataclass
class WorkerArgs:
    """Everything a worker needs (plain, picklable data: it crosses a spawn boundary)."""

    worker_id: int
    cfg: dict                 # the composed render config as a plain dict
    dataset: RenderDataset    # that config resolved once by the parent (dataset config, hash, quality)
    out_dir: str
    poses: int
    header: dict              # manifest header
    recycle_every: int
    threads: int
    device: str
    force: bool
    log_level: int


class FatalWorkerError(RuntimeError):
    """An error that retrying cannot fix (bad input, disk full): the parent stops the run."""


class SampleSkipped(ValueError):
    """An index whose input cannot be used (e.g. a broken mesh file). Rendering it again cannot
    change the outcome, so it is a permanent skip: listed in the manifest's ``skipped`` with
    the reason, and its shard still counts as complete. Any other error while rendering an
    index is a failure: it is listed with ``retry: true``, and the shard is rendered again
    by the next run."""


def retry_entries(skipped) -> list[dict]:
    """The entries of a shard record's ``skipped`` list that failed to render (not input skips)."""
    return [s for s in skipped or () if isinstance(s, dict) and s.get("retry")]


def shard_is_complete(record, expected: int) -> bool:
    """Every index of the shard is either a sample or a permanent skip (no failure to retry)."""
    return not retry_entries(record.skipped) and record.samples + len(record.skipped) == expected


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the parent dies (e.g. the CLI is ``kill -9``-ed),
    so no orphan keeps writing into the output folder."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        except OSError:
            pass


def render_sample(composer, renderer, index: int, normals: bool, png_level: int,
                  timings: dict | None = None) -> dict:
    """Compose, render and encode one pose index -> WebDataset sample dict. ``timings``
    (if given) accumulates seconds per stage: compose, blender (Cycles' own render calls),
    readback (the backend's scene updates and pass conversion), encode."""
    from mousefacelift.shards import MultiViewSample

    t0 = time.perf_counter()
    scene = composer.compose(index)
    t1 = time.perf_counter()
    views = renderer.render(scene)
    t2 = time.perf_counter()
    rgba = views.rgba
    if "lab_camera" in scene.meta:      # the input view's lab-camera look, drawn in compose: colour only
        from mousefacelift.labcamera import look_rgba, looks_from_meta

        rgba = look_rgba(rgba, looks_from_meta(scene.meta["lab_camera"]))
    sample = MultiViewSample(key=scene.key, meta=scene.meta, rgba=rgba, cameras=scene.cameras,
                             depth=views.depth, normal=views.normal if normals else None, arrays=scene.arrays)
    fields = sample.encode(png_compress_level=png_level)
    t3 = time.perf_counter()
    if timings is not None:
        blender = float(getattr(views, "seconds_render", t2 - t1))
        for k, v in (("compose", t1 - t0), ("blender", blender), ("readback", t2 - t1 - blender), ("encode", t3 - t2)):
            timings[k] = timings.get(k, 0.0) + v
    return fields


def make_composer(cfg: Mapping, dataset: RenderDataset):
    """The sample source of this render: ``cfg["composer"]`` = ``"module:factory"`` names a
    ``factory(cfg, dataset)`` returning an object with ``.compose(index) -> SceneSpec`` and
    ``.config_hash`` (e.g. ``synth.render_objects:ObjectComposer``); absent = the mouse."""
    spec = cfg.get("composer")
    if spec:
        import importlib

        module, _, name = str(spec).partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"composer {spec!r}: cannot import ({e}); expected 'module:factory'") from None
        return factory(cfg, dataset)
    from mousefacelift.body import load_body_model
    from synth.mouse.compose import MouseComposer

    return MouseComposer(load_body_model(cfg["body_model"]), cfg, dataset)


def worker_main(args: WorkerArgs, tasks, results) -> None:
    """Take shard indices from ``tasks`` and render them until the queue is empty or
    ``recycle_every`` poses are done; report ("start"|"pose"|"shard"|"error"|"exit", ...) on ``results``."""
    _die_with_parent()
    # The parent stops idle workers with SIGTERM: turn it into SystemExit so the ``finally``
    # below closes the renderer (its RAM temp folder) and an open shard is aborted, not left.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s w{args.worker_id} %(name)s: %(message)s")
    wid = args.worker_id
    cfg = args.cfg
    try:
        import torch

        from blender.backend import BlenderRenderer   # only workers load bpy
        from mousefacelift.shards import ShardError, ShardWriter

        # Composing one pose is tiny torch work; intra-op threads would only spin against
        # Blender's render threads on the same cores (measured 10x slower sampling).
        torch.set_num_threads(1)
        composer = make_composer(cfg, args.dataset)
        renderer = BlenderRenderer(args.dataset.quality, device=args.device, threads=args.threads)
    except Exception as e:   # setup failures are the same for every retry
        results.put(("error", wid, None, f"worker setup failed: {type(e).__name__}: {e}", True,
                     traceback.format_exc()))
        sys.exit(3)
    S = int(cfg["samples_per_shard"])
    normals = bool(cfg["encode"]["normals"])
    level = int(cfg["encode"]["png_compress_level"])
    done = 0
    k = None
    try:
        while done < args.recycle_every:
            try:
                k = tasks.get(timeout=1.0)
            except queue_mod.Empty:
                break
            results.put(("start", wid, k))
            t0 = time.perf_counter()
            indices = shard_indices(k, args.poses, S)
            failures = []
            with ShardWriter(args.out_dir, k, prefix=cfg["prefix"], header=args.header, force=args.force) as w:
                for i in indices:
                    t = time.perf_counter()
                    timings: dict = {}
                    try:
                        fields = render_sample(composer, renderer, i, normals, level, timings)
                        tw = time.perf_counter()
                        w.write(fields)
                        timings["write"] = time.perf_counter() - tw
                    except (ShardError, MemoryError):
                        raise
                    except SampleSkipped as e:   # unusable input: listed for good, the run goes on
                        log.warning("index %d skipped: %s", i, e)
                        w.skip(i, str(e))
                    except Exception as e:   # a failed pose is listed and rendered again by the next run
                        reason = f"{type(e).__name__}: {e}"
                        log.warning("pose %d failed (the next run renders it again): %s", i, reason)
                        w.skip(i, reason, retry=True)
                        failures.append(reason)
                    done += 1
                    results.put(("pose", wid, i, time.perf_counter() - t, timings))
                # Nothing rendered and every index raised a render error: a systematic problem
                # (unreadable HDRI pool, broken renderer); stop with its first error rather than
                # grind through every shard. Input skips never count here.
                if failures and len(failures) == len(indices):
                    raise FatalWorkerError(f"every pose of shard {k} failed to render; first error: {failures[0]}")
                rec = w.close()
            results.put(("shard", wid, k, rec.to_json(), time.perf_counter() - t0))
            k = None
    except (FatalWorkerError, ShardError) as e:
        results.put(("error", wid, k, str(e), True, traceback.format_exc()))
        sys.exit(2)
    except Exception as e:
        results.put(("error", wid, k, f"{type(e).__name__}: {e}", False, traceback.format_exc()))
        sys.exit(1)
    finally:
        try:
            renderer.close()
        except Exception:
            pass
    results.put(("exit", wid, done))


def start_worker(ctx, args: WorkerArgs, tasks, results):
    p = ctx.Process(target=worker_main, args=(args, tasks, results), name=f"synth-render-w{args.worker_id}", daemon=False)
    p.start()
    return p


def drain(results, timeout: float) -> list[tuple]:
    """All messages available now (waiting up to ``timeout`` for the first)."""
    out = []
    try:
        out.append(results.get(timeout=timeout))
        while True:
            out.append(results.get_nowait())
    except queue_mod.Empty:
        pass
    return out


def stop_workers(procs: Sequence, grace_s: float = 5.0) -> None:
    """Terminate the given worker processes (ours only), then kill what is left."""
    for p in procs:
        if p is not None and p.is_alive():
            p.terminate()
    deadline = time.time() + grace_s
    for p in procs:
        if p is not None:
            p.join(max(0.0, deadline - time.time()))
            if p.is_alive():
                p.kill()
                p.join()
