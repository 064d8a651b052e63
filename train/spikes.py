"""Which optimiser steps to skip: non-finite losses or gradients, and gradient-norm spikes.

Why it is shaped this way: a filter that compares with the running median of ACCEPTED steps
only can deadlock. When accepted norms settle near 0 (a run whose Gaussians went
transparent) every real gradient is a "spike"; when the norm settles at a new, higher level,
every later step is. Here every finite norm enters the history, accepted or not, so the
median follows a level change within ``history / 2`` steps, and a norm at or below ``floor``
(by default the clipping threshold: clipping already bounds such a step) is never a spike.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from .settings import SkipConfig

__all__ = ["SpikeFilter"]


class SpikeFilter:
    def __init__(self, cfg: SkipConfig):
        self.cfg = cfg
        self.history: deque[float] = deque(maxlen=int(cfg.history))

    def decide(self, grad_norm: float, loss_finite: bool = True) -> str | None:
        """``"nonfinite"``, ``"spike"`` or None (take the step); records the norm."""
        if not loss_finite or not math.isfinite(grad_norm):
            return "nonfinite"
        spike = (len(self.history) >= self.cfg.min_history and grad_norm > self.cfg.floor
                 and grad_norm > self.cfg.spike_factor * float(np.median(self.history)))
        self.history.append(float(grad_norm))
        return "spike" if spike else None

    def state_dict(self) -> list[float]:
        return list(self.history)

    def load_state_dict(self, history) -> None:
        self.history.clear()
        self.history.extend(float(x) for x in history)
