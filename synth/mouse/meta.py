"""The generator facts a rendered sample's ``meta.json`` records, written and read in one place.

Beyond the schema's own keys (docs/architecture.md §2) the mouse composer
(:mod:`synth.mouse.compose`) writes::

    body_model          the body model the pose is for (a ``load_body_model`` argument)
    pose.family         the pose family the PoseSampler drew
    appearance.family   the coat family (AppearanceSampler.sample)
    lighting.hdri       "builtin:NAME.exr" / "folder:NAME.hdr", null when the sky was drawn
    lighting.sky        the sky's parameters, null under an HDRI
    lighting.strength   the environment's strength
    lighting.area_lights  the extra area lights (LightingSampler.sample)
    exposure            how the linear render became 8-bit colour (written by the renderer,
                        blender.conventions.develop_views): view_transform ("agx" | "standard"),
                        exposure (linear multiplier, one for all views), exposure_ev (its log2),
                        offset_ev (the random offset drawn per sample), key, meter (the
                        incident-light meter: sum(L)/sum(albedo) over the foreground), metering

Object samples carry the same ``lighting`` section and none of the mouse's; real captures
carry none of these; samples rendered before the exposure existed carry no ``exposure``
(plain sRGB at exposure 1). Each reader returns None where the sample does not record the fact.
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


def json_safe(obj: Any) -> Any:
    """Dataclasses, tuples, numpy and torch values as plain JSON types (for ``meta.json``)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    return obj


def _section(meta: Mapping, name: str) -> Mapping:
    value = meta.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def body_model(meta: Mapping) -> str | None:
    return _text(meta.get("body_model"))


def pose_family(meta: Mapping) -> str | None:
    return _text(_section(meta, "pose").get("family"))


def coat_family(meta: Mapping) -> str | None:
    return _text(_section(meta, "appearance").get("family"))


def environment(meta: Mapping) -> str | None:
    """The HDRI map's stem ("builtin:studio"), "sky", or None (no lighting recorded)."""
    lighting = _section(meta, "lighting")
    hdri = _text(lighting.get("hdri"))
    if hdri is not None:
        return Path(hdri).stem
    return "sky" if lighting.get("sky") else None


def light_strength(meta: Mapping) -> float | None:
    value = _section(meta, "lighting").get("strength")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def area_light_count(meta: Mapping) -> int | None:
    lights = _section(meta, "lighting").get("area_lights")
    return len(lights) if isinstance(lights, list) else None


def view_transform(meta: Mapping) -> str | None:
    """"agx" / "standard" as the renderer recorded it; None for samples without the record."""
    return _text(_section(meta, "exposure").get("view_transform"))


def exposure_ev(meta: Mapping) -> float | None:
    """The sample's exposure in stops (log2 of the multiplier applied to the linear render)."""
    value = _section(meta, "exposure").get("exposure_ev")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
