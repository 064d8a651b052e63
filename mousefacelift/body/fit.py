"""Fit a BodyModel to 3D keypoints by gradient descent through the differentiable posing.

    python -m mousefacelift.body.fit --model mammal [--labels label3d_dannce.mat] [--first 60]

Why: the pose sampler's distributions should come from real mice, not from taste. Fitting
the 22 DANNCE keypoints of hand-labelled poses gives, per pose, the sampler's own
coordinates (segment angles flex/twist/abd in the bone frames, body pitch/roll), whose
statistics then centre and scale the sampler (benchmarks/fit_dannce_poses.py).

Unknowns per pose: a similarity (rotation as a delta on a Umeyama initialisation, log scale,
translation; the scale absorbs mm_per_unit, so targets can be in any unit), the sampler's
segment angles (mapped linearly to per-joint axis-angles in the anatomical bone frames by
``segment_joint_map``; a chain shares its angle), and log bone-length scales per group
(per pose, or shared over the batch when the poses are one animal). Soft penalties: the
anatomical limits of the pose config (squared excess), a prior toward rest (squared angle)
and toward bone scale 1 (in units of ``bone_scale_std``). Unlabelled (NaN) keypoints are
masked out. All poses are fitted together in one batch with Adam.
"""
from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from smplx.lbs import batch_rodrigues
from tqdm import tqdm

from .model import BodyModel, PoseParams
from .poses import load_pose_config, segment_joint_map

__all__ = ["FitConfig", "FitResult", "fit_keypoints", "umeyama", "body_euler"]
log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Defaults of the keypoint fit (one place; override per call or from the CLI)."""
    iters: int = 400                  # Adam steps (a cosine decay to lr * 0.05)
    lr: float = 0.04                  # Adam learning rate (radians / log-scale units per step)
    w_limit: float = 400.0            # mm^2 per rad^2 beyond an anatomical limit (soft wall)
    w_prior: float = 2.0              # mm^2 per rad^2 of segment angle (prior toward rest)
    w_bone: float = 1.0               # mm^2 per (log bone scale / bone_scale_std)^2
    shared_shape: bool = False        # one set of bone scales for the whole batch (one animal)
    fit_bones: bool = True            # fit per-group bone-length scales
    use_smplx: bool = False           # smplx.lbs batch_rigid_transform (True) or the model's level-parallel
                                      # kinematics: same values (1e-7), 2x faster with autograd on this CPU
    threads: int = 1                  # torch threads during the fit (0 = leave torch's setting); 1 is 6x
                                      # faster than 2 on the shared 2-core CPU (no OpenMP spin under load)
    target_unit_mm: float = 1.0       # millimetres per target unit (residuals are reported in mm)


@dataclass
class FitResult:
    """Fitted poses. ``params`` reproduce the fit with ``model.pose`` directly in the target's
    frame and units (scale = target units per model unit, so it also holds mm_per_unit)."""
    params: PoseParams
    seg_names: list[str]
    seg_angles: np.ndarray            # [B,S,3] radians (flex, twist, abd), the sampler's coordinates
    residual_mm: np.ndarray           # [B] mean distance over labelled keypoints, mm
    keypoint_error_mm: np.ndarray     # [B,K] per keypoint distance, mm (NaN where unlabelled)
    rotation: np.ndarray              # [B,3,3] model -> target frame
    scale: np.ndarray                 # [B] target units per model unit
    translation: np.ndarray           # [B,3]
    limit_excess_deg: np.ndarray      # [B] largest excess over an anatomical limit, degrees
    loss_history: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def umeyama(X: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched similarity (R [B,3,3], s [B], t [B,3]) minimising |s R X + t - Y| over masked points."""
    w = mask.to(X.dtype)[..., None]                                  # [B,K,1]
    n = w.sum(1).clamp_min(1)
    mx, my = (X * w).sum(1) / n, (Y * w).sum(1) / n
    Xc, Yc = (X - mx[:, None]) * w, (Y - my[:, None]) * w
    C = Yc.transpose(1, 2) @ Xc / n[..., None]
    U, S, Vh = torch.linalg.svd(C)
    D = torch.ones_like(S)
    D[:, 2] = torch.sign(torch.linalg.det(U @ Vh))
    R = U @ torch.diag_embed(D) @ Vh
    var = (Xc ** 2).sum(dim=(1, 2)) / n[:, 0]
    s = (S * D).sum(1) / var
    t = my - s[:, None] * (R @ mx[..., None])[..., 0]
    return R, s, t


def body_euler(rotation: np.ndarray) -> np.ndarray:
    """[B,3,3] model -> world rotations as the sampler's (yaw, pitch_up, roll) in radians
    (the sampler builds Rotation.from_euler("ZYX", [yaw, -pitch_up, roll]))."""
    e = Rotation.from_matrix(rotation).as_euler("ZYX")
    return np.stack([e[:, 0], -e[:, 1], e[:, 2]], 1)


def _limits(model: BodyModel, seg_names: list[str], pose_cfg: Mapping[str, Any]) -> np.ndarray:
    """[S,3,2] radians from the pose config's limits (segment name, else its limb base name)."""
    from .poses import _COMP, PoseSampler
    lims = pose_cfg.get("limits", {})
    out = np.zeros((len(seg_names), 3, 2))
    for i, s in enumerate(seg_names):
        lim = lims.get(s, lims.get(PoseSampler.base_segment(s)))
        if lim is None:
            raise ValueError(f"pose config: no limits for segment {s!r}")
        for comp, k in _COMP.items():
            out[i, k] = lim.get(comp, [0, 0])
    return np.deg2rad(out)


def fit_keypoints(model: BodyModel, target: np.ndarray, cfg: FitConfig | None = None,
                  pose_cfg: Mapping[str, Any] | None = None, progress: bool = False) -> FitResult:
    """Fit ``model`` to target keypoints [B,K,3] (model.keypoint_names order, NaN = unlabelled)."""
    cfg = cfg or FitConfig()
    pose_cfg = pose_cfg if pose_cfg is not None else load_pose_config()
    tgt = np.asarray(target, np.float64)
    K = len(model.keypoint_names)
    if tgt.ndim != 3 or tgt.shape[1:] != (K, 3):
        raise ValueError(f"fit_keypoints: target must be [B,{K},3] in {model.name} keypoint order, got {tgt.shape}")
    mask_np = np.all(np.isfinite(tgt), axis=-1)
    few = np.nonzero(mask_np.sum(1) < 4)[0]
    if len(few):
        raise ValueError(f"fit_keypoints: poses {few.tolist()} have fewer than 4 labelled keypoints")
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(model, tgt, mask_np, cfg, pose_cfg, progress)
    finally:
        torch.set_num_threads(old_threads)


def _fit(model, tgt, mask_np, cfg, pose_cfg, progress) -> FitResult:
    dt = torch.float32
    B, K = tgt.shape[:2]
    seg_names = list(model.segments)
    S, J, G = len(seg_names), model.num_joints, model.num_bone_groups
    Y = torch.as_tensor(np.nan_to_num(tgt), dtype=dt)
    mask = torch.as_tensor(mask_np)
    wk = mask.to(dt)
    seg_map = torch.as_tensor(segment_joint_map(model, seg_names), dtype=dt)
    lim = torch.as_tensor(_limits(model, seg_names, pose_cfg), dtype=dt)
    bstd = max(float(pose_cfg.get("bone_scale_std", 0.04)), 1e-3)

    rest = PoseParams.rest(model, B)
    kp0, _ = model.local_keypoints(rest, use_smplx=False)
    R0, s0, t0 = umeyama(kp0.double(), Y.double(), mask)
    R0, s0, t0 = R0.to(dt), s0.to(dt), t0.to(dt)

    ang = torch.zeros(B, S, 3, dtype=dt, requires_grad=True)
    drot = torch.zeros(B, 3, dtype=dt, requires_grad=True)
    dlog_s = torch.zeros(B, 1, dtype=dt, requires_grad=True)
    transl = t0.clone().requires_grad_(True)
    logb = torch.zeros(1 if cfg.shared_shape else B, G, dtype=dt, requires_grad=cfg.fit_bones)
    opt_vars = [ang, drot, dlog_s, transl] + ([logb] if cfg.fit_bones else [])
    opt = torch.optim.Adam(opt_vars, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.iters, 1), eta_min=cfg.lr * 0.05)
    unit = cfg.target_unit_mm

    def forward():
        p = PoseParams(rest.global_orient, rest.transl, rest.scale, rest.girth,
                       torch.exp(logb).expand(B, G), (ang.reshape(B, S * 3) @ seg_map).reshape(B, J, 3))
        kp, _ = model.local_keypoints(p, use_smplx=cfg.use_smplx)
        R = batch_rodrigues(drot) @ R0
        s = s0[:, None] * torch.exp(dlog_s)
        pred = s[..., None] * (kp @ R.transpose(1, 2)) + transl[:, None]
        return p, pred, R, s

    history = []
    it = tqdm(range(cfg.iters), desc=f"fit {model.name} x{B}", disable=not progress)
    for _ in it:
        opt.zero_grad()
        _, pred, _, _ = forward()
        d2 = ((pred - Y) ** 2).sum(-1) * unit ** 2                  # mm^2
        data = (d2 * wk).sum(1) / wk.sum(1)
        excess = torch.relu(lim[None, ..., 0] - ang) + torch.relu(ang - lim[None, ..., 1])
        reg = cfg.w_limit * (excess ** 2).sum((1, 2)) + cfg.w_prior * (ang ** 2).sum((1, 2))
        breg = cfg.w_bone * ((logb / bstd) ** 2).sum(1)
        loss = data.mean() + reg.mean() + breg.mean()
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
    with torch.no_grad():
        p, pred, R, s = forward()
        dist = torch.linalg.norm(pred - Y, dim=-1).double().numpy() * unit
        dist[~mask_np] = np.nan
        excess = (torch.relu(lim[None, ..., 0] - ang) + torch.relu(ang - lim[None, ..., 1])).amax((1, 2))
        Rn, sn, tn = R.double().numpy(), s[:, 0].double().numpy(), transl.double().numpy()
        params = PoseParams(torch.as_tensor(Rotation.from_matrix(Rn).as_rotvec(), dtype=dt), transl.detach().clone(),
                            s.detach().clone(), p.girth.clone(), p.bone_scale.detach().clone().contiguous(),
                            p.joint_rot.detach().clone())
    res = np.nanmean(dist, axis=1)
    log.info("fit %s: %d poses, residual median %.2f mm, p90 %.2f mm, final loss %.3f", model.name, B,
             np.median(res), np.percentile(res, 90), history[-1] if history else float("nan"))
    return FitResult(params=params, seg_names=seg_names, seg_angles=ang.detach().double().numpy(),
                     residual_mm=res, keypoint_error_mm=dist, rotation=Rn, scale=sn, translation=tn,
                     limit_excess_deg=np.rad2deg(excess.double().numpy()), loss_history=history,
                     config=asdict(cfg))


def main(argv=None) -> None:
    import time

    from mousefacelift.dannce import default_label_file, load_labelled_keypoints

    from . import load_body_model
    ap = argparse.ArgumentParser(description="Fit a body model to the DANNCE hand-labelled keypoints; print residuals.")
    ap.add_argument("--model", default="mammal", help="mammal ($MOUSEFACELIFT_MAMMAL_DIR), a folder, or procedural")
    ap.add_argument("--labels", default=None, help="label3d_dannce.mat (default $MOUSEFACELIFT_DANNCE_DIR/...)")
    ap.add_argument("--first", type=int, default=0, help="fit only the first N labelled frames (by frame number)")
    ap.add_argument("--iters", type=int, default=FitConfig.iters)
    ap.add_argument("--shared-shape", action="store_true", help="one set of bone scales for all poses")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    labels = a.labels or default_label_file()
    lab = load_labelled_keypoints(labels)
    order = lab.chronological()
    sel = order[:a.first] if a.first else order
    model = load_body_model(a.model)
    t = time.perf_counter()
    r = fit_keypoints(model, lab.points[sel], FitConfig(iters=a.iters, shared_shape=a.shared_shape), progress=True)
    dt = time.perf_counter() - t
    print(f"{model.name}: {len(sel)} poses fitted in {dt:.1f} s; residual mm median {np.median(r.residual_mm):.2f} "
          f"p90 {np.percentile(r.residual_mm, 90):.2f} max {r.residual_mm.max():.2f}; "
          f"scale {np.median(r.scale):.1f} mm/unit (model says {model.mm_per_unit}); "
          f"worst limit excess {r.limit_excess_deg.max():.1f} deg")
    per_kp = np.nanmedian(r.keypoint_error_mm, axis=0)
    print("per keypoint median mm: " + ", ".join(f"{n} {e:.1f}" for n, e in zip(model.keypoint_names, per_kp)))


if __name__ == "__main__":
    main()
