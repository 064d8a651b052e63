"""Image metrics for rendered views: masked first.

Why masked: a small mouse on a white background makes whole-image PSNR look ~10 dB better
than the subject deserves, because the (trivially right) background dominates the mean.
The masked figures average only over the foreground: the UNION of the true and the
predicted foreground when ``pred_alpha`` is given (so missing fur and floating blobs both
count; this is the figure to report), else the true foreground only.

Every metric takes images shaped [..., C, H, W] (any leading dims, e.g. [N] or [B,V]) and
returns a PER-IMAGE tensor shaped like the leading dims, so callers can weight and
aggregate (``render_metrics`` gives the plain means). Undefined cases: masked PSNR/SSIM
of an image whose mask is empty is NaN; depth error of an image without a single valid
depth pixel is 0 (weight such images out, e.g. samples without depth).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mousefacelift.cameras import camera_rays

__all__ = ["masked_psnr", "psnr", "ssim", "masked_ssim", "mask_iou", "depth_error", "render_metrics",
           "foreground_mask", "FOREGROUND_THRESHOLD"]

FOREGROUND_THRESHOLD = 0.5   # alpha above this counts as foreground
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2
_PIX = (-3, -2, -1)


def _check(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim < 3:
        raise ValueError(f"metrics: {name} must be [..., C, H, W], got shape {tuple(x.shape)}")
    return x.float()


def foreground_mask(target_alpha, pred_alpha=None, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    m = _check(target_alpha, "target_alpha") > threshold
    if pred_alpha is not None:
        m = m | (_check(pred_alpha, "pred_alpha") > threshold)
    return m.float()


def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def psnr(pred, target) -> torch.Tensor:
    """Whole-image PSNR (dB) per image."""
    return _psnr_from_mse(((_check(pred, "pred") - _check(target, "target")) ** 2).mean(dim=_PIX))


def masked_psnr(pred, target, target_alpha, pred_alpha=None, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """PSNR per image over the foreground mask (union with the prediction's if given)."""
    m = foreground_mask(target_alpha, pred_alpha, threshold)
    err = ((_check(pred, "pred") - _check(target, "target")) ** 2 * m).sum(dim=_PIX)
    n = m.sum(dim=_PIX) * pred.shape[-3]
    return torch.where(n > 0, _psnr_from_mse(err / n.clamp_min(1)), torch.full_like(err, float("nan")))


def _ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    lead, (C, H, W) = x.shape[:-3], x.shape[-3:]
    x, y = x.reshape(-1, C, H, W), y.reshape(-1, C, H, W)
    coords = torch.arange(SSIM_WINDOW, dtype=x.dtype, device=x.device) - SSIM_WINDOW // 2
    g = torch.exp(-coords ** 2 / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(C, 1, SSIM_WINDOW, SSIM_WINDOW)
    pad = SSIM_WINDOW // 2

    def blur(t):
        return F.conv2d(F.pad(t, (pad,) * 4, mode="replicate"), win, groups=C)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    s = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx ** 2 + my ** 2 + SSIM_C1) * (vx + vy + SSIM_C2))
    return s.mean(dim=1, keepdim=True).reshape(*lead, 1, H, W)


def ssim(pred, target) -> torch.Tensor:
    """Whole-image SSIM per image (Gaussian window 11, sigma 1.5, channel mean)."""
    return _ssim_map(_check(pred, "pred"), _check(target, "target")).mean(dim=_PIX)


def masked_ssim(pred, target, target_alpha, pred_alpha=None, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """SSIM map averaged over the foreground mask, per image."""
    m = foreground_mask(target_alpha, pred_alpha, threshold)
    s = _ssim_map(_check(pred, "pred"), _check(target, "target"))
    n = m.sum(dim=_PIX)
    return torch.where(n > 0, (s * m).sum(dim=_PIX) / n.clamp_min(1), torch.full_like(n, float("nan")))


def mask_iou(pred_alpha, target_alpha, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """Intersection over union of the thresholded masks per image (1 when both are empty)."""
    p = _check(pred_alpha, "pred_alpha") > threshold
    t = _check(target_alpha, "target_alpha") > threshold
    inter = (p & t).sum(dim=_PIX).float()
    union = (p | t).sum(dim=_PIX).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def depth_error(pred_depth, target_depth, alpha, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """Mean absolute planar-depth error (world units) per image, over pixels where the target
    has depth (> 0) and ``alpha`` (a foreground mask: true or predicted) exceeds the threshold."""
    valid = ((_check(target_depth, "target_depth") > 0) & (_check(alpha, "alpha") > threshold)).float()
    err = ((_check(pred_depth, "pred_depth") - target_depth.float()).abs() * valid).sum(dim=_PIX)
    n = valid.sum(dim=_PIX)
    return torch.where(n > 0, err / n.clamp_min(1), torch.zeros_like(err))


def _mean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else float("nan")


def render_metrics(render_out, batch: dict) -> dict:
    """Scalar means of every metric for a RenderOutput against a batch whose ``rgb`` is
    composited on the render's background (train.data does this); masked figures first."""
    pr, gt = render_out.rgb, batch["rgb"]
    pa, ga = render_out.alpha, batch["alpha"]
    out = {
        "psnr_masked": _mean(masked_psnr(pr, gt, ga, pa)),
        "ssim_masked": _mean(masked_ssim(pr, gt, ga, pa)),
        "mask_iou": _mean(mask_iou(pa, ga)),
        "psnr": _mean(psnr(pr, gt)),
        "ssim": _mean(ssim(pr, gt)),
    }
    depth = batch.get("depth")
    if depth is not None and bool((depth > 0).any()):
        per = depth_error(render_out.depth, depth, ga)
        has = (depth > 0).flatten(-3).any(-1)
        out["depth_abs_err"] = _mean(per[has])
    return out


# -- geometry: are the Gaussians on the surface? -------------------------------------------------
def surface_points(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """World points [M,3] of every pixel with depth > 0 (planar depth along the pixel-centre
    rays of :func:`mousefacelift.cameras.camera_rays`) of the views depth [V,1,H,W], K [V,3,3],
    c2w [V,4,4]: samples of the true visible surface."""
    V, _, H, W = depth.shape
    o, d = camera_rays(K[None].float(), c2w[None].float(), H, W)                  # [1,V,H,W,3]
    forward = c2w[None, :, None, None, :3, 2].float()
    z = depth[None, :, 0].float()                                                  # [1,V,H,W]
    world = o + d * (z / (d * forward).sum(-1))[..., None]
    return world[z > 0]


def _subsample(x: torch.Tensor, n: int, w: torch.Tensor | None = None):
    if len(x) <= n:
        return x, w
    idx = torch.linspace(0, len(x) - 1, n, device=x.device).long()     # deterministic
    return x[idx], (None if w is None else w[idx])


def surface_agreement(means: torch.Tensor, opacities: torch.Tensor, surface: torch.Tensor, eps: float,
                      min_opacity: float = 0.05, max_points: int = 4096) -> dict[str, torch.Tensor]:
    """How well one sample's Gaussians (means [N,3], opacities [N]) lie on its true surface
    points [M,3] (world units = body lengths).

    - ``chamfer``: mean of accuracy (opacity-weighted distance of the visible Gaussians,
      opacity > ``min_opacity``, to the nearest surface point) and completeness (distance of
      each surface point to the nearest visible Gaussian);
    - ``on_surface``: opacity-weighted share of visible Gaussians within ``eps`` of the surface.

    Why: colour and depth spreads cannot tell geometry from a view-aligned sheet at the right
    silhouette (a noisy sheet has a "healthy" depth spread); a sheet's Gaussians lie off the
    surface in 3D and score badly here. With no visible Gaussian at all (a dead model) the
    256 most opaque stand in, so the figure stays defined and bad.
    """
    op = opacities.reshape(-1).float()
    keep = op > min_opacity
    if int(keep.sum()) == 0:
        keep = torch.zeros_like(keep)
        keep[op.topk(min(256, len(op))).indices] = True
    pts, w = _subsample(means[keep].float(), max_points, op[keep])
    surf, _ = _subsample(surface.float(), max_points)
    if len(surf) == 0:
        nan = means.new_tensor(float("nan"))
        return {"chamfer": nan, "on_surface": nan}
    d = torch.cdist(pts, surf)                                                 # [n,m]
    acc_d = d.min(dim=1).values
    comp = d.min(dim=0).values.mean()
    acc = (acc_d * w).sum() / w.sum().clamp_min(1e-12)
    on = ((acc_d <= eps).float() * w).sum() / w.sum().clamp_min(1e-12)
    return {"chamfer": 0.5 * (acc + comp), "on_surface": on}


def depth_rel_error(pred_depth, target_depth) -> torch.Tensor:
    """Mean |pred - true| / true per image over every pixel where the TRUTH has surface; an
    uncovered pixel (pred 0) counts as error 1, so an empty prediction cannot look accurate."""
    t = _check(target_depth, "target_depth").float()
    valid = (t > 0).float()
    err = ((_check(pred_depth, "pred_depth").float() - t).abs() / t.clamp_min(1e-6) * valid).sum(dim=_PIX)
    n = valid.sum(dim=_PIX)
    return torch.where(n > 0, err / n.clamp_min(1), torch.zeros_like(err))
