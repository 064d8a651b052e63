"""Cross-view geometric consistency of one multi-view sample: the proof that it is truly 3D.

Each view's depth (planar camera z, OpenCV, pixel centres at +0.5) is back-projected to world
points, which are projected into every other view and compared with what that view saw:

- occlusion-aware: a point behind the other view's surface by more than
  ``occlusion_margin_rel`` of its depth is hidden there and not counted, and so is a point
  whose surface (normal from its own view's depth) faces away from the other camera: on
  thin parts (tail, ears, limbs) the far side lies within that margin of the near side, and
  opposing cameras of a real rig would otherwise pair the two sides as one surface;
- a visible point must land on the other view's surface (not its background, allowing a
  ``silhouette_tolerance_px`` band at the outline) and agree with its depth;
- reprojection error: the forward-backward cycle ``pixel in i -> world -> pixel in j ->
  world (j's depth, interpolated) -> pixel in i``, in pixels of view i, over points that
  land on j's surface or float in front of it. It is ~0 for a consistent sample and grows
  with any camera, depth or scale error;
- per-view aggregation (pairs in which the view takes part) so one bad camera among 32
  cannot hide in a median over all pairs;
- alpha vs mesh: IoU of each view's alpha with the body mesh rebuilt from ``pose.npy`` and
  rasterized with :func:`mousefacelift.meshraster.rasterize` (when the model is available);
  both mask IoUs forgive a band of ``iou_band_px`` along the outline (:func:`band_iou`), so
  their limits hold at every image size.

All defaults live in :class:`ConsistencyConfig`; pass/fail limits in :class:`Thresholds`.
"""
from __future__ import annotations

import functools
import logging
import pickle
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mousefacelift.cameras import Camera, undistort_normalized
from mousefacelift.config import typed
from mousefacelift.shards import MultiViewSample
from synth.mouse import meta as sample_meta

log = logging.getLogger(__name__)


@dataclass
class ConsistencyConfig:
    """How the cross-view check samples and classifies points."""

    points_per_view: int = 3000          # random valid pixels back-projected per view (speed vs noise)
    occlusion_margin_rel: float = 0.03   # behind the other surface by > 3 % of depth = occluded there
    silhouette_tolerance_px: int = 1     # landing this close to the other view's outline is not a miss
    alpha_threshold: int = 128           # alpha >= this counts as covered (0..255)
    iou_band_px: int = 1                 # mask IoUs forgive disagreement this close to the other mask's outline
    seed: int = 0                        # pixel subsampling is deterministic


@dataclass
class Thresholds:
    """Pass/fail limits. Figures at 256² with exact cameras are an order of magnitude below
    these (docs/benchmarks.md); a 0.5° camera error or a 1 % depth scale error exceeds them."""

    reproj_px_median: float = 0.5        # median cycle error over all pairs, pixels
    reproj_px_worst_view: float = 1.0    # worst per-view median cycle error, pixels
    depth_rel_median: float = 0.005      # median |z_i - z_j| / z_j over visible points
    conflict_frac_worst_view: float = 0.05   # share of visible-by-geometry points landing in front/off surface
    depth_alpha_iou_min: float = 0.95    # per view, IoU(depth > 0, alpha >= threshold), outline band forgiven
    mesh_iou_min: float = 0.90           # per view, IoU(alpha, rasterized body mesh), outline band forgiven

    def override(self, assignments: list[str]) -> "Thresholds":
        """Apply ``name=value`` strings (CLI ``--set``); unknown names and non-numbers are errors."""
        values = asdict(self)
        for a in assignments:
            name, eq, value = a.partition("=")
            if not eq:
                raise ValueError(f"threshold override {a!r}: expected name=value")
            values[name] = value
        return typed(Thresholds, values, "--set")


# -- camera maths ---------------------------------------------------------------------------
def backproject(cam: Camera, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Pixel coordinates [N,2] (continuous, centres at +0.5) with planar depth z [N] -> world [N,3]."""
    xn = (uv - cam.K[:2, 2]) / np.array([cam.fx, cam.fy])
    if cam.dist is not None:
        xn = undistort_normalized(xn, cam.dist)
    pc = np.concatenate([xn * z[:, None], z[:, None]], axis=1)
    R, t = cam.w2c[:3, :3], cam.w2c[:3, 3]
    return (pc - t) @ R          # R^T (pc - t), row-vector form


def sample_depth(depth: np.ndarray, uv: np.ndarray, max_spread: np.ndarray,
                 view: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth at continuous pixel positions: bilinear where the 4 neighbours are all surface and
    within ``max_spread`` of each other (no blending across edges), else the nearest pixel; 0
    outside the image or on background. ``depth`` is [H,W], or [V,H,W] with ``view`` [N]
    naming each point's view. Returns (depth, smooth): ``smooth`` marks the bilinear samples,
    where the depth is accurate to well under a pixel's worth of surface."""
    if depth.ndim == 2:
        depth, view = depth[None], np.zeros(len(uv), np.int64)
    H, W = depth.shape[1:]
    x = uv[:, 0] - 0.5
    y = uv[:, 1] - 0.5
    out = np.zeros(len(uv))
    smooth = np.zeros(len(uv), dtype=bool)
    inside = (x > -0.5) & (y > -0.5) & (x < W - 0.5) & (y < H - 0.5)
    if not inside.any():
        return out, smooth
    xi, yi, vi = x[inside], y[inside], view[inside]
    xn = np.clip(np.rint(xi).astype(np.int64), 0, W - 1)
    yn = np.clip(np.rint(yi).astype(np.int64), 0, H - 1)
    near = depth[vi, yn, xn].astype(np.float64)
    x0 = np.clip(np.floor(xi).astype(np.int64), 0, W - 2)
    y0 = np.clip(np.floor(yi).astype(np.int64), 0, H - 2)
    fx = np.clip(xi - x0, 0, 1)
    fy = np.clip(yi - y0, 0, 1)
    d00, d01 = depth[vi, y0, x0].astype(np.float64), depth[vi, y0, x0 + 1].astype(np.float64)
    d10, d11 = depth[vi, y0 + 1, x0].astype(np.float64), depth[vi, y0 + 1, x0 + 1].astype(np.float64)
    lo = np.minimum(np.minimum(d00, d01), np.minimum(d10, d11))
    hi = np.maximum(np.maximum(d00, d01), np.maximum(d10, d11))
    ok = (lo > 0) & (hi - lo <= max_spread[inside])
    bil = (d00 * (1 - fx) + d01 * fx) * (1 - fy) + (d10 * (1 - fx) + d11 * fx) * fy
    out[inside] = np.where(ok, bil, near)
    smooth[inside] = ok
    return out, smooth


def depth_normals(cam: Camera, depth: np.ndarray, max_step_rel: float) -> np.ndarray:
    """World-space unit normals [H,W,3] of a depth map, facing its camera, from central
    differences of the back-projected points; NaN where a neighbour is missing or further
    than ``max_step_rel`` of the depth away (silhouettes, depth edges)."""
    H, W = depth.shape
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    z = depth.astype(np.float64)
    P = backproject(cam, np.stack([u.ravel(), v.ravel()], 1), z.ravel()).reshape(H, W, 3)
    pad = lambda a: np.pad(a, 1, mode="constant")

    def diff(axis):
        zp, Pp = pad(z), np.pad(P, ((1, 1), (1, 1), (0, 0)))
        sl = lambda o: (slice(1 + o, H + 1 + o), slice(1, W + 1)) if axis == 0 else (slice(1, H + 1), slice(1 + o, W + 1 + o))
        za, zb = zp[sl(1)], zp[sl(-1)]
        ok = (z > 0) & (za > 0) & (zb > 0) & (np.abs(za - z) <= max_step_rel * z) & (np.abs(zb - z) <= max_step_rel * z)
        return Pp[sl(1)] - Pp[sl(-1)], ok

    du, ok_u = diff(1)
    dv, ok_v = diff(0)
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where((ok_u & ok_v)[..., None] & (norm > 0), n / np.maximum(norm, 1e-300), np.nan)
    to_cam = cam.center - P
    flip = np.sum(n * to_cam, axis=-1, keepdims=True) < 0
    return np.where(flip, -n, n)


def _backproject_many(cams: list[Camera], view: np.ndarray, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`backproject` for points of several views at once (``view`` [N] indexes ``cams``)."""
    if any(c.dist is not None for c in cams):
        out = np.empty((len(uv), 3))
        for v in np.unique(view):
            sel = view == v
            out[sel] = backproject(cams[v], uv[sel], z[sel])
        return out
    K = np.stack([c.K for c in cams])[view]
    w2c = np.stack([c.w2c for c in cams])[view]
    xn = (uv - K[:, :2, 2]) / np.stack([K[:, 0, 0], K[:, 1, 1]], axis=1)
    pc = np.concatenate([xn * z[:, None], z[:, None]], axis=1) - w2c[:, :3, 3]
    return np.einsum("nji,nj->ni", w2c[:, :3, :3], pc)


def _min_filter(values: np.ndarray, r: int) -> np.ndarray:
    """Minimum over the (2r+1)^2 neighbourhood (edges padded with +inf)."""
    if r <= 0:
        return values
    H, W = values.shape
    p = np.pad(values, r, constant_values=np.inf)
    out = np.full_like(values, np.inf)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            np.minimum(out, p[dy:dy + H, dx:dx + W], out=out)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by the (2r+1)^2 square: a pixel is set when any within ``r`` is."""
    return mask if r <= 0 else _min_filter(np.where(mask, 0.0, 1.0), r) == 0


def band_iou(a: np.ndarray, b: np.ndarray, band_px: int = 1) -> float:
    """IoU of two masks that does not count disagreement within ``band_px`` of the other mask.

    Why: two correct masks of one subject still differ along the outline (coverage of an
    anti-aliased edge vs a hit at the pixel centre, rasterizer vs Cycles), and the outline is
    a larger share of a small image: clean preview renders measure a plain depth-vs-alpha
    IoU of ~0.93 at 64 px and ~0.97 at 128 px, and 0.97 / 0.999 with a 1 px band. The band
    keeps the limits meaningful at every size, while a wrong camera or pose, which moves the
    outline by several pixels, still shows. ``band_px`` = 0 is the plain IoU."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    miss = (a & ~_dilate(b, band_px)) | (b & ~_dilate(a, band_px))
    return float(1.0 - miss.sum() / union)


# -- the cross-view check --------------------------------------------------------------------
@dataclass
class ConsistencyReport:
    """Figures of one sample; ``per_view`` lists the per-view aggregates."""

    reproj_px_median: float
    reproj_px_p90: float
    reproj_px_worst_view: float
    depth_abs_median: float              # world units
    depth_rel_median: float
    depth_mm_median: float | None
    conflict_frac: float
    conflict_frac_worst_view: float
    depth_alpha_iou_min: float
    points_tested: int
    points_visible: int
    worst_view: int
    per_view: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cross_view_consistency(sample: MultiViewSample, cfg: ConsistencyConfig | None = None) -> ConsistencyReport:
    """Back-project every view's depth and test it against every other view (module docstring)."""
    cfg = cfg or ConsistencyConfig()
    if sample.depth is None:
        raise ValueError(f"{sample.key}: no depth, the cross-view check needs it")
    V = sample.num_views
    if V < 2:
        raise ValueError(f"{sample.key}: the cross-view check needs at least 2 views, got {V}")
    rng = np.random.default_rng(cfg.seed)
    depth = sample.depth.astype(np.float64)
    cams = sample.cameras
    alpha_ok = sample.rgba[..., 3] >= cfg.alpha_threshold
    surface = depth > 0
    m = cfg.occlusion_margin_rel
    nearest_surface = np.stack([_min_filter(np.where(surface[j], depth[j], np.inf), cfg.silhouette_tolerance_px)
                                for j in range(V)])
    depth_alpha_iou = [band_iou(surface[j], alpha_ok[j], cfg.iou_band_px) for j in range(V)]

    # per view: sampled pixel centres, their world points and surface normals
    src = []
    for i in range(V):
        normals = depth_normals(cams[i], depth[i], m)
        ys, xs = np.nonzero(surface[i])
        if len(ys) > cfg.points_per_view:
            pick = rng.choice(len(ys), cfg.points_per_view, replace=False)
            ys, xs = ys[pick], xs[pick]
        uv = np.stack([xs + 0.5, ys + 0.5], axis=1).astype(np.float64)
        z = depth[i][ys, xs]
        src.append((uv, backproject(cams[i], uv, z), normals[ys, xs]))

    centers = np.stack([c.center for c in cams])     # camera centres, for the facing test
    tested = np.zeros(V, np.int64)
    conflicts = np.zeros(V, np.int64)
    err_parts, abs_parts, rel_parts, src_parts, dst_parts = [], [], [], [], []
    H, W = depth.shape[1:]
    for i in range(V):
        uv_i, X, N = src[i]
        if len(X) == 0:
            continue
        others = [j for j in range(V) if j != i]
        # X seen from every other view at once: (view, point) pairs flattened
        proj = [cams[j].project(X) for j in others]
        uv_j = np.concatenate([p[0] for p in proj])
        z_j = np.concatenate([p[1] for p in proj])
        view = np.repeat(np.asarray(others), len(X))
        pidx = np.tile(np.arange(len(X)), len(others))
        inframe = (z_j > 0) & (uv_j[:, 0] >= 0) & (uv_j[:, 1] >= 0) & (uv_j[:, 0] < W) & (uv_j[:, 1] < H)
        uv_j, z_j, view, pidx = uv_j[inframe], z_j[inframe], view[inframe], pidx[inframe]
        if len(z_j) == 0:
            continue
        d, smooth = sample_depth(depth, uv_j, max_spread=m * z_j, view=view)
        col = np.clip(uv_j[:, 0].astype(np.int64), 0, W - 1)
        row = np.clip(uv_j[:, 1].astype(np.int64), 0, H - 1)
        faces_j = np.sum(N[pidx] * (centers[view] - X[pidx]), axis=1)
        back_facing = faces_j < 0                       # NaN normal (edge): not decided here
        hidden = ((d > 0) & (z_j > d * (1 + m))) | back_facing
        # in front of every surface j saw near there (or only background near there)
        conflict = ~hidden & (z_j < nearest_surface[view, row, col] * (1 - m))
        # compared: points on j's surface where its depth is smooth, plus those floating in front
        # of it (their large cycle error is the signature of a wrong camera); ambiguous edge
        # points are left out, and so are points j sees at a depth edge or at grazing incidence,
        # where a nearest-pixel depth is off by a large fraction of the surface's slope and a
        # wide baseline turns that into pixels of cycle error with exact cameras
        visible = (d > 0) & (((np.abs(z_j - d) <= m * d) & smooth) | conflict)
        n_test = np.bincount(view[~hidden], minlength=V)
        n_conf = np.bincount(view[conflict], minlength=V)
        tested += n_test
        tested[i] += int(n_test.sum())
        conflicts += n_conf
        conflicts[i] += int(n_conf.sum())
        if not visible.any():
            continue
        # forward-backward: j's surface point at uv_j, back into view i
        Xb = _backproject_many(cams, view[visible], uv_j[visible], d[visible])
        uv_back, _ = cams[i].project(Xb)
        err_parts.append(np.linalg.norm(uv_back - uv_i[pidx[visible]], axis=1))
        absd = np.abs(z_j[visible] - d[visible])
        abs_parts.append(absd)
        rel_parts.append(absd / d[visible])
        src_parts.append(np.full(int(visible.sum()), i))
        dst_parts.append(view[visible])
    total_tested = int(tested.sum()) // 2
    total_conflict = int(conflicts.sum()) // 2

    if not err_parts:
        raise ValueError(f"{sample.key}: no point of any view is visible in another view; "
                         "cameras and depth do not describe one subject")
    e, absd, rel = np.concatenate(err_parts), np.concatenate(abs_parts), np.concatenate(rel_parts)
    srcv, dstv = np.concatenate(src_parts), np.concatenate(dst_parts)
    per_view = []
    for v in range(V):
        sel = (srcv == v) | (dstv == v)
        per_view.append({"view": v,
                         "reproj_px_median": float(np.median(e[sel])) if sel.any() else float("nan"),
                         "depth_rel_median": float(np.median(rel[sel])) if sel.any() else float("nan"),
                         "conflict_frac": float(conflicts[v] / tested[v]) if tested[v] else float("nan"),
                         "depth_alpha_iou": depth_alpha_iou[v]})
    view_err = np.array([p["reproj_px_median"] for p in per_view])
    view_conf = np.array([p["conflict_frac"] for p in per_view])
    worst = int(np.nanargmax(view_err))
    mm = sample.meta.get("mm_per_unit")
    abs_med = float(np.median(absd))
    return ConsistencyReport(
        reproj_px_median=float(np.median(e)), reproj_px_p90=float(np.percentile(e, 90)),
        reproj_px_worst_view=float(np.nanmax(view_err)),
        depth_abs_median=abs_med, depth_rel_median=float(np.median(rel)),
        depth_mm_median=abs_med * float(mm) if mm else None,
        conflict_frac=total_conflict / max(total_tested, 1),
        conflict_frac_worst_view=float(np.nanmax(view_conf)) if np.isfinite(view_conf).any() else 0.0,
        depth_alpha_iou_min=float(min(depth_alpha_iou)),
        points_tested=total_tested, points_visible=int(len(e)), worst_view=worst, per_view=per_view)


# -- alpha vs the body mesh ------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_model(name: str):
    from mousefacelift.body import load_body_model   # imported lazily (torch, assets)

    return load_body_model(name)


def rebuild_mesh(sample: MultiViewSample) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """World-space vertices and faces of a mouse sample's body, or (None, None, why not)."""
    if sample.meta.get("source") != "mouse":
        return None, None, f"source is {sample.meta.get('source')!r}: no body model to compare with"
    name = sample_meta.body_model(sample.meta)
    if name is None:
        return None, None, "meta names no body model (body_model)"
    if "pose" not in sample.arrays:
        return None, None, "no pose.npy member"
    norm = sample.meta.get("normalization")
    if not isinstance(norm, dict) or "center" not in norm or "scale" not in norm:
        return None, None, "meta.normalization {center, scale} missing"
    try:
        from mousefacelift.body import PoseParams
        model = _load_model(name)
    except ImportError as e:
        return None, None, f"body module not importable ({e})"
    except (FileNotFoundError, OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
        return None, None, f"body model {name!r} not available ({e})"
    try:
        params = PoseParams.from_array(model, np.asarray(sample.arrays["pose"]).reshape(1, -1))
        out = model.pose(params)
    except Exception as e:  # a malformed pose array is a sample error worth reporting verbatim
        return None, None, f"pose.npy does not fit model {name!r} ({type(e).__name__}: {e})"
    verts = out.vertices[0].detach().cpu().numpy().astype(np.float64)
    world = (verts - np.asarray(norm["center"], dtype=np.float64)) * float(norm["scale"])
    return world, np.asarray(model.faces), ""


def mesh_alpha_iou(sample: MultiViewSample, vertices: np.ndarray, faces: np.ndarray,
                   cfg: ConsistencyConfig | None = None) -> list[float]:
    """Per-view IoU between the alpha mask and the rasterized mesh silhouette."""
    from mousefacelift.meshraster import rasterize

    cfg = cfg or ConsistencyConfig()
    out = []
    for v, cam in enumerate(sample.cameras):
        _, _, mask = rasterize(vertices, faces, cam.K, cam.w2c, cam.width, cam.height)
        out.append(band_iou(mask, sample.rgba[v, ..., 3] >= cfg.alpha_threshold, cfg.iou_band_px))
    return out
