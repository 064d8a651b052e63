"""Checkpoint files: written atomically, read without executing pickled code.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists, dicts). Training
adds one object outside that set: numpy's RNG state (an ndarray of uint32 inside a tuple),
so exactly the numpy globals that rebuild such an array are admitted to the
``weights_only=True`` unpickler, and nothing else: a checkpoint from elsewhere can at worst
fail to load, never run code.

Written to a temporary name in the same folder, fsynced and renamed (then the folder fsynced),
so a crash never leaves a half-written ``last.pt``; the temporary files a killed writer leaves
behind (``last.pt.tmp-<host>-<pid>``) are removed by the next save into that folder, or by
:func:`mousefacelift.shards.clean_stale_tmp` at a run's start, once their process is gone.

The model a checkpoint holds is described by its ``config.model`` mapping, whose ``type``
names the architecture in :data:`mousefacelift.models.MODELS`; :func:`model_config_of`
reads it.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.core.multiarray import _reconstruct

from .shards.atomic import atomic_file
from .shards.layout import clean_stale_tmp

__all__ = ["LAST", "CheckpointError", "UnreadableCheckpoint", "save_checkpoint",
           "load_checkpoint", "model_config_of"]

LAST = "last.pt"

# What np.random.get_state() pickles into: ndarray, its dtype, the array rebuild function.
_NUMPY_RNG_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                      (_reconstruct, "numpy.core.multiarray._reconstruct")]


class CheckpointError(FileNotFoundError):
    """A checkpoint that was asked for and is not there (never a silent fresh start)."""


class UnreadableCheckpoint(ValueError):
    """A file that is not a checkpoint of tensors and plain values (corrupt, or carrying pickled
    objects or code): refused, never run."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically (temporary file in the same folder, file fsync, os.replace,
    folder fsync), after removing what killed writers left in that folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path.parent)
    with atomic_file(path) as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint onto the CPU; a missing path is a :class:`CheckpointError` naming
    ``what`` it was for, a file that is not a checkpoint (or that carries pickled objects or
    code, which are never executed) an :class:`UnreadableCheckpoint` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: checkpoint {path} does not exist (refusing to start from scratch; "
                              "pass init_from=null to start fresh on purpose)")
    try:
        with torch.serialization.safe_globals(_NUMPY_RNG_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise UnreadableCheckpoint(f"{what}: {path} refused: expected a checkpoint of tensors and plain values "
                                   f"(loaded weights-only, nothing in it is executed); {_load_failure(e)}") from None
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(f"{what}: {path} holds a {type(state).__name__}, expected a checkpoint dict")
    return state


def _load_failure(e: BaseException) -> str:
    """The one informative line of a failed weights-only load (which global was refused)."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln:
            return "it holds pickled objects: " + ln.rstrip(".")
    return "unreadable: " + (lines[0].split(". ")[0] if lines else type(e).__name__).rstrip(".")


def model_config_of(state: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``config.model`` mapping of a checkpoint written by the trainer, ``type`` included."""
    model = (state.get("config") or {}).get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{where}: checkpoint has no config.model mapping (not written by train.run?)")
    model = dict(model)
    # Checkpoints written before model configs carried a ``type`` hold GS-LRM weights: it was
    # the only model then. This is the one place that rule lives.
    model.setdefault("type", "gslrm")
    return model
