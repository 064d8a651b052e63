"""The generic trainer's own config sections, typed: ``train``, ``eval``, ``phase``, ``optim``.

Their values are stated and documented in configs/train.yaml, configs/optim/ and the phase
files, never here; :func:`mousefacelift.config.typed` turns each section into its dataclass,
so an unknown or misspelt key in any of those files is an error naming it. Tasks read their
own sections (``model``, ``loss``) the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mousefacelift.config import ConfigError, typed


_CHOICES = {"device": ("auto", "cpu", "cuda"), "precision": ("auto", "bf16", "fp32")}


def check_run_keys(cfg) -> None:
    """The root config's own values, which no section dataclass types: a bad one is a
    ConfigError naming the key, the value and what was expected (``seed=abc``)."""
    def bad(key: str, expected: str):
        raise ConfigError(f"{key}={cfg.get(key)!r}: expected {expected}")

    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        bad("seed", "a whole number")
    if not isinstance(cfg.get("resume"), bool):
        bad("resume", "true or false")
    for key, choices in _CHOICES.items():
        if cfg.get(key) not in choices:
            bad(key, " | ".join(choices))
    for key in ("init_from", "init_default"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            bad(key, "a checkpoint path or null")
    for key in ("task", "out_dir"):
        if not isinstance(cfg.get(key), str) or not cfg.get(key):
            bad(key, "a non-empty name")


def _positive(where: str, **values) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"{where}.{name} must be positive, got {v!r}")


@dataclass(frozen=True)
class SkipConfig:
    """When a step is skipped (train/spikes.py): gradient norm above ``spike_factor`` x the
    running median of all recent finite norms and above ``floor``."""

    spike_factor: float
    history: int
    min_history: int
    floor: float


@dataclass(frozen=True)
class LoopConfig:
    """The ``train`` section: steps, accumulation, clipping, skipping, EMA, logging cadence."""

    steps: int
    grad_accum: int
    grad_clip: float
    skip: SkipConfig
    ema_decay: float | None
    log_every: int
    image_every: int
    eval_every: int
    ckpt_every: int
    stop_after_steps: int | None
    tensorboard: bool

    def __post_init__(self):
        _positive("train", steps=self.steps, grad_accum=self.grad_accum, log_every=self.log_every,
                  ckpt_every=self.ckpt_every)
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay!r}")


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval`` section: held-out shards and how much of them to score."""

    shards: Any
    max_samples: int | None
    batch_size: int
    collapse_warn_ratio: float
    baseline_margin_db: float
    surface_eps: float
    surface_warn_share: float
    stop_when_dead: bool

    def __post_init__(self):
        _positive("eval", batch_size=self.batch_size)


@dataclass(frozen=True)
class PhaseConfig:
    """The ``phase`` section: the phase's name and what of the model it freezes."""

    name: str
    freeze: tuple[str, ...]
    freeze_first_blocks: int
    block_prefix: str
    init_strict: bool

    def freeze_patterns(self) -> list[str]:
        """``freeze`` globs plus ``{block_prefix}.{i}.*`` for the first ``freeze_first_blocks`` blocks."""
        return list(self.freeze) + [f"{self.block_prefix}.{i}.*" for i in range(self.freeze_first_blocks)]


@dataclass(frozen=True)
class OptimConfig:
    """The ``optim`` section: AdamW and its warm-up + cosine schedule (train/schedule.py)."""

    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float

    def __post_init__(self):
        _positive("optim", lr=self.lr, eps=self.eps)


@dataclass(frozen=True)
class TrainerSettings:
    """All of the trainer's own sections of a composed training config."""

    loop: LoopConfig
    eval: EvalConfig
    phase: PhaseConfig
    optim: OptimConfig

    @classmethod
    def of(cls, cfg) -> "TrainerSettings":
        check_run_keys(cfg)
        return cls(loop=typed(LoopConfig, cfg.train, "train"), eval=typed(EvalConfig, cfg.eval, "eval"),
                   phase=typed(PhaseConfig, cfg.phase, "phase"), optim=typed(OptimConfig, cfg.optim, "optim"))
