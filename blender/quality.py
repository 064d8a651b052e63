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

from mousefacelift.config import ConfigError, load_yaml, typed


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


def load_quality(name_or_path: str | Path) -> QualityPreset:
    """Preset ``configs/quality/{name}.yaml`` (or a YAML file, named by its stem); errors name
    the file and the bad field. The file name is the preset's name, so the file must not set one."""
    raw, where = load_yaml("quality", name_or_path)
    if "name" in raw:
        raise ConfigError(f"{where}: 'name' is not a preset field (the file name is the preset's name)")
    return typed(QualityPreset, {"name": Path(name_or_path).stem, **raw}, where)
