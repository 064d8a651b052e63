"""The model registry: a model config's ``type`` names the architecture that builds it.

Why one registry: the trainer's tasks, the inference loader and the benchmarks build models
from the same mappings (configs/model/*.yaml, or the ``config.model`` a checkpoint carries),
so an architecture is added by one entry in :data:`MODELS` (its config dataclass and its
module), and every mapping reaches its dataclass through :func:`mousefacelift.config.typed`
(unknown keys named, values converted).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch.nn as nn

from ..config import ConfigError, load_yaml, to_container, typed
from .gslrm import GSLRM, GSLRMConfig
from .mvdiffusion import MVDiffusionConfig, MVDiffusionUNet

__all__ = ["MODELS", "load_preset", "model_config", "build_model"]

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "gslrm": (GSLRMConfig, GSLRM),
    "mvdiffusion": (MVDiffusionConfig, MVDiffusionUNet),
}


def load_preset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The plain mapping of a preset, ``configs/model/NAME.yaml`` or a YAML file (to override
    fields before :func:`model_config`)."""
    return load_yaml("model", name_or_path)[0]


def model_config(spec: Any, where: str = "model"):
    """A typed model config from a preset name, a YAML path, a mapping with ``type``, or a
    config dataclass of :data:`MODELS` (returned as it is)."""
    if isinstance(spec, tuple(cls for cls, _ in MODELS.values())):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        spec, where = load_yaml("model", spec)
    spec = to_container(spec)
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
