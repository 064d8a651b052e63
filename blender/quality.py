"""Quality presets (``configs/quality/{preview,train,final}.yaml``) as one dataclass.

The values are documented in the yaml files; this module only reads and checks them, so
there are no sampling constants scattered in the backend.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

from mousefacelift.config import configs_dir

DENOISERS = ("OPENIMAGEDENOISE", "NONE")
PREFILTERS = ("NONE", "FAST", "ACCURATE")


@dataclass(frozen=True)
class QualityPreset:
    name: str
    resolution: int
    samples: int
    adaptive_threshold: float
    adaptive_min_samples: int
    denoiser: str
    max_bounces: int
    diffuse_bounces: int
    glossy_bounces: int
    transmission_bounces: int
    transparent_bounces: int
    filter_width: float
    env_map_resolution: int
    denoise_prefilter: str
    crop_to_subject: bool

    def with_overrides(self, resolution: int | None = None, samples: int | None = None) -> "QualityPreset":
        out = self
        if resolution is not None:
            if int(resolution) <= 0:
                raise ValueError(f"resolution: expected a positive pixel count, got {resolution}")
            out = replace(out, resolution=int(resolution))
        if samples is not None:
            if int(samples) <= 0:
                raise ValueError(f"samples: expected a positive sample count, got {samples}")
            out = replace(out, samples=int(samples))
        return out


def _strict_bool(v) -> bool:
    if not isinstance(v, bool):
        raise TypeError(v)
    return v


def load_quality(name: str, directory: Path | str | None = None) -> QualityPreset:
    """Read preset ``name`` from ``directory`` (default ``configs/quality``); errors name the
    file and the bad field."""
    directory = Path(directory) if directory is not None else configs_dir() / "quality"
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(directory).glob("*.yaml")) if Path(directory).is_dir() else []
        raise ValueError(f"quality preset {name!r}: no file {path} (known presets: {known})")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    wanted = {f.name: f.type for f in fields(QualityPreset) if f.name != "name"}
    missing = sorted(set(wanted) - set(raw))
    extra = sorted(set(raw) - set(wanted))
    if missing or extra:
        raise ValueError(f"{path}: missing fields {missing}, unknown fields {extra}")
    values = {}
    for key, typ in wanted.items():
        conv = {"int": int, "float": float, "str": str, "bool": _strict_bool}[typ if isinstance(typ, str) else typ.__name__]
        try:
            values[key] = conv(raw[key])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: field {key!r} must be {typ}, got {raw[key]!r}") from None
    if values["denoiser"] not in DENOISERS:
        raise ValueError(f"{path}: denoiser must be one of {DENOISERS}, got {values['denoiser']!r}")
    if values["denoise_prefilter"] not in PREFILTERS:
        raise ValueError(f"{path}: denoise_prefilter must be one of {PREFILTERS}, got {values['denoise_prefilter']!r}")
    if values["samples"] <= 0 or values["resolution"] <= 0 or values["env_map_resolution"] <= 0:
        raise ValueError(f"{path}: samples, resolution and env_map_resolution must be positive")
    return QualityPreset(name=name, **values)
