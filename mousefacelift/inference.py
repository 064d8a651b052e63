"""From a checkpoint to Gaussians, renders, a PLY and a turntable.

Why one module: training, evaluation, the benchmarks and the single-image path all run the
same sequence (posed views -> model -> Gaussians -> render into cameras); it is written here
once. It needs only this library and a checkpoint (no ``train``, ``synth`` or ``blender``).

- :func:`load_model`: a checkpoint written by ``python -m train.run`` (its ``config.model``
  picks the architecture in :mod:`mousefacelift.models`), or FaceLift's published GS-LRM
  weights (into the ``facelift`` preset unless another config is given); weights only, never
  pickled code;
- :func:`reconstruct`: posed views -> Gaussians;
- :func:`render_views`: Gaussians -> renders for given cameras (always float32);
- :func:`predict`: both, the sequence the trainer and the evaluation run;
- :func:`turntable_frames`, :func:`save_turntable`, :func:`export`: what a user looks at
  (PLY through :meth:`Gaussians.save_ply`, the orbit through :mod:`mousefacelift.turntable`).

None of them turns gradients off: training calls them too. Wrap inference in
``torch.no_grad()``; :func:`load_model` returns the model in eval mode.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cameras import DEFAULT_FOV_DEG
from .checkpoint import load_checkpoint, model_config_of
from .gaussians import Gaussians
from .models import build_model, model_config
from .models.facelift_ckpt import RELEASED_PRESET, facelift_mismatches, facelift_state_dict, load_facelift_checkpoint
from .splat import RenderOutput, render
from .turntable import TURNTABLE_RADIUS, turntable_cameras, write_video

__all__ = ["Prediction", "load_model", "reconstruct", "render_views", "predict", "turntable_frames",
           "save_turntable", "export"]


@dataclass
class Prediction:
    """What :func:`predict` returns: the Gaussians and their renders into the target cameras."""

    gaussians: Gaussians
    render: RenderOutput


def load_model(path: str | os.PathLike, facelift_config: Any = None, device: str | torch.device = "cpu",
               use_ema: bool = True) -> torch.nn.Module:
    """The model of a checkpoint, in eval mode on ``device``.

    A checkpoint of ``train.run`` describes its own model; it holds the moving average of the
    weights (``ema``) when it was trained with ``train.ema_decay``, and those are loaded unless
    ``use_ema`` is False. FaceLift GS-LRM weights carry no config: without ``facelift_config``
    they load into the ``facelift`` preset (FaceLift's released configuration, so they give
    FaceLift's output), and weights that do not fit it are refused naming the options;
    ``facelift_config`` (a preset name, YAML path or mapping of
    :func:`mousefacelift.models.model_config`) is for FaceLift weights of another configuration.
    """
    state = load_checkpoint(path, what="model checkpoint")
    if "config" in state:
        if facelift_config is not None:
            raise ValueError(f"{path} was written by train.run and carries its own config.model; "
                             "facelift_config is only for FaceLift weights")
        model = build_model(model_config_of(state, str(path)), where=f"{path} config.model")
        model.load_state_dict(state["ema"] if use_ema and "ema" in state else state["model"])
    elif facelift_config is None:
        config = model_config(RELEASED_PRESET)
        problems = facelift_mismatches(config, facelift_state_dict(state, str(path)))
        if problems:
            raise ValueError(f"{path}: FaceLift weights that do not fit its released configuration "
                             f"(model preset {RELEASED_PRESET}): {'; '.join(problems)}. If they come from another "
                             "FaceLift configuration, pass facelift_config, the GS-LRM config they fit")
        model = build_model(config)
        load_facelift_checkpoint(model, state, released=True)
    else:
        model = build_model(facelift_config)
        load_facelift_checkpoint(model, state, released=False)
    return model.to(device).eval()


def reconstruct(model: torch.nn.Module, images: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> Gaussians:
    """Posed views (images [B,V,3,H,W] in [0,1] composited on their background, K [B,V,3,3],
    c2w [B,V,4,4]) -> Gaussians, float32 even under autocast."""
    return model(images, K, c2w)


def render_views(gaussians: Gaussians, K: torch.Tensor, c2w: torch.Tensor, height: int, width: int,
                 background=(1.0, 1.0, 1.0), backend: str = "auto") -> RenderOutput:
    """Render every sample into its cameras (K [B,V,3,3], c2w [B,V,4,4]) in float32, outside
    any autocast region the caller has open (bf16 depth compositing loses the surface)."""
    with torch.autocast(device_type=gaussians.device.type, enabled=False):
        return render(gaussians.float(), K, c2w, height, width, background=background, backend=backend)


def predict(model: torch.nn.Module, images: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor,
            target_K: torch.Tensor, target_c2w: torch.Tensor, size: tuple[int, int] | None = None,
            background=(1.0, 1.0, 1.0)) -> Prediction:
    """Posed views -> Gaussians -> renders into the target cameras (``size`` (H, W), default
    the input size)."""
    gaussians = reconstruct(model, images, K, c2w)
    H, W = images.shape[-2:] if size is None else size
    return Prediction(gaussians, render_views(gaussians, target_K, target_c2w, int(H), int(W), background))


@torch.no_grad()
def turntable_frames(gaussians: Gaussians, frames: int = 60, size: int = 256, elevation_deg: float = 15.0,
                     radius: float = TURNTABLE_RADIUS, fov_deg: float = DEFAULT_FOV_DEG, background=(1.0, 1.0, 1.0),
                     index: int = 0, views_per_batch: int = 8, backend: str = "auto") -> np.ndarray:
    """uint8 frames [F,H,W,3] of sample ``index`` seen from ``frames`` azimuths about +Z."""
    g = gaussians[index].detach()
    K, c2w = turntable_cameras(frames, size, elevation_deg, radius, fov_deg)
    K, c2w = K.to(g.device, torch.float32), c2w.to(g.device, torch.float32)
    out = []
    for s in range(0, frames, views_per_batch):
        r = render_views(g, K[None, s:s + views_per_batch], c2w[None, s:s + views_per_batch], size, size,
                         background=background, backend=backend)
        out.append((r.rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def save_turntable(gaussians: Gaussians, path: str | os.PathLike, fps: int = 20, **kwargs) -> Path:
    """Render a turntable (keywords of :func:`turntable_frames`) and write it as .gif or .mp4."""
    return write_video(turntable_frames(gaussians, **kwargs), path, fps=fps)


def export(gaussians: Gaussians, out_dir: str | os.PathLike, index: int = 0, turntable: str = "turntable.gif",
           **turntable_kwargs) -> dict[str, Path]:
    """Write sample ``index`` as ``gaussians.ply`` (3DGS layout) and a turntable into ``out_dir``."""
    out = Path(out_dir)
    return {"ply": gaussians.save_ply(out / "gaussians.ply", index=index),
            "turntable": save_turntable(gaussians, out / turntable, index=index, **turntable_kwargs)}
