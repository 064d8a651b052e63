"""Small picture helpers (numpy + Pillow): colour maps, checkerboard compositing, labelled grids.

Why: contact sheets (``synth.inspect``), training previews and debugging all need the same
few operations, and none of them should pull in matplotlib. Everything takes and returns
plain ``uint8`` arrays ``[H, W, 3]`` so callers can stack, save or log them as they like.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["turbo", "colorize", "colorize_depth", "normals_to_rgb", "mask_to_rgb", "checkerboard",
           "composite_over", "composite_over_checkerboard", "image_grid", "GridStyle", "resize_rgba", "save_png"]

# Control points of a turbo-like rainbow (dark blue -> cyan -> green -> yellow -> red -> dark
# red), perceptually smoother than jet; linear interpolation between them in RGB.
_TURBO_STOPS = np.array([0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0])
_TURBO_RGB = np.array([
    [48, 18, 59], [70, 107, 227], [40, 170, 236], [30, 224, 170], [160, 252, 60],
    [227, 218, 55], [251, 150, 40], [215, 60, 10], [122, 4, 3]], dtype=np.float64) / 255.0


def turbo(x: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped) to RGB floats in [0, 1] with a turbo-like map: [..., 3]."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.stack([np.interp(x, _TURBO_STOPS, _TURBO_RGB[:, c]) for c in range(3)], axis=-1)


def colorize(values: np.ndarray, valid: np.ndarray | None = None, lo: float | None = None, hi: float | None = None,
             invalid_rgb: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Colour-map a scalar image [H,W] to uint8 RGB [H,W,3]; ``lo``/``hi`` default to the
    valid values' range; invalid pixels get ``invalid_rgb``."""
    v = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(v) if valid is None else (np.asarray(valid, bool) & np.isfinite(v))
    if valid.any():
        lo = float(v[valid].min()) if lo is None else float(lo)
        hi = float(v[valid].max()) if hi is None else float(hi)
    else:
        lo, hi = 0.0, 1.0
    span = hi - lo if hi > lo else 1.0
    rgb = (turbo((np.where(valid, v, lo) - lo) / span) * 255.0 + 0.5).astype(np.uint8)
    rgb[~valid] = np.asarray(invalid_rgb, dtype=np.uint8)
    return rgb


def colorize_depth(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Depth [H,W] (0 = no surface) to uint8 RGB: near = warm (red), far = cool (blue),
    background black. Pass shared ``lo``/``hi`` to compare views on one scale."""
    d = np.asarray(depth, dtype=np.float64)
    valid = d > 0
    if valid.any():
        lo = float(d[valid].min()) if lo is None else lo
        hi = float(d[valid].max()) if hi is None else hi
    # invert so that near surfaces are warm, the usual reading of a depth map
    return colorize(-d, valid, lo=-hi if hi is not None else None, hi=-lo if lo is not None else None)


def normals_to_rgb(normal: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Unit normals [H,W,3] to the usual (n + 1) / 2 RGB picture; invalid pixels black."""
    n = np.asarray(normal, dtype=np.float64)
    if valid is None:
        valid = np.linalg.norm(n, axis=-1) > 0.5
    rgb = np.clip((n + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    rgb[~np.asarray(valid, bool)] = 0
    return rgb


def mask_to_rgb(alpha: np.ndarray) -> np.ndarray:
    """Alpha / mask [H,W] (uint8 0..255, bool or float 0..1) to a grey RGB picture."""
    a = np.asarray(alpha)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1)


def checkerboard(height: int, width: int, cell: int = 8, light: int = 204, dark: int = 153) -> np.ndarray:
    """The usual 'transparent' background: uint8 RGB [H,W,3] of grey squares ``cell`` px wide."""
    cell = max(1, int(cell))
    yy, xx = np.mgrid[0:height, 0:width]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, light, dark).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=-1)


def composite_over(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA uint8 [H,W,4] over an RGB background ([H,W,3] or a colour [3])."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise ValueError(f"composite_over: expected RGBA [H,W,4], got shape {rgba.shape}")
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    bg = np.broadcast_to(np.asarray(background, dtype=np.float64), rgba.shape[:2] + (3,))
    out = rgba[..., :3].astype(np.float64) * a + bg * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def composite_over_checkerboard(rgba: np.ndarray, cell: int | None = None) -> np.ndarray:
    """RGBA over a checkerboard, so transparency is visible (cell ~ 1/16 of the image)."""
    h, w = rgba.shape[:2]
    cell = max(2, min(h, w) // 16) if cell is None else cell
    return composite_over(rgba, checkerboard(h, w, cell))


@dataclass
class GridStyle:
    """Layout of :func:`image_grid`: padding between tiles, label strip height, colours."""

    pad: int = 4
    label_height: int = 14
    background: tuple[int, int, int] = (24, 24, 24)
    text: tuple[int, int, int] = (235, 235, 235)
    title_height: int = 18


def _font():
    try:
        return ImageFont.load_default()
    except OSError:      # pragma: no cover - Pillow always ships a default bitmap font
        return None


def image_grid(tiles: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, title: str | None = None,
               style: GridStyle | None = None, row_label_width: int = 0) -> np.ndarray:
    """Lay out ``tiles[row][col]`` (uint8 RGB [h,w,3], all the same size; None = empty) on one
    canvas, with a label above each column, an optional label left of each row, and a title.

    Returns uint8 RGB. Labels are clipped to the tile width so the grid size depends only on
    the tile size and counts (predictable for tests and for stacking sheets).
    """
    style = style or GridStyle()
    rows = len(tiles)
    cols = max((len(r) for r in tiles), default=0)
    if rows == 0 or cols == 0:
        raise ValueError("image_grid: no tiles")
    first = next(t for r in tiles for t in r if t is not None)
    h, w = first.shape[:2]
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            if t is not None and (t.shape[:2] != (h, w) or t.ndim != 3 or t.shape[2] != 3):
                raise ValueError(f"image_grid: tile [{r}][{c}] has shape {t.shape}, expected ({h}, {w}, 3)")
    label_h = style.label_height if col_labels else 0
    title_h = style.title_height if title else 0
    left = row_label_width if row_labels else 0
    H = title_h + rows * (h + label_h + style.pad) + style.pad
    W = left + cols * (w + style.pad) + style.pad
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = style.background
    for r, row in enumerate(tiles):
        y = title_h + style.pad + r * (h + label_h + style.pad) + label_h
        for c, t in enumerate(row):
            if t is not None:
                x = left + style.pad + c * (w + style.pad)
                canvas[y:y + h, x:x + w] = t
    if not (title or col_labels or row_labels):
        return canvas
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    font = _font()
    if title:
        draw.text((style.pad, 3), title, fill=style.text, font=font)
    for r in range(rows):
        y = title_h + style.pad + r * (h + label_h + style.pad)
        if col_labels:
            labels = col_labels[r] if isinstance(col_labels[0], (list, tuple)) else col_labels
            for c, text in enumerate(labels[:cols]):
                x = left + style.pad + c * (w + style.pad)
                _draw_clipped(draw, (x + 1, y + 1), str(text), w - 2, style.text, font)
        if row_labels and r < len(row_labels):
            _draw_clipped(draw, (2, y + label_h + h // 2 - 5), str(row_labels[r]), left - 4, style.text, font)
    return np.asarray(img)


def _draw_clipped(draw: ImageDraw.ImageDraw, xy, text: str, max_width: int, fill, font) -> None:
    """Draw ``text`` shortened with '…' until it fits ``max_width`` pixels."""
    if max_width <= 0:
        return
    t = text
    while t and draw.textlength(t, font=font) > max_width:
        t = t[:-2] + "…" if len(t) > 2 else ""
    if t:
        draw.text(xy, t, fill=fill, font=font)


def resize_rgba(rgba: np.ndarray, size: tuple[int, int], resample: str = "bilinear") -> np.ndarray:
    """Resize straight-alpha RGBA uint8 to ``size`` = (width, height), filtering premultiplied
    colour so transparent (black) pixels do not bleed dark fringes into the outline."""
    if rgba.shape[1] == size[0] and rgba.shape[0] == size[1]:
        return rgba
    method = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC,
              "nearest": Image.NEAREST}[resample]
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    pm = np.concatenate([rgba[..., :3].astype(np.float32) * a, a * 255.0], axis=-1)
    out = np.stack([np.asarray(Image.fromarray(pm[..., c]).resize(size, method)) for c in range(4)], axis=-1)
    out = np.clip(out, 0, 255)
    alpha = out[..., 3:4] / 255.0
    rgb = np.where(alpha > 1e-4, out[..., :3] / np.maximum(alpha, 1e-4), 0)
    return np.clip(np.concatenate([rgb, out[..., 3:4]], axis=-1) + 0.5, 0, 255).astype(np.uint8)


def save_png(path, image: np.ndarray) -> None:
    """Write a uint8 image atomically (:func:`mousefacelift.shards.atomic.atomic_file`)."""
    from pathlib import Path

    from .shards.atomic import atomic_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        Image.fromarray(np.ascontiguousarray(image)).save(f, format="PNG")
