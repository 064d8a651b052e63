"""What a task brings to the generic trainer (train/trainer.py).

Why tasks: the loop, DDP, mixed precision, checkpoints, resume, skipped steps and logging are
the same for every model trained here; what differs is the model, what it is asked to
predict from the multi-view example batch of train/data.py, how that is scored, and what a
person looks at in TensorBoard. A task holds exactly those, chosen by the config's ``task``
key through :data:`train.tasks.TASKS`.

Per micro-batch the trainer calls ``batch`` (outside autocast, before the batch moves to the
device), ``forward`` (under the trainer's autocast), then ``loss`` (outside it).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..settings import EvalConfig


class Task(ABC):
    """One model family's part of training; ``cfg`` is the whole resolved training config."""

    name: str

    def __init__(self, cfg):
        self.cfg = cfg

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (the trainer seeds torch first, moves and wraps it)."""

    def batch(self, examples: dict[str, Any]) -> dict[str, Any]:
        """The task's batch from a collated multi-view example batch (train.data.collate).
        Tasks that read those fields directly keep the default, the batch itself."""
        return examples

    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        """The model's prediction for a batch (whatever ``loss`` and ``image_panel`` read)."""

    @abstractmethod
    def loss(self, prediction: Any, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss to minimise, dict of detached terms logged as ``loss/NAME``)."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, examples: list[dict], device: torch.device, autocast: bool,
                 config: EvalConfig) -> tuple[dict[str, float], np.ndarray | None]:
        """Held-out metrics (equal on every rank) and an HWC image panel, or None, under the
        ``eval:`` section ``config``. The trainer calls it in eval mode under ``torch.no_grad()``."""

    def export(self, model: torch.nn.Module, out_dir: Path, step: int) -> Path | None:
        """Write what users load outside training (e.g. a diffusers pipeline folder) next to the
        checkpoint; called on rank 0 with every checkpoint, with the EMA weights applied when
        there are any. Returns the path written, or None (the default: the checkpoint is all)."""
        return None

    @abstractmethod
    def image_panel(self, batch: dict[str, Any], prediction: Any) -> np.ndarray:
        """An HWC float image in [0, 1] of the first example of a batch and its prediction."""
