"""Coat randomisation: coat families -> one MaterialSpec per body region.

Families (black C57BL/6, albino, agouti, brown, grey, piebald) and their weights come from
``configs/appearance/default.yaml`` (documented there). ``sample(rng)`` is deterministic in
the Generator, so the pose index's seed fixes the mouse's look; it also returns a plain
dict of what was drawn, for ``meta.json``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mousefacelift.config import load_yaml
from mousefacelift.scene import MaterialSpec

REGIONS = ("fur", "ear_skin", "paw_skin", "tail_skin", "nose_skin", "eye")
FAMILIES = ("black", "albino", "agouti", "brown", "grey", "piebald")


class AppearanceError(ValueError):
    """A malformed appearance config; the message names the file and field."""


def load_appearance_config(name_or_path: str | Path = "default") -> dict[str, Any]:
    """``configs/appearance/{name}.yaml`` (or a YAML file), checked: every section present,
    weights only for defined families, non-negative with a positive sum."""
    cfg, where = load_yaml("appearance", name_or_path)
    missing = [k for k in ("weights", "families", "skin", "eyes", "fur", "jitter") if k not in cfg]
    if missing:
        raise AppearanceError(f"{where}: missing field(s) {missing}")
    unknown = sorted(set(cfg["weights"]) - set(cfg["families"]))
    if unknown:
        raise AppearanceError(f"{where}: weights name families without a definition: {unknown}")
    w = np.array([float(v) for v in cfg["weights"].values()])
    if (w < 0).any() or w.sum() <= 0:
        raise AppearanceError(f"{where}: weights must be >= 0 with a positive sum, got {cfg['weights']}")
    return cfg


def _u(rng, r) -> float:
    lo, hi = (float(x) for x in r)
    return float(rng.uniform(lo, hi))


def _color(rng, base, jitter: float) -> tuple[float, float, float]:
    c = np.asarray(base, float) * (1.0 + rng.uniform(-jitter, jitter, 3))
    return tuple(float(x) for x in np.clip(c, 0.0, 1.0))


class AppearanceSampler:
    """Draws ``({region: MaterialSpec}, params)`` for one mouse."""

    def __init__(self, config: dict[str, Any] | str | Path | None = None):
        self.cfg = config if isinstance(config, dict) else load_appearance_config(config or "default")
        names = list(self.cfg["weights"])
        w = np.array([float(self.cfg["weights"][n]) for n in names])
        self.families, self.probs = names, w / w.sum()

    def sample(self, rng: np.random.Generator) -> tuple[dict[str, MaterialSpec], dict[str, Any]]:
        cfg, j = self.cfg, float(self.cfg["jitter"])
        family = self.families[int(rng.choice(len(self.families), p=self.probs))]
        fam = cfg["families"][family]
        fur_cfg = cfg["fur"]
        fur_color = _color(rng, fam["fur"], j)
        pattern, color2, coverage, strength = "noise", fur_color, 0.5, _u(rng, fur_cfg["noise_strength"])
        scale = _u(rng, fur_cfg["pattern_scale"])
        if "patches" in fam:
            pattern, color2 = "patches", _color(rng, fam["patches"], j)
            coverage, strength, scale = _u(rng, fam["patch_coverage"]), 1.0, _u(rng, fam["patch_scale"])
        elif "ticking" in fam:
            pattern, color2 = "agouti", _color(rng, fam["ticking"], j)
            coverage, strength = _u(rng, fam["ticking_coverage"]), 1.0
        st = fur_cfg.get("strands") or {}
        strands = {} if not st else dict(
            strands=_u(rng, st["strength"]), strand_width=_u(rng, st["width"]), strand_length=_u(rng, st["length"]),
            strand_color=_u(rng, st["color"]), anisotropy=_u(rng, st["anisotropy"]))
        fur = MaterialSpec(base_color=fur_color, roughness=_u(rng, fur_cfg["roughness"]),
                           sheen=_u(rng, fur_cfg["sheen"]), sheen_tint=(1.0, 1.0, 1.0),
                           specular=_u(rng, fur_cfg["specular"]), pattern=pattern, color2=color2,
                           pattern_scale=scale, pattern_strength=strength, coverage=coverage, **strands)
        sk = cfg["skin"]
        skin_color = _color(rng, sk[fam.get("skin", "pink")], j)
        sss = _u(rng, sk["subsurface"])
        rough = _u(rng, sk["roughness"])

        def skin(sub: float, coat: float = 0.0) -> MaterialSpec:
            return MaterialSpec(base_color=skin_color, roughness=rough, specular=0.5, subsurface=sub, coat=coat)

        ey = cfg["eyes"]
        eye = MaterialSpec(base_color=_color(rng, ey[fam.get("eyes", "dark")], j), roughness=_u(rng, ey["roughness"]),
                           specular=0.7, coat=_u(rng, ey["coat"]))
        materials = {"fur": fur, "ear_skin": skin(sss), "paw_skin": skin(sss / 2), "tail_skin": skin(sss / 2),
                     "nose_skin": skin(sss / 2, coat=0.3), "eye": eye}
        params = {"family": family, "materials": {k: asdict(v) for k, v in materials.items()}}
        return materials, params
