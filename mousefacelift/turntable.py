"""Turntable video/GIF of a Gaussian prediction: cameras orbiting the world Z axis.

Why: the quickest way to judge a 360° reconstruction is to watch it spin; FaceLift ships
the same visual. Cameras use the project rig convention (radius 2.7, 50° FOV, azimuth 0 =
in front of the mouse's face, +X) so frames match the training views.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .cameras import DEFAULT_FOV_DEG, DEFAULT_RADIUS, orbit_cameras, stack_cameras
from .gaussians import Gaussians
from .splat import render

__all__ = ["turntable_frames", "save_turntable"]

log = logging.getLogger(__name__)


@torch.no_grad()
def turntable_frames(gaussians: Gaussians, frames: int = 60, size: int = 256, elevation_deg: float = 15.0,
                     radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG, background=(1.0, 1.0, 1.0),
                     index: int = 0, views_per_batch: int = 8, backend: str = "auto") -> np.ndarray:
    """uint8 frames [F,H,W,3] of sample ``index`` seen from ``frames`` azimuths about +Z."""
    if frames <= 0 or size <= 0:
        raise ValueError(f"turntable: frames and size must be positive, got {frames}, {size}")
    g = gaussians[index].detach()
    cams = orbit_cameras(np.arange(frames) * 360.0 / frames, [elevation_deg] * frames, size=size,
                         radius=radius, fov_deg=fov_deg, prefix="turntable")
    K, c2w = stack_cameras(cams)
    K, c2w = K.to(g.device, g.means.dtype), c2w.to(g.device, g.means.dtype)
    out = []
    for s in range(0, frames, views_per_batch):
        r = render(g, K[None, s:s + views_per_batch], c2w[None, s:s + views_per_batch], size, size,
                   background=background, backend=backend)
        out.append((r.rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def save_turntable(gaussians: Gaussians, path: str | os.PathLike, fps: int = 20, **kwargs) -> Path:
    """Render a turntable and write it (atomically) as .gif or .mp4 (mp4 needs imageio-ffmpeg)."""
    import imageio.v2 as imageio
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"turntable: {path} must end in .gif or .mp4")
    frames = turntable_frames(gaussians, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    try:
        if suffix == ".gif":
            imageio.mimsave(tmp, list(frames), format="GIF", duration=1.0 / fps, loop=0)
        else:
            try:
                imageio.mimsave(tmp, list(frames), fps=fps)
            except Exception as e:  # no ffmpeg plugin
                raise RuntimeError(f"turntable: writing {path} needs imageio-ffmpeg ({e}); use a .gif path") from e
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("turntable: %d frames -> %s", len(frames), path)
    return path
