"""The model registry: a model config's ``type`` names the architecture that builds it.

Why one registry: the trainer's tasks, the inference loader and the benchmarks build models
from the same mappings (configs/model/*.yaml, or the ``config.model`` a checkpoint carries),
so an architecture is added by one entry in :data:`MODELS` (its config dataclass and its
module), and every mapping reaches its dataclass through :func:`mousefacelift.config.typed`
(unknown keys named, values converted).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn
from omegaconf import OmegaConf

from ..config import ConfigError, configs_dir, plain, typed
from .gslrm import GSLRM, GSLRMConfig

__all__ = ["MODELS", "preset_path", "load_preset", "model_config", "build_model"]

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "gslrm": (GSLRMConfig, GSLRM),
}


def preset_path(name_or_path: str | os.PathLike) -> Path:
    """configs/model/NAME.yaml for a preset name, else the YAML file given; missing -> error listing presets."""
    path = Path(name_or_path)
    folder = configs_dir() / "model"
    if not path.suffix:
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in folder.glob("*.yaml"))
        raise FileNotFoundError(f"model config {str(name_or_path)!r}: no file {path}; presets: {presets}")
    return path


def load_preset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The plain mapping of a preset (to override fields before :func:`model_config`)."""
    return plain(OmegaConf.load(preset_path(name_or_path)))


def model_config(spec: Any, where: str = "model"):
    """A typed model config from a preset name, a YAML path, a mapping with ``type``, or a
    config dataclass of :data:`MODELS` (returned as it is)."""
    if isinstance(spec, tuple(cls for cls, _ in MODELS.values())):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        where = str(preset_path(spec))
        spec = load_preset(spec)
    spec = plain(spec)
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a preset name, a YAML path or a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in MODELS:
        raise ConfigError(f"{where}.type is {kind!r}, expected one of {sorted(MODELS)}")
    return typed(MODELS[kind][0], spec, where)


def build_model(spec: Any, where: str = "model") -> nn.Module:
    """A freshly initialised model from anything :func:`model_config` accepts."""
    config = model_config(spec, where)
    module = next(model for cls, model in MODELS.values() if isinstance(config, cls))
    return module(config)
