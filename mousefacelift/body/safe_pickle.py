"""Restricted unpickling for user-provided model files.

Why: pickles execute arbitrary code on load. The MAMMAL files only need numpy arrays and
scipy sparse matrices, so everything else is refused with an error naming the file and the
global it asked for.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

__all__ = ["safe_load_pickle", "UnsafePickleError"]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("scipy.sparse._csc", "csc_matrix"),
    ("scipy.sparse.csc", "csc_matrix"),
    ("scipy.sparse._csr", "csr_matrix"),
    ("scipy.sparse.csr", "csr_matrix"),
    ("scipy.sparse._coo", "coo_matrix"),
    ("scipy.sparse.coo", "coo_matrix"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the numpy/scipy-array allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to load global {module}.{name} (only numpy arrays and "
            f"scipy.sparse matrices are allowed in model pickles)")


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle that may contain only numpy arrays, scipy sparse matrices and plain
    containers; raise UnsafePickleError (naming the file and the global) otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
