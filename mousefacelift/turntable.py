"""Turntables: cameras orbiting the world Z axis, and their frames written as a GIF or MP4.

Why: the quickest way to judge a 360° reconstruction is to watch it spin; FaceLift ships
the same visual. Cameras follow the project convention (50° FOV, azimuth 0 = in front of the
mouse's face, +X) at ``TURNTABLE_RADIUS`` 4 body lengths, far enough that the whole mouse, tail
tip included (up to ~1.7 body lengths from the body centre), stays in frame. The frames are
rendered by :func:`mousefacelift.inference.turntable_frames`, the one render path.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .cameras import DEFAULT_FOV_DEG, orbit_cameras, stack_cameras

__all__ = ["TURNTABLE_RADIUS", "turntable_cameras", "write_video"]

TURNTABLE_RADIUS = 4.0     # body lengths: half the view spans 1.87 at the body centre

log = logging.getLogger(__name__)


def turntable_cameras(frames: int, size: int, elevation_deg: float = 15.0, radius: float = TURNTABLE_RADIUS,
                      fov_deg: float = DEFAULT_FOV_DEG) -> tuple[torch.Tensor, torch.Tensor]:
    """K [F,3,3] and c2w [F,4,4] of ``frames`` cameras at equal azimuth steps about +Z."""
    if frames <= 0 or size <= 0:
        raise ValueError(f"turntable: frames and size must be positive, got {frames}, {size}")
    cams = orbit_cameras(np.arange(frames) * 360.0 / frames, [elevation_deg] * frames, size=size,
                         radius=radius, fov_deg=fov_deg, prefix="turntable")
    return stack_cameras(cams)


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 20) -> Path:
    """Write uint8 frames [F,H,W,3] (atomically) as .gif or .mp4 (mp4 needs imageio-ffmpeg)."""
    import imageio.v2 as imageio
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"turntable: {path} must end in .gif or .mp4")
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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes it private; the video is an ordinary output
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("turntable: %d frames -> %s", len(frames), path)
    return path
