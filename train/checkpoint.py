"""The training-only parts of a checkpoint: RNG states and the source revision.

Reading and writing checkpoint files is :mod:`mousefacelift.checkpoint` (atomic, weights-only);
what goes into one is train/trainer.py's ``state_dict``: model, optimiser, scheduler, step,
data-stream positions, skip counters and grad-norm history for an exact ``resume=true``,
plus the resolved config, the git revision and data manifest hashes for a reader to trust it.
Where a phase starts (:func:`missing_default_init`) and how ``init_from`` weights reach the model
(:func:`load_init_weights`: this project's checkpoints, or FaceLift's GS-LRM weights) are
decided here too.
"""
from __future__ import annotations

import logging
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from mousefacelift.models.facelift_ckpt import is_facelift_checkpoint, load_facelift_checkpoint


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


def missing_default_init(cfg, phase: str) -> bool:
    """True (and one log line saying so) when ``init_from`` is the phase's default starting point
    ``init_default`` and that file does not exist yet: the phase then starts from fresh weights.
    A path the user gave (anything else) that does not exist stays an error, at loading."""
    init, default = cfg.get("init_from"), cfg.get("init_default")
    if not init or not default or str(init) != str(default) or Path(str(init)).is_file():
        return False
    logging.getLogger("train.trainer").info(
        "phase %s starts from freshly initialised weights: its default starting point %s (init_default) does not "
        "exist yet; run the previous phase first, or set init_from=PATH", phase, init)
    return True


def load_init_weights(model: torch.nn.Module, state: dict, path, model_type: str, strict: bool) -> str:
    """Copy the weights (only) of the ``init_from`` checkpoint ``state`` into ``model``; returns
    what was loaded, for the log.

    A checkpoint of this project must hold a model of the same ``model.type`` (the trainer checks
    it, as for ``resume``). FaceLift's GS-LRM weights (FaceLift's names, no config) are mapped by
    :func:`mousefacelift.models.facelift_ckpt.load_facelift_checkpoint` into a GS-LRM that must
    follow FaceLift's released configuration (``model=facelift``; its size may be overridden to
    what the weights' shapes fix): a mismatch is refused naming the model options. Optimiser and
    schedule states in either file are ignored. ``strict`` is ``phase.init_strict``.
    """
    if is_facelift_checkpoint(state):
        if model_type != "gslrm":
            raise ValueError(f"{path} holds FaceLift GS-LRM weights, but model.type is {model_type!r}")
        report = load_facelift_checkpoint(model, state, strict=strict, released=True, where=str(path))
        return (f"FaceLift GS-LRM weights ({len(report['loaded'])} tensors, {len(report['skipped'])} non-model keys "
                "skipped)")
    missing, unexpected = model.load_state_dict(state["model"], strict=strict)
    return (f"step {state.get('step')} of phase {state.get('phase')}; missing={len(missing)} "
            f"unexpected={len(unexpected)}")
