"""The one framing rule of every source (docs/architecture.md §3).

Why: a long tail set the scale when the whole mesh was normalised, so the mouse covered ~5 %
of a synthetic view while real crops filled most of theirs, a synthetic-to-real gap built in.
Here the BODY WITHOUT THE TAIL sets scale and centre:

- world: the body box (axis-aligned box of the body without the tail) is centred at the
  origin and its longest half-extent is ``fill`` (0.5: body length = 1 world unit, so world
  units are body lengths); the tail may reach beyond it;
- views: a camera looks at the origin and its focal length is chosen so that the projected
  body box reaches ``view_fill`` of the half-image from its centre (:func:`framed_intrinsics`);
  real views become virtual cameras aimed at the body centre with the same intrinsics
  (synth/real/normalize.py, where the body is the visual hull opened until the tail drops out).

Camera distance is then free: rigs may place each view anywhere from the FaceLift rig's
~2.7 body lengths to the 3-6 body lengths of lab rigs with narrow lenses, and the mouse
keeps its share of the frame (:func:`sample_distances`).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["box_corners", "body_box", "normalization", "framed_intrinsics", "sample_distances"]


def box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def body_box(vertices: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Box of the vertices where ``keep`` is true (the body without the tail), else of all."""
    v = np.asarray(vertices, np.float64)
    if keep is not None and np.asarray(keep, bool).any():
        v = v[np.asarray(keep, bool)]
    return v.min(0), v.max(0)


def normalization(lo: np.ndarray, hi: np.ndarray, fill: float) -> tuple[np.ndarray, float]:
    """Centre of the body box and the scale mapping its longest half-extent to ``fill``:
    world = (model - centre) * scale."""
    if not 0 < fill < 1:
        raise ValueError(f"normalize.fill must lie in (0, 1), got {fill}")
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    half = float((hi - lo).max()) / 2
    if not half > 0:
        raise ValueError("body has zero extent; cannot normalise it")
    return (lo + hi) / 2, fill / half


def framed_intrinsics(w2c: np.ndarray, lo: np.ndarray, hi: np.ndarray, view_fill: float, width: int,
                      height: int | None = None) -> np.ndarray:
    """Square-pixel K (principal point centred) of a camera looking at the box centre, with the
    focal length at which the projected box [lo, hi] reaches ``view_fill`` of the half-image
    from the centre (its farthest corner, along the more-filled axis)."""
    height = width if height is None else height
    if not 0 < view_fill <= 1:
        raise ValueError(f"framing view_fill must lie in (0, 1], got {view_fill}")
    pts = box_corners(lo, hi) @ np.asarray(w2c)[:3, :3].T + np.asarray(w2c)[:3, 3]
    if not (pts[:, 2] > 1e-6).all():
        raise ValueError("framing: the body box reaches behind the camera; place the camera further away")
    tx = float(np.abs(pts[:, 0] / pts[:, 2]).max())
    ty = float(np.abs(pts[:, 1] / pts[:, 2]).max())
    f = min(view_fill * 0.5 * width / max(tx, 1e-9), view_fill * 0.5 * height / max(ty, 1e-9))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def sample_distances(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """Per-view camera distances, log-uniform in [lo, hi] (a 2x step counts the same near and far)."""
    if not 0 < lo <= hi:
        raise ValueError(f"rig distance range must satisfy 0 < lo <= hi, got [{lo}, {hi}]")
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size=int(n)))
