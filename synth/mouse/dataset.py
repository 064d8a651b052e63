"""What a render config (``configs/render.yaml``, ``configs/objects/render.yaml``) defines, decided once.

The dataset config is the render config without its operational sections (how the work is
run, not what it produces), plus the quality preset as its file states it and the image
size; its hash is every sample's ``config_hash``, so any change to it changes the data's
identity. The quality the renderer uses is the same preset with the config's
``resolution``/``samples`` applied: it is resolved here, in the parent process, and travels
to the workers and the Blender backend as it is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from blender.quality import QualityPreset, load_quality
from mousefacelift.config import ConfigError, config_hash, to_container
from mousefacelift.labcamera import input_look_config

OPERATIONAL_KEYS = ("run",)     # config sections that do not change the data (excluded from the hash)


@dataclass(frozen=True)
class RenderDataset:
    """A render config resolved: the dataset config, its hash, and the renderer's quality."""

    config: dict
    config_hash: str
    quality: QualityPreset

    @property
    def image_size(self) -> int:
        """Square image size of every view (the preset's resolution unless the config sets one)."""
        return self.quality.resolution


def render_dataset(cfg: Any) -> RenderDataset:
    """Resolve a composed render config (DictConfig or plain dict); see the module docstring."""
    c = dict(to_container(cfg))
    for k in OPERATIONAL_KEYS:
        c.pop(k, None)
    if "preset" not in c:
        raise ConfigError("render config: no 'preset' key (the quality preset, a file in configs/quality/)")
    preset = load_quality(str(c["preset"]))
    quality = preset.with_overrides(c.get("resolution"), c.get("samples"))
    c["quality_preset"] = preset.settings()
    c["image_size"] = quality.resolution
    look = input_look_config(c.get("input_look"))
    if look is not None:     # its values live in configs/data/base.yaml: they are part of what the data is
        c["input_look_resolved"] = asdict(look)
    return RenderDataset(config=c, config_hash=config_hash(c), quality=quality)
