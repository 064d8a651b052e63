"""GS-LRM evaluation on held-out samples, input and novel views reported separately.

Metrics (train/metrics.py): masked PSNR and SSIM (over the union of the true and predicted
masks), mask IoU, depth error where the sample has depth (absolute where the truth is covered,
relative over all of the true surface), and geometry: Chamfer distance of the visible
Gaussians to the true surface (unprojected from every chosen view's depth) and the share of
them within ``eval.surface_eps`` of it. Weighted and all-reduced by train/evaluate.py, so
every rank returns the same numbers.

Baseline and health. Beside every evaluation the MEAN IMAGE of the held-out novel views (one
colour image and one alpha, the same for every view) is scored the same way
(``baseline/novel_*``): it is what a model that ignores its inputs can reach at best (it is
computed on the held-out set itself, so it is a strict bar). ``health/dead`` is 1 when the
predicted novel views are empty (mean alpha < 0.01 or mask IoU < 0.05): an empty prediction
scores a fixed low PSNR and no gradient reaches culled Gaussians, so a dead run looks like
a slow one unless it is named. ``health/above_baseline_db`` is the novel masked PSNR minus
the baseline's; a loud warning is logged when the model is dead, at the baseline, or its
colours have collapsed to a flat average (``collapse/color_spread_ratio`` below
``eval.collapse_warn_ratio``), or its Gaussians are off the surface (on-surface share below
``eval.surface_warn_share``).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ... import metrics as M
from ...evaluate import WeightedMeans, eval_batches, mean_novel_image
from ...settings import EvalConfig
from .losses import approximate_depth

log = logging.getLogger(__name__)

DEAD_ALPHA = 0.01
DEAD_IOU = 0.05


def _spread(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-view std of x [N,C,H,W] over pixels where mask [N,1,H,W] > 0.5, averaged over channels."""
    m = (mask > 0.5).float()
    n = m.sum(dim=(-1, -2)).clamp_min(1.0)
    mean = (x * m).sum(dim=(-1, -2)) / n
    var = (((x - mean[..., None, None]) ** 2) * m).sum(dim=(-1, -2)) / n
    return var.clamp_min(0).sqrt().mean(dim=1)


def _image_metrics(means: WeightedMeans, prefix: str, pr, gt, pa, ga, w) -> None:
    means.add(f"{prefix}psnr", M.masked_psnr(pr, gt, ga, pa), w)
    means.add(f"{prefix}ssim", M.masked_ssim(pr, gt, ga, pa), w)
    means.add(f"{prefix}mask_iou", M.mask_iou(pa, ga), w)


def evaluate(task, model: torch.nn.Module, examples: list[dict], device: torch.device, autocast: bool,
             config: EvalConfig) -> tuple[dict[str, float], np.ndarray | None]:
    """Metrics (same on every rank) and the image panel of the first example (or None)."""
    nin = task.num_inputs
    means = WeightedMeans()
    panel = None
    baseline = mean_novel_image(task, examples, config.batch_size, device)
    for batch in eval_batches(task, examples, config.batch_size, device):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            pred = task.forward(model, batch)
        out = pred.render
        B, V = batch["rgb"].shape[:2]
        valid = batch["valid"].float()
        # body-fit depth of real samples is an approximation: never scored as if it were the truth
        has_depth = (batch["has_depth"] & ~approximate_depth(batch, batch["has_depth"].device)).float() * valid
        for group, sl in (("input", slice(0, nin)), ("novel", slice(nin, V))):
            if sl.start >= sl.stop:
                continue
            pr, gt = out.rgb[:, sl].flatten(0, 1), batch["rgb"][:, sl].flatten(0, 1)
            pa, ga = out.alpha[:, sl].flatten(0, 1), batch["alpha"][:, sl].flatten(0, 1)
            pd, gd = out.depth[:, sl].flatten(0, 1), batch["depth"][:, sl].flatten(0, 1)
            nv = sl.stop - sl.start
            w = valid.repeat_interleave(nv)
            wd = has_depth.repeat_interleave(nv)
            _image_metrics(means, f"{group}/", pr, gt, pa, ga, w)
            means.add(f"{group}/mean_alpha", pa.float().mean(dim=(1, 2, 3)), w)
            if float(wd.sum()) > 0:
                means.add(f"{group}/depth_abs_err", M.depth_error(pd, gd, ga), wd)
                means.add(f"{group}/depth_rel_err", M.depth_rel_error(pd, gd), wd)
            if group == "novel":
                means.add("collapse/color_spread_ratio", _spread(pr, ga) / _spread(gt, ga).clamp_min(1e-4), w)
                if baseline is not None:
                    brgb = baseline[0][None].expand_as(gt)
                    balpha = baseline[1][None].expand_as(ga)
                    _image_metrics(means, "baseline/novel_", brgb, gt, balpha, ga, w)
        g = pred.gaussians
        for b in range(B):
            if float(has_depth[b]) > 0:
                surf = M.surface_points(batch["depth"][b], batch["K"][b], batch["c2w"][b])
                geo = M.surface_agreement(g.means[b], g.opacities[b], surf, config.surface_eps)
                for k, v in geo.items():
                    means.add(f"geometry/{k}", v.reshape(1), has_depth[b:b + 1])
        if panel is None:
            panel = task.image_panel(batch, pred)
    result = means.result(device)
    _health(result, config)
    return result, panel


def _health(result: dict[str, float], config: EvalConfig) -> None:
    """Adds ``health/*`` and logs the warnings of the module docstring."""
    alpha, iou = result.get("novel/mean_alpha"), result.get("novel/mask_iou")
    if alpha is None or iou is None:
        return
    dead = alpha < DEAD_ALPHA or iou < DEAD_IOU
    result["health/dead"] = float(dead)
    if dead:
        log.error("DEAD MODEL: predicted novel views are empty (mean alpha %.4f, mask IoU %.3f); every Gaussian "
                  "is transparent or off-view and the renderer passes no gradient to culled ones", alpha, iou)
    base = result.get("baseline/novel_psnr")
    if base is not None and "novel/psnr" in result:
        gain = result["novel/psnr"] - base
        result["health/above_baseline_db"] = gain
        if not dead and gain < config.baseline_margin_db:
            log.warning("AT BASELINE: novel masked PSNR %.2f dB is only %+.2f dB from the held-out mean image's "
                        "%.2f dB (IoU %.3f vs %.3f): the model is not using its inputs", result["novel/psnr"], gain,
                        base, iou, result.get("baseline/novel_mask_iou", float("nan")))
    ratio = result.get("collapse/color_spread_ratio")
    if ratio is not None and ratio < config.collapse_warn_ratio:
        log.warning("mode-collapse warning: predicted novel-view colour spread is %.2f of the truth's (< %.2f): "
                    "predictions are drifting towards a flat grey average", ratio, config.collapse_warn_ratio)
    share = result.get("geometry/on_surface")
    if share is not None and share < config.surface_warn_share:
        log.warning("geometry warning: only %.0f%% of the visible Gaussians lie within %.3g of the true surface "
                    "(Chamfer %.3f): view-aligned sheets, not geometry", 100 * share, config.surface_eps,
                    result.get("geometry/chamfer", float("nan")))
