"""Which views of a sample a training step uses (docs/architecture.md §4: default 8 of 32, 4 inputs).

Why a constraint: a novel view that no input view overlaps cannot be reconstructed, and four
inputs bunched on one side waste the model's capacity. Both are judged on *normalised view
directions* (the reversed optical axis, a unit vector; for the look-at rigs of the project it
is the camera's direction from the subject), so they work for any radius or real rig.

Policies:
- ``fixed``: the same view indices every step (``fixed_views`` in config), e.g. to reproduce a
  FaceLift-style front/side/back layout;
- ``random``: draw views until the inputs are at least ``min_input_separation_deg`` apart and
  every view lies within ``max_target_distance_deg`` of its nearest input; after ``max_tries``
  the best draw (fewest violations) is used and the example is flagged (``view_fallback``), so
  the trainer can log how often the constraint could not be met.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mousefacelift.config import load_typed


@dataclass(frozen=True)
class ViewSamplingConfig:
    """``data.view_sampling``. configs/data/base.yaml states and documents every field, so the
    dataclass has no defaults; :meth:`from_yaml` is that block with fields overridden."""

    num_views: int
    num_input_views: int
    policy: str                        # "random" or "fixed"
    fixed_views: tuple[int, ...] | None
    min_input_separation_deg: float
    max_target_distance_deg: float
    max_tries: int

    @classmethod
    def from_yaml(cls, **overrides: Any) -> ViewSamplingConfig:
        """configs/data/base.yaml's ``view_sampling:`` block with ``overrides`` (field=value) applied."""
        return load_typed(cls, "data", "base", overrides, key="view_sampling")

    def __post_init__(self):
        if self.policy not in ("fixed", "random"):
            raise ValueError(f"data.view_sampling.policy is {self.policy!r}, expected 'fixed' or 'random'")
        if not 0 < self.num_input_views <= self.num_views:
            raise ValueError(f"data.view_sampling: need 0 < num_input_views ({self.num_input_views}) <= "
                             f"num_views ({self.num_views})")
        if self.policy == "fixed":
            if self.fixed_views is None or len(self.fixed_views) != self.num_views:
                raise ValueError(f"data.view_sampling.fixed_views must list exactly num_views={self.num_views} "
                                 f"indices for policy 'fixed', got {self.fixed_views}")
            if len(set(self.fixed_views)) != len(self.fixed_views):
                raise ValueError(f"data.view_sampling.fixed_views has duplicates: {self.fixed_views}")


def view_directions(c2w: np.ndarray) -> np.ndarray:
    """Unit view directions [V,3]: the reversed optical axis (camera z) of each c2w [V,4,4]."""
    d = -np.asarray(c2w, dtype=np.float64)[:, :3, 2]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(a @ b.T, -1.0, 1.0)))


def constraint_violations(dirs: np.ndarray, views: np.ndarray, num_inputs: int, cfg: ViewSamplingConfig) -> int:
    """How many input pairs are too close plus how many views are too far from every input."""
    inp = dirs[views[:num_inputs]]
    pair = _angles_deg(inp, inp)[np.triu_indices(num_inputs, 1)]
    near = _angles_deg(dirs[views], inp).min(axis=1)
    return int((pair < cfg.min_input_separation_deg).sum() + (near > cfg.max_target_distance_deg).sum())


def select_views(c2w: np.ndarray, cfg: ViewSamplingConfig, rng: np.random.Generator, where: str = "") -> tuple[np.ndarray, bool]:
    """Indices [num_views] (the first ``num_input_views`` are the inputs) and a fallback flag."""
    V = len(c2w)
    if V < cfg.num_views:
        raise ValueError(f"{where}: sample has {V} views but data.view_sampling.num_views is {cfg.num_views}")
    if cfg.policy == "fixed":
        idx = np.asarray(cfg.fixed_views, dtype=np.int64)
        if idx.max() >= V or idx.min() < 0:
            raise ValueError(f"{where}: data.view_sampling.fixed_views {list(idx)} out of range for {V} views")
        return idx, False
    dirs = view_directions(c2w)
    best, best_bad = None, None
    for _ in range(max(1, cfg.max_tries)):
        idx = rng.permutation(V)[: cfg.num_views]
        bad = constraint_violations(dirs, idx, cfg.num_input_views, cfg)
        if bad == 0:
            return idx, False
        if best_bad is None or bad < best_bad:
            best, best_bad = idx, bad
    return best, True
