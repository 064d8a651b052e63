"""Quality presets (``configs/quality/{preview,train,final}.yaml``) as one dataclass.

The values are documented in the yaml files; this module only reads and checks them, so
there are no sampling constants scattered in the backend. A render resolves its preset
once (with the run's ``resolution``/``samples`` applied) and hands the resulting
:class:`QualityPreset` to :class:`blender.backend.BlenderRenderer`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import yaml

from mousefacelift.config import ConfigError, configs_dir, typed


@dataclass(frozen=True)
class QualityPreset:
    name: str
    resolution: int
    samples: int
    adaptive_threshold: float
    adaptive_min_samples: int
    denoiser: Literal["OPENIMAGEDENOISE", "NONE"]
    max_bounces: int
    diffuse_bounces: int
    glossy_bounces: int
    transmission_bounces: int
    transparent_bounces: int
    filter_width: float
    env_map_resolution: int
    denoise_prefilter: Literal["NONE", "FAST", "ACCURATE"]
    crop_to_subject: bool

    def __post_init__(self):
        for key in ("resolution", "samples", "env_map_resolution"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: expected a positive count, got {getattr(self, key)}")

    def with_overrides(self, resolution: int | None = None, samples: int | None = None) -> "QualityPreset":
        """This preset with a run's image size and/or samples per pixel in place of its own (None = keep)."""
        changes = {k: int(v) for k, v in (("resolution", resolution), ("samples", samples)) if v is not None}
        return replace(self, **changes) if changes else self

    def settings(self) -> dict:
        """The preset's values without its name, in file order (what a dataset config records)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}


def load_quality(name: str, directory: Path | str | None = None) -> QualityPreset:
    """Read preset ``name`` from ``directory`` (default ``configs/quality``); errors name the
    file and the bad field."""
    directory = Path(directory) if directory is not None else configs_dir() / "quality"
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
        raise ConfigError(f"quality {name!r}: no preset file {path} (known presets: {known})")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict) or "name" in raw:
        raise ConfigError(f"{path}: expected a mapping of preset fields (the file name is the preset's name)")
    return typed(QualityPreset, {"name": name, **raw}, str(path))
