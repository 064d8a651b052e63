"""A body model fitted to a recording's 3D keypoints, seen by every camera: mask prior and depth.

Why: a keypoint track says where the joints are; the body model fitted to it
(:func:`mousefacelift.body.fit.fit_keypoints`, one fit per frame, batched) says where the
whole surface is, to within the fit residual. Rendered into each captured view (CPU z-buffer,
:mod:`mousefacelift.meshraster`, then through the camera's lens distortion) it is a silhouette
prior for the mask provider and an approximate depth; rendered into the normalised output
views of a sample (:func:`add_body_depth`) it is the weak depth supervision of phase=real
(``meta.depth_source = "body_fit"``; the loss weighs it by ``loss.real_depth_weight``).

Units: cameras and vertices in millimetres (``Calibration.cameras_mm()``), captured depth in mm.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from mousefacelift.cameras import Camera
from mousefacelift.imaging import pixels_to_normalized
from mousefacelift.meshraster import rasterize
from mousefacelift.shards import MultiViewSample
from synth.real.calibration import Calibration
from synth.real.keypoints import (BodyPriorConfig, KeypointsConfig, KeypointTrack, estimate_up, load_keypoints,
                                  project_seeds, resolve_up)
from synth.real.normalize import Normalization

__all__ = ["BodyPrior", "render_captured", "body_depth_views", "add_body_depth", "DEPTH_SOURCE", "KeypointInputs",
           "prepare_keypoints"]
log = logging.getLogger(__name__)
DEPTH_SOURCE = "body_fit"      # meta.depth_source of a real sample whose depth is the fitted body's
SUPERSAMPLE = 1                # pinhole render density per captured pixel before the lens lookup


def render_captured(vertices_mm: np.ndarray, faces: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Silhouette (bool [H,W]) and planar camera depth (float32 [H,W], mm, 0 = empty) of a mesh
    in the captured image of ``cam``, lens distortion included.

    The mesh is rasterised into an ideal pinhole of the same camera covering just the mesh
    (``SUPERSAMPLE`` times the captured pixel density); every captured pixel centre in the
    mesh's box is then undistorted and looks up its nearest pinhole pixel. Planar depth is
    the same in both (same extrinsics)."""
    H, W = cam.height, cam.width
    mask = np.zeros((H, W), bool)
    depth = np.zeros((H, W), np.float32)
    uv, z = cam.project(vertices_mm)
    front = (z > 0) & np.all(np.isfinite(uv), axis=1)
    if not front.any():
        return mask, depth
    lo = np.floor(uv[front].min(0)).astype(int) - 2
    hi = np.ceil(uv[front].max(0)).astype(int) + 2
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], W), min(hi[1], H)
    if x1 <= x0 or y1 <= y0:
        return mask, depth
    v, u = np.meshgrid(np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5, indexing="ij")
    xn = pixels_to_normalized(cam, np.stack([u.ravel(), v.ravel()], -1))          # ideal normalised coords
    cam_pts = vertices_mm @ cam.w2c[:3, :3].T + cam.w2c[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        vn = cam_pts[front, :2] / cam_pts[front, 2:3]
    nlo = np.minimum(xn.min(0), vn.min(0))
    nhi = np.maximum(xn.max(0), vn.max(0))
    f = SUPERSAMPLE * max(cam.fx, cam.fy)
    pw, ph = (int(math.ceil((nhi[i] - nlo[i]) * f)) + 2 for i in (0, 1))
    K = np.array([[f, 0.0, 1.0 - nlo[0] * f], [0.0, f, 1.0 - nlo[1] * f], [0.0, 0.0, 1.0]])
    d, _, m = rasterize(vertices_mm, faces, K, cam.w2c, pw, ph)
    pu = np.floor(xn[:, 0] * f + K[0, 2]).astype(np.int64)
    pv = np.floor(xn[:, 1] * f + K[1, 2]).astype(np.int64)
    ok = (pu >= 0) & (pu < pw) & (pv >= 0) & (pv < ph)
    hit = np.zeros(len(xn), bool)
    hit[ok] = m[pv[ok], pu[ok]]
    dz = np.zeros(len(xn), np.float32)
    dz[hit] = d[pv[hit], pu[hit]]
    mask[y0:y1, x0:x1] = hit.reshape(v.shape)
    depth[y0:y1, x0:x1] = dz.reshape(v.shape)
    return mask, depth


class BodyPrior:
    """Fitted body poses per frame, posed and rendered on demand into the captured views.

    Only the fitted parameters are kept per frame (a few hundred floats; a mesh is ~0.3 MB),
    so a long recording fits in memory. ``silhouette(frame, cam)`` / ``depth(frame, cam)``:
    ``cam`` is a camera index into ``cameras`` or a :class:`Camera` (mm). Frames without a
    usable fit (too few keypoints, residual over ``max_residual_mm``) are absent:
    ``has(frame)`` is False and posing or rendering them raises KeyError."""

    def __init__(self, model, poses: dict[int, np.ndarray], residual_mm: dict[int, float], cameras: Sequence[Camera]):
        self.model = model
        self.faces = np.asarray(model.faces, np.int64)
        self.poses = poses                      # frame -> PoseParams.to_array() row (target frame, mm)
        self.residual_mm = residual_mm          # frame -> mean keypoint distance of the fit (every fitted frame)
        self.cameras = list(cameras)
        self.model_name = str(getattr(model, "name", ""))
        self._verts: dict[int, np.ndarray] = {}
        self._render: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def fit(cls, track: KeypointTrack, cameras: Sequence[Camera], cfg: BodyPriorConfig,
            joint_map: dict[str, str] | None = None, frames: Sequence[int] | None = None, model=None) -> "BodyPrior":
        """Fit ``cfg.model`` (or ``model``) to the track's poses of ``frames`` (default: all)."""
        from mousefacelift.body import load_body_model
        from mousefacelift.body.fit import FitConfig, fit_keypoints

        model = model if model is not None else load_body_model(cfg.model)
        kp = track.in_order(model.keypoint_names, joint_map)
        frames = [int(f) for f in (track.frames if frames is None else frames) if track.has(f)]
        usable = [f for f in frames if np.count_nonzero(np.all(np.isfinite(kp.at(f)), -1)) >= max(cfg.min_keypoints, 4)]
        if len(usable) < len(frames):
            log.info("body prior: %d of %d frames have fewer than %d keypoints; no prior for them",
                     len(frames) - len(usable), len(frames), cfg.min_keypoints)
        poses, resid = {}, {}
        fcfg = FitConfig(iters=cfg.fit_iters, target_unit_mm=1.0)
        for s in range(0, len(usable), max(cfg.batch, 1)):
            chunk = usable[s:s + cfg.batch]
            res = fit_keypoints(model, np.stack([kp.at_mm(f) for f in chunk]), fcfg)
            arr = res.params.to_array()
            for i, f in enumerate(chunk):
                resid[f] = float(res.residual_mm[i])
                if res.residual_mm[i] <= cfg.max_residual_mm:
                    poses[f] = arr[i]
        if len(poses) < len(usable):
            log.warning("body prior: %d frames fitted worse than body_prior.max_residual_mm %.1f mm; no prior for them",
                        len(usable) - len(poses), cfg.max_residual_mm)
        return cls(model, poses, resid, cameras)

    def has(self, frame: int) -> bool:
        return int(frame) in self.poses

    def vertices(self, frame: int) -> np.ndarray:
        """The fitted mesh of ``frame``: [N,3] float64, mm, calibration world."""
        from mousefacelift.body import PoseParams

        f = int(frame)
        if f not in self.poses:
            raise KeyError(f"body prior: no fitted body for frame {frame}")
        if f not in self._verts:
            if len(self._verts) >= 8:
                self._verts.clear()
            p = PoseParams.from_array(self.model, self.poses[f])
            self._verts[f] = self.model.pose(p).vertices[0].detach().double().numpy()
        return self._verts[f]

    def render(self, frame: int, cam: int | Camera) -> tuple[np.ndarray, np.ndarray]:
        """(silhouette, depth mm) of ``frame`` in camera ``cam``'s captured image."""
        c = self.cameras[cam] if isinstance(cam, (int, np.integer)) else cam
        key = (int(frame), c.name, c.width, c.height, c.K.tobytes(), c.w2c.tobytes(),
               None if c.dist is None else c.dist.tobytes())
        if key not in self._render:
            if len(self._render) >= 64:
                self._render.clear()
            self._render[key] = render_captured(self.vertices(frame), self.faces, c)
        return self._render[key]

    def silhouette(self, frame: int, cam: int | Camera) -> np.ndarray:
        return self.render(frame, cam)[0]

    def depth(self, frame: int, cam: int | Camera) -> np.ndarray:
        return self.render(frame, cam)[1]


def body_depth_views(vertices_mm: np.ndarray, faces: np.ndarray, norm: Normalization, cameras: Sequence[Camera],
                     alpha: np.ndarray, min_alpha: float) -> np.ndarray:
    """Planar depth [V,H,W] (float32, normalised world units, 0 = unknown) of the fitted body in
    a sample's output views (ideal pinhole cameras in the normalised world, with depth_range),
    kept only where the view's own mask alpha [V,H,W] (0..1) exceeds ``min_alpha`` and the
    depth lies within the view's depth_range (what the shard can encode): the fit is an
    approximation, so it is never allowed to claim surface the mask does not show."""
    v_n = norm.points_to_norm(vertices_mm)
    out = np.zeros((len(cameras),) + tuple(alpha.shape[1:]), np.float32)
    for i, c in enumerate(cameras):
        d, _, m = rasterize(v_n, faces, c.K, c.w2c, c.width, c.height)
        keep = m & (alpha[i] > min_alpha)
        if c.depth_range is not None:
            keep &= (d >= c.depth_range[0]) & (d <= c.depth_range[1])
        out[i][keep] = d[keep]
    return out


def add_body_depth(sample: MultiViewSample, prior: BodyPrior, frame: int, norm: Normalization,
                   min_alpha: float) -> MultiViewSample:
    """``sample`` (source=real, no depth) with the body prior's depth in its views and
    ``meta.depth_source = "body_fit"`` (+ ``meta.body_fit``: model, keypoint residual); the
    sample unchanged when the prior has no fit for ``frame``. What the ingest calls per frame."""
    if sample.depth is not None:
        raise ValueError(f"{sample.key}: already has depth; body-fit depth is only for samples without any")
    if not prior.has(frame):
        return sample
    alpha = sample.rgba[..., 3].astype(np.float32) / 255.0
    depth = body_depth_views(prior.vertices(frame), prior.faces, norm, sample.cameras, alpha, min_alpha)
    meta = {**sample.meta, "depth_source": DEPTH_SOURCE,
            "body_fit": {"model": prior.model_name, "residual_mm": round(prior.residual_mm[int(frame)], 3),
                         "depth_min_alpha": min_alpha,
                         "depth_coverage": round(float((depth > 0).sum() / max((alpha > min_alpha).sum(), 1)), 4)}}
    return replace(sample, meta=meta, depth=depth).validate()


@dataclass
class KeypointInputs:
    """What ``--keypoints`` gives one ingest run (:func:`prepare_keypoints`): the track in the
    body model's keypoint order, the up direction to use (and why), the fitted body prior."""

    track: KeypointTrack
    cfg: KeypointsConfig
    up: np.ndarray
    up_info: dict
    prior: BodyPrior

    def seeds(self, frame: int, camera: Camera) -> np.ndarray | None:
        """Sure-foreground seeds [J,2] of ``frame`` in ``camera``'s captured image: the
        ``seeds.sure_joints`` that are known (None: no pose)."""
        if not self.track.has(frame):
            return None
        px = project_seeds(self.track, frame, camera)
        keep = [self.track.joint(n) for n in self.cfg.seeds.sure_joints if n in self.track.names]
        px = px[keep]
        return px[np.all(np.isfinite(px), axis=1)]


def prepare_keypoints(path: str | Path, calibration: Calibration, frames: Sequence[int], cfg: KeypointsConfig,
                      model=None) -> KeypointInputs:
    """Everything the ingest needs from a keypoint file, once per run: read it (unit: the
    config's, else the calibration's; DANNCE files are mm), order it as the body model's
    keypoints (``joint_map``), estimate and resolve the up direction, fit the body prior for
    the selected ``frames`` that have a pose."""
    from mousefacelift.body import load_body_model

    path = Path(path)
    units = None if path.suffix.lower() == ".mat" else (cfg.units or calibration.units)
    raw = load_keypoints(path, units=units, track=cfg.track, node_names=cfg.node_names)
    model = model if model is not None else load_body_model(cfg.body_prior.model)
    track = raw.in_order(model.keypoint_names, cfg.joint_map)
    posed = [int(f) for f in frames if track.has(f)]
    if not posed:
        raise ValueError(f"{path}: no pose for any selected frame (file covers frames {track.frames.min()}.."
                         f"{track.frames.max()}, selected {min(frames)}..{max(frames)})")
    if len(posed) < len(frames):
        log.warning("%s: %d of %d selected frames have no pose; they get no keypoint seeds or body prior",
                    path, len(frames) - len(posed), len(frames))
    try:
        est = estimate_up(track, cfg.up)
    except (KeyError, ValueError) as e:
        log.warning("%s: no up direction from the keypoints (%s); keeping the calibration's", path, e)
        est = None
    up, info = resolve_up(calibration.up, est, cfg.up)
    if est is not None and info.get("angle_to_calibration_deg", 0) > 10:
        log.warning("%s: the keypoints' floor normal is %.1f deg from the calibration's up (confidence %.2f); using "
                    "the %s's", path, info["angle_to_calibration_deg"], est.confidence, info["source"])
    prior = BodyPrior.fit(track, calibration.cameras_mm(), cfg.body_prior, frames=posed, model=model)
    return KeypointInputs(track=track, cfg=cfg, up=up, up_info=info, prior=prior)
