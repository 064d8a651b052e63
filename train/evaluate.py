"""Held-out evaluation plumbing shared by every task: batches in, one set of numbers out.

Metrics are per-example values with weights, summed on each rank and all-reduced, so every
rank returns the same means; padding examples (``valid=False``, train.data.eval_examples)
get weight zero, as do values that are not finite (e.g. a masked PSNR over an empty mask).
What is measured is the task's (train/tasks/).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.distributed as dist

from .data import collate, to_device


def eval_batches(task, examples: list[dict], batch_size: int, device: torch.device) -> Iterator[dict[str, Any]]:
    """The task's batches (on ``device``) of ``batch_size`` consecutive examples."""
    for start in range(0, len(examples), batch_size):
        yield to_device(task.batch(collate(examples[start:start + batch_size])), device)


class WeightedMeans:
    """Weighted means of named per-example metrics over this rank's examples, then all ranks."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, name: str, values: torch.Tensor, weights: torch.Tensor) -> None:
        values = values.float()
        weights = torch.where(torch.isfinite(values), weights, torch.zeros_like(weights))
        values = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        self.sums[name] = self.sums.get(name, 0.0) + float((values * weights).sum())
        self.counts[name] = self.counts.get(name, 0.0) + float(weights.sum())

    def result(self, device: torch.device) -> dict[str, float]:
        """Means over all ranks (a collective when torch.distributed is initialised)."""
        names = sorted(self.sums)
        sums, counts = self.sums, self.counts
        if dist.is_available() and dist.is_initialized():
            # every rank must reduce the same names: a metric may exist on some ranks only
            # (e.g. depth error where only some samples have depth)
            allnames = [None] * dist.get_world_size()
            dist.all_gather_object(allnames, names)
            names = sorted(set().union(*allnames))
            t = torch.tensor([[sums.get(n, 0.0), counts.get(n, 0.0)] for n in names], dtype=torch.float64,
                             device=device)
            dist.all_reduce(t)
            sums = {n: float(t[i, 0]) for i, n in enumerate(names)}
            counts = {n: float(t[i, 1]) for i, n in enumerate(names)}
        return {n: sums[n] / counts[n] for n in names if counts.get(n, 0) > 0}


def mean_novel_image(task, examples: list[dict], batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rgb [3,H,W], alpha [1,H,W]): the mean of every held-out novel view (the baseline)."""
    nin, rgb, alpha, n = task.num_inputs, 0.0, 0.0, 0.0
    for batch in eval_batches(task, examples, batch_size, device):
        if batch["rgb"].shape[1] <= nin:
            return None
        w = batch["valid"].float()[:, None, None, None, None]
        rgb = rgb + (batch["rgb"][:, nin:].float() * w).sum(dim=(0, 1))
        alpha = alpha + (batch["alpha"][:, nin:].float() * w).sum(dim=(0, 1))
        n += float(w.sum()) * (batch["rgb"].shape[1] - nin)
    if n == 0:
        return None
    return rgb / n, alpha / n
