"""Conversions between the project's conventions and Blender's, done once, here.

Pure numpy (no bpy), so they are testable anywhere:
- OpenCV camera (x right, y down, z forward; K + w2c) -> Blender camera (looks down -Z,
  +Y up; lens / sensor width / shift / pixel aspect with an explicit horizontal sensor fit);
- Cycles' passes -> the project's arrays: premultiplied linear RGBA -> straight sRGB uint8
  (plain sRGB, or a camera-like exposure + AgX view transform: :func:`develop_views`),
  depth pass -> planar camera z with 0 = no surface, world-space normal pass -> OpenCV
  camera-space unit normals.

Colour is read from the linear EXR passes and turned into 8-bit here, not by Blender's colour
management (which only applies to the images Blender itself saves), so the view transform
is a numpy tone curve: exactly reproducible from the same linear data and testable without bpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mousefacelift.cameras import Camera

SENSOR_WIDTH_MM = 36.0            # arbitrary: only lens / sensor matters; Blender's default
# OpenCV camera axes expressed in Blender's camera frame: x same, y and z flipped.
CV_TO_BLENDER_CAM = np.diag([1.0, -1.0, -1.0, 1.0])
NO_HIT_DEPTH = 1e9                 # Cycles writes ~1e10 where a ray hits nothing


@dataclass(frozen=True)
class BlenderCameraParams:
    """Everything Blender needs to reproduce one OpenCV camera exactly (ideal pinhole)."""

    matrix_world: np.ndarray       # 4x4 camera-to-world in Blender's camera axes
    lens_mm: float
    sensor_width_mm: float
    shift_x: float
    shift_y: float
    pixel_aspect_x: float
    pixel_aspect_y: float
    width: int
    height: int


def blender_camera_params(cam: Camera) -> BlenderCameraParams:
    """Blender camera settings that project like ``cam`` (K, w2c) does.

    With sensor fit HORIZONTAL Blender's pixel pitch on the unit image plane is
    ``sensor / (lens * W)`` horizontally and ``ycor`` times that vertically, where
    ``ycor = pixel_aspect_y / pixel_aspect_x``; shifts move the view window by
    ``shift * W`` pixels. Solving for fx, fy, cx, cy gives the formulas below.
    """
    fx, fy, cx, cy = cam.fx, cam.fy, cam.cx, cam.cy
    if abs(cam.K[0, 1]) > 1e-9:
        raise ValueError(f"camera {cam.name!r}: skewed intrinsics (K[0,1]={cam.K[0, 1]}) cannot be rendered by Blender")
    W, H = cam.width, cam.height
    # fy / fx = aspect_x / aspect_y; Blender wants both aspects >= 1.
    if fy >= fx:
        ax, ay = fy / fx, 1.0
    else:
        ax, ay = 1.0, fx / fy
    ycor = ay / ax                                   # = fx / fy
    lens = fx * SENSOR_WIDTH_MM / W
    shift_x = (W / 2.0 - cx) / W
    shift_y = (cy - H / 2.0) * ycor / W
    matrix_world = cam.c2w @ CV_TO_BLENDER_CAM
    return BlenderCameraParams(matrix_world, lens, SENSOR_WIDTH_MM, shift_x, shift_y, ax, ay, W, H)


def _straight(premul_rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied linear RGBA -> (straight linear RGB, alpha in [0, 1]); NaN/inf -> 0.

    Un-premultiplying restores the surface colour at partially covered edge pixels, so a
    background composited later (``rgb*a + bg*(1-a)``) does not darken the silhouette.
    """
    rgba = np.nan_to_num(np.asarray(premul_rgba, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    alpha = np.clip(rgba[..., 3:4], 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rgb = np.where(alpha > 1e-6, rgba[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.maximum(rgb, 0.0).astype(np.float32), alpha


def srgb_encode(rgb: np.ndarray) -> np.ndarray:
    """Linear [0, 1] -> sRGB-encoded [0, 1] (IEC 61966-2-1 transfer function)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1.0 / 2.4) - 0.055)


def _to8(display: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    out = np.concatenate([display, alpha], axis=-1)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def straight_srgb8(premul_rgba: np.ndarray) -> np.ndarray:
    """Linear premultiplied float RGBA [H,W,4] -> straight-alpha sRGB uint8 RGBA, values above
    1 clipped (Blender's "Standard" view transform at exposure 0: the plain conversion)."""
    rgb, alpha = _straight(premul_rgba)
    return _to8(srgb_encode(rgb), alpha)


# -- AgX ---------------------------------------------------------------------------------------
# Blender's AgX is an OCIO config (a LUT); this is the published analytic form of its base
# curve (Filament / three.js "AgXToneMapping"): Rec.709 -> Rec.2020, inset matrix, log2
# encoding over [-12.47, +4.03] EV around 0.18, a 6th-order polynomial fit of the sigmoid,
# outset matrix, 2.2 power, back to Rec.709. Highlights roll off and desaturate towards white
# instead of clipping per channel: a white coat keeps its shading 6 stops above middle grey.
_SRGB_TO_REC2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0113], [0.0164, 0.0880, 0.8956]])
_REC2020_TO_SRGB = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]])
_AGX_INSET = np.array([[0.856627153315983, 0.0951212405381588, 0.0482516061458583],
                       [0.137318972929847, 0.761241990602591, 0.101439036467562],
                       [0.11189821299995, 0.0767994186031903, 0.811302368396859]])
_AGX_OUTSET = np.array([[1.1271005818144368, -0.11060664309660323, -0.016493938717834573],
                        [-0.1413297634984383, 1.157823702216272, -0.016493938717834257],
                        [-0.14132976349843826, -0.11060664309660294, 1.2519364065950405]])
AGX_MIN_EV, AGX_MAX_EV = -12.47393, 4.026069          # log2 range of the encoding (0.18 * 2^-10 .. 0.18 * 2^6.5)
_AGX_POLY = (15.5, -40.14, 31.96, -6.868, 0.4298, 0.1191, -0.00232)   # x^6 .. x^0
_AGX_IN = _AGX_INSET @ _SRGB_TO_REC2020                # both matrices act on column vectors
_AGX_OUT = _AGX_OUTSET


def agx_display(rgb_linear: np.ndarray) -> np.ndarray:
    """Scene-linear Rec.709 RGB [..., 3] (any range >= 0) -> sRGB display-encoded [0, 1] via AgX."""
    x = np.asarray(rgb_linear, np.float64) @ _AGX_IN.T
    x = np.log2(np.maximum(x, 1e-10))
    x = np.clip((x - AGX_MIN_EV) / (AGX_MAX_EV - AGX_MIN_EV), 0.0, 1.0)
    x = np.polyval(_AGX_POLY, x)
    x = np.power(np.maximum(x @ _AGX_OUT.T, 0.0), 2.2) @ _REC2020_TO_SRGB.T
    return srgb_encode(x).astype(np.float32)


VIEW_TRANSFORMS = ("standard", "agx")
LUMA_709 = np.array([0.2126, 0.7152, 0.0722], np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float32) @ LUMA_709


def meter_sums(premul_rgba: np.ndarray, albedo_premul: np.ndarray, min_alpha: float = 0.5) -> tuple[float, float]:
    """One view's contribution to :func:`metered_exposure`: the sums of the straight linear
    luminance and of the straight albedo luminance over the foreground (alpha > ``min_alpha``)."""
    rgb, alpha = _straight(premul_rgba)
    fg = alpha[..., 0] > min_alpha
    if not fg.any():
        return 0.0, 0.0
    a = np.asarray(albedo_premul, np.float32)[fg] / alpha[fg]
    return float(luminance(rgb[fg]).sum(dtype=np.float64)), float(luminance(np.maximum(a, 0.0)).sum(dtype=np.float64))


def metered_exposure(sum_luminance: float, sum_albedo: float, key: float, offset_ev: float,
                     min_ev: float, max_ev: float) -> tuple[float, float]:
    """Incident-light metering: (exposure multiplier, meter).

    ``meter`` = sum(L) / sum(albedo) over the foreground is the albedo-weighted mean shading
    (how much light falls on the subject, independent of its coat colour), so a white coat
    stays light and a black one dark, as under a hand-held incident meter; the exposure maps
    a surface of albedo 1 under that mean light to linear ``key``, times 2^``offset_ev``,
    limited to [2^min_ev, 2^max_ev]. No foreground (or no albedo) -> exposure 2^offset_ev.
    """
    if sum_albedo <= 1e-12 or sum_luminance <= 1e-12:
        meter = float("nan")
        ev = float(offset_ev)
    else:
        meter = float(sum_luminance / sum_albedo)
        ev = float(np.log2(key / meter)) + float(offset_ev)
    ev = float(np.clip(ev, min_ev, max_ev))
    return float(2.0 ** ev), meter


def developed_srgb8(premul_rgba: np.ndarray, exposure: float, view_transform: str) -> np.ndarray:
    """Premultiplied linear RGBA -> straight uint8 RGBA: colour times ``exposure`` through the
    view transform ("standard": clip at 1, sRGB; "agx": :func:`agx_display`); alpha unchanged."""
    if view_transform not in VIEW_TRANSFORMS:
        raise ValueError(f"view_transform: expected one of {VIEW_TRANSFORMS}, got {view_transform!r}")
    rgb, alpha = _straight(premul_rgba)
    rgb = rgb * np.float32(exposure)
    display = agx_display(rgb) if view_transform == "agx" else srgb_encode(rgb)
    return _to8(display, alpha)


def clipped_share(rgba8: np.ndarray, level: int = 254, min_alpha: int = 128) -> float:
    """Share of the foreground pixels (alpha >= ``min_alpha``) with any colour channel >= ``level``."""
    rgba8 = np.asarray(rgba8)
    fg = rgba8[..., 3] >= min_alpha
    n = int(fg.sum())
    if n == 0:
        return 0.0
    return float((rgba8[..., :3][fg] >= level).any(axis=-1).sum() / n)


def planar_depth(depth_pass: np.ndarray) -> np.ndarray:
    """Cycles' depth pass -> planar camera z (world units), 0 where no surface was hit.

    Cycles' perspective depth pass already is the camera-space z distance (tested against an
    analytic plane in tests/test_blender_backend.py), so only the no-hit sentinel changes.
    """
    d = depth_pass.astype(np.float32)
    bad = ~np.isfinite(d) | (d >= NO_HIT_DEPTH) | (d <= 0)
    d[bad] = 0.0
    return d


def camera_normals(world_normals: np.ndarray, w2c: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """World-space normal pass [H,W,3] -> OpenCV camera-space unit normals, 0 where ``~hit``."""
    n = world_normals.astype(np.float32) @ np.asarray(w2c, dtype=np.float32)[:3, :3].T
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ok = hit[..., None] & (norm > 1e-6)
    return np.where(ok, n / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def look_at_rotation(position, target) -> np.ndarray:
    """3x3 world rotation of a Blender light/camera at ``position`` whose -Z points at ``target``."""
    p, t = np.asarray(position, float), np.asarray(target, float)
    z = p - t
    n = np.linalg.norm(z)
    if n < 1e-9:
        raise ValueError(f"light at {tuple(p)} has the same position as its target")
    z /= n
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.999 else np.array([0.0, 1.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def distort_views(rgba: np.ndarray, depth: np.ndarray, normal: np.ndarray, cameras: list[Camera]):
    """Warp ideal-pinhole renders into each camera's OpenCV lens distortion.

    Cycles renders pinholes only; for a calibrated rig (e.g. DANNCE) every output pixel is
    undistorted to find where it lies in the pinhole render: colour is sampled bilinearly
    (premultiplied, so edges stay clean), depth and normals by nearest neighbour (never
    blending surfaces). Pixels that fall outside the pinhole frame come out empty.
    """
    rgba, depth, normal = rgba.copy(), depth.copy(), normal.copy()
    from mousefacelift.cameras import undistort_normalized

    for v, cam in enumerate(cameras):
        if cam.dist is None:
            continue
        H, W = cam.height, cam.width
        jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        xd = np.stack([(jj - cam.cx) / cam.fx, (ii - cam.cy) / cam.fy], axis=-1).reshape(-1, 2)
        xn = undistort_normalized(xd, cam.dist)
        x = xn[:, 0] * cam.fx + cam.cx - 0.5
        y = xn[:, 1] * cam.fy + cam.cy - 0.5
        inside = (x > -0.5) & (x < W - 0.5) & (y > -0.5) & (y < H - 0.5)
        xi = np.clip(np.rint(x).astype(int), 0, W - 1)
        yi = np.clip(np.rint(y).astype(int), 0, H - 1)
        x0 = np.clip(np.floor(x).astype(int), 0, W - 1)
        y0 = np.clip(np.floor(y).astype(int), 0, H - 1)
        x1, y1 = np.clip(x0 + 1, 0, W - 1), np.clip(y0 + 1, 0, H - 1)
        fx_, fy_ = np.clip(x - x0, 0, 1)[:, None], np.clip(y - y0, 0, 1)[:, None]
        src = rgba[v].astype(np.float32) / 255.0
        pre = np.concatenate([src[..., :3] * src[..., 3:], src[..., 3:]], axis=-1)
        s = (pre[y0, x0] * (1 - fx_) * (1 - fy_) + pre[y0, x1] * fx_ * (1 - fy_)
             + pre[y1, x0] * (1 - fx_) * fy_ + pre[y1, x1] * fx_ * fy_)
        s[~inside] = 0.0
        a = s[:, 3:]
        rgb = np.where(a > 1e-6, s[:, :3] / np.maximum(a, 1e-6), 0.0)
        out = np.concatenate([rgb, a], axis=-1)
        rgba[v] = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8).reshape(H, W, 4)
        d = depth[v][yi, xi]
        d[~inside] = 0.0
        depth[v] = d.reshape(H, W)
        n = normal[v][yi, xi]
        n[~inside] = 0.0
        normal[v] = n.reshape(H, W, 3)
    return rgba, depth, normal


def subject_border(cam: Camera, points: np.ndarray, margin_px: float) -> tuple[float, float, float, float] | None:
    """Blender render region (min_x, max_x, min_y, max_y as fractions, y from the BOTTOM)
    that holds every projected ``points`` [N,3] of the ideal pinhole ``cam`` plus
    ``margin_px`` pixels; None when the full frame is needed (a point at or behind the
    camera plane, or the box covers the frame anyway). Triangles project inside the convex
    hull of their vertices, so the vertices bound the subject's whole silhouette.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        return None
    c = pts @ cam.w2c[:3, :3].T + cam.w2c[:3, 3]
    if (c[:, 2] <= 1e-6).any():
        return None
    uv = (c[:, :2] / c[:, 2:3]) @ cam.K[:2, :2].T + cam.K[:2, 2]
    W, H = cam.width, cam.height
    x0 = max(0.0, np.floor(uv[:, 0].min() - margin_px)) / W
    x1 = min(float(W), np.ceil(uv[:, 0].max() + margin_px)) / W
    y0 = max(0.0, np.floor(uv[:, 1].min() - margin_px)) / H      # top of the box, image rows
    y1 = min(float(H), np.ceil(uv[:, 1].max() + margin_px)) / H
    if x1 <= x0 or y1 <= y0:
        return (0.0, 0.0, 0.0, 0.0)                             # entirely outside: an empty region
    if x0 <= 0 and y0 <= 0 and x1 >= 1 and y1 >= 1:
        return None
    return (x0, x1, 1.0 - y1, 1.0 - y0)


def develop_views(premul: np.ndarray, meter: tuple[float, float], exposure) -> tuple[np.ndarray, dict | None]:
    """All views of one sample [V,H,W,4] (premultiplied linear) -> straight uint8 RGBA and the
    ``meta["exposure"]`` record. ``meter`` = the summed :func:`meter_sums` of the views;
    ``exposure`` a :class:`mousefacelift.scene.ExposureSpec`, or None for :func:`straight_srgb8`."""
    if exposure is None:
        return np.stack([straight_srgb8(p) for p in premul]), None
    gain, m = 1.0, float("nan")
    fixed = getattr(exposure, "fixed_ev", None)
    if exposure.view_transform == "agx" and fixed is not None:
        gain = float(2.0 ** float(fixed))
    elif exposure.view_transform == "agx":
        gain, m = metered_exposure(meter[0], meter[1], exposure.key, exposure.offset_ev, exposure.min_ev, exposure.max_ev)
    out = np.stack([developed_srgb8(p, gain, exposure.view_transform) for p in premul])
    record = {"view_transform": exposure.view_transform, "exposure": gain, "exposure_ev": float(np.log2(gain)),
              "offset_ev": float(exposure.offset_ev) if exposure.view_transform == "agx" else 0.0,
              "key": float(exposure.key), "meter": None if not np.isfinite(m) else m,
              "metering": ("none (exposure 1)" if exposure.view_transform != "agx" else "fixed" if fixed is not None
                           else "incident: sum(L)/sum(albedo) over the foreground of all views")}
    return out, record
