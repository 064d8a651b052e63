"""GS-LRM evaluation on held-out samples, input and novel views reported separately.

Metrics (train/metrics.py): masked PSNR and SSIM (over the union of the true and predicted
masks), mask IoU, and depth error where the sample has depth; weighted and all-reduced by
train/evaluate.py, so every rank returns the same numbers.

Mode-collapse indicator: an LRM that has given up predicts a blurry grey average. Inside the
true mask of the novel views we compare the spread (standard deviation) of the predicted
colours and depths with the spread of the true ones; ``collapse/color_spread_ratio`` near 1 is
healthy, near 0 means the predictions have drifted to a flat average, and a warning is logged
below ``eval.collapse_warn_ratio``.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ... import metrics as M
from ...evaluate import WeightedMeans, eval_batches
from ...settings import EvalConfig

log = logging.getLogger(__name__)


def _spread(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-view std of x [N,C,H,W] over pixels where mask [N,1,H,W] > 0.5, averaged over channels."""
    m = (mask > 0.5).float()
    n = m.sum(dim=(-1, -2)).clamp_min(1.0)
    mean = (x * m).sum(dim=(-1, -2)) / n
    var = (((x - mean[..., None, None]) ** 2) * m).sum(dim=(-1, -2)) / n
    return var.clamp_min(0).sqrt().mean(dim=1)


def evaluate(task, model: torch.nn.Module, examples: list[dict], device: torch.device, autocast: bool,
             config: EvalConfig) -> tuple[dict[str, float], np.ndarray | None]:
    """Metrics (same on every rank) and the image panel of the first example (or None)."""
    nin = task.num_inputs
    means = WeightedMeans()
    panel = None
    for batch in eval_batches(task, examples, config.batch_size, device):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            pred = task.forward(model, batch)
        out = pred.render
        V = batch["rgb"].shape[1]
        valid = batch["valid"].float()
        has_depth = batch["has_depth"].float() * valid
        for group, sl in (("input", slice(0, nin)), ("novel", slice(nin, V))):
            if sl.start >= sl.stop:
                continue
            pr, gt = out.rgb[:, sl].flatten(0, 1), batch["rgb"][:, sl].flatten(0, 1)
            pa, ga = out.alpha[:, sl].flatten(0, 1), batch["alpha"][:, sl].flatten(0, 1)
            pd, gd = out.depth[:, sl].flatten(0, 1), batch["depth"][:, sl].flatten(0, 1)
            nv = sl.stop - sl.start
            w = valid.repeat_interleave(nv)
            wd = has_depth.repeat_interleave(nv)
            means.add(f"{group}/psnr", M.masked_psnr(pr, gt, ga, pa), w)
            means.add(f"{group}/ssim", M.masked_ssim(pr, gt, ga, pa), w)
            means.add(f"{group}/mask_iou", M.mask_iou(pa, ga), w)
            if float(wd.sum()) > 0:
                means.add(f"{group}/depth_abs_err", M.depth_error(pd, gd, ga), wd)
            if group == "novel":
                means.add("collapse/color_spread_ratio", _spread(pr, ga) / _spread(gt, ga).clamp_min(1e-4), w)
                if float(wd.sum()) > 0:
                    means.add("collapse/depth_spread_ratio",
                              _spread(pd, gd > 0) / _spread(gd, gd > 0).clamp_min(1e-4), wd)
        if panel is None:
            panel = task.image_panel(batch, pred)
    result = means.result(device)
    thr = config.collapse_warn_ratio
    ratio = result.get("collapse/color_spread_ratio")
    if ratio is not None and ratio < thr:
        log.warning("mode-collapse warning: predicted novel-view colour spread is %.2f of the truth's (< %.2f): "
                    "predictions are drifting towards a flat grey average", ratio, thr)
    dratio = result.get("collapse/depth_spread_ratio")
    if dratio is not None and dratio < thr:
        log.warning("mode-collapse warning: predicted depth spread is %.2f of the truth's (< %.2f)", dratio, thr)
    return result, panel
