"""Optimiser and learning-rate schedule: AdamW with decay on matrices only, warm-up + cosine.

Why decay on matrices only: biases, norms' gains and per-channel scales are not weights
that overfit by growing; decaying them only fights the normalisation (the GPT/LRM recipe).
"""
from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: parameters with ndim >= 2 decay, the rest (biases, norms) do not.
    Frozen parameters (requires_grad False) are left out."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters: the freeze policy froze the whole model")
    return [{"params": decay, "weight_decay": float(weight_decay)},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, optim_cfg) -> torch.optim.Optimizer:
    betas = tuple(float(b) for b in optim_cfg.betas)
    return torch.optim.AdamW(param_groups(model, optim_cfg.weight_decay), lr=float(optim_cfg.lr), betas=betas,
                             eps=float(optim_cfg.eps))


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up from 0, then cosine to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg, total_steps: int):
    warm, lo = int(optim_cfg.warmup_steps), float(optim_cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warm, total_steps, lo))
