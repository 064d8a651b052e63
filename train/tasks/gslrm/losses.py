"""Training losses for GS-LRM renders (docs/architecture.md §4).

``compute_losses(render_out, batch, cfg, step, gaussians=None) -> (total, parts)``

Terms (a weight of 0 turns a term off; all weights and knobs live in :class:`LossConfig`,
whose fields are the ``loss:`` keys of configs/train.yaml, where their values are set, and
configs/phase/*.yaml):
- ``rgb``: MSE between the render (composited on the batch's background) and the batch's
  ``rgb`` (train.data composites the ground truth on the same ``background``; if the batch
  instead carries straight colours, :func:`composite_target` does the compositing);
- ``alpha``: rendered coverage vs the mask (L1, or BCE);
- ``depth``: :func:`rendered_depth_loss`, wherever the TRUTH has surface (depth > 0, samples
  with ``has_depth``) and the render has any coverage (alpha > ``depth_min_alpha``, 0.01): the
  alpha-normalised expected depth against the true planar depth, as a relative Charbonnier
  error, so a faint cloud is still pulled to the surface and near and far cameras weigh alike;
- ``real_depth``: the same depth term on ``source=real`` samples (:func:`approximate_depth`:
  their depth is only ever a body model fitted to 3D keypoints), weighted by
  ``real_depth_weight`` (0 = off) and never by ``depth_weight``;
- ``pointmap``: :func:`pointmap_depth_loss`, each pixel-aligned Gaussian's depth in its input
  camera vs the input pixel's true depth (relative error; batch ``input_depth``; 0 = unknown,
  e.g. augmented views); needs ``gaussians``;
- ``pixel_alpha``: :func:`pixel_alpha_loss`, each pixel-aligned Gaussian's opacity vs its input
  pixel's alpha (BCE); it acts on the opacities themselves, so it reaches Gaussians the
  rasteriser culls (opacity < 1/255) and a run cannot fall silent by making every Gaussian
  transparent; needs ``gaussians``;
- ``perceptual``: VGG16 feature L1 from LOCALLY supplied torchvision-layout weights
  (``perceptual_weights``: a path; never downloaded), off before ``perceptual_warmup_steps``
  then ramped in linearly over ``perceptual_ramp_steps``; a missing file is an error;
- ``opacity_reg`` (mean opacity: sparsity) and ``scale_reg`` (mean excess of the largest
  scale over ``scale_reg_max``): need ``gaussians``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from mousefacelift.config import load_typed

from ...metrics import masked_psnr

__all__ = ["LossConfig", "compute_losses", "composite_target", "rendered_depth_loss", "pointmap_depth_loss",
           "pixel_alpha_loss", "VGGPerceptual", "load_perceptual", "approximate_depth"]

log = logging.getLogger(__name__)


@dataclass
class LossConfig:
    """The ``loss:`` block. configs/train.yaml states and documents every field, so the
    dataclass has no defaults; :meth:`from_yaml` is that block with fields overridden."""

    rgb_weight: float
    alpha_weight: float
    alpha_loss: str                  # "l1" or "bce"
    depth_weight: float
    real_depth_weight: float         # source=real depth (body fitted to keypoints): approximate, off by default
    depth_loss: str                  # "charbonnier" or "l1", on the relative depth error
    depth_eps: float                 # relative error where the Charbonnier turns from quadratic to linear
    depth_min_alpha: float           # rendered depth is scored where the render's alpha exceeds this
    pointmap_weight: float           # each input pixel's Gaussian vs that pixel's depth (needs input_depth)
    pixel_alpha_weight: float        # each input pixel's Gaussian opacity vs that pixel's alpha
    input_mask_threshold: float      # input pixels with alpha above this are foreground (point map)
    perceptual_weight: float
    perceptual_weights: str | None   # path to a torchvision-layout VGG16 state dict (.pth)
    perceptual_warmup_steps: int     # perceptual term is 0 before this step ...
    perceptual_ramp_steps: int       # ... then ramps linearly to full weight over this many steps
    opacity_reg_weight: float
    scale_reg_weight: float
    scale_reg_max: float             # world units; larger Gaussians are penalised

    @classmethod
    def from_yaml(cls, **overrides: Any) -> LossConfig:
        """configs/train.yaml's ``loss:`` block with ``overrides`` (field=value) applied."""
        return load_typed(cls, "", "train", overrides, key="loss")

    def __post_init__(self):
        if self.alpha_loss not in ("l1", "bce"):
            raise ValueError(f"LossConfig.alpha_loss must be 'l1' or 'bce', got {self.alpha_loss!r}")
        if self.depth_loss not in ("charbonnier", "l1"):
            raise ValueError(f"LossConfig.depth_loss must be 'charbonnier' or 'l1', got {self.depth_loss!r}")
        if not self.depth_eps > 0 or not 0 <= self.depth_min_alpha < 1:
            raise ValueError(f"LossConfig: need depth_eps > 0 and 0 <= depth_min_alpha < 1, got {self.depth_eps} "
                             f"and {self.depth_min_alpha}")
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            raise ValueError("LossConfig: perceptual_weight > 0 needs perceptual_weights, the path of a local "
                             "torchvision-layout VGG16 state dict (weights are never downloaded); "
                             "set perceptual_weight: 0 to train without it")


def composite_target(batch: Mapping[str, torch.Tensor], background=None) -> torch.Tensor:
    """Straight-alpha ``rgb`` composited over ``background`` ([3] or [B,3]) -> [B,V,3,H,W]."""
    rgb, alpha = batch["rgb"], batch["alpha"]
    if background is None:
        return rgb
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
    bg = bg.expand(rgb.shape[0], 3) if bg.ndim == 1 else bg
    return rgb * alpha + (1 - alpha) * bg[:, None, :, None, None]


# -- perceptual -------------------------------------------------------------------------------
_VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]   # up to relu4_3
_VGG_TAPS = (3, 8, 15, 22)   # indices (torchvision ``features``) of relu1_2, relu2_2, relu3_3, relu4_3
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGPerceptual(nn.Module):
    """Frozen VGG16 feature L1 (relu1_2..relu4_3), parameter names as torchvision's ``features``."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in _VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN)[None, :, None, None])
        self.register_buffer("std", torch.tensor(_IMAGENET_STD)[None, :, None, None])
        self.requires_grad_(False)
        self.eval()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = torch.cat([pred, target]).float()
        x = (x - self.mean) / self.std
        loss = x.new_zeros(())
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG_TAPS:
                a, b = x.chunk(2)
                loss = loss + (a - b).abs().mean()
            if i >= _VGG_TAPS[-1]:
                break
        return loss


_PERCEPTUAL_CACHE: dict[tuple[str, str], VGGPerceptual] = {}


def load_perceptual(path: str, device) -> VGGPerceptual:
    key = (os.path.abspath(path), str(device))
    if key not in _PERCEPTUAL_CACHE:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"perceptual loss weights {path!r} not found: supply a local torchvision-layout "
                                    "VGG16 state dict (keys features.N.weight/bias) or set perceptual_weight: 0")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        net = VGGPerceptual()
        wanted = {k for k in net.state_dict() if k.startswith("features.")}
        got = {k: v for k, v in sd.items() if k in wanted}
        missing = sorted(wanted - set(got))
        if missing:
            raise ValueError(f"perceptual loss weights {path!r}: not a VGG16 state dict, missing {missing[:6]}"
                             f"{' ...' if len(missing) > 6 else ''}")
        net.load_state_dict(got, strict=False)
        log.info("perceptual loss: VGG16 features from %s", path)
        _PERCEPTUAL_CACHE[key] = net.to(device)
    return _PERCEPTUAL_CACHE[key]


def perceptual_scale(cfg: LossConfig, step: int) -> float:
    if cfg.perceptual_weight <= 0 or step < cfg.perceptual_warmup_steps:
        return 0.0
    if cfg.perceptual_ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - cfg.perceptual_warmup_steps + 1) / cfg.perceptual_ramp_steps)


# -- the loss -----------------------------------------------------------------------------------
def _robust(rel: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    if kind == "charbonnier":
        return ((rel * rel + eps * eps).sqrt() - eps).mean()
    return rel.abs().mean()


def rendered_depth_loss(render_out, depth: torch.Tensor, has_depth: torch.Tensor | None, kind: str = "charbonnier",
                        eps: float = 0.01, min_alpha: float = 0.01) -> torch.Tensor:
    """Relative robust error of the alpha-normalised rendered depth wherever the truth has
    surface and the render has any coverage at all (alpha > ``min_alpha``).

    Why this form: masking to OPAQUE pixels (alpha > 0.5) made the term vanish exactly when a
    run went transparent; here a faint cloud (alpha 0.02) is still pulled to the surface
    (the normalised depth's gradient to each Gaussian's depth is its weight / alpha, not its
    weight). It is not composited with a far background: that would push coverage up wherever
    the truth has surface, which the alpha terms already do, and measured it doubled the
    predicted coverage (docs/benchmarks.md, the depth question). Dividing by the true depth
    keeps cameras at 2 and at 6 body lengths on one scale.
    """
    valid = (depth > 0) & (render_out.alpha.detach() > min_alpha)
    if has_depth is not None:
        valid = valid & has_depth.to(torch.bool).reshape(-1, *([1] * (depth.ndim - 1)))
    if not bool(valid.any()):
        return render_out.depth.sum() * 0.0        # keeps the graph (DDP) with no contribution
    true = depth.to(render_out.depth.dtype)
    rel = (render_out.depth - true)[valid] / true[valid]
    return _robust(rel, kind, eps)


def _pixel_gaussians(values: torch.Tensor, B: int, V: int, H: int, W: int) -> torch.Tensor:
    """The pixel-aligned Gaussians' ``values`` [B,N,C] -> [B,V,H*W,C] (GS-LRM's raster order,
    global Gaussians first)."""
    return values[:, -V * H * W:].reshape(B, V, H * W, values.shape[-1])


def pointmap_depth_loss(gaussians, input_c2w: torch.Tensor, input_depth: torch.Tensor,
                        input_alpha: torch.Tensor, min_alpha: float = 0.5, kind: str = "l1",
                        eps: float = 0.01) -> torch.Tensor:
    """Relative error between each pixel-aligned Gaussian's planar depth in its own input camera
    and that pixel's true depth, over foreground pixels with depth.

    Why: the rendered-depth term only sees where Gaussians END UP after compositing; this one
    tells every Gaussian directly where its pixel's surface is, the dense signal that stops a
    reconstructor from explaining views with view-aligned sheets instead of geometry.
    """
    B, V, _, H, W = input_depth.shape
    means = _pixel_gaussians(gaussians.means, B, V, H, W)
    w2c = torch.linalg.inv(input_c2w.to(means.dtype))                          # [B,V,4,4]
    z = (means @ w2c[..., 2:3, :3].transpose(-1, -2)).squeeze(-1) + w2c[..., 2:3, 3]   # [B,V,HW]
    true = input_depth.reshape(B, V, H * W).to(z.dtype)
    valid = (true > 0) & (input_alpha.reshape(B, V, H * W) > min_alpha)
    if not bool(valid.any()):
        return z.sum() * 0.0
    return _robust((z[valid] - true[valid]) / true[valid], kind, eps)


def pixel_alpha_loss(gaussians, input_alpha: torch.Tensor) -> torch.Tensor:
    """BCE between each pixel-aligned Gaussian's opacity and its input pixel's alpha (see the
    module docstring: the supervision that reaches culled Gaussians)."""
    B, V, _, H, W = input_alpha.shape
    op = _pixel_gaussians(gaussians.opacities, B, V, H, W)[..., 0].clamp(1e-5, 1 - 1e-5)
    return F.binary_cross_entropy(op, input_alpha.reshape(B, V, H * W).to(op.dtype).clamp(0, 1))


def approximate_depth(batch: Mapping[str, Any], device=None) -> torch.Tensor:
    """[B] bool: samples whose depth is an approximation (source=real: real captures carry no
    measured depth; the only depth they can have is a fitted body's, meta depth_source=body_fit),
    scored by ``real_depth_weight`` instead of ``depth_weight`` and kept out of the point map."""
    B = batch["rgb"].shape[0]
    src = batch.get("source")
    if src is None:
        return torch.zeros(B, dtype=torch.bool, device=device)
    return torch.tensor([str(s) == "real" for s in src], dtype=torch.bool, device=device)


def compute_losses(render_out, batch: Mapping[str, Any], cfg: LossConfig, step: int, gaussians=None):
    """Weighted total and a dict of the (unweighted, detached) terms; see the module docstring."""
    target = batch["rgb"].to(render_out.rgb.dtype)
    mask = batch["alpha"].to(render_out.alpha.dtype)
    parts: dict[str, torch.Tensor] = {}
    total = render_out.rgb.new_zeros(())

    rgb = F.mse_loss(render_out.rgb, target)
    parts["rgb"] = rgb
    total = total + cfg.rgb_weight * rgb
    if cfg.alpha_weight > 0:
        if cfg.alpha_loss == "bce":
            a = F.binary_cross_entropy(render_out.alpha.clamp(1e-5, 1 - 1e-5), mask.clamp(0, 1))
        else:
            a = (render_out.alpha - mask).abs().mean()
        parts["alpha"] = a
        total = total + cfg.alpha_weight * a
    approx = approximate_depth(batch, render_out.depth.device)
    has_depth = batch.get("has_depth")
    has_depth = torch.ones_like(approx) if has_depth is None else has_depth.to(approx.device, torch.bool).reshape(-1)
    if cfg.depth_weight > 0 and batch.get("depth") is not None:
        d = rendered_depth_loss(render_out, batch["depth"], has_depth & ~approx, cfg.depth_loss, cfg.depth_eps,
                                cfg.depth_min_alpha)
        parts["depth"] = d
        total = total + cfg.depth_weight * d
    if cfg.real_depth_weight > 0 and batch.get("depth") is not None:
        rd = rendered_depth_loss(render_out, batch["depth"], has_depth & approx, cfg.depth_loss, cfg.depth_eps,
                                 cfg.depth_min_alpha)
        parts["real_depth"] = rd
        total = total + cfg.real_depth_weight * rd
    if cfg.pointmap_weight > 0 and gaussians is not None and "input_depth" in batch:
        exact = (~approx).to(batch["input_depth"].dtype).reshape(-1, *([1] * (batch["input_depth"].ndim - 1)))
        pm = pointmap_depth_loss(gaussians, batch["input_c2w"], batch["input_depth"] * exact, batch["input_alpha"],
                                 cfg.input_mask_threshold, cfg.depth_loss, cfg.depth_eps)
        parts["pointmap"] = pm
        total = total + cfg.pointmap_weight * pm
    if cfg.pixel_alpha_weight > 0 and gaussians is not None and "input_alpha" in batch:
        pa = pixel_alpha_loss(gaussians, batch["input_alpha"])
        parts["pixel_alpha"] = pa
        total = total + cfg.pixel_alpha_weight * pa
    ps = perceptual_scale(cfg, step)
    if ps > 0:
        net = load_perceptual(cfg.perceptual_weights, render_out.rgb.device)
        p = net(render_out.rgb.flatten(0, 1), target.flatten(0, 1))
        parts["perceptual"] = p
        total = total + ps * cfg.perceptual_weight * p
    if gaussians is not None and cfg.opacity_reg_weight > 0:
        o = gaussians.opacities.mean()
        parts["opacity_reg"] = o
        total = total + cfg.opacity_reg_weight * o
    if gaussians is not None and cfg.scale_reg_weight > 0:
        s = (gaussians.scales.amax(dim=-1) - cfg.scale_reg_max).clamp_min(0).mean()
        parts["scale_reg"] = s
        total = total + cfg.scale_reg_weight * s
    with torch.no_grad():
        parts["psnr_masked"] = torch.nanmean(masked_psnr(render_out.rgb.detach(), target, mask,
                                                         render_out.alpha.detach()))
    parts = {k: v.detach() for k, v in parts.items()}
    parts["total"] = total.detach()
    return total, parts
