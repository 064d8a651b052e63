"""Checkpoint files: written atomically, read without executing pickled code.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists, dicts). Training
adds one object outside that set: numpy's RNG state (an ndarray of uint32 inside a tuple),
so exactly the numpy globals that rebuild such an array are admitted to the
``weights_only=True`` unpickler, and nothing else: a checkpoint from elsewhere can at worst
fail to load, never run code.

Written to a temporary name in the same folder, flushed and renamed, so a crash never leaves
a half-written ``last.pt``.

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

__all__ = ["LAST", "CheckpointError", "save_checkpoint", "load_checkpoint", "model_config_of"]

LAST = "last.pt"

# What np.random.get_state() pickles into: ndarray, its dtype, the array rebuild function.
_NUMPY_RNG_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                      (_reconstruct, "numpy.core.multiarray._reconstruct")]


class CheckpointError(FileNotFoundError):
    """A checkpoint that was asked for and is not there (never a silent fresh start)."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically (temporary file in the same folder, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint onto the CPU; a missing path is a :class:`CheckpointError` naming
    ``what`` it was for, a file that is not a checkpoint a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: checkpoint {path} does not exist (refusing to start from scratch; "
                              "pass init_from=null to start fresh on purpose)")
    try:
        with torch.serialization.safe_globals(_NUMPY_RNG_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        text = str(e)
        marker = "WeightsUnpickler error:"
        reason = text.split(marker, 1)[1] if marker in text else text
        reason = reason.strip().split(". ")[0].splitlines()[0] if reason.strip() else type(e).__name__
        raise ValueError(f"{what}: {path} is not a readable checkpoint (tensors and plain values only): "
                         f"{reason}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} holds a {type(state).__name__}, expected a checkpoint dict")
    return state


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
