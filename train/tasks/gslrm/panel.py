"""The GS-LRM TensorBoard image panel: inputs, predicted vs true views, depth.

Layout (HWC float in [0,1]): row 1 the input views as the model saw them (augmented), row 2
the true supervised views, row 3 the predicted views, rows 4-5 true and predicted depth of the
views, each normalised by the true depth range so they share one colour scale.
"""
from __future__ import annotations

import numpy as np
import torch


def _row(imgs: torch.Tensor) -> torch.Tensor:
    """[V,C,H,W] -> [H, V*W, 3]."""
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    return imgs.permute(2, 0, 3, 1).flatten(1, 2)


def image_panel(batch: dict, out, num_inputs: int) -> np.ndarray:
    """Panel of the first example of ``batch`` and its render ``out`` (see module docstring)."""
    gt = batch["rgb"][0].detach().float().cpu()
    pr = out.rgb[0].detach().float().cpu().clamp(0, 1)
    V, _, H, W = gt.shape
    inp = torch.ones(V, 3, H, W)
    inp[:num_inputs] = batch["input_rgb"][0].detach().float().cpu()
    gd = batch["depth"][0].detach().float().cpu()
    pd = out.depth[0].detach().float().cpu()
    valid = gd > 0
    if bool(valid.any()):
        lo, hi = float(gd[valid].min()), float(gd[valid].max())
    else:
        lo, hi = float(pd.min()), float(pd.max()) + 1e-6
    norm = lambda d: torch.where(d > 0, 1 - ((d - lo) / max(hi - lo, 1e-6)).clamp(0, 1), torch.zeros_like(d))
    rows = [_row(inp), _row(gt), _row(pr), _row(norm(gd)), _row(norm(pd))]
    return torch.cat(rows, 0).clamp(0, 1).numpy()
