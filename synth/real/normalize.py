"""Real multi-camera frames -> normalised ``source=real`` samples (mfl-sample/1, no depth).

Per frame set (one frame from every camera, with masks):

1. mask centroids, undistorted, are triangulated (linear least squares, DLT) to a first
   mouse centre;
2. a visual hull of the masks (coarse voxel grid around that centre, then a finer one
   around the coarse hull) gives the mouse's extent; its box centre becomes the world
   origin and its largest half-extent (or a known body length) the scale, so the mouse
   fits the [-1, 1]^3 cube. One uniform scale per sample: distance ratios are kept;
3. every camera is re-expressed in that frame, with the original world up mapped to +Z
   (for DANNCE the arena floor normal is already +Z);
4. each view is undistorted, cropped around the mouse so it fills ``fill`` of the frame and
   resized to ``size`` in ONE resampling (supersampled, then box-filtered) by
   :mod:`mousefacelift.imaging`, so images and intrinsics cannot drift apart.

A view whose mask touches the sensor border (the mouse ran off that camera) abstains in the
hull beyond its frame and is left out of the sample (``views_dropped`` names it and why); a
frame set with fewer than ``min_views`` usable views is skipped with the reason.

Everything is recorded in ``meta.json`` under ``normalization``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
from scipy import ndimage

from mousefacelift.cameras import Camera
from mousefacelift.imaging import crop_box, mask_pixels, pinhole, pixels_to_normalized, resample_view
from mousefacelift.scene import depth_range_for
from mousefacelift.shards import SCHEMA, MultiViewSample


@dataclass
class NormalizeConfig:
    """The ``normalize:`` section of configs/real/ingest.yaml (values and their meaning are there)."""

    size: int
    fill: float
    cube_fit: float
    body_length_mm: float | None
    hull_box_mm: float
    hull_grid: int
    hull_passes: int
    hull_carve_tolerance: int
    hull_min_views: int
    edge_margin_px: int
    drop_cut_views: bool
    min_views: int
    supersample: int
    keep_background: bool
    depth_margin: float
    min_mask_pixels: int


@dataclass
class Normalization:
    """world_norm = R_up @ (world_mm - center_mm) / mm_per_unit."""

    center_mm: np.ndarray
    mm_per_unit: float
    up_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def points_to_norm(self, X_mm: np.ndarray) -> np.ndarray:
        return (np.asarray(X_mm, dtype=np.float64) - self.center_mm) @ self.up_rotation.T / self.mm_per_unit

    def points_to_mm(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) * self.mm_per_unit @ self.up_rotation + self.center_mm

    def camera(self, cam_mm: Camera) -> Camera:
        """The same camera in the normalised world (camera-space lengths in world units too)."""
        Rc, tc = cam_mm.w2c[:3, :3], cam_mm.w2c[:3, 3]
        w2c = np.eye(4)
        w2c[:3, :3] = Rc @ self.up_rotation.T
        w2c[:3, 3] = (Rc @ self.center_mm + tc) / self.mm_per_unit
        return replace(cam_mm, w2c=w2c, depth_range=None)

    def to_meta(self) -> dict:
        return {"center_mm": self.center_mm.tolist(), "mm_per_unit": float(self.mm_per_unit),
                "up_rotation": self.up_rotation.tolist(),
                "formula": "world = up_rotation @ (world_mm - center_mm) / mm_per_unit"}


def rotation_to_z(up: np.ndarray) -> np.ndarray:
    """The smallest rotation taking ``up`` onto +Z (identity when it already is)."""
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(u, z)
    c = float(u @ z)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1 / (1 + c))


def triangulate(cameras: Sequence[Camera], uv: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation of one point seen at ideal-pinhole pixels ``uv`` [V,2]."""
    rows = []
    for cam, (u, v) in zip(cameras, np.asarray(uv, dtype=np.float64)):
        P = cam.K @ cam.w2c[:3]
        rows.append(u * P[2] - P[0])
        rows.append(v * P[2] - P[1])
    A = np.asarray(rows)
    if len(A) < 4:
        raise ValueError(f"triangulation needs at least 2 views, got {len(cameras)}")
    A = A / np.linalg.norm(A[:, :3], axis=1, keepdims=True)   # equal weight per equation
    _, _, Vt = np.linalg.svd(A)
    X = Vt[-1]
    if abs(X[3]) < 1e-12:
        raise ValueError("triangulation failed: the rays are parallel (point at infinity)")
    return X[:3] / X[3]


# -- visual hull ----------------------------------------------------------------------------
def _carve(cams: Sequence[Camera], dist_maps: Sequence[np.ndarray], cut: Sequence[bool], lo: np.ndarray,
           hi: np.ndarray, n: int, tolerance: int, min_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in [lo, hi] (n per side) that touch the silhouette cone of every view except at
    most ``tolerance`` (mask errors), and of at least ``min_views`` views.

    A voxel touches a view's cone when its centre projects within its own projected
    half-diagonal of the mask (``dist_maps`` = distance of every pixel to the nearest mask
    pixel), so thin parts like the tail are never lost between voxel centres. A centre that
    projects outside the frame is measured from the nearest frame pixel (a lower bound on its
    distance to the mask, so the hull stays conservative) when the view's whole mouse lies
    inside its frame; a view whose mouse is ``cut`` by the sensor border knows nothing beyond
    it and abstains there. (Counting such views against the voxel shrank the hull by 13 %
    when two cameras cut the tail on a walk along the arena wall; letting every out-of-frame
    view abstain instead kept voxels only three cones agree on and bloated it by 50 %.)
    Returns (kept voxel centres, voxel size)."""
    vox = (hi - lo) / n
    axes = [lo[i] + (np.arange(n) + 0.5) * vox[i] for i in range(3)]
    P = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    radius = 0.5 * float(np.linalg.norm(vox))
    carved = np.zeros(len(P), dtype=np.int32)     # away from the mask (or behind / outside a whole-mouse view)
    seen = np.zeros(len(P), dtype=np.int32)       # touching the mask
    for cam, dmap, is_cut in zip(cams, dist_maps, cut):
        h, w = dmap.shape
        uv, z = cam.project(P)
        front = z > 0
        uv = np.where(front[:, None], uv, 0.0)
        cu, cv = np.clip(uv[:, 0], 0.5, w - 0.5), np.clip(uv[:, 1], 0.5, h - 0.5)
        off = np.hypot(uv[:, 0] - cu, uv[:, 1] - cv)                 # distance outside the frame (px)
        in_frame = front & (off == 0)
        near = np.maximum(off, dmap[(cv - 0.5).astype(np.int64), (cu - 0.5).astype(np.int64)] - off)
        r_px = max(cam.fx, cam.fy) * radius / np.maximum(z, 1e-9) + 0.5
        inside = front & (near <= r_px)
        votes = in_frame if is_cut else np.ones(len(P), dtype=bool)  # a cut view abstains outside its frame
        carved += votes & ~inside
        seen += inside
    keep = (carved <= tolerance) & (seen >= max(2, min_views))
    return P[keep], vox


def mask_is_cut(mask: np.ndarray, margin_px: int) -> bool:
    """True when the mask reaches within ``margin_px`` of the sensor border (mouse cut off there)."""
    m = np.asarray(mask, dtype=bool)
    k = max(1, int(margin_px))
    return bool(m[:k].any() or m[-k:].any() or m[:, :k].any() or m[:, -k:].any())


def visual_hull(cams_mm: Sequence[Camera], masks: Sequence[np.ndarray], center_mm: np.ndarray,
                cfg: NormalizeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box (lo, hi) of the masks' visual hull in mm, and its occupied voxel centres.

    A pass over ``hull_box_mm`` around the centre, then ``hull_passes - 1`` finer passes, each
    over the previous hull's box grown by one voxel. The box of the kept voxels contains the
    true hull (conservative by at most about one voxel per side).
    """
    dist_maps = [ndimage.distance_transform_edt(~np.asarray(m, dtype=bool)) if np.any(m)
                 else np.full(np.shape(m), np.inf) for m in masks]
    cut = [mask_is_cut(m, cfg.edge_margin_px) for m in masks]
    half = cfg.hull_box_mm / 2
    lo, hi = center_mm - half, center_mm + half
    pts = vox = None
    for p in range(max(1, cfg.hull_passes)):
        new, nvox = _carve(cams_mm, dist_maps, cut, lo, hi, cfg.hull_grid, cfg.hull_carve_tolerance,
                           cfg.hull_min_views)
        if len(new) == 0:
            if pts is None:
                raise ValueError(f"visual hull is empty within {cfg.hull_box_mm} mm of the triangulated centre "
                                 f"{np.round(center_mm, 1).tolist()}: masks disagree (calibration or masks wrong?)")
            break
        pts, vox = new, nvox
        lo, hi = pts.min(0) - vox, pts.max(0) + vox
    return pts.min(0) - vox / 2, pts.max(0) + vox / 2, pts


def estimate_normalization(cams_mm: Sequence[Camera], masks: Sequence[np.ndarray], up: np.ndarray,
                           cfg: NormalizeConfig) -> tuple[Normalization, dict]:
    """World origin and scale of one frame set from its masks (see module docstring)."""
    usable = [i for i, m in enumerate(masks) if int(np.count_nonzero(m)) >= cfg.min_mask_pixels]
    if len(usable) < 2:
        raise ValueError(f"only {len(usable)} views have a mask of >= {cfg.min_mask_pixels} pixels; need 2 to triangulate")
    whole = [i for i in usable if not mask_is_cut(masks[i], cfg.edge_margin_px)]
    if len(whole) >= 2:            # a cut-off mask's centroid is not the mouse's projected centre
        usable = whole
    cents, pcams = [], []
    for i in usable:
        cam = cams_mm[i]
        xn = pixels_to_normalized(cam, mask_pixels(masks[i])).mean(0, keepdims=True)
        pc = pinhole(cam)
        cents.append(xn[0] @ pc.K[:2, :2].T + pc.K[:2, 2])
        pcams.append(pc)
    c0 = triangulate(pcams, np.asarray(cents))
    resid = [float(np.linalg.norm(pc.project(c0[None])[0][0] - c)) for pc, c in zip(pcams, cents)]
    R_up = rotation_to_z(up)
    # The hull uses every view (a view with an empty mask rightly carves everything away).
    lo, hi, pts = visual_hull(cams_mm, masks, c0, cfg)
    # Box in the up-aligned frame (the hull box is axis-aligned in the original frame; re-box after rotating).
    ptsr = (pts - c0) @ R_up.T
    vox = (hi - lo) / max(cfg.hull_grid, 1)
    lo_r, hi_r = ptsr.min(0) - np.abs(R_up) @ vox / 2, ptsr.max(0) + np.abs(R_up) @ vox / 2
    center = c0 + ((lo_r + hi_r) / 2) @ R_up
    half_extent = float((hi_r - lo_r).max()) / 2
    if cfg.body_length_mm:
        mm_per_unit = float(cfg.body_length_mm) / 2 / cfg.cube_fit
        method = "body_length"
    else:
        mm_per_unit = half_extent / cfg.cube_fit
        method = "visual_hull"
    norm = Normalization(center_mm=center, mm_per_unit=mm_per_unit, up_rotation=R_up)
    diag = {"triangulated_center_mm": c0.tolist(), "centroid_residual_px": [round(r, 3) for r in resid],
            "views_used_for_centre": usable, "hull_extent_mm": (hi_r - lo_r).tolist(), "hull_voxels": int(len(pts)),
            "scale_method": method, "cube_fit": cfg.cube_fit,
            "hull_half_extent": ((hi_r - lo_r) / 2 / mm_per_unit).tolist()}
    return norm, diag


@dataclass
class RealView:
    rgba: np.ndarray       # uint8 [S,S,4]
    camera: Camera         # normalised world, ideal pinhole, cropped + resized
    crop: dict             # {x0, y0, side} in the undistorted full-frame pixel grid


def dropped_views(masks: Sequence[np.ndarray], cams: Sequence[Camera], cfg: NormalizeConfig) -> dict[str, str]:
    """Views left out of the sample, by camera name, with the reason: too small a mask (the
    mouse is hidden or out of view), or, with ``drop_cut_views``, a mouse cut off by the
    sensor border (its alpha would say "no mouse" where the mouse merely left the sensor,
    teaching the model to delete body parts)."""
    out = {}
    for m, c in zip(masks, cams):
        n = int(np.count_nonzero(m))
        if n < cfg.min_mask_pixels:
            out[c.name] = f"mask of {n} pixels < normalize.min_mask_pixels {cfg.min_mask_pixels}"
        elif cfg.drop_cut_views and mask_is_cut(m, cfg.edge_margin_px):
            out[c.name] = f"mouse cut off by the sensor border (mask within {cfg.edge_margin_px} px of it)"
    return out


def normalize_frame_set(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], cams_mm: Sequence[Camera],
                        up: np.ndarray, cfg: NormalizeConfig) -> tuple[list[RealView], Normalization, dict]:
    """One frame set (a frame and a bool mask per camera, cameras in mm) -> normalised views."""
    if not (len(frames) == len(masks) == len(cams_mm)):
        raise ValueError(f"{len(frames)} frames, {len(masks)} masks and {len(cams_mm)} cameras: expected one of each per camera")
    for i, (f, m, c) in enumerate(zip(frames, masks, cams_mm)):
        if f.shape[:2] != (c.height, c.width) or m.shape != (c.height, c.width):
            raise ValueError(f"camera {i} ({c.name}): calibration says {c.width}x{c.height} but the frame is "
                             f"{f.shape[1]}x{f.shape[0]} and the mask {m.shape[1]}x{m.shape[0]}")
    dropped = dropped_views(masks, cams_mm, cfg)
    if len(cams_mm) - len(dropped) < cfg.min_views:
        raise ValueError(f"only {len(cams_mm) - len(dropped)} of {len(cams_mm)} views are usable (normalize.min_views = "
                         f"{cfg.min_views}); dropped: " + ", ".join(f"{k} ({v})" for k, v in dropped.items()))
    norm, diag = estimate_normalization(cams_mm, masks, up, cfg)
    diag["views_dropped"] = dropped
    views = []
    for i, (frame, mask, cam) in enumerate(zip(frames, masks, cams_mm)):
        if cam.name in dropped:
            continue
        ideal = norm.camera(pinhole(cam))
        src = norm.camera(cam)
        xn = pixels_to_normalized(cam, mask_pixels(mask))
        uv = xn @ ideal.K[:2, :2].T + ideal.K[:2, 2]
        x0, y0, side = crop_box(uv, cfg.fill)
        out_cam = ideal.cropped(x0, y0, side, side).resized(cfg.size, cfg.size)
        rgb, valid, (alpha,) = resample_view(frame[..., :3], src, out_cam, cfg.supersample, extra=[mask])
        a = np.clip(alpha, 0, 1)
        if not cfg.keep_background:
            rgb = rgb * (a[..., None] > 0)
        rgba = np.concatenate([rgb, (a * 255)[..., None]], -1)
        rgba = np.clip(np.rint(rgba), 0, 255).astype(np.uint8)
        views.append(RealView(rgba=rgba, camera=out_cam, crop={"x0": x0, "y0": y0, "side": side,
                                                               "valid_fraction": round(float(valid.mean()), 4)}))
    lim = np.asarray(diag["hull_half_extent"])
    cams = depth_range_for([v.camera for v in views], -lim, lim, margin=cfg.depth_margin)
    for v, c in zip(views, cams):
        v.camera = c
    return views, norm, diag


def build_real_sample(key: str, views: Sequence[RealView], norm: Normalization, diag: dict, meta: dict) -> MultiViewSample:
    """A ``source=real`` MultiViewSample (no depth) with the normalisation in meta."""
    m = {"schema": SCHEMA, "source": "real", "mm_per_unit": float(norm.mm_per_unit),
         "normalization": {**norm.to_meta(), **diag}, "crops": [v.crop for v in views], **meta}
    return MultiViewSample(key=key, meta=m, rgba=np.stack([v.rgba for v in views]),
                           cameras=[v.camera for v in views]).validate()
