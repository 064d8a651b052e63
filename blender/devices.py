"""Pick the Cycles compute device: OptiX, then CUDA, HIP, Metal, oneAPI, else the CPU."""
from __future__ import annotations

import logging

import bpy

log = logging.getLogger(__name__)
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI")


def configure_device(scene: "bpy.types.Scene", device: str) -> str:
    """Set ``scene.cycles.device``; returns ``"CPU"`` or the GPU backend used.

    ``device="cpu"`` forces the CPU; ``"gpu"`` requires a GPU (error if none); ``"auto"``
    tries the GPU backends in order and falls back to the CPU with a log line.
    """
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "cpu":
        scene.cycles.device = "CPU"
        return "CPU"
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in GPU_BACKENDS:
        try:
            prefs.compute_device_type = backend
        except TypeError:            # backend not compiled into this bpy build
            continue
        prefs.refresh_devices()
        gpus = [d for d in prefs.devices if d.type == backend]
        if gpus:
            for d in prefs.devices:
                d.use = d.type == backend
            scene.cycles.device = "GPU"
            log.info("Cycles renders on %s: %s", backend, ", ".join(d.name for d in gpus))
            return backend
    if device == "gpu":
        raise RuntimeError(f"device='gpu': no Cycles GPU found (tried {', '.join(GPU_BACKENDS)})")
    prefs.compute_device_type = "NONE"
    scene.cycles.device = "CPU"
    log.info("no Cycles GPU found (tried %s); rendering on the CPU", ", ".join(GPU_BACKENDS))
    return "CPU"
