"""The training loop: one phase of docs/architecture.md §4, on one CPU or under torchrun on many GPUs.

Per optimiser step: ``grad_accum`` micro-batches (DDP gradient sync only on the last), bf16
autocast on CUDA, then one decision taken identically on every rank (the loss flag is
all-reduced and the gradient norm is computed after DDP's all-reduce): a step whose loss or
gradient is not finite, or whose gradient norm is a spike (train/spikes.py), is skipped (no
optimiser update) and counted. Otherwise gradients
are clipped to ``grad_clip`` and AdamW steps.

Randomness inside a step is seeded from (seed, rank, step), and the data stream is a pure
function of its position (train/data.py), so ``resume=true`` reproduces a straight run.

What is trained is the config's ``task`` (train/tasks/): it builds the model, runs the
forward pass and the loss on each batch of the multi-view example stream, evaluates, and
draws the TensorBoard image panel; everything else here is the same for every task.
"""
from __future__ import annotations

import fnmatch
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm

from mousefacelift.checkpoint import LAST, load_checkpoint, model_config_of, save_checkpoint
from mousefacelift.models.facelift_ckpt import is_facelift_checkpoint
from mousefacelift.shards import clean_stale_tmp, manifest_record

from . import checkpoint as ckpt
from .data import data_config, eval_examples, example_config, make_train_loader, prepare_data, to_device
from .ema import EMA
from .schedule import build_optimizer, build_scheduler
from .settings import TrainerSettings
from .spikes import SpikeFilter
from .tasks import build_task

log = logging.getLogger(__name__)


# -- setup helpers -------------------------------------------------------------------------
def setup_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but no CUDA device is available")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return rank, world, device


def apply_freeze(model: torch.nn.Module, patterns) -> list[str]:
    """Freeze parameters whose names match any glob in ``patterns``; a pattern matching nothing is an error."""
    patterns = list(patterns or [])
    names = [n for n, _ in model.named_parameters()]
    frozen = []
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatch(n, pat)]
        if not hits:
            raise ValueError(f"phase.freeze pattern {pat!r} matches no parameter; names look like {names[:6]}")
        frozen.extend(hits)
    frozen_set = set(frozen)
    for n, p in model.named_parameters():
        if n in frozen_set:
            p.requires_grad_(False)
    return sorted(frozen_set)


def _seed_step(seed: int, rank: int, step: int) -> None:
    torch.manual_seed((seed * 1_000_003 + rank * 7919 + step) & 0x7FFFFFFF)



class Trainer:
    """Runs one phase from a resolved config (see configs/train.yaml for every key)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.settings = TrainerSettings.of(cfg)
        self.task = build_task(cfg)
        self.data = data_config(cfg.data)
        self.rank, self.world, self.device = setup_distributed(str(cfg.device))
        self.out_dir = Path(str(cfg.out_dir))
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.loop = self.settings.loop
        self.phase = self.settings.phase
        self.steps = self.loop.steps
        self.accum = self.loop.grad_accum
        # data resolved before anything is written: a missing set fails (or, optional, is logged) here, and
        # eval.shards null holds a slice of the training shards out for evaluation (train/data.py)
        self.train_sets, eval_shards = prepare_data(self.data, self.settings.eval.shards, self.loop.eval_every)
        if eval_shards is not self.settings.eval.shards:
            self.settings = replace(self.settings, eval=replace(self.settings.eval, shards=eval_shards))
        self.autocast = self.device.type == "cuda" and str(cfg.precision) in ("auto", "bf16")   # checked by settings
        torch.manual_seed(int(cfg.seed))
        self.model = self.task.build_model().to(self.device)

        self.step = 0
        self.consumed_batches = 0
        self.stream_positions: dict[int, int] = {}
        self.counters = {"skipped_nonfinite": 0, "skipped_spike": 0, "corrupt_samples": 0, "corrupt_shards": 0,
                         "view_fallbacks": 0, "samples": 0}
        self.spikes = SpikeFilter(self.loop.skip)
        resume_state = None
        if bool(cfg.resume):
            resume_state = load_checkpoint(self.ckpt_dir / LAST, what=f"resume=true in {self.out_dir}")
            self._check_model_type(resume_state, self.ckpt_dir / LAST)
            self.model.load_state_dict(resume_state["model"])
            log.info("resuming %s from step %d", self.out_dir, resume_state["step"])
        elif cfg.get("init_from") and not ckpt.missing_default_init(cfg, self.phase.name):
            init = load_checkpoint(str(cfg.init_from), what=f"init_from of phase {self.phase.name}")
            if not is_facelift_checkpoint(init):
                self._check_model_type(init, cfg.init_from)
            what = ckpt.load_init_weights(self.model, init, cfg.init_from, str(cfg.model.get("type")),
                                          self.phase.init_strict)
            log.info("phase %s initialised from %s: %s", self.phase.name, cfg.init_from, what)
        elif not cfg.get("init_from"):
            log.info("phase %s starts from freshly initialised weights (init_from is null)", self.phase.name)

        self.frozen = apply_freeze(self.model, self.phase.freeze_patterns())
        if self.frozen:
            log.info("froze %d parameter tensors (%s)", len(self.frozen), self.phase.freeze_patterns())
        self.optimizer = build_optimizer(self.model, self.settings.optim)
        self.scheduler = build_scheduler(self.optimizer, self.settings.optim, self.steps)
        self.ema = EMA(self.model, self.loop.ema_decay) if self.loop.ema_decay is not None else None
        if resume_state is not None:
            self._restore(resume_state)
        self.ddp = self.model
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.rank == 0:
            clean_stale_tmp(self.ckpt_dir)     # what a checkpoint save killed mid-write left behind
        self._log_setup()
        self.start_step = self.step
        self.writer = None
        if self.rank == 0 and self.loop.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step if self.step else None)
        self.eval_set = None
        self.eval_history: list[dict] = []      # every evaluation of this invocation: the learning curve
        self.last_panel = None                  # the image panel of the latest evaluation (HWC, 0..1)
        vs = self.data.view_sampling
        log.info("task %s; view sampling: policy=%s, %d views (%d inputs), min input separation %.0f deg, max "
                 "target distance %.0f deg; backgrounds %s; augmentation %s", self.task.name, vs.policy,
                 vs.num_views, vs.num_input_views, vs.min_input_separation_deg, vs.max_target_distance_deg,
                 list(self.data.backgrounds), "on" if self.data.augment.enabled else "off")

    def _log_setup(self) -> None:
        """Where and at what size this run trains, so that a slow start (a large model or
        resolution on the CPU) is stated before the first step, whose time fit() logs."""
        h, w = example_config(self.data).resolution
        params = sum(p.numel() for p in self.model.parameters())
        vs = self.data.view_sampling
        where = str(self.device) if self.device.type != "cpu" else f"cpu ({torch.get_num_threads()} threads)"
        log.info("device %s, precision %s, resolution %dx%d, model %s (%s) with %.2fM parameters, %d views per "
                 "sample (%d inputs), batch %d x %d rank(s), %d steps", where, "bf16" if self.autocast else "fp32",
                 h, w, self.cfg.model.get("type"), self.cfg.model.get("name"), params / 1e6, vs.num_views,
                 vs.num_input_views, self.data.batch_size, self.world, self.steps)
        if self.device.type == "cpu" and h * w > 32 * 32:
            log.warning("training on the CPU at %dx%d: a step may take minutes; for a quick try use "
                        "data.resolution=32 train.steps=20 (or a GPU)", h, w)

    def _log_first_step(self, seconds: float, steps: int) -> None:
        log.info("first step took %.1f s: about %s for the %d steps of this run at that pace",
                 seconds, _duration(seconds * steps), steps)

    def _check_model_type(self, state: dict, path) -> None:
        """A checkpoint's weights only fit a model of the same type (``model.type``)."""
        theirs, ours = model_config_of(state, str(path))["type"], self.cfg.model.get("type")
        if theirs != ours:
            raise ValueError(f"{path} holds a model of type {theirs!r}, but model.type is {ours!r}")

    # -- state --------------------------------------------------------------------------
    def _gather_positions(self) -> dict:
        mine = dict(self.stream_positions)
        if self.world > 1:
            allp = [None] * self.world
            dist.all_gather_object(allp, mine)
            return {r: p for r, p in enumerate(allp)}
        return {0: mine}

    def state_dict(self) -> dict:
        return {
            "phase": self.phase.name, "step": self.step, "model": self.model.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(), "consumed_batches": self.consumed_batches,
            "stream_positions": self._gather_positions(), "world_size": self.world,
            "counters": dict(self.counters), "grad_history": self.spikes.state_dict(),
            "config": OmegaConf.to_container(self.cfg, resolve=True), "git_revision": ckpt.git_revision(),
            "data_manifests": self._manifests(),
        }

    def _manifests(self) -> dict:
        d = self.data
        specs = [d.shards] if d.shards is not None else [s.shards for s in d.sets]
        out = {}
        for spec in specs:
            try:
                out[str(spec)] = manifest_record(spec)
            except (OSError, ValueError) as e:
                out[str(spec)] = {"error": str(e)}
        return out

    def _restore(self, st: dict) -> None:
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.step = int(st["step"])
        self.consumed_batches = int(st["consumed_batches"])
        if int(st.get("world_size", 1)) != self.world:
            log.warning("resuming with world size %d, checkpoint had %d: the data stream will not replay exactly",
                        self.world, st.get("world_size"))
        self.stream_positions = dict(st["stream_positions"].get(self.rank, {}))
        self.counters.update(st["counters"])
        self.spikes.load_state_dict(st["grad_history"])
        if self.ema is not None:
            if "ema" in st:
                self.ema.load_state_dict(st["ema"])
            else:
                log.warning("the checkpoint holds no EMA weights (written with train.ema_decay=null): the average "
                            "starts from the weights of step %d", self.step)
        ckpt.set_rng_state(st["rng"])

    def save(self) -> None:
        state = self.state_dict()       # collective when world > 1: every rank calls it
        if self.rank == 0:
            path = save_checkpoint(self.ckpt_dir / LAST, state)
            log.info("checkpoint step %d -> %s", self.step, path)
            with self.ema.applied(self.model) if self.ema is not None else nullcontext():
                exported = self.task.export(self.model, self.out_dir, self.step)
            if exported is not None:
                log.info("exported step %d (%s weights) -> %s", self.step,
                         "EMA" if self.ema is not None else "last", exported)

    # -- one step -----------------------------------------------------------------------
    def _forward_loss(self, batch: dict):
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            prediction = self.task.forward(self.ddp, batch)
        total, parts = self.task.loss(prediction, batch, self.step)
        return total.float(), parts, prediction

    def _note_batch(self, batch: dict) -> None:
        for rec in batch.get("corrupt", []):
            if rec.get("key") is None:      # a shard that could not be read (truncated, sha256 mismatch, HTTP 4xx)
                self.counters["corrupt_shards"] += 1
                log.warning("unreadable shard counted (%s): %s", rec.get("shard"), rec.get("reason"))
                continue
            self.counters["corrupt_samples"] += 1
            log.warning("corrupt sample counted (shard %s, key %s): %s", rec.get("shard"), rec.get("key"),
                        rec.get("reason"))
        self.counters["view_fallbacks"] += int(batch["view_fallback"].sum())
        self.counters["samples"] += len(batch["key"])
        for w, p in zip(batch["stream_worker"].tolist(), batch["stream_pos"].tolist()):
            self.stream_positions[int(w)] = max(int(p), self.stream_positions.get(int(w), -1))
        self.consumed_batches += 1

    def train_step(self, loader_iter) -> dict:
        _seed_step(int(self.cfg.seed), self.rank, self.step)
        self.ddp.train()
        self.optimizer.zero_grad(set_to_none=True)
        nonfinite = False
        parts_sum: dict[str, float] = {}
        last_batch = last_prediction = None
        for micro in range(self.accum):
            batch = next(loader_iter)
            self._note_batch(batch)
            batch = to_device(self.task.batch(batch), self.device)
            sync = micro == self.accum - 1 or self.world == 1
            ctx = self.ddp.no_sync() if (self.world > 1 and not sync) else nullcontext()
            with ctx:
                total, parts, prediction = self._forward_loss(batch)
                if not torch.isfinite(total):
                    nonfinite = True
                (total / self.accum).backward()
            for k, v in {**parts, "total": total}.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(torch.as_tensor(v).detach()) / self.accum
            last_batch, last_prediction = batch, prediction
        flag = torch.tensor([1.0 if nonfinite else 0.0], device=self.device)
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.loop.grad_clip))
        skip = self.spikes.decide(grad_norm, loss_finite=flag.item() == 0)
        if skip:
            self.counters[f"skipped_{skip}"] += 1
            self.optimizer.zero_grad(set_to_none=True)
            log.warning("step %d skipped (%s): loss flag %s, grad norm %.4g", self.step, skip, flag.item() > 0, grad_norm)
        else:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, self.step)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        return {"parts": parts_sum, "grad_norm": grad_norm, "lr": lr, "skipped": skip,
                "batch": last_batch, "prediction": last_prediction}

    # -- loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, t, name = self.cfg, self.loop, self.phase.name
        loader = make_train_loader(self.data, int(cfg.seed), resume_positions=self.stream_positions,
                                   consumed_batches=self.consumed_batches, sets=self.train_sets)
        it = iter(loader)
        if self.step >= self.steps:
            log.info("phase %s already at step %d of %d: nothing to do", name, self.step, self.steps)
        bar = tqdm(total=self.steps, initial=self.step, desc=f"train {name}", disable=self.rank != 0,
                   dynamic_ncols=True)
        last_metrics: dict = {}
        t0, s0 = time.time(), self.counters["samples"]
        stop_at = self.steps
        if t.stop_after_steps is not None:
            stop_at = min(self.steps, self.step + int(t.stop_after_steps))
        if t.eval_every > 0 and self.step == 0 and stop_at > 0:
            last_metrics = self.run_eval() or last_metrics       # step 0: what "untrained" scores
        started, first_step = time.time(), self.step
        while self.step < stop_at:
            res = self.train_step(it)
            if self.step == first_step + 1 and self.rank == 0:
                self._log_first_step(time.time() - started, stop_at - first_step)
            bar.update(1)
            if self.rank == 0 and (self.step % t.log_every == 0 or self.step == self.steps):
                dt = max(time.time() - t0, 1e-9)
                sps = (self.counters["samples"] - s0) * self.world / dt
                t0, s0 = time.time(), self.counters["samples"]
                self._log_scalars(res, sps)
                bar.set_postfix(loss=f"{res['parts'].get('total', float('nan')):.4f}", gn=f"{res['grad_norm']:.3g}")
            if self.writer is not None and t.image_every > 0 and self.step % t.image_every == 0:
                self._log_images(res["batch"], res["prediction"], "train")
            if t.eval_every > 0 and (self.step % t.eval_every == 0 or self.step == self.steps):
                last_metrics = self.run_eval() or last_metrics
                if last_metrics.get("health/dead") and self.settings.eval.stop_when_dead:
                    log.error("phase %s stopped at step %d: the model is dead (eval.stop_when_dead)", name, self.step)
                    stop_at = self.step
            if self.step % t.ckpt_every == 0 or self.step == stop_at:
                self.save()
        bar.close()
        if self.writer is not None:
            self.writer.flush()
        summary = {"phase": name, "step": self.step, **self.counters, **last_metrics}
        log.info("phase %s finished at step %d: %s", name, self.step,
                 {k: v for k, v in summary.items() if k not in ("phase", "step")})
        return {**summary, "eval_history": list(self.eval_history)}

    def _log_scalars(self, res: dict, sps: float) -> None:
        skipped = self.counters["skipped_nonfinite"] + self.counters["skipped_spike"]
        scal = {f"loss/{k}": v for k, v in res["parts"].items()}
        scal.update({"train/grad_norm": res["grad_norm"], "train/lr": res["lr"], "train/samples_per_s": sps,
                     "train/skip_rate": skipped / max(1, self.step),
                     "data/corrupt_samples": self.counters["corrupt_samples"],
                     "data/corrupt_shards": self.counters["corrupt_shards"],
                     "data/view_fallback_rate": self.counters["view_fallbacks"] / max(1, self.counters["samples"])})
        log.info("step %d %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in scal.items()))
        if self.writer is not None:
            for k, v in scal.items():
                if math.isfinite(v):
                    self.writer.add_scalar(k, v, self.step)

    def _log_images(self, batch: dict, prediction, tag: str) -> None:
        self.writer.add_image(f"{tag}/views", self.task.image_panel(batch, prediction), self.step, dataformats="HWC")

    def run_eval(self) -> dict | None:
        ecfg = self.settings.eval
        if ecfg.shards is None:
            return None
        if self.eval_set is None:
            self.eval_set = eval_examples(ecfg.shards, self.data, int(self.cfg.seed), max_samples=ecfg.max_samples)
        self.model.eval()
        try:
            with torch.no_grad(), (self.ema.applied(self.model) if self.ema is not None else nullcontext()):
                metrics, panel = self.task.evaluate(self.model, self.eval_set, self.device, self.autocast, ecfg)
        finally:
            self.model.train()
        self.eval_history.append({"step": self.step, **metrics})
        self.last_panel = panel
        if self.rank == 0:
            log.info("eval step %d: %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if self.writer is not None:
                for k, v in metrics.items():
                    if math.isfinite(v):
                        self.writer.add_scalar(f"eval/{k}", v, self.step)
                if panel is not None:
                    self.writer.add_image("eval/views", panel, self.step, dataformats="HWC")
        return metrics

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            if self.step == self.start_step:
                _remove_empty_event_files(Path(self.writer.log_dir))


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _remove_empty_event_files(folder: Path) -> None:
    """Delete TensorBoard event files holding no event beyond their header (a run that failed
    before its first step), and the folder when that leaves it empty."""
    for f in folder.glob("events.out.tfevents.*"):
        if _tfrecord_count(f) <= 1:
            f.unlink(missing_ok=True)
            log.info("removed %s: the run logged nothing", f)
    try:
        folder.rmdir()
    except OSError:
        pass


def _tfrecord_count(path: Path) -> int:
    """Records in a TFRecord file (8-byte length, 4-byte CRC, data, 4-byte CRC each)."""
    n = 0
    with open(path, "rb") as f:
        while True:
            head = f.read(12)
            if len(head) < 12:
                return n
            f.seek(int.from_bytes(head[:8], "little") + 4, os.SEEK_CUR)
            n += 1
