"""Real multi-camera frames -> normalised ``source=real`` samples (mfl-sample/1, no depth).

Per frame set (one frame from every camera, with masks):

1. mask centroids, undistorted, are triangulated (linear least squares, DLT) to a first
   mouse centre;
2. a visual hull of the masks (coarse voxel grid around that centre, then a finer one
   around the coarse hull) gives the mouse's volume; the framing rule of every source
   (:mod:`mousefacelift.framing`, docs/architecture.md §3) then sets the world from the BODY
   WITHOUT THE TAIL: the hull is opened so that its thin parts (the tail) fall away
   (:func:`body_voxels`), the box of what remains is centred at the origin and its longest
   half-extent (or half a known body length) becomes ``fill`` — the renders' value, so world
   units are body lengths in both. One uniform scale per sample: distance ratios are kept;
3. every camera is re-expressed in that frame, with the original world up mapped to +Z
   (for DANNCE the arena floor normal is already +Z);
4. each view becomes a virtual camera at the same centre, turned to look at the body centre
   (a rotation homography), principal point at the image centre and focal length such that
   the projected body box reaches ``view_fill`` of the half-image, as in a render
   (:func:`framed_view`); the image is undistorted, rotated and resized into it in ONE
   resampling (supersampled, then box-filtered) by :mod:`mousefacelift.imaging`, so images
   and intrinsics cannot drift apart.

A view whose mask touches the sensor border (the mouse ran off that camera) abstains in the
hull beyond its frame and is left out of the sample (``views_dropped`` names it and why); a
frame set with fewer than ``min_views`` usable views is skipped with the reason.

Checks that refuse nonsense rather than write it: every camera is scored against the others
(:func:`camera_consistency`, leave-one-out visual-hull agreement); one that disagrees (a wrong
or swapped calibration) is left out of the hull and the sample and named with its score
(``cameras_dropped``). A hull that cannot be a mouse (a handful of voxels, a body far shorter
or longer than ``body_length_mm`` or the species default) skips the frame set with the reason
(:func:`check_plausible`).

Everything is recorded in ``meta.json`` under ``normalization``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
from scipy import ndimage

from mousefacelift.cameras import Camera
from mousefacelift.framing import framed_intrinsics, normalization
from mousefacelift.imaging import mask_pixels, pinhole, pixels_to_normalized, resample_view
from mousefacelift.scene import depth_range_for
from mousefacelift.shards import SCHEMA, MultiViewSample


@dataclass
class NormalizeConfig:
    """The ``normalize:`` section of configs/real/ingest.yaml (values and their meaning are there)."""

    size: int
    fill: float
    view_fill: float
    body_radius_fraction: float
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
    camera_consistency_min: float
    species_body_length_mm: float
    plausible_length_range: tuple[float, float]
    min_hull_voxels: int


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


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction ``a`` onto direction ``b`` (about a x b);
    for opposite directions, the half turn about the x axis (y when a is along x)."""
    u = np.asarray(a, dtype=np.float64)
    w = np.asarray(b, dtype=np.float64)
    u, w = u / np.linalg.norm(u), w / np.linalg.norm(w)
    v = np.cross(u, w)
    c = float(u @ w)
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        axis = np.array([1.0, 0, 0]) if abs(u[0]) < 0.9 else np.array([0, 1.0, 0])
        axis = axis - (axis @ u) * u
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1 / (1 + c))


def rotation_to_z(up: np.ndarray) -> np.ndarray:
    """The smallest rotation taking ``up`` onto +Z (identity when it already is)."""
    return rotation_between(up, np.array([0.0, 0.0, 1.0]))


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
        in_frame, inside = _touches_mask(cam, dmap, P, radius)
        votes = in_frame if is_cut else np.ones(len(P), dtype=bool)  # a cut view abstains outside its frame
        carved += votes & ~inside
        seen += inside
    keep = (carved <= tolerance) & (seen >= max(2, min_views))
    return P[keep], vox


def _touches_mask(cam: Camera, dmap: np.ndarray, P: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Per point (a voxel centre, ``radius`` its half-diagonal): (projects in front of ``cam``
    and inside its frame, touches its mask), ``dmap`` the distance of every pixel to the mask.
    See :func:`_carve` for the out-of-frame rule."""
    h, w = dmap.shape
    uv, z = cam.project(P)
    front = z > 0
    uv = np.where(front[:, None], uv, 0.0)
    cu, cv = np.clip(uv[:, 0], 0.5, w - 0.5), np.clip(uv[:, 1], 0.5, h - 0.5)
    off = np.hypot(uv[:, 0] - cu, uv[:, 1] - cv)                 # distance outside the frame (px)
    in_frame = front & (off == 0)
    near = np.maximum(off, dmap[(cv - 0.5).astype(np.int64), (cu - 0.5).astype(np.int64)] - off)
    r_px = max(cam.fx, cam.fy) * radius / np.maximum(z, 1e-9) + 0.5
    return in_frame, front & (near <= r_px)


def _dist_map(mask: np.ndarray) -> np.ndarray:
    """Distance of every pixel to the nearest mask pixel (inf everywhere for an empty mask)."""
    return (ndimage.distance_transform_edt(~np.asarray(mask, dtype=bool)) if np.any(mask)
            else np.full(np.shape(mask), np.inf))


def mask_is_cut(mask: np.ndarray, margin_px: int) -> bool:
    """True when the mask reaches within ``margin_px`` of the sensor border (mouse cut off there)."""
    m = np.asarray(mask, dtype=bool)
    k = max(1, int(margin_px))
    return bool(m[:k].any() or m[-k:].any() or m[:, :k].any() or m[:, -k:].any())


def visual_hull(cams_mm: Sequence[Camera], masks: Sequence[np.ndarray], center_mm: np.ndarray,
                cfg: NormalizeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Box (lo, hi) of the masks' visual hull in mm, its occupied voxel centres and the voxel size.

    A pass over ``hull_box_mm`` around the centre, then ``hull_passes - 1`` finer passes, each
    over the previous hull's box grown by one voxel. The box of the kept voxels contains the
    true hull (conservative by at most about one voxel per side).
    """
    dist_maps = [_dist_map(m) for m in masks]
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
    return pts.min(0) - vox / 2, pts.max(0) + vox / 2, pts, vox


def body_voxels(pts: np.ndarray, vox: np.ndarray, radius_fraction: float) -> np.ndarray:
    """The hull voxels of the body without the tail.

    The hull is opened (eroded, then dilated back) with a ball of ``radius_fraction`` of its
    largest inscribed radius (the body's half-thickness), and the largest connected part is
    kept: the tail, thinner than that ball, vanishes with any thin carving leftover, while the
    body's ends, rounder than it, stay. Scale-free, so it holds for any mouse size and units.
    A percentile box of the voxels does not: the
    hull of a tail is inflated by the voxel slack and holds ~5 % of the voxels, all beyond one
    end of the body, so a 2 % box still reached into it (scale +14 to +29 %, centre 10-18 mm
    off on the fake DANNCE capture) while trimming the body's other end.
    ``pts``: voxel centres on one regular grid of spacing ``vox``."""
    if not 0 <= radius_fraction < 1:
        raise ValueError(f"normalize.body_radius_fraction must lie in [0, 1), got {radius_fraction}")
    if radius_fraction == 0 or len(pts) < 2:
        return pts
    idx = np.rint((pts - pts.min(0)) / vox).astype(np.int64) + 1      # one empty voxel of padding per side
    occ = np.zeros(idx.max(0) + 2, dtype=bool)
    occ[tuple(idx.T)] = True
    depth = ndimage.distance_transform_edt(occ, sampling=vox)          # mm to the nearest empty voxel
    r = radius_fraction * float(depth.max())
    core = depth > r
    opened = ndimage.distance_transform_edt(~core, sampling=vox) <= r
    labels, n = ndimage.label(opened)
    if n > 1:
        sizes = ndimage.sum_labels(opened, labels, index=np.arange(1, n + 1))
        opened = labels == 1 + int(np.argmax(sizes))
    keep = opened[tuple(idx.T)]
    return pts[keep]


def mask_centre(cams_mm: Sequence[Camera], masks: Sequence[np.ndarray],
                cfg: NormalizeConfig) -> tuple[np.ndarray, list[int], list[float]]:
    """First mouse centre (mm): the undistorted mask centroids triangulated; returns it, the
    views used and their residuals (px)."""
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
    return c0, usable, resid


def camera_consistency(cams_mm: Sequence[Camera], masks: Sequence[np.ndarray], judge: Sequence[int],
                       cfg: NormalizeConfig, exclude: Sequence[int] = ()) -> dict[int, float | None]:
    """Leave-one-out agreement of each view in ``judge`` with the others: the visual hull of
    all OTHER views, projected into this one, and the share of its in-frame voxels that touch
    this view's mask (1 = agrees).

    A share, not an IoU: the others' hull is looser than the mouse (fewer cones), so only its
    falling OUTSIDE this mask says this camera is wrong. ``None`` when the others' hull is
    empty or out of this view's frame: the disagreement then lies among the others (a bad
    camera empties the hull of every leave-one-out set that holds it), so this view is not
    judged. A camera whose calibration is another's sees the others' mouse far off its mask.
    Views in ``exclude`` (already found to disagree) take part in no hull."""
    out: dict[int, float | None] = {}
    for i in judge:
        rest = [j for j in range(len(cams_mm)) if j != i and j not in exclude]
        try:
            c0, _, _ = mask_centre([cams_mm[j] for j in rest], [masks[j] for j in rest], cfg)
            _, _, pts, vox = visual_hull([cams_mm[j] for j in rest], [masks[j] for j in rest], c0, cfg)
        except ValueError:
            out[i] = None
            continue
        in_frame, inside = _touches_mask(cams_mm[i], _dist_map(masks[i]), pts, 0.5 * float(np.linalg.norm(vox)))
        n = int(np.count_nonzero(in_frame))
        out[i] = round(float(np.count_nonzero(inside & in_frame)) / n, 4) if n else None
    return out


def check_plausible(diag: dict, cfg: NormalizeConfig) -> None:
    """Raise when the hull cannot be a mouse: a handful of voxels (masks that barely overlap,
    a tail alone), or a body box whose longest extent is outside ``plausible_length_range``
    times the expected body length (``body_length_mm``, else ``species_body_length_mm``) —
    e.g. a tail stretched to a whole body, or a shadow or reflection carved with the mouse."""
    if diag["hull_voxels"] < cfg.min_hull_voxels:
        raise ValueError(f"implausible for a mouse: visual hull of {diag['hull_voxels']} voxels < "
                         f"normalize.min_hull_voxels {cfg.min_hull_voxels} (masks barely agree)")
    expected = float(cfg.body_length_mm or cfg.species_body_length_mm)
    lo, hi = (f * expected for f in cfg.plausible_length_range)
    length = float(max(diag["body_extent_mm"]))
    if not lo <= length <= hi:
        which = "body_length_mm" if cfg.body_length_mm else "species_body_length_mm"
        raise ValueError(f"implausible for a mouse: body box longest extent {length:.1f} mm outside "
                         f"[{lo:.1f}, {hi:.1f}] mm (normalize.plausible_length_range {list(cfg.plausible_length_range)} "
                         f"x normalize.{which} {expected:g})")


def estimate_normalization(cams_mm: Sequence[Camera], masks: Sequence[np.ndarray], up: np.ndarray,
                           cfg: NormalizeConfig) -> tuple[Normalization, dict]:
    """World origin and scale of one frame set from its masks (see module docstring)."""
    c0, usable, resid = mask_centre(cams_mm, masks, cfg)
    R_up = rotation_to_z(up)
    # The hull uses every view (a view with an empty mask rightly carves everything away).
    _, _, pts, vox = visual_hull(cams_mm, masks, c0, cfg)
    body = body_voxels(pts, vox, cfg.body_radius_fraction)
    half_vox = np.abs(R_up) @ vox / 2

    def up_box(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # boxes in the up-aligned frame (the voxel grid is axis-aligned in the original one)
        q = (p - c0) @ R_up.T
        return q.min(0) - half_vox, q.max(0) + half_vox

    hull_lo, hull_hi = up_box(pts)
    body_lo, body_hi = up_box(body)
    centre_r, scale = normalization(body_lo, body_hi, cfg.fill)
    method = "visual_hull_body"
    if cfg.body_length_mm:
        scale = 2 * cfg.fill / float(cfg.body_length_mm)
        method = "body_length"
    norm = Normalization(center_mm=c0 + centre_r @ R_up, mm_per_unit=1 / scale, up_rotation=R_up)
    world = lambda b: ((b - centre_r) * scale).tolist()   # noqa: E731
    diag = {"rule": "body box without the tail (visual hull opened by normalize.body_radius_fraction of its "
                    "thickness): centred, longest half-extent = normalize.fill",
            "fill": cfg.fill, "view_fill": cfg.view_fill, "body_box": [world(body_lo), world(body_hi)],
            "hull_box": [world(hull_lo), world(hull_hi)], "scale_method": method,
            "triangulated_center_mm": c0.tolist(), "centroid_residual_px": [round(r, 3) for r in resid],
            "views_used_for_centre": usable, "body_extent_mm": (body_hi - body_lo).tolist(),
            "hull_extent_mm": (hull_hi - hull_lo).tolist(), "hull_voxels": int(len(pts)), "body_voxels": int(len(body))}
    return norm, diag


@dataclass
class RealView:
    rgba: np.ndarray       # uint8 [S,S,4]
    camera: Camera         # normalised world, ideal pinhole, framed on the body (framed_view)
    warp: dict             # {rotation_from_capture, valid_fraction}: the homography's rotation


def framed_view(src: Camera, lo: np.ndarray, hi: np.ndarray, view_fill: float, size: int) -> Camera:
    """The virtual camera a captured view becomes, framed like a render.

    Same centre as ``src`` (so the captured pixels map into it by a rotation homography, no
    parallax), turned by the smallest rotation that puts the body-box centre (the world
    origin) on its optical axis, with square pixels, the principal point at the image centre
    and the focal length at which the body box [lo, hi] reaches ``view_fill`` of the
    half-image (:func:`mousefacelift.framing.framed_intrinsics`). The smallest rotation adds
    no roll of its own and stays closest to the captured view, so the least of the output
    falls outside the sensor."""
    R, C = src.w2c[:3, :3], src.center
    to_body = -C / np.linalg.norm(C)
    if float(R[2] @ to_body) <= 0:
        raise ValueError(f"camera {src.name!r}: the mouse lies behind the camera (calibration or masks wrong?)")
    Rv = R @ rotation_between(R[2], to_body).T          # camera axes turned with the optical axis
    w2c = np.eye(4)
    w2c[:3, :3] = Rv
    w2c[:3, 3] = -Rv @ C
    K = framed_intrinsics(w2c, lo, hi, view_fill, size, size)
    return replace(src, K=K, w2c=w2c, width=size, height=size, dist=None, depth_range=None)


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
    judge = [i for i, c in enumerate(cams_mm) if c.name not in dropped]
    # One camera at a time, the worst first: a bad camera also narrows the hulls its partners are
    # judged by (a looser-than-mouse hull may spill off a good mask), so the rest are scored again
    # without it.
    scores = camera_consistency(cams_mm, masks, judge, cfg)
    bad: dict[str, float] = {}
    while True:
        low = [(s, i) for i, s in scores.items()
               if s is not None and s < cfg.camera_consistency_min and cams_mm[i].name not in bad]
        if not low or len(judge) - len(bad) <= cfg.min_views:
            break
        s_min, worst = min(low)
        bad[cams_mm[worst].name] = s_min
        out = [i for i in range(len(cams_mm)) if cams_mm[i].name in bad]
        scores = {**camera_consistency(cams_mm, masks, [i for i in judge if i not in out], cfg, exclude=out),
                  **{i: bad[cams_mm[i].name] for i in out}}
    bad.update({cams_mm[i].name: s for i, s in scores.items()
                if s is not None and s < cfg.camera_consistency_min and cams_mm[i].name not in bad})
    for name, s in bad.items():
        dropped[name] = (f"disagrees with the other cameras: {s:.0%} of their visual hull falls on its mask < "
                         f"normalize.camera_consistency_min {cfg.camera_consistency_min:.0%} (calibration wrong?)")
    if len(cams_mm) - len(dropped) < cfg.min_views:
        raise ValueError(f"only {len(cams_mm) - len(dropped)} of {len(cams_mm)} views are usable (normalize.min_views = "
                         f"{cfg.min_views}); dropped: " + ", ".join(f"{k} ({v})" for k, v in dropped.items()))
    # a disagreeing camera is left out of the hull too (it would carve the mouse away)
    kept = [i for i, c in enumerate(cams_mm) if c.name not in bad]
    norm, diag = estimate_normalization([cams_mm[i] for i in kept], [masks[i] for i in kept], up, cfg)
    diag["views_used_for_centre"] = [kept[i] for i in diag["views_used_for_centre"]]
    check_plausible(diag, cfg)
    diag["views_dropped"] = dropped
    diag["camera_consistency"] = {cams_mm[i].name: s for i, s in scores.items()}
    diag["cameras_dropped"] = {name: {"score": s, "rule": "leave-one-out visual-hull agreement < "
                                      f"normalize.camera_consistency_min {cfg.camera_consistency_min}"}
                               for name, s in bad.items()}
    body_lo, body_hi = (np.asarray(b) for b in diag["body_box"])
    views = []
    for i, (frame, mask, cam) in enumerate(zip(frames, masks, cams_mm)):
        if cam.name in dropped:
            continue
        src = norm.camera(cam)
        out_cam = framed_view(src, body_lo, body_hi, cfg.view_fill, cfg.size)
        rgb, valid, (alpha,) = resample_view(frame[..., :3], src, out_cam, cfg.supersample, extra=[mask])
        a = np.clip(alpha, 0, 1)
        if not cfg.keep_background:
            rgb = rgb * (a[..., None] > 0)
        rgba = np.concatenate([rgb, (a * 255)[..., None]], -1)
        rgba = np.clip(np.rint(rgba), 0, 255).astype(np.uint8)
        rot = out_cam.w2c[:3, :3] @ src.w2c[:3, :3].T
        views.append(RealView(rgba=rgba, camera=out_cam, warp={"rotation_from_capture": rot.tolist(),
                                                               "valid_fraction": round(float(valid.mean()), 4)}))
    hull_lo, hull_hi = (np.asarray(b) for b in diag["hull_box"])
    cams = depth_range_for([v.camera for v in views], hull_lo, hull_hi, margin=cfg.depth_margin)
    for v, c in zip(views, cams):
        v.camera = c
    return views, norm, diag


def build_real_sample(key: str, views: Sequence[RealView], norm: Normalization, diag: dict, meta: dict) -> MultiViewSample:
    """A ``source=real`` MultiViewSample (no depth) with the normalisation in meta and, per view,
    the rotation from the captured camera frame to the virtual one (``warps``)."""
    m = {"schema": SCHEMA, "source": "real", "mm_per_unit": float(norm.mm_per_unit),
         "normalization": {**norm.to_meta(), **diag}, "warps": [v.warp for v in views], **meta}
    return MultiViewSample(key=key, meta=m, rgba=np.stack([v.rgba for v in views]),
                           cameras=[v.camera for v in views]).validate()
