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
- corrupt samples (undecodable members, bad meta, PNGs over ``data.max_image_pixels``) and
  unreadable shards (truncated tars, a sha256 that differs from the manifest, HTTP 4xx) are
  skipped, counted and logged with the shard's name; the record travels with the next good
  example into the batch (``batch["corrupt"]``) so the trainer's counter is global, not per
  worker process. A shard that can never be read is not drawn again. Skipping is bounded:
  ``data.max_consecutive_corrupt`` unusable samples in a row, more than
  ``data.max_corrupt_share`` of them, every shard of a set unreadable, or a shard server
  unreachable for ``data.remote_retry_s`` stops training with a :class:`DataError` naming the
  data set and shard, instead of warning forever;
- on resume, each logical worker fast-forwards past the positions it had already delivered
  (raw tar members only, nothing decoded); the DataLoader's round-robin order is restored by
  rotating which process plays which logical worker.

Evaluation stream (:func:`eval_examples`): every sample of the eval shards exactly once, in
shard order, sample i going to rank ``i % world``; ranks are equalised by padding with
examples flagged ``valid=False`` that the evaluator ignores. With ``eval.shards: null``,
:func:`prepare_data` holds a deterministic slice of the first training set out of training
(:class:`HeldOut`) so that a run always evaluates on something it does not train on.
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch

from mousefacelift.cameras import Camera
from mousefacelift.config import ConfigError, typed
from mousefacelift.shards import (REMOTE_PREFIXES, MultiViewSample, SampleError, ShardError, ShardRejected,
                                  ShardUnavailable, iter_shard, resolve_shards, shard_keys, sibling_shards,
                                  verify_shard)

from .augment import AugmentConfig, augment_inputs, composite, pick_background, resize_views
from .views import ViewSamplingConfig, select_views

log = logging.getLogger(__name__)


class DataError(RuntimeError):
    """Training cannot get data: the message names the data set, the shard and what to do."""


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardSetConfig:
    """One entry of ``data.sets``: a named shard spec and its mixing weight."""

    shards: Any                   # any spec of mousefacelift.shards.resolve_shards
    # name, weight and optional keep defaults: no YAML holds a default entry, and a set given as an
    # override may omit them
    name: str | None = None       # None: set<i>
    weight: float = 1.0
    optional: bool = False        # a set whose shards do not exist is left out (logged) instead of an error


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
    max_consecutive_corrupt: int
    max_corrupt_share: float
    max_image_pixels: int
    remote_retry_s: float
    remote_timeout_s: float
    eval_holdout: float

    def __post_init__(self):
        for name in ("max_consecutive_corrupt", "max_image_pixels", "remote_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"data.{name}={getattr(self, name)!r}: expected a positive number")
        if not 0.0 < self.max_corrupt_share <= 1.0:
            raise ConfigError(f"data.max_corrupt_share={self.max_corrupt_share!r}: expected a share in (0, 1]")
        if not self.remote_retry_s >= 0:
            raise ConfigError(f"data.remote_retry_s={self.remote_retry_s!r}: expected seconds >= 0")
        if not 0.0 <= self.eval_holdout < 1.0:
            raise ConfigError(f"data.eval_holdout={self.eval_holdout!r}: expected a share in [0, 1)")


@dataclass(frozen=True)
class ExampleConfig:
    """What turning samples into examples needs (:func:`example_config`): per example, and the
    stream's limits on skipping and on waiting for a shard server."""

    resolution: tuple[int, int]
    views: ViewSamplingConfig
    backgrounds: tuple[str, ...]
    augment: AugmentConfig
    max_image_pixels: int
    max_consecutive_corrupt: int
    max_corrupt_share: float
    remote_retry_s: float
    remote_timeout_s: float

    @property
    def remote(self) -> dict[str, float]:
        """``iter_shard`` keyword arguments for http(s) shards."""
        return {"retry_s": self.remote_retry_s, "timeout_s": self.remote_timeout_s}


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
                         backgrounds=data.backgrounds if train else data.eval_backgrounds, augment=augment,
                         max_image_pixels=data.max_image_pixels, max_consecutive_corrupt=data.max_consecutive_corrupt,
                         max_corrupt_share=data.max_corrupt_share, remote_retry_s=data.remote_retry_s,
                         remote_timeout_s=data.remote_timeout_s)


# -- example construction ------------------------------------------------------------------
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_sizes(fields: dict, limit: int, tag: str) -> None:
    """Refuse PNG members over ``limit`` pixels from their 24-byte header, before anything is
    decompressed: a 10000x10000 member would otherwise cost seconds and gigabytes per draw.
    Members that are not PNGs are left for the decoder to reject."""
    for name, data in fields.items():
        if not name.endswith(".png") or not isinstance(data, (bytes, bytearray)):
            continue
        if len(data) >= 24 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", bytes(data[16:24]))
            if w * h > limit:
                raise SampleError(f"{tag}: {name} is {w}x{h} = {w * h} pixels, over data.max_image_pixels={limit}; "
                                  "not decoded")


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
    chosen = _subset_fields(raw, idx, meta)
    _check_png_sizes(chosen, cfg.max_image_pixels, tag)
    sample = MultiViewSample.decode(chosen, where=where)
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
    """One resolved training set; ``exclude``: sample keys held out for evaluation."""

    name: str
    urls: list[str]
    weight: float
    exclude: frozenset = field(default_factory=frozenset)


@dataclass(frozen=True)
class HeldOut:
    """Evaluation data carved out of the training shards when ``eval.shards`` is null: these
    shards, and of them only the samples ``keys`` when given (see :func:`hold_out`)."""

    urls: tuple[str, ...]
    keys: frozenset | None = None

    def __str__(self) -> str:
        what = f"{len(self.keys)} held-out sample(s) of " if self.keys is not None else "held-out shard(s) "
        return what + ", ".join(self.urls)


def _resolve_set(name: str, spec, optional: bool) -> list[str] | None:
    """A set's shard list; a local folder that does not exist falls back to the shards named
    after it next to it (``shards/mouse`` -> ``shards/mouse-000000.tar ...``, where a render
    writes them), and an optional set that has neither is left out (None), both logged."""
    try:
        return resolve_shards(spec)
    except FileNotFoundError as e:
        missing = e
    if isinstance(spec, (str, os.PathLike)) and not str(spec).startswith(REMOTE_PREFIXES):
        found = sibling_shards(spec)
        if found:
            log.info("data set %r: %s does not exist; using the %d shard(s) %s-*.tar next to it", name, spec,
                     len(found), os.path.normpath(str(spec)))
            return found
        if optional:
            log.info("data set %r: %s holds no shards (nor %s-*.tar next to it); it is optional, so training "
                     "goes on without it", name, spec, os.path.normpath(str(spec)))
            return None
        raise FileNotFoundError(f"data set {name!r}: no shards at {spec} (no such folder, and no "
                                f"{os.path.normpath(str(spec))}-NNNNNN.tar next to it); render some "
                                "(python -m synth.render) or point shard_root= / data.shards= at them") from None
    if optional:
        log.info("data set %r: %s; it is optional, so training goes on without it", name, missing)
        return None
    raise FileNotFoundError(f"data set {name!r}: {missing}") from None


def shard_sets_from_cfg(cfg) -> list[ShardSet]:
    """``data.shards`` (one set) overrides ``data.sets`` (named, weighted sets)."""
    data = data_config(cfg)
    if data.shards is not None:
        return [ShardSet("shards", resolve_shards(data.shards), 1.0)]
    sets = []
    for i, s in enumerate(data.sets):
        name = s.name or f"set{i}"
        if not s.weight > 0:
            raise ConfigError(f"data.sets[{name}].weight={s.weight!r}: expected a weight > 0")
        urls = _resolve_set(name, s.shards, s.optional)
        if urls is not None:
            sets.append(ShardSet(name, urls, s.weight))
    if not sets:
        if data.sets:
            raise FileNotFoundError(f"no training data: none of the data sets {[s.name for s in data.sets]} has shards")
        raise ConfigError("no training data: set data.shards=PATH or list data.sets")
    return sets


def hold_out(sets: list[ShardSet], share: float) -> tuple[list[ShardSet], HeldOut | None]:
    """Hold a deterministic slice of the first set out of training, for evaluation.

    From a set of n >= 2 shards the last ceil(n * share) of them (at least one, never all);
    from a single shard the last ceil(m * share) of its m samples, by position (read from the
    manifest's key list, else from the tar), excluded from the training stream by key. Returns
    the training sets and the held-out spec (None when there is nothing to spare: share 0 or
    a single sample), and logs which it chose.
    """
    if not sets or share <= 0:
        log.info("eval.shards is null and data.eval_holdout is 0: no evaluation")
        return sets, None
    first = sets[0]
    urls = list(dict.fromkeys(first.urls))
    if len(urls) >= 2:
        k = min(len(urls) - 1, max(1, math.ceil(len(urls) * share)))
        held = HeldOut(tuple(urls[-k:]))
        kept = [u for u in first.urls if u not in set(held.urls)]
        log.info("eval.shards is null: evaluating on the last %d of the %d shards of data set %r (%s), held out "
                 "of training (data.eval_holdout=%g); set eval.shards to choose", k, len(urls), first.name,
                 ", ".join(held.urls), share)
        return [replace(first, urls=kept)] + list(sets[1:]), held
    try:
        keys = shard_keys(urls[0])
    except ShardError as e:
        log.warning("eval.shards is null and the only shard of data set %r is unreadable (%s): no evaluation",
                    first.name, e)
        return sets, None
    if len(keys) < 2:
        log.info("eval.shards is null and data set %r holds %d sample(s), none to spare: no evaluation (set "
                 "eval.shards)", first.name, len(keys))
        return sets, None
    k = min(len(keys) - 1, max(1, math.ceil(len(keys) * share)))
    held_keys = frozenset(keys[-k:])
    log.info("eval.shards is null: evaluating on the last %d of the %d samples of %s (data set %r), held out of "
             "training (data.eval_holdout=%g); set eval.shards to choose", k, len(keys), urls[0], first.name, share)
    return [replace(first, exclude=first.exclude | held_keys)] + list(sets[1:]), HeldOut((urls[0],), held_keys)


def prepare_data(cfg, eval_shards, eval_every: int) -> tuple[list[ShardSet], Any]:
    """The training sets and the evaluation spec of a run, resolved once at start so that a
    missing set fails (or is reported) before anything is written: ``eval_shards`` as given,
    or, when it is null and evaluation is on, a slice held out of training (:func:`hold_out`)."""
    sets = shard_sets_from_cfg(cfg)
    for s in sets:
        log.info("data set %r: %d shard(s), weight %g", s.name, len(s.urls), s.weight)
    if eval_shards is not None or eval_every <= 0:
        return sets, eval_shards
    return hold_out(sets, data_config(cfg).eval_holdout)


class _ResampledShards:
    """Endless raw samples from shards drawn with replacement by a seeded RNG.

    Each shard is checked against its manifest's sha256 before its first read in this process;
    a shard that can never be read (:class:`ShardRejected`) is reported once and not drawn
    again, a server outage longer than the retry window stops the stream (:class:`DataError`)."""

    def __init__(self, urls: list[str], rng: np.random.Generator, set_name: str, remote: dict):
        self.urls, self.rng, self.set_name = urls, rng, set_name
        self.remote = dict(remote)
        self._it: Iterator[dict] | None = None
        self._url = ""
        self.failed: list[dict] = []
        self.rejected: dict[str, str] = {}

    def _read(self, url: str) -> Iterator[dict]:
        verify_shard(url)
        yield from iter_shard(url, **self.remote)

    def __next__(self) -> dict:
        empty_streak = 0
        last = ""
        while True:
            if self._it is None:
                self._url = self.urls[int(self.rng.integers(len(self.urls)))]
                if self._url in self.rejected:
                    continue
                self._it = self._read(self._url)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
                empty_streak += 1
            except ShardUnavailable as e:
                raise DataError(f"data set {self.set_name!r}: {e}; training stopped (data.remote_retry_s="
                                f"{self.remote.get('retry_s')})") from None
            except ShardRejected as e:
                log.warning("shard left out for the rest of this run: %s", e)
                self.failed.append({"shard": self._url, "key": None, "reason": str(e)})
                self.rejected[self._url] = str(e)
                self._it = None
                if len(self.rejected) == len(set(self.urls)):
                    first = next(iter(self.rejected.values()))
                    raise DataError(f"data set {self.set_name!r}: none of its {len(set(self.urls))} shard(s) can "
                                    f"be read; first: {first}") from None
                continue
            except ShardError as e:
                log.warning("skipping rest of shard: %s", e)
                self.failed.append({"shard": self._url, "key": None, "reason": str(e)})
                self._it = None
                empty_streak += 1
                last = str(e)
            if empty_streak > 4 * len(self.urls) + 8:
                raise DataError(f"data set {self.set_name!r}: {empty_streak} shard draws in a row gave no sample; "
                                f"are the shards empty or unreadable? first: {self.urls[0]}"
                                + (f"; last error: {last}" if last else ""))


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
        sources = [_ResampledShards(s.urls, _rng(self.seed, rank, logical, 1 + i, 0x5EED), s.name, self.cfg.remote)
                   for i, s in enumerate(self.sets)]
        start = self.resume_positions.get(logical, -1) + 1
        corrupt: list[dict] = []
        pos = 0
        in_a_row = held_in_a_row = tried = bad = 0
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
            if raw.get("__key__") in self.sets[k].exclude:    # held out for evaluation
                pos += 1
                held_in_a_row += 1
                if held_in_a_row > len(self.sets[k].exclude):
                    raise DataError(f"data set {self.sets[k].name!r}: every sample drawn is held out for evaluation")
                continue
            held_in_a_row = 0
            tried += 1
            try:
                ex = make_example(raw, self.cfg, rng)
            except SampleError as e:
                log.warning("corrupt sample skipped: %s", e)
                corrupt.append({"shard": raw.get("__url__"), "key": raw.get("__key__"), "reason": str(e)})
                pos += 1
                in_a_row += 1
                bad += 1
                self._check_corrupt(in_a_row, bad, tried, corrupt, self.sets[k].name)
                continue
            in_a_row = 0
            ex["set"] = self.sets[k].name
            ex["corrupt"] = corrupt
            ex["stream_pos"] = torch.tensor(pos)
            ex["stream_worker"] = torch.tensor(logical)
            corrupt = []
            pos += 1
            yield ex

    def _check_corrupt(self, in_a_row: int, bad: int, tried: int, recent: list[dict], set_name: str) -> None:
        """Stop with a :class:`DataError` naming the shards once skipping corrupt samples has
        gone on too long (``in_a_row`` > cap) or claims too large a share of what was drawn."""
        cap, share = self.cfg.max_consecutive_corrupt, self.cfg.max_corrupt_share
        if in_a_row > cap:
            why = f"{in_a_row} samples in a row are corrupt (data.max_consecutive_corrupt={cap})"
        elif tried > cap and bad / tried > share:
            why = f"{bad} of {tried} samples drawn are corrupt, over data.max_corrupt_share={share:g}"
        else:
            return
        shards = list(dict.fromkeys(str(r.get("shard")) for r in recent if r.get("key") is not None))
        last = recent[-1]["reason"] if recent else ""
        raise DataError(f"data set {set_name!r}: {why}; shard(s) {', '.join(shards[:3])}"
                        f"{' ...' if len(shards) > 3 else ''}; last: {last}")


def make_train_loader(cfg, seed: int, resume_positions: dict | None = None, consumed_batches: int = 0,
                      sets: list[ShardSet] | None = None):
    """DataLoader over :class:`TrainStream` of the ``data:`` block ``cfg``; ``consumed_batches``
    restores the worker round-robin order; ``sets``: already resolved sets (:func:`prepare_data`)."""
    data = data_config(cfg)
    nw = data.num_workers
    ds = TrainStream(sets if sets is not None else shard_sets_from_cfg(data), example_config(data, train=True), seed,
                     resume_positions=resume_positions, worker_rotation=consumed_batches % max(1, nw),
                     num_workers=nw)
    return torch.utils.data.DataLoader(ds, batch_size=data.batch_size, num_workers=nw, collate_fn=collate,
                                       persistent_workers=False, prefetch_factor=2 if nw > 0 else None)


def _eval_urls(spec) -> tuple[list[str], frozenset | None]:
    if isinstance(spec, HeldOut):
        return list(spec.urls), spec.keys
    return resolve_shards(spec), None


def eval_examples(spec, data_cfg, seed: int, max_samples: int | None = None) -> list[dict]:
    """This rank's exact share of the eval shards (sample i -> rank i % world), padded so every
    rank holds the same count; padding examples have ``valid=False``. Deterministic views per key.
    ``spec`` is a shard spec or a :class:`HeldOut` slice of the training shards."""
    rank, world = dist_info()
    cfg = example_config(data_cfg, train=False)
    remote = cfg.remote
    mine: list[dict] = []
    total = 0
    corrupt: list[dict] = []
    urls, keys = _eval_urls(spec)
    for url in urls:
        try:
            verify_shard(url)
            for raw in iter_shard(url, **remote):
                if keys is not None and raw.get("__key__") not in keys:
                    continue
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
    urls, keys = _eval_urls(spec)
    for url in urls:
        try:
            for raw in iter_shard(url, **cfg.remote):
                if keys is not None and raw.get("__key__") not in keys:
                    continue
                try:
                    return make_example(raw, cfg, _rng(seed, zlib.crc32(str(raw.get("__key__")).encode())))
                except SampleError:
                    continue
        except ShardError:
            continue
    return None
