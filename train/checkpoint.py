"""The training-only parts of a checkpoint: RNG states and the source revision.

Reading and writing checkpoint files is :mod:`mousefacelift.checkpoint` (atomic, weights-only);
what goes into one is train/trainer.py's ``state_dict``: model, optimiser, scheduler, step,
data-stream positions, skip counters and grad-norm history for an exact ``resume=true``,
plus the resolved config, the git revision and data manifest hashes for a reader to trust it.
"""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import numpy as np
import torch


def git_revision(repo: str | os.PathLike | None = None) -> str:
    """``git describe``-style revision of the source tree ('+dirty' when modified), or 'unknown'."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
