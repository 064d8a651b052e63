"""One photo -> the framed square input view of stage 1, by the framing rule of every source.

Why a framing step: the multi-view diffusion model and GS-LRM only ever saw views in which the
body WITHOUT THE TAIL is centred and reaches the same share of the frame
(docs/architecture.md §3, :mod:`mousefacelift.framing`). A photo has the mouse anywhere, at any
size, with a tail that would set the scale if the whole silhouette did. So:

1. foreground (:func:`foreground`): the photo's own alpha if it has one, else a mask file,
   else :func:`mousefacelift.segment.segment`;
2. the body: the silhouette opened by a disc of ``body_radius_fraction`` of its largest
   inscribed radius (:func:`body_mask`), the 2D counterpart of real ingest's opened visual hull;
   the thin tail falls away, the rounder body stays;
3. the framed view (:func:`frame_photo`): a virtual camera at the photo camera's centre,
   turned to look at the centre of the body's box (the smallest turn that keeps the photo's
   image up), principal point at the image centre, and the focal length at which the body
   reaches ``body_reach`` of the half-image; one resampling (:func:`mousefacelift.imaging.resample_view`)
   maps every output pixel back through that exact camera.

``body_reach`` is the 2D image of the 3D rule: renders put the projected 3D body BOX at
``view_fill`` (0.6) of the half-image; the silhouette of the body inside that box reaches less
far. :func:`silhouette_reach` measures that reach on rendered, framed views; the median over
rendered ``mvinput`` inputs is the value in configs/reconstruct.yaml (``benchmarks/end_to_end.py
--calibrate`` prints it), so a photo ends up framed like a training view.

The photo's field of view (``--fov``, horizontal, of the whole photo) makes the framed view's
field of view exact; without it the turn uses ``nominal_fov_deg`` (it barely matters for a
mouse that fills a small part of the photo) and stage 1 estimates the framed field of view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .cameras import Camera, intrinsics_from_fov, look_at
from .config import ConfigError
from .imaging import mask_pixels, resample_view, threshold_mask

__all__ = ["PhotoConfig", "PhotoError", "Photo", "FramedView", "read_photo", "read_mask", "foreground",
           "body_mask", "silhouette_reach", "frame_photo"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PhotoError(ValueError):
    """A photo or mask that cannot be used (missing, unreadable, too small, no mouse); the
    message names the file and the reason."""


@dataclass(frozen=True)
class PhotoConfig:
    """``photo`` of configs/reconstruct.yaml (values and meaning there)."""

    min_side: int
    min_body_pixels: int
    mask_threshold: float
    body_radius_fraction: float
    body_reach: float
    nominal_fov_deg: float
    supersample: int
    edge_margin_px: int

    def __post_init__(self):
        if not 0 <= self.body_radius_fraction < 1:
            raise ConfigError(f"photo.body_radius_fraction={self.body_radius_fraction}: expected a value in [0, 1)")
        if not 0 < self.body_reach < 1:
            raise ConfigError(f"photo.body_reach={self.body_reach}: expected a share of the half-image in (0, 1)")
        if not 0 < self.nominal_fov_deg < 180:
            raise ConfigError(f"photo.nominal_fov_deg={self.nominal_fov_deg}: expected degrees in (0, 180)")
        if self.min_side < 8 or self.min_body_pixels < 1 or self.supersample < 1:
            raise ConfigError(f"photo.min_side={self.min_side}, min_body_pixels={self.min_body_pixels}, supersample="
                              f"{self.supersample}: expected >= 8, >= 1 and >= 1")


@dataclass
class Photo:
    """A photo as read: uint8 RGB [H,W,3] and its own alpha [H,W] in [0,1] (None when it has none)."""

    path: Path
    rgb: np.ndarray
    alpha: np.ndarray | None


@dataclass
class FramedView:
    """The framed input view: ``rgba`` float32 [4,S,S] straight alpha in [0,1] (RGB 0 where alpha
    is 0, as in the shards); ``camera``: the virtual camera in the photo camera's frame;
    ``fov_deg``: its horizontal field of view when the photo's is known, else None; ``info``:
    what was measured (for result.json)."""

    rgba: np.ndarray
    camera: Camera
    fov_deg: float | None
    info: dict = field(default_factory=dict)


def _open_image(path: Path, what: str):
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise PhotoError(f"{path}: {what} does not exist")
    if not path.is_file():
        raise PhotoError(f"{path}: {what} is not a file")
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise PhotoError(f"{path}: {what} is not a readable image ({type(e).__name__})") from None
    return ImageOps.exif_transpose(im)


def read_photo(path: str | Path, cfg: PhotoConfig) -> Photo:
    """Read a photo (any Pillow format, EXIF orientation applied). An alpha channel counts only
    when it is not fully opaque. Refuses a missing or unreadable file and one whose shorter side
    is below ``min_side``."""
    path = Path(path)
    im = _open_image(path, "photo")
    if min(im.size) < cfg.min_side:
        raise PhotoError(f"{path}: image too small: {im.size[0]}x{im.size[1]} pixels, expected the shorter side "
                         f">= photo.min_side {cfg.min_side}")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    rgba = np.asarray(im.convert("RGBA"))
    alpha = rgba[..., 3].astype(np.float32) / 255.0 if has_alpha else None
    if alpha is not None and float(alpha.min()) >= 1.0:
        alpha = None
    return Photo(path=path, rgb=np.ascontiguousarray(rgba[..., :3]), alpha=alpha)


def read_mask(path: str | Path, shape: tuple[int, int], threshold: float) -> np.ndarray:
    """A mask image (grey, RGB(A), any bit depth; foreground where its values exceed ``threshold``
    on the 0..255 scale) of the photo's size -> bool [H,W]."""
    path = Path(path)
    im = _open_image(path, "mask")
    mask = threshold_mask(np.asarray(im), threshold)
    if mask.shape != tuple(shape):
        raise PhotoError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} pixels, the photo {shape[1]}x{shape[0]}")
    return mask


def foreground(photo: Photo, cfg: PhotoConfig, seg_cfg, mask_path: str | Path | None = None,
               device: str = "cpu") -> tuple[np.ndarray, str]:
    """Alpha [H,W] float32 in [0,1] and where it came from: the photo's own alpha, else
    ``mask_path``, else the segmentation of ``seg_cfg`` (:mod:`mousefacelift.segment`)."""
    from .segment import SegmentationError, segment

    if photo.alpha is not None:
        return photo.alpha, "photo alpha"
    if mask_path is not None:
        return read_mask(mask_path, photo.rgb.shape[:2], cfg.mask_threshold).astype(np.float32), f"mask {mask_path}"
    try:
        mask = segment(photo.rgb, seg_cfg, device)
    except SegmentationError as e:
        raise PhotoError(f"{photo.path}: {e}") from None
    return mask.astype(np.float32), f"segmentation ({seg_cfg.method})"


def body_mask(mask: np.ndarray, radius_fraction: float) -> np.ndarray:
    """The silhouette without its thin parts: opened by a disc of ``radius_fraction`` of the
    largest inscribed radius, largest part kept (the tail, thinner than the disc, drops out).
    Scale-free, as real ingest's opened visual hull."""
    m = np.asarray(mask, dtype=bool)
    if radius_fraction == 0 or not m.any():
        return m
    depth = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    r = radius_fraction * float(depth.max())
    opened = (ndimage.distance_transform_edt(~(depth > r)) <= r) & m
    labels, n = ndimage.label(opened)
    if n > 1:
        sizes = ndimage.sum_labels(opened, labels, index=np.arange(1, n + 1))
        opened = labels == 1 + int(np.argmax(sizes))
    return opened if opened.any() else m


def silhouette_reach(alpha: np.ndarray, radius_fraction: float, threshold: float = 0.5) -> float:
    """How far the body's silhouette reaches from the image centre of a framed view, as a share
    of the half-image (the larger of the two axes): the statistic :func:`frame_photo` sets to
    ``body_reach``."""
    a = np.asarray(alpha, dtype=np.float64)
    body = body_mask(a > threshold, radius_fraction)
    if not body.any():
        return float("nan")
    H, W = body.shape
    uv = mask_pixels(body)
    return float(max(np.abs(uv[:, 0] - W / 2).max() / (W / 2), np.abs(uv[:, 1] - H / 2).max() / (H / 2)))


def _rays(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    return np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))], -1)


def frame_photo(rgb: np.ndarray, alpha: np.ndarray, size: int, cfg: PhotoConfig, fov_deg: float | None = None,
                where: str = "photo") -> FramedView:
    """The framed ``size`` x ``size`` view of a photo (uint8 RGB [H,W,3], alpha [H,W] in [0,1]);
    see the module docstring. ``fov_deg``: the photo's horizontal field of view, if known.
    Refuses a photo whose body has fewer than ``min_body_pixels`` pixels (no mouse found)."""
    H, W = alpha.shape
    body = body_mask(np.asarray(alpha) > 0.5, cfg.body_radius_fraction)
    n_body = int(body.sum())
    if n_body < cfg.min_body_pixels:
        raise PhotoError(f"{where}: no mouse found: the foreground has {n_body} body pixels, expected >= "
                         f"photo.min_body_pixels {cfg.min_body_pixels}")
    if fov_deg is not None and not 0 < float(fov_deg) < 180:
        raise PhotoError(f"{where}: --fov {fov_deg}: expected the photo's horizontal field of view in (0, 180) degrees")
    src = Camera(K=intrinsics_from_fov(float(fov_deg or cfg.nominal_fov_deg), W, H), w2c=np.eye(4), width=W,
                 height=H, name="photo")
    rays = _rays(mask_pixels(body), src.K)
    axis = np.array([0.0, 0.0, 1.0])
    for _ in range(4):        # look at the centre of the body's box as seen by the turned camera
        R = look_at((0.0, 0.0, 0.0), axis, up=(0.0, -1.0, 0.0))[:3, :3]
        d = rays @ R.T
        xy = d[:, :2] / d[:, 2:3]
        mid = (xy.min(0) + xy.max(0)) / 2
        if np.abs(mid).max() < 1e-6:
            break
        axis = R.T @ np.array([mid[0], mid[1], 1.0])
        axis /= np.linalg.norm(axis)
    reach = float(np.abs(xy).max())
    f = cfg.body_reach * (size / 2) / max(reach, 1e-9)
    w2c = np.eye(4)
    w2c[:3, :3] = R
    K = np.array([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    out = Camera(K=K, w2c=w2c, width=size, height=size, name="framed")
    a = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
    prem, valid, (a_out,) = resample_view(rgb.astype(np.float32) * a[..., None], src, out, cfg.supersample, extra=[a])
    a_out = np.clip(a_out, 0.0, 1.0)
    colour = np.where(a_out[..., None] > 1e-4, prem / 255.0 / np.maximum(a_out[..., None], 1e-4), 0.0)
    rgba = np.concatenate([np.clip(colour, 0, 1), a_out[..., None]], -1).transpose(2, 0, 1).astype(np.float32)
    m = cfg.edge_margin_px
    cut = bool(body[:m].any() or body[-m:].any() or body[:, :m].any() or body[:, -m:].any()) if m > 0 else False
    framed_fov = math.degrees(2 * math.atan(size / 2 / f)) if fov_deg is not None else None
    ys, xs = np.nonzero(body)
    info = {"photo_size": [W, H], "foreground_pixels": int((a > 0.5).sum()), "body_pixels": n_body,
            "body_box_px": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
            "body_reach": cfg.body_reach, "scale": float(f / src.fx), "turn_deg": float(math.degrees(
                math.acos(np.clip(R[2, 2], -1, 1)))), "framed_fov_deg": framed_fov,
            "photo_fov_deg": float(fov_deg) if fov_deg is not None else None,
            "body_cut_by_border": cut, "valid_fraction": round(float(valid.mean()), 4)}
    return FramedView(rgba=rgba, camera=out, fov_deg=framed_fov, info=info)
