"""Exponential moving average of a model's weights (``train.ema_decay``; null = off).

Why: the averaged weights of a long run are smoother than the last step's and are what
diffusion and reconstruction models are usually evaluated and shipped with. The average
starts equal to the model and follows it with ``decay_t = min(decay, (1 + t) / (10 + t))``
after each accepted optimiser step ``t`` (the usual warm-up, so early weights do not linger).
Buffers are copied, not averaged. The average lives in float32 whatever the model's dtype,
is saved in the checkpoint as ``ema`` and used for evaluation; inference loads it when present.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: (v.detach().float() if v.dtype.is_floating_point else v.detach()).clone()
                       for k, v in model.state_dict().items()}
        self._params = {name for name, _ in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for k, v in model.state_dict().items():
            if k in self._params and v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - d)
            else:
                self.shadow[k].copy_(v.detach())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.shadow.keys():
            missing, extra = sorted(self.shadow.keys() - state.keys()), sorted(state.keys() - self.shadow.keys())
            raise ValueError(f"EMA state does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for k, v in state.items():
            self.shadow[k].copy_(v)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block, its own weights again after it."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(own)
