"""Shard streaming -> training batches (docs/architecture.md §2, §4, §5).

Sources: any shard spec of :func:`mousefacelift.shards.resolve_shards` (folders, globs, brace
patterns, URLs, ``pipe:`` commands), read member by member by :func:`mousefacelift.shards.iter_shard`.

Training stream (:class:`TrainStream`) — a pure function of (seed, rank, logical worker,
position), which is what makes ``resume=true`` exact:
- every (rank, worker) draws shards *with replacement* from the whole list with its own RNG
  (resampling), so any number of ranks x workers is fed even from a single shard and the
  stream never ends: each rank runs the same fixed number of steps, so DDP never waits on a
  rank that ran dry (no hang when shards < ranks x workers);
- several shard sets are mixed with weights (e.g. mouse 0.75 + objects 0.25): at position p
  the set is drawn from an RNG seeded by (seed, rank, worker, p);
- view choice, background and augmentation of position p use the same per-position RNG;
- corrupt samples (undecodable members, bad meta, unreadable tars) are skipped, counted and
  logged with the shard's name; the record travels with the next good example into the batch
  (``batch["corrupt"]``) so the trainer's counter is global, not per worker process;
- on resume, each logical worker fast-forwards past the positions it had already delivered
  (raw tar members only, nothing decoded); the DataLoader's round-robin order is restored by
  rotating which process plays which logical worker.

Evaluation stream (:func:`eval_examples`): every sample of the eval shards exactly once, in
shard order, sample i going to rank ``i % world``; ranks are equalised by padding with
examples flagged ``valid=False`` that the evaluator ignores.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch

from mousefacelift.cameras import Camera
from mousefacelift.config import typed
from mousefacelift.shards import MultiViewSample, SampleError, ShardError, iter_shard, resolve_shards

from .augment import AugmentConfig, augment_inputs, composite, pick_background, resize_views
from .views import ViewSamplingConfig, select_views

log = logging.getLogger(__name__)


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardSetConfig:
    """One entry of ``data.sets``: a named shard spec and its mixing weight."""

    shards: Any                   # any spec of mousefacelift.shards.resolve_shards
    # name and weight keep defaults: no YAML holds a default entry, and a set given as an override may omit them
    name: str | None = None       # None: set<i>
    weight: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """The ``data:`` block; configs/data/base.yaml states and documents every key."""

    shards: Any                   # one shard spec or a list; when set it replaces ``sets``
    sets: tuple[ShardSetConfig, ...]
    resolution: int | tuple[int, int]
    batch_size: int
    num_workers: int
    view_sampling: ViewSamplingConfig
    backgrounds: tuple[str, ...]
    eval_backgrounds: tuple[str, ...]
    augment: AugmentConfig


@dataclass(frozen=True)
class ExampleConfig:
    """What turning one sample into an example needs (:func:`example_config`)."""

    resolution: tuple[int, int]
    views: ViewSamplingConfig
    backgrounds: tuple[str, ...]
    augment: AugmentConfig


def data_config(cfg) -> DataConfig:
    """The typed ``data:`` block (a DataConfig is returned as it is)."""
    return typed(DataConfig, cfg, "data")


def example_config(cfg, train: bool = True) -> ExampleConfig:
    """Training examples: ``backgrounds`` and ``augment``; evaluation: ``eval_backgrounds``,
    never augmented."""
    data = data_config(cfg)
    res = data.resolution
    hw = (res, res) if isinstance(res, int) else res
    augment = data.augment if train else replace(data.augment, enabled=False)
    return ExampleConfig(resolution=hw, views=data.view_sampling,
                         backgrounds=data.backgrounds if train else data.eval_backgrounds, augment=augment)


# -- example construction ------------------------------------------------------------------
def _subset_fields(raw: dict, views: np.ndarray, meta: dict) -> dict:
    """Raw members of only the chosen views, renumbered 000.., so only they are decoded."""
    meta = dict(meta)
    meta["views"] = [meta["views"][int(i)] for i in views]
    out = {"__key__": raw["__key__"], "meta.json": json.dumps(meta).encode()}
    for new, old in enumerate(views):
        for kind in ("rgba.png", "depth.png"):
            name = f"{int(old):03d}.{kind}"
            if name in raw:
                out[f"{new:03d}.{kind}"] = raw[name]
    return out


def make_example(raw: dict, cfg: ExampleConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Raw members of one sample -> one training example (see :func:`collate` for the fields).

    Raises SampleError (corrupt sample, counted by the caller) naming the shard and key.
    """
    where = raw.get("__url__", "")
    key = raw.get("__key__", "?")
    tag = f"{where}:{key}"
    if "meta.json" not in raw:
        raise SampleError(f"{tag}: no meta.json member")
    try:
        meta = json.loads(raw["meta.json"])
        cams = [Camera.from_meta(v, where=f"{tag} meta.views[{i}]") for i, v in enumerate(meta["views"])]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise SampleError(f"{tag}: unreadable meta.json ({type(e).__name__}: {e})") from None
    c2w_all = np.stack([c.c2w for c in cams])
    idx, fallback = select_views(c2w_all, cfg.views, rng, where=tag)
    if any(cams[int(i)].dist is not None for i in idx):
        raise SampleError(f"{tag}: view(s) with lens distortion; training takes pinhole cameras (undistort at ingest)")
    sample = MultiViewSample.decode(_subset_fields(raw, idx, meta), where=where)
    t = sample.to_tensors()
    has_depth = "depth" in t
    H, W = cfg.resolution
    depth = t.get("depth")
    rgb, alpha, depth, K = resize_views(t["rgb"], t["alpha"], depth, t["K"], H, W)
    c2w = t["c2w"]
    bg = pick_background(cfg.backgrounds, rng)
    nin = cfg.views.num_input_views
    in_rgb, in_alpha, in_K, in_c2w, info = augment_inputs(rgb[:nin], alpha[:nin], K[:nin], c2w[:nin], cfg.augment, rng)
    return {
        "key": sample.key,
        "source": str(sample.meta.get("source")),
        "shard": where,
        "view_index": torch.from_numpy(np.asarray(idx, dtype=np.int64)),
        "view_fallback": torch.tensor(bool(fallback)),
        "rgb": composite(rgb, alpha, bg),
        "alpha": alpha,
        "depth": depth if has_depth else torch.zeros_like(alpha),
        "has_depth": torch.tensor(has_depth),
        "K": K,
        "c2w": c2w,
        "background": bg,
        "input_rgb": composite(in_rgb, in_alpha, bg),
        "input_alpha": in_alpha,
        "input_K": in_K,
        "input_c2w": in_c2w,
        # true depth of the input views the augmentation left untouched (a warped view's pixels no
        # longer sit on the surface its depth described); 0 = unknown
        "input_depth": (depth[:nin] if has_depth else torch.zeros_like(in_alpha))
        * ~(info["jittered"] | (info["grid_px"] > 0)).reshape(-1, 1, 1, 1),
        "input_jittered": info["jittered"],
        "input_grid_px": info["grid_px"],
        "valid": torch.tensor(True),
    }


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its tensors on ``device`` (strings and lists stay)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def collate(examples: list[dict]) -> dict[str, Any]:
    """Stack examples into a batch: tensors gain a leading B; strings become lists.

    Batch fields: rgb [B,V,3,H,W] (composited on ``background`` [B,3]), alpha [B,V,1,H,W],
    depth [B,V,1,H,W] (zeros where ``has_depth`` [B] is False), K [B,V,3,3], c2w [B,V,4,4],
    input_rgb/input_alpha/input_K/input_c2w (the first num_input_views views as the model sees them),
    input_depth (their true depth where the augmentation left a view untouched, else 0),
    view_index, view_fallback, valid, key/source/shard lists, corrupt (records skipped since
    the previous example of that worker), and the stream positions used for exact resume.
    """
    out: dict[str, Any] = {}
    for name in examples[0]:
        vals = [e[name] for e in examples]
        if name == "corrupt":
            out[name] = [r for v in vals for r in v]
        elif torch.is_tensor(vals[0]):
            out[name] = torch.stack(vals)
        else:
            out[name] = vals
    return out


# -- streams -------------------------------------------------------------------------------
def dist_info() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else from the environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


@dataclass
class ShardSet:
    name: str
    urls: list[str]
    weight: float


def shard_sets_from_cfg(cfg) -> list[ShardSet]:
    """``data.shards`` (one set) overrides ``data.sets`` (named, weighted sets)."""
    data = data_config(cfg)
    if data.shards is not None:
        return [ShardSet("shards", resolve_shards(data.shards), 1.0)]
    sets = []
    for i, s in enumerate(data.sets):
        name = s.name or f"set{i}"
        if not s.weight > 0:
            raise ValueError(f"data.sets[{name}].weight must be > 0, got {s.weight}")
        sets.append(ShardSet(name, resolve_shards(s.shards), s.weight))
    if not sets:
        raise ValueError("no training data: set data.shards=PATH or list data.sets")
    return sets


class _ResampledShards:
    """Endless raw samples from shards drawn with replacement by a seeded RNG."""

    def __init__(self, urls: list[str], rng: np.random.Generator, set_name: str):
        self.urls, self.rng, self.set_name = urls, rng, set_name
        self._it: Iterator[dict] | None = None
        self._url = ""
        self.failed: list[dict] = []

    def _next_shard(self):
        self._url = self.urls[int(self.rng.integers(len(self.urls)))]
        self._it = iter_shard(self._url)

    def __next__(self) -> dict:
        empty_streak = 0
        while True:
            if self._it is None:
                self._next_shard()
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
                empty_streak += 1
            except ShardError as e:
                log.warning("skipping rest of shard: %s", e)
                self.failed.append({"shard": self._url, "key": None, "reason": str(e)})
                self._it = None
                empty_streak += 1
            if empty_streak > 4 * len(self.urls) + 8:
                raise RuntimeError(f"data set {self.set_name!r}: {empty_streak} shard draws in a row gave no sample; "
                                   f"are the shards empty or unreadable? first: {self.urls[0]}")


class TrainStream(torch.utils.data.IterableDataset):
    """Endless, resampled, weighted-mixed stream of training examples (module docstring)."""

    def __init__(self, sets: list[ShardSet], cfg: ExampleConfig, seed: int, resume_positions: dict | None = None,
                 worker_rotation: int = 0, num_workers: int = 0):
        super().__init__()
        self.sets, self.cfg, self.seed = sets, cfg, int(seed)
        self.resume_positions = {int(k): int(v) for k, v in (resume_positions or {}).items()}
        self.worker_rotation = int(worker_rotation)
        self.num_workers = max(1, int(num_workers))
        w = np.array([s.weight for s in sets], dtype=np.float64)
        self.probs = w / w.sum()

    def __iter__(self) -> Iterator[dict]:
        rank, _ = dist_info()
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        logical = (wid + self.worker_rotation) % self.num_workers
        sources = [_ResampledShards(s.urls, _rng(self.seed, rank, logical, 1 + i, 0x5EED), s.name)
                   for i, s in enumerate(self.sets)]
        start = self.resume_positions.get(logical, -1) + 1
        corrupt: list[dict] = []
        pos = 0
        while True:
            rng = _rng(self.seed, rank, logical, pos)
            k = int(rng.choice(len(sources), p=self.probs)) if len(sources) > 1 else 0
            raw = next(sources[k])
            for rec in sources[k].failed:
                corrupt.append(rec)
            sources[k].failed.clear()
            if pos < start:        # fast-forward on resume: raw members only, nothing decoded
                pos += 1
                continue
            try:
                ex = make_example(raw, self.cfg, rng)
            except SampleError as e:
                log.warning("corrupt sample skipped: %s", e)
                corrupt.append({"shard": raw.get("__url__"), "key": raw.get("__key__"), "reason": str(e)})
                pos += 1
                continue
            ex["set"] = self.sets[k].name
            ex["corrupt"] = corrupt
            ex["stream_pos"] = torch.tensor(pos)
            ex["stream_worker"] = torch.tensor(logical)
            corrupt = []
            pos += 1
            yield ex


def make_train_loader(cfg, seed: int, resume_positions: dict | None = None, consumed_batches: int = 0):
    """DataLoader over :class:`TrainStream` of the ``data:`` block ``cfg``; ``consumed_batches``
    restores the worker round-robin order."""
    data = data_config(cfg)
    nw = data.num_workers
    ds = TrainStream(shard_sets_from_cfg(data), example_config(data, train=True), seed,
                     resume_positions=resume_positions, worker_rotation=consumed_batches % max(1, nw),
                     num_workers=nw)
    return torch.utils.data.DataLoader(ds, batch_size=data.batch_size, num_workers=nw, collate_fn=collate,
                                       persistent_workers=False, prefetch_factor=2 if nw > 0 else None)


def eval_examples(spec, data_cfg, seed: int, max_samples: int | None = None) -> list[dict]:
    """This rank's exact share of the eval shards (sample i -> rank i % world), padded so every
    rank holds the same count; padding examples have ``valid=False``. Deterministic views per key."""
    rank, world = dist_info()
    cfg = example_config(data_cfg, train=False)
    mine: list[dict] = []
    total = 0
    corrupt: list[dict] = []
    for url in resolve_shards(spec):
        try:
            for raw in iter_shard(url):
                if max_samples is not None and total >= max_samples:
                    break
                i = total
                total += 1
                if i % world != rank:
                    continue
                rng = _rng(seed, zlib.crc32(str(raw.get("__key__")).encode()))
                try:
                    ex = make_example(raw, cfg, rng)
                except SampleError as e:
                    log.warning("corrupt eval sample skipped: %s", e)
                    corrupt.append({"shard": url, "key": raw.get("__key__"), "reason": str(e)})
                    continue
                ex["corrupt"] = []
                mine.append(ex)
        except ShardError as e:
            log.warning("eval shard skipped: %s", e)
            corrupt.append({"shard": url, "key": None, "reason": str(e)})
    per_rank = -(-total // world)
    if not mine and per_rank:
        mine_spare = _first_good_example(spec, cfg, seed)
        if mine_spare is None:
            raise RuntimeError(f"eval shards {spec}: no decodable sample at all ({len(corrupt)} corrupt)")
        mine_spare["valid"] = torch.tensor(False)
        mine_spare["corrupt"] = []
        mine.append(mine_spare)
    while mine and len(mine) < per_rank:
        pad = dict(mine[-1])
        pad["valid"] = torch.tensor(False)
        mine.append(pad)
    if corrupt and mine:
        mine[0]["corrupt"] = corrupt
    return mine


def _first_good_example(spec, cfg: ExampleConfig, seed: int) -> dict | None:
    """Padding for a rank that got no eval sample (more ranks than samples)."""
    for url in resolve_shards(spec):
        try:
            for raw in iter_shard(url):
                try:
                    return make_example(raw, cfg, _rng(seed, zlib.crc32(str(raw.get("__key__")).encode())))
                except SampleError:
                    continue
        except ShardError:
            continue
    return None
