"""Metrics of generated views against the rendered truth of the same cameras.

Per view: masked PSNR / SSIM and mask IoU (:mod:`train.metrics`, the figures every stage of
the project reports). Per-view figures cannot see whether the views show ONE mouse: six sharp
views of six different mice score well view by view. The 3D-consistency score catches that:
every foreground pixel of generated view ``s`` is lifted to 3D with the TRUE depth of view
``s``, projected into every other view ``t``, and where the true depth of ``t`` says the point
is visible there (depth test with a tolerance) the generated colours of ``s`` and ``t`` must
agree. It compares generated views with each other, never with the truth's colours, so
view-dependent shading of the truth does not enter; the truth's own views give the ceiling.

Shapes: RGBA [B,V,4,H,W] in [0,1] (straight alpha, RGB on black as in the shards), true depth
[B,V,H,W] (planar camera z, 0 = no surface), K [B,V,3,3], c2w [B,V,4,4] (OpenCV axes,
mousefacelift/cameras.py). Every metric is per view, [B,V]; :func:`summarize` averages.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from train.metrics import _psnr_from_mse, mask_iou, masked_psnr, masked_ssim, surface_points

__all__ = ["view_metrics", "consistency", "generation_metrics", "summarize"]

INTERIOR_ALPHA = 0.99      # consistency uses pixels the truth covers fully: edge pixels are darkened by coverage


def _check_views(x: torch.Tensor, name: str, channels: int | None) -> torch.Tensor:
    want = 5 if channels is not None else 4
    if x.ndim != want or (channels is not None and x.shape[2] != channels):
        shape = "[B,V,4,H,W]" if channels is not None else "[B,V,H,W]"
        raise ValueError(f"mvdiffusion metrics: {name} must be {shape}, got shape {tuple(x.shape)}")
    return x.float()


def _check_cameras(K: torch.Tensor, c2w: torch.Tensor, B: int, V: int) -> None:
    if tuple(K.shape) != (B, V, 3, 3):
        raise ValueError(f"mvdiffusion metrics: K must be [B,V,3,3]=[{B},{V},3,3], got shape {tuple(K.shape)}")
    if tuple(c2w.shape) != (B, V, 4, 4):
        raise ValueError(f"mvdiffusion metrics: c2w must be [B,V,4,4]=[{B},{V},4,4], got shape {tuple(c2w.shape)}")


def view_metrics(pred: torch.Tensor, true: torch.Tensor, foreground: str = "union") -> dict[str, torch.Tensor]:
    """Masked PSNR and SSIM of the RGB and IoU of the alpha masks, each [B,V].

    ``foreground="union"`` masks with the union of true and generated foreground (the
    project's reported figure: a missing leg and a floating blob both count), ``"true"`` with
    the true foreground only."""
    pred, true = _check_views(pred, "pred", 4), _check_views(true, "true", 4)
    if pred.shape != true.shape:
        raise ValueError(f"mvdiffusion metrics: pred {tuple(pred.shape)} and true {tuple(true.shape)} differ in shape")
    if foreground not in ("union", "true"):
        raise ValueError(f"mvdiffusion metrics: foreground={foreground!r}, expected 'union' or 'true'")
    pa = pred[:, :, 3:] if foreground == "union" else None
    return {"psnr_masked": masked_psnr(pred[:, :, :3], true[:, :, :3], true[:, :, 3:], pa),
            "ssim_masked": masked_ssim(pred[:, :, :3], true[:, :, :3], true[:, :, 3:], pa),
            "mask_iou": mask_iou(pred[:, :, 3:], true[:, :, 3:])}


def _project(points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points [N,3] into views K [T,3,3], c2w [T,4,4] -> pixel (u, v) [T,N,2], camera z [T,N]."""
    w2c = torch.linalg.inv(c2w)
    cam = torch.einsum("tij,nj->tni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    xy = cam[..., :2] / z.clamp_min(1e-9)[..., None]
    uv = torch.einsum("tij,tnj->tni", K[:, :2, :2], xy) + K[:, None, :2, 2]
    return uv, z


def consistency(pred: torch.Tensor, true: torch.Tensor, true_depth: torch.Tensor, K: torch.Tensor,
                c2w: torch.Tensor, depth_tol: float = 0.02) -> dict[str, torch.Tensor]:
    """The generated views' agreement with each other through the true geometry, per view.

    For each view ``s``: its pixels where the truth has surface and full coverage
    (alpha >= INTERIOR_ALPHA) become world points (:func:`train.metrics.surface_points`), are
    projected into every other view ``t`` (pixel containing the projection), and count where
    ``t``'s true depth there is within ``depth_tol`` x depth of the point's z (visible, not
    occluded) and ``t`` also covers the pixel fully. Returns ``consistency_psnr`` [B,V] (PSNR
    of the squared RGB difference generated[s] - generated[t] over those pairs; NaN where a view
    has none) and ``consistency_pairs`` [B,V] (how many pixel pairs it rests on)."""
    pred, true = _check_views(pred, "pred", 4), _check_views(true, "true", 4)
    depth = _check_views(true_depth, "true_depth", None)
    B, V, _, H, W = true.shape
    if pred.shape != true.shape or tuple(depth.shape) != (B, V, H, W):
        raise ValueError(f"mvdiffusion metrics: pred {tuple(pred.shape)}, true {tuple(true.shape)} and true_depth "
                         f"{tuple(depth.shape)} must describe the same [B,V,.,H,W] views")
    _check_cameras(K, c2w, B, V)
    if not (isinstance(depth_tol, (int, float)) and math.isfinite(depth_tol) and depth_tol > 0):
        raise ValueError(f"mvdiffusion metrics: depth_tol={depth_tol!r}, expected a relative tolerance > 0")
    K, c2w = K.float(), c2w.float()
    interior = true[:, :, 3] >= INTERIOR_ALPHA                                   # [B,V,H,W]
    valid = (depth > 0) & interior
    sq = torch.zeros(B, V, device=pred.device)
    n = torch.zeros(B, V, device=pred.device)
    for b in range(B):
        for s in range(V):
            d = torch.where(valid[b, s], depth[b, s], torch.zeros_like(depth[b, s]))
            pts = surface_points(d[None, None], K[b, s][None], c2w[b, s][None])   # [N,3], row-major order of d > 0
            if len(pts) == 0:
                continue
            colour_s = pred[b, s, :3].permute(1, 2, 0)[d > 0]                    # [N,3]
            others = [t for t in range(V) if t != s]
            if not others:
                continue
            uv, z = _project(pts, K[b, others], c2w[b, others])                 # [T,N,2], [T,N]
            ix, iy = uv[..., 0].floor().long(), uv[..., 1].floor().long()
            inside = (z > 0) & (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
            ix, iy = ix.clamp(0, W - 1), iy.clamp(0, H - 1)
            t_idx = torch.tensor(others, device=pred.device)[:, None].expand_as(ix)
            zt = depth[b, t_idx, iy, ix]
            # colours and coverage at the exact projection (bilinear; pixel centres at +0.5):
            # a neighbour off the body lowers the sampled coverage, so edges drop out
            grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)[:, :, None]   # [T,N,1,2]
            look = torch.cat([pred[b, others, :3], interior[b, others, None].float()], 1)          # [T,4,H,W]
            sampled = F.grid_sample(look, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            sampled = sampled[..., 0].permute(0, 2, 1)                                              # [T,N,4]
            seen = (inside & valid[b, t_idx, iy, ix] & (sampled[..., 3] >= 1.0 - 1e-6)
                    & ((zt - z).abs() <= depth_tol * z))
            err = ((sampled[..., :3] - colour_s[None]) ** 2).mean(-1)
            sq[b, s] = (err * seen).sum()
            n[b, s] = seen.sum()
    psnr = torch.where(n > 0, _psnr_from_mse(sq / n.clamp_min(1)), torch.full_like(sq, float("nan")))
    return {"consistency_psnr": psnr, "consistency_pairs": n}


def generation_metrics(pred: torch.Tensor, true: torch.Tensor, true_depth: torch.Tensor, K: torch.Tensor,
                       c2w: torch.Tensor, depth_tol: float = 0.02, foreground: str = "union") -> dict[str, torch.Tensor]:
    """Every per-view figure of generated views ([B,V] each): :func:`view_metrics` and
    :func:`consistency`, plus ``consistency_psnr_true`` of the truth's own views (the ceiling
    the generated views' consistency is read against)."""
    out = view_metrics(pred, true, foreground)
    out.update(consistency(pred, true, true_depth, K, c2w, depth_tol))
    out["consistency_psnr_true"] = consistency(true, true, true_depth, K, c2w, depth_tol)["consistency_psnr"]
    return out


def summarize(metrics: dict[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    """Plain means over the finite entries: ``{prefix}{name}`` over all views and
    ``{prefix}{name}/view{k}`` per view position (views are in the layout's fixed order)."""
    out: dict[str, float] = {}
    for name, x in metrics.items():
        x = x.detach().float().cpu()
        if x.ndim != 2:
            raise ValueError(f"mvdiffusion metrics: {name} must be [B,V], got shape {tuple(x.shape)}")
        for key, vals in [(f"{prefix}{name}", x.reshape(-1))] + [(f"{prefix}{name}/view{k}", x[:, k])
                                                                 for k in range(x.shape[1])]:
            vals = vals[torch.isfinite(vals)]
            out[key] = float(vals.mean()) if vals.numel() else float("nan")
    return out
