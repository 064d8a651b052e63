"""Foreground masks for real captures: given masks thresholded, or per-camera median
background subtraction with morphological clean-up (scipy.ndimage).

Why median: in a recording of a moving mouse, each pixel shows the empty arena in most
frames, so the per-pixel median over a spread of frames is the background without ever
needing an empty-arena shot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage


@dataclass
class MaskConfig:
    """The ``masks:`` section of configs/real/ingest.yaml (values and their meaning are there)."""

    threshold: float
    open_iterations: int
    close_iterations: int
    fill_holes: bool
    keep_largest: bool
    background_frames: int
    given_threshold: float
    min_pixels: int


def median_background(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Per-pixel median of ``frames`` [N,H,W,C] (uint8) -> [H,W,C] uint8."""
    stack = np.asarray(frames)
    if stack.ndim != 4 or len(stack) == 0:
        raise ValueError(f"median_background: expected frames [N,H,W,C] with N >= 1, got shape {stack.shape}")
    return np.median(stack, axis=0).astype(np.uint8)


def clean_mask(mask: np.ndarray, cfg: MaskConfig) -> np.ndarray:
    """Opening (speckle), closing (gaps), hole filling, largest component."""
    m = np.asarray(mask, dtype=bool)
    if cfg.open_iterations > 0:
        m = ndimage.binary_opening(m, iterations=cfg.open_iterations)
    if cfg.close_iterations > 0:
        # pad so closing does not erode at the image border
        p = cfg.close_iterations
        m = ndimage.binary_closing(np.pad(m, p), iterations=p)[p:-p, p:-p]
    if cfg.fill_holes:
        m = ndimage.binary_fill_holes(m)
    if cfg.keep_largest and m.any():
        labels, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, labels, index=np.arange(1, n + 1))
            m = labels == (1 + int(np.argmax(sizes)))
    return m


def subtract_background(frame: np.ndarray, background: np.ndarray, cfg: MaskConfig) -> np.ndarray:
    """Foreground of ``frame`` against ``background`` (both [H,W,C] uint8) -> bool [H,W]."""
    f, b = np.asarray(frame), np.asarray(background)
    if f.shape != b.shape:
        raise ValueError(f"subtract_background: frame {f.shape} and background {b.shape} differ in shape")
    diff = np.abs(f.astype(np.int16) - b.astype(np.int16))
    diff = diff.max(-1) if diff.ndim == 3 else diff
    return clean_mask(diff > cfg.threshold, cfg)
