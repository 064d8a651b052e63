"""Camera-aware image resampling: from a captured photo to an ideal, framed view.

A real camera's image has lens distortion, skew and the subject anywhere in the frame; the
model sees ideal pinhole views with the subject centred at a fixed fill. These functions
turn one into the other without the image and its intrinsics ever drifting apart: the
output camera is built through ``Camera.cropped`` / ``Camera.resized`` from the ideal
pinhole (or, for framed views, built by :func:`mousefacelift.framing.framed_intrinsics`), and
the resampling maps every output pixel centre back through exactly that camera.
They are shared by the ingest of real multi-camera recordings and by single-photo inference.
Conventions: docs/architecture.md §3 (OpenCV camera, pixel centres at +0.5).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
from scipy import ndimage

from mousefacelift.cameras import Camera, distort_normalized, undistort_normalized


def pinhole(cam: Camera) -> Camera:
    """The ideal pinhole the view is undistorted to: same fx, fy, cx, cy, no skew, no distortion."""
    K = np.array([[cam.fx, 0.0, cam.cx], [0.0, cam.fy, cam.cy], [0.0, 0.0, 1.0]])
    return replace(cam, K=K, dist=None)


def pixels_to_normalized(cam: Camera, uv: np.ndarray) -> np.ndarray:
    """Distorted pixel coordinates of ``cam`` -> ideal normalised image coordinates [N,2]."""
    uv = np.asarray(uv, dtype=np.float64)
    K = cam.K
    y = (uv[:, 1] - K[1, 2]) / K[1, 1]
    x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    xd = np.stack([x, y], -1)
    return undistort_normalized(xd, cam.dist) if cam.dist is not None else xd


def normalized_to_pixels(cam: Camera, xn: np.ndarray) -> np.ndarray:
    """Ideal normalised coordinates -> pixel coordinates of ``cam`` (distortion and skew applied)."""
    if cam.dist is not None:
        xn = distort_normalized(xn, cam.dist)
    return xn @ cam.K[:2, :2].T + cam.K[:2, 2]


def mask_pixels(mask: np.ndarray, max_points: int = 20000) -> np.ndarray:
    """Pixel-centre coordinates (u, v) of a mask's pixels, evenly subsampled."""
    ys, xs = np.nonzero(mask)
    step = max(1, len(xs) // max_points)
    return np.stack([xs[::step] + 0.5, ys[::step] + 0.5], -1).astype(np.float64)


def resample_view(image: np.ndarray, src_cam: Camera, out_cam: Camera, max_supersample: int = 4,
                  extra: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Resample ``image`` (seen by ``src_cam``, with distortion) into the ideal ``out_cam``.

    Every output pixel centre is mapped through ``out_cam`` to a ray, then through
    ``src_cam`` (distortion, skew) to a source position, and sampled bilinearly;
    supersampled by ``s`` and box-filtered, which is exactly ``out_cam.resized(W*s, H*s)``.
    Returns (image float [H,W,C] 0..255, valid [H,W] fraction inside the source, extras).
    """
    W, H = out_cam.width, out_cam.height
    scale = max(src_cam.fx / out_cam.fx, src_cam.fy / out_cam.fy)
    s = int(min(max_supersample, max(1, math.ceil(scale - 1e-6))))
    cam_s = out_cam.resized(W * s, H * s)
    v, u = np.meshgrid(np.arange(H * s) + 0.5, np.arange(W * s) + 0.5, indexing="ij")
    xn = np.stack([(u.ravel() - cam_s.cx) / cam_s.fx, (v.ravel() - cam_s.cy) / cam_s.fy], -1)
    # out_cam is a pinhole in the same camera frame (same w2c), so the ray is the same direction
    R_rel = src_cam.w2c[:3, :3] @ out_cam.w2c[:3, :3].T
    if not np.allclose(R_rel, np.eye(3), atol=1e-9):
        d = np.concatenate([xn, np.ones((len(xn), 1))], 1) @ R_rel.T
        xn = d[:, :2] / d[:, 2:3]
    uv = normalized_to_pixels(src_cam, xn)
    coords = np.stack([uv[:, 1] - 0.5, uv[:, 0] - 0.5])

    def sample(channel: np.ndarray) -> np.ndarray:
        vals = ndimage.map_coordinates(channel.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
        return vals.reshape(H, s, W, s).mean(axis=(1, 3))

    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    out = np.stack([sample(img[..., c]) for c in range(img.shape[-1])], -1)
    valid = sample(np.ones(img.shape[:2], dtype=np.float32))
    extras = [sample(np.asarray(e, dtype=np.float32)) for e in extra]
    return out, valid, extras


def threshold_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """A given mask image (grey, RGB(A), any bit depth, possibly lossy) -> bool [H,W]: values
    above ``threshold`` (0..255 scale, ``masks.given_threshold``) are foreground."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].max(-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.dtype == np.bool_:
        return a.copy()
    scale = 255.0 / np.iinfo(a.dtype).max if np.issubdtype(a.dtype, np.integer) else 255.0
    return a.astype(np.float64) * scale > threshold
