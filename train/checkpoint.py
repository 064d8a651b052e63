"""Atomic training checkpoints and the provenance they carry.

A checkpoint holds everything ``resume=true`` needs to continue exactly (model, optimiser,
scheduler, step, RNG states, data-stream positions, skip counters, grad-norm history) and
what a reader needs to trust it (resolved config, git revision, data manifest hashes).
Written to a temporary name in the same folder and renamed, so a crash never leaves a
half-written ``last.pt``.
"""
from __future__ import annotations

import logging
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
LAST = "last.pt"


class CheckpointError(FileNotFoundError):
    """A checkpoint that was asked for and is not there (never a silent fresh start)."""


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


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """Load a checkpoint; a missing path is a :class:`CheckpointError` naming ``what`` it was for."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: checkpoint {path} does not exist (refusing to start from scratch; "
                              "pass init_from=null to start fresh on purpose)")
    # weights_only=False: our own checkpoints hold RNG states and config dicts; never load untrusted files
    return torch.load(path, map_location="cpu", weights_only=False)
