"""Periodic evaluation on held-out samples, input and novel views reported separately.

Metrics (train/metrics.py): masked PSNR and SSIM (over the union of the true and predicted
masks), mask IoU, and
depth error where the sample has depth. Sums and counts are all-reduced, so every rank
returns the same numbers; padding examples (``valid=False``, data.eval_examples) count zero.

Mode-collapse indicator: an LRM that has given up predicts a blurry grey average. Inside the
true mask of the novel views we compare the spread (standard deviation) of the predicted
colours and depths with the spread of the true ones; ``collapse/color_spread_ratio`` near 1 is
healthy, near 0 means the predictions have drifted to a flat average, and a warning is logged
below ``eval.collapse_warn_ratio``.
"""
from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from mousefacelift import splat

from . import metrics as M
from .data import collate

log = logging.getLogger(__name__)


def _spread(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-view std of x [N,C,H,W] over pixels where mask [N,1,H,W] > 0.5, averaged over channels."""
    m = (mask > 0.5).float()
    n = m.sum(dim=(-1, -2)).clamp_min(1.0)
    mean = (x * m).sum(dim=(-1, -2)) / n
    var = (((x - mean[..., None, None]) ** 2) * m).sum(dim=(-1, -2)) / n
    return var.clamp_min(0).sqrt().mean(dim=1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, examples: list[dict], cfg, device: torch.device, autocast: bool = False):
    """Metrics dict (same on every rank) and an HWC image panel of the first example (or None)."""
    model.eval()
    nin = int(cfg.data.view_sampling.num_input_views)
    bs = int(cfg.eval.batch_size)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}

    def add(name: str, values: torch.Tensor, weight: torch.Tensor):
        values = values.float()
        weight = torch.where(torch.isfinite(values), weight, torch.zeros_like(weight))   # empty masks -> NaN
        values = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        sums[name] = sums.get(name, 0.0) + float((values * weight).sum())
        counts[name] = counts.get(name, 0.0) + float(weight.sum())

    panel = None
    for start in range(0, len(examples), bs):
        batch = collate(examples[start:start + bs])
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            g = model(batch["input_rgb"], batch["input_K"], batch["input_c2w"])
        H, W = batch["rgb"].shape[-2:]
        out = splat.render(g.float(), batch["K"], batch["c2w"], H, W, background=batch["background"])
        B, V = batch["rgb"].shape[:2]
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
            add(f"{group}/psnr", M.masked_psnr(pr, gt, ga, pa), w)
            add(f"{group}/ssim", M.masked_ssim(pr, gt, ga, pa), w)
            add(f"{group}/mask_iou", M.mask_iou(pa, ga), w)
            if float(wd.sum()) > 0:
                add(f"{group}/depth_abs_err", M.depth_error(pd, gd, ga), wd)
            if group == "novel":
                add("collapse/color_spread_ratio", _spread(pr, ga) / _spread(gt, ga).clamp_min(1e-4), w)
                if float(wd.sum()) > 0:
                    add("collapse/depth_spread_ratio", _spread(pd, gd > 0) / _spread(gd, gd > 0).clamp_min(1e-4), wd)
        if panel is None:
            from .logging_utils import image_panel
            panel = image_panel(batch, out, nin)
    names = sorted(sums)
    if dist.is_available() and dist.is_initialized():
        # every rank must hold the same names: depth metrics exist on all ranks only if depth does somewhere
        allnames = [None] * dist.get_world_size()
        dist.all_gather_object(allnames, names)
        names = sorted(set().union(*allnames))
        t = torch.tensor([[sums.get(n, 0.0), counts.get(n, 0.0)] for n in names], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        sums = {n: float(t[i, 0]) for i, n in enumerate(names)}
        counts = {n: float(t[i, 1]) for i, n in enumerate(names)}
    result = {n: sums[n] / counts[n] for n in names if counts.get(n, 0) > 0}
    thr = float(cfg.eval.collapse_warn_ratio)
    ratio = result.get("collapse/color_spread_ratio")
    if ratio is not None and ratio < thr:
        log.warning("mode-collapse warning: predicted novel-view colour spread is %.2f of the truth's (< %.2f): "
                    "predictions are drifting towards a flat grey average", ratio, thr)
    dratio = result.get("collapse/depth_spread_ratio")
    if dratio is not None and dratio < thr:
        log.warning("mode-collapse warning: predicted depth spread is %.2f of the truth's (< %.2f)", dratio, thr)
    model.train()
    return result, panel
