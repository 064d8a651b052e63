"""Load-time image operations that must keep images and cameras in sync.

- :func:`resize_views`: resolution from config; K follows ``Camera.resized`` (pixel-area
  scaling of row 0 by W'/W and row 1 by H'/H); depth is resized validity-aware (0 = no
  surface never bleeds into valid depth).
- :func:`composite`: straight alpha over a background colour (white/black/grey/random).
- :func:`augment_inputs`: the multi-view-diffusion error model for the *input* views only.

The augmentation contract (tested in tests/test_data_augment.py):

1. **Camera jitter** is a small rotation of the camera about its own centre plus a small
   change of focal length and principal point. For such a change the new image is an exact
   homography of the old one, independent of scene depth, so the image is warped by it and
   the model is handed the *jittered* camera: the warped image is precisely what that camera
   sees (a 3D point projects onto the same image feature before and after). It teaches the
   model that generated views do not sit exactly on the canonical rig.
2. **Grid distortion** is a smooth random displacement field (at most ``grid_distortion_px``
   pixels at the training resolution) that no camera can explain: the input image is warped,
   the input camera is left as it was (the recorded truth), and the supervised target views
   are never touched. It mimics the small non-rigid inconsistencies of diffusion outputs.
3. **Lab-camera look** (``lab_camera``, :mod:`mousefacelift.labcamera`): grey-scale / IR
   response, sensor noise, defocus and motion blur, vignetting, H.264-like compression, drawn
   per input view after the warps. It changes colour only: alpha stays the truth, pixels do not
   move, so the camera and the input depth still describe the view (tests/test_lab_camera.py).

Warps operate on premultiplied colour + alpha, and the background is composited afterwards,
so borders uncovered by a warp show the background colour, never smeared foreground.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mousefacelift.config import load_typed
from mousefacelift.labcamera import LabCameraConfig, lab_camera_views

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5)}


def pick_background(modes, rng: np.random.Generator) -> torch.Tensor:
    """A background colour [3] drawn uniformly among ``modes`` ('random' = uniform colour)."""
    modes = list(modes)
    if not modes:
        raise ValueError("data.backgrounds is empty: list at least one of white, black, grey, random")
    mode = modes[int(rng.integers(len(modes)))]
    if mode == "random":
        return torch.tensor(rng.uniform(0.0, 1.0, size=3), dtype=torch.float32)
    if mode not in BACKGROUNDS:
        raise ValueError(f"data.backgrounds: unknown background {mode!r}, expected white, black, grey or random")
    return torch.tensor(BACKGROUNDS[mode], dtype=torch.float32)


def composite(rgb: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Straight-alpha rgb [...,3,H,W] and alpha [...,1,H,W] over background [3]."""
    return rgb * alpha + background.view(3, 1, 1) * (1.0 - alpha)


def resize_views(rgb: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor | None, K: torch.Tensor,
                 height: int, width: int):
    """Resize [V,C,H,W] views to height x width; returns (rgb, alpha, depth, K)."""
    V, _, H, W = rgb.shape
    if (H, W) == (height, width):
        return rgb, alpha, depth, K
    down = height < H or width < W
    mode = dict(mode="area") if down else dict(mode="bilinear", align_corners=False)
    prem = F.interpolate(torch.cat([rgb * alpha, alpha], 1), size=(height, width), **mode)
    a = prem[:, 3:4].clamp(0, 1)
    rgb_out = torch.where(a > 1e-6, prem[:, :3] / a.clamp_min(1e-6), torch.zeros_like(prem[:, :3])).clamp(0, 1)
    if depth is not None:
        valid = (depth > 0).float()
        num = F.interpolate(depth * valid, size=(height, width), **mode)
        den = F.interpolate(valid, size=(height, width), **mode)
        depth = torch.where(den > 0.5, num / den.clamp_min(1e-6), torch.zeros_like(num))
    K = K.clone()
    K[:, 0] *= width / W
    K[:, 1] *= height / H
    return rgb_out, a, depth, K


@dataclass(frozen=True)
class AugmentConfig:
    """``data.augment``. configs/data/base.yaml states and documents every field, so the
    dataclass has no defaults; :meth:`from_yaml` is that block with fields overridden."""

    enabled: bool
    probability: float          # chance per input view that it is augmented at all
    jitter_rotation_deg: float  # max rotation of the camera about its centre
    jitter_focal: float         # max relative change of fx, fy
    jitter_principal_px: float  # max principal-point shift, in training pixels
    grid_distortion_px: float   # max displacement of the smooth warp, in training pixels
    grid_cells: int             # control-point cells per side of the warp field
    lab_camera: LabCameraConfig  # the lab-camera look of input views (colour only)

    @classmethod
    def from_yaml(cls, **overrides: Any) -> AugmentConfig:
        """configs/data/base.yaml's ``augment:`` block with ``overrides`` (field=value) applied."""
        return load_typed(cls, "data", "base", overrides, key="augment")


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / max(np.linalg.norm(axis), 1e-12)
    x, y, z = axis
    Kx = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def jitter_camera(K: np.ndarray, c2w: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator):
    """A jittered camera (same centre) and the homography H mapping new pixels to old pixels."""
    dR = _axis_angle(rng.normal(size=3), np.radians(rng.uniform(-1, 1) * cfg.jitter_rotation_deg))
    Kn = K.copy()
    s = 1.0 + rng.uniform(-1, 1, size=2) * cfg.jitter_focal
    Kn[0, 0] *= s[0]
    Kn[1, 1] *= s[1]
    Kn[:2, 2] += rng.uniform(-1, 1, size=2) * cfg.jitter_principal_px
    # camera-frame coordinates: x_new = dR x_old, so c2w_new = c2w_old @ [dR^T]
    c2w_new = c2w.copy()
    c2w_new[:3, :3] = c2w[:3, :3] @ dR.T
    H_new_to_old = K @ dR.T @ np.linalg.inv(Kn)
    return Kn, c2w_new, H_new_to_old


def _homography_grid(Hm: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Source pixel coordinates [H,W,2] (continuous, pixel-centre convention) for each output pixel."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    p = np.stack([u, v, np.ones_like(u)], -1) @ Hm.T
    return torch.from_numpy((p[..., :2] / p[..., 2:3]).astype(np.float32))


def _smooth_field(height: int, width: int, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    n = max(1, cfg.grid_cells) + 1
    ctrl = torch.from_numpy(rng.uniform(-1, 1, size=(1, 2, n, n)).astype(np.float32))
    field = F.interpolate(ctrl, size=(height, width), mode="bicubic", align_corners=True)[0]
    field = field / field.abs().amax().clamp_min(1e-6) * cfg.grid_distortion_px   # exact max amplitude
    return field.permute(1, 2, 0)          # [H,W,2] pixel displacement (du, dv)


def warp(prem_rgba: torch.Tensor, src_px: torch.Tensor) -> torch.Tensor:
    """Sample [C,H,W] at continuous source pixel coordinates [H,W,2]; outside = 0 (transparent)."""
    C, H, W = prem_rgba.shape
    gx = src_px[..., 0] / W * 2 - 1
    gy = src_px[..., 1] / H * 2 - 1
    grid = torch.stack([gx, gy], -1)[None]
    return F.grid_sample(prem_rgba[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def augment_inputs(rgb: torch.Tensor, alpha: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor,
                   cfg: AugmentConfig, rng: np.random.Generator):
    """Augment input views (straight-alpha rgb [Vi,3,H,W], alpha, K [Vi,3,3], c2w [Vi,4,4]).

    Returns (rgb, alpha, K, c2w, info) where K/c2w are the cameras the warped images truly
    have under the contract in the module docstring, and ``info`` records what was done:
    ``jittered`` [Vi], ``grid_px`` [Vi], ``lab_camera`` [Vi] (the look was applied) and
    ``lab_looks`` (each view's :class:`~mousefacelift.labcamera.LabLook` or None).
    """
    Vi, _, H, W = rgb.shape
    rgb, alpha, K, c2w = rgb.clone(), alpha.clone(), K.clone(), c2w.clone()
    info = {"jittered": torch.zeros(Vi, dtype=torch.bool), "grid_px": torch.zeros(Vi),
            "lab_camera": torch.zeros(Vi, dtype=torch.bool), "lab_looks": [None] * Vi}
    if not cfg.enabled:
        return rgb, alpha, K, c2w, info
    base = torch.from_numpy(np.stack(np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5, indexing="xy"), -1)
                            .astype(np.float32))
    for i in range(Vi):
        if rng.uniform() >= cfg.probability:
            continue
        src = base
        if cfg.jitter_rotation_deg > 0 or cfg.jitter_focal > 0 or cfg.jitter_principal_px > 0:
            Kn, c2wn, Hm = jitter_camera(K[i].double().numpy(), c2w[i].double().numpy(), cfg, rng)
            src = _homography_grid(Hm, H, W)
            K[i] = torch.from_numpy(Kn).float()
            c2w[i] = torch.from_numpy(c2wn).float()
            info["jittered"][i] = True
        if cfg.grid_distortion_px > 0:
            src = src + _smooth_field(H, W, cfg, rng)
            info["grid_px"][i] = cfg.grid_distortion_px
        out = warp(torch.cat([rgb[i] * alpha[i], alpha[i]], 0), src)
        a = out[3:4].clamp(0, 1)
        rgb[i] = torch.where(a > 1e-6, out[:3] / a.clamp_min(1e-6), torch.zeros_like(out[:3])).clamp(0, 1)
        alpha[i] = a
    if cfg.lab_camera.enabled:      # after the warps: the camera sees the (warped) scene
        rgb, looks = lab_camera_views(rgb, alpha, cfg.lab_camera, rng)
        info["lab_camera"] = torch.tensor([lk is not None for lk in looks], dtype=torch.bool)
        info["lab_looks"] = looks
    return rgb, alpha, K, c2w, info
