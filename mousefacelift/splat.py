"""Render batched Gaussians into batched cameras: gsplat on CUDA, pure torch elsewhere.

``render(gaussians, K, c2w, height, width, background)`` is the one entry point; training,
evaluation and turntables reach it through :func:`mousefacelift.inference.render_views`.
Both backends implement the same image formation (3DGS "classic" EWA splatting with the
0.3 px² low-pass, alpha clamp 0.99, front-to-back compositing sorted by camera z) and the
same outputs:

- ``rgb``   [B,V,3,H,W]  colour composited over ``background``: ``Σ wᵢcᵢ + (1-α)·bg``
- ``alpha`` [B,V,1,H,W]  accumulated opacity ``α = Σ wᵢ``
- ``depth`` [B,V,1,H,W]  expected planar camera z, NORMALISED by alpha:
  ``Σ wᵢzᵢ / α`` where ``α > DEPTH_ALPHA_EPS``, else 0 (gsplat's "ED" mode), so it is
  directly comparable with a shard's depth map (0 = no surface).

Cameras follow docs/architecture.md §3 (OpenCV, c2w given here, pixel (i,j) centred at
(j+0.5, i+0.5)). The gsplat path loops over samples only (each call renders all V views
of one sample), never over views.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .gaussians import Gaussians
from .splat_torch import RasterSettings, eval_sh, project_gaussians, rasterize_projected

__all__ = ["RenderOutput", "render", "gsplat_available", "DEPTH_ALPHA_EPS"]

log = logging.getLogger(__name__)
DEPTH_ALPHA_EPS = 1e-4   # below this coverage, depth is reported as 0 (no surface)

try:  # gsplat is CUDA-only and optional (pip install "mouse-facelift[cuda]")
    import gsplat as _gsplat
except Exception:  # ImportError, or a broken CUDA extension build
    _gsplat = None


@dataclass
class RenderOutput:
    rgb: torch.Tensor     # [B,V,3,H,W]
    alpha: torch.Tensor   # [B,V,1,H,W]
    depth: torch.Tensor   # [B,V,1,H,W] alpha-normalised expected planar z (0 where alpha ~ 0)


def gsplat_available() -> bool:
    return _gsplat is not None and torch.cuda.is_available()


def _check_inputs(g: Gaussians, K: torch.Tensor, c2w: torch.Tensor, height: int, width: int):
    B = g.batch_size
    if K.ndim != 4 or K.shape[0] != B or K.shape[-2:] != (3, 3):
        raise ValueError(f"render: K must be [B={B},V,3,3], got {tuple(K.shape)}")
    if c2w.shape != K.shape[:2] + (4, 4):
        raise ValueError(f"render: c2w must be [B,V,4,4] = {list(K.shape[:2]) + [4, 4]}, got {tuple(c2w.shape)}")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"render: image size must be positive, got {width}x{height}")


def _background(background, B: int, V: int, device, dtype) -> torch.Tensor:
    bg = torch.as_tensor(background, device=device, dtype=dtype)
    if bg.shape == (3,):
        bg = bg.expand(B, 3)
    if bg.shape != (B, 3):
        raise ValueError(f"render: background must be [3] or [B={B},3], got {tuple(bg.shape)}")
    return bg[:, None, :, None, None]                                   # [B,1,3,1,1]


def _colors(g: Gaussians, c2w: torch.Tensor) -> torch.Tensor:
    """Per-view colours [B,V,N,3]: SH evaluated towards each camera (degree 0: constant)."""
    B, V = c2w.shape[:2]
    if g.sh.shape[2] == 1:
        rgb = eval_sh(g.sh, g.means)                                   # direction unused at degree 0
        return (rgb + 0.5).clamp_min(0.0)[:, None].expand(B, V, -1, 3)
    dirs = g.means[:, None] - c2w[:, :, None, :3, 3]                     # [B,V,N,3]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (eval_sh(g.sh[:, None], dirs) + 0.5).clamp_min(0.0)


def _render_torch(g: Gaussians, K, c2w, height, width, near, settings: RasterSettings):
    B, V = K.shape[:2]
    w2c = torch.linalg.inv(c2w)
    mean2d, conic, z, radius = project_gaussians(g.means, g.scales, g.rotations, K, w2c, width, height,
                                                 near, settings.eps2d, opacities=g.opacities[..., 0])
    N = g.num_gaussians
    colors = _colors(g, c2w)
    opac = g.opacities[:, None, :, 0].expand(B, V, N)
    rgb, alpha, wz = rasterize_projected(
        mean2d.reshape(B * V, N, 2), conic.reshape(B * V, N, 3), z.reshape(B * V, N),
        radius.reshape(B * V, N), opac.reshape(B * V, N), colors.reshape(B * V, N, 3),
        width, height, settings)
    rgb = rgb.reshape(B, V, height, width, 3).permute(0, 1, 4, 2, 3)
    alpha = alpha.reshape(B, V, 1, height, width)
    wz = wz.reshape(B, V, 1, height, width)
    return rgb, alpha, wz


def _render_gsplat(g: Gaussians, K, c2w, height, width, near, settings: RasterSettings):
    """gsplat ``rasterization`` per sample, all views at once; RGB+ED gives alpha-normalised
    expected depth as a 4th channel. Backgrounds are composited by the caller."""
    B, V = K.shape[:2]
    viewmats = torch.linalg.inv(c2w.float())
    rgbs, alphas, depths = [], [], []
    degree = g.sh_degree
    for b in range(B):
        colors, alpha, _meta = _gsplat.rasterization(
            means=g.means[b].float(), quats=g.rotations[b].float(), scales=g.scales[b].float(),
            opacities=g.opacities[b, :, 0].float(), colors=g.sh[b].float(),
            viewmats=viewmats[b], Ks=K[b].float(), width=width, height=height,
            near_plane=near, eps2d=settings.eps2d, sh_degree=degree, packed=False,
            render_mode="RGB+ED", rasterize_mode="classic")
        # colors [V,H,W,4] (premultiplied RGB, depth normalised by alpha), alpha [V,H,W,1]
        rgbs.append(colors[..., :3])
        depths.append(colors[..., 3:4])
        alphas.append(alpha)
    rgb = torch.stack(rgbs).permute(0, 1, 4, 2, 3)
    alpha = torch.stack(alphas).permute(0, 1, 4, 2, 3)
    depth = torch.stack(depths).permute(0, 1, 4, 2, 3)
    return rgb, alpha, depth * alpha   # un-normalise so both backends return Σ w z here


def render(gaussians: Gaussians, K: torch.Tensor, c2w: torch.Tensor, height: int, width: int,
           background=(1.0, 1.0, 1.0), near: float = 0.01, backend: str = "auto",
           settings: RasterSettings | None = None) -> RenderOutput:
    """Render every sample of ``gaussians`` into its V cameras (see module docstring).

    backend: ``"auto"`` (gsplat when it is installed and the tensors are on CUDA, else
    torch), ``"torch"`` (the reference, any device) or ``"gsplat"`` (error if unavailable).
    """
    _check_inputs(gaussians, K, c2w, height, width)
    settings = settings or RasterSettings()
    B, V = K.shape[:2]
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"render: backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    use_gsplat = backend == "gsplat" or (backend == "auto" and gsplat_available()
                                         and gaussians.means.is_cuda)
    if use_gsplat:
        if not gsplat_available():
            raise RuntimeError("render: backend='gsplat' needs the gsplat package and a CUDA device "
                               "(pip install 'mouse-facelift[cuda]'); use backend='torch' on CPU")
        rgb, alpha, wz = _render_gsplat(gaussians, K, c2w, int(height), int(width), near, settings)
    else:
        rgb, alpha, wz = _render_torch(gaussians, K.to(gaussians.means.dtype), c2w.to(gaussians.means.dtype),
                                       int(height), int(width), near, settings)
    bg = _background(background, B, V, rgb.device, rgb.dtype)
    rgb = rgb + (1.0 - alpha) * bg
    covered = alpha > DEPTH_ALPHA_EPS
    depth = torch.where(covered, wz / torch.where(covered, alpha, torch.ones_like(alpha)), torch.zeros_like(wz))
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)
