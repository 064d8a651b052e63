"""Lighting randomisation: HDRI pool, optional procedural sky, extra area lights.

The built-in pool is the eight studio-light ``.exr`` maps that ship inside the ``bpy``
package (found through the package path, without importing bpy, so this module works in
processes that never load Blender); a user folder of ``.hdr``/``.exr`` maps adds to it.
Everything is drawn from the caller's ``numpy`` Generator, so a pose index's seed fixes
its lighting. Config: ``configs/lighting/default.yaml`` (values documented there).
"""
from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from mousefacelift.config import load_yaml
from mousefacelift.scene import AreaLightSpec, EnvironmentSpec

log = logging.getLogger(__name__)
HDR_SUFFIXES = (".hdr", ".exr")
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_RADIANCE_MAGIC = (b"#?RADIANCE", b"#?RGBE")


class LightingError(ValueError):
    """Unusable lighting input (missing folder, unreadable map, empty pool)."""


def builtin_hdris() -> list[Path]:
    """The studio-light maps inside the installed bpy package (empty if bpy is absent)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None:
        return []
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    found: list[Path] = []
    for root in roots:
        found += Path(root).glob("*/datafiles/studiolights/world/*.exr")
    return sorted(set(found))


def _check_hdr(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as e:
        raise LightingError(f"environment map {path}: cannot be read ({e.strerror})") from None
    ok = head.startswith(_EXR_MAGIC) if path.suffix.lower() == ".exr" else head.startswith(_RADIANCE_MAGIC)
    if not ok:
        raise LightingError(f"environment map {path}: not a valid {path.suffix} file (bad header)")


def folder_hdris(folder: str | Path) -> list[Path]:
    """All ``.hdr``/``.exr`` maps under ``folder`` (recursive), each header-checked."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise LightingError(f"HDRI folder {root}: not a readable directory")
    maps = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in HDR_SUFFIXES)
    for p in maps:
        _check_hdr(p)
    if not maps:
        raise LightingError(f"HDRI folder {root}: contains no .hdr or .exr files")
    return maps


def load_lighting_config(name_or_path: str | Path = "default") -> dict[str, Any]:
    """``configs/lighting/{name}.yaml`` (or a YAML file), checked for its three sections."""
    cfg, where = load_yaml("lighting", name_or_path)
    missing = [k for k in ("hdri", "sky", "area_lights") if k not in cfg]
    if missing:
        raise LightingError(f"{where}: missing section(s) {missing}")
    return cfg


def _uniform(rng: np.random.Generator, rng_range, name: str) -> float:
    try:
        lo, hi = (float(x) for x in rng_range)
    except (TypeError, ValueError):
        raise LightingError(f"lighting config: {name} must be [low, high], got {rng_range!r}") from None
    if hi < lo:
        raise LightingError(f"lighting config: {name} has high < low: {rng_range!r}")
    return float(rng.uniform(lo, hi))


class LightingSampler:
    """Draws (EnvironmentSpec, [AreaLightSpec], params) from a config and an HDRI pool."""

    def __init__(self, config: dict[str, Any] | str | Path | None = None, hdri_folder: str | Path | None = None):
        self.cfg = config if isinstance(config, dict) else load_lighting_config(config or "default")
        h = self.cfg["hdri"]
        pool: list[Path] = builtin_hdris() if h.get("builtin", True) else []
        folder = hdri_folder if hdri_folder is not None else h.get("folder")
        if folder:
            pool += folder_hdris(folder)
        if not pool and float(self.cfg["sky"].get("probability", 0.0)) < 1.0:
            raise LightingError("HDRI pool is empty: bpy's built-in studio lights were not found and no "
                                "hdri folder was given (install bpy, set hdri.folder, or set sky.probability: 1)")
        self.pool = [str(p) for p in pool]
        # Portable names for meta.json: a sample's bytes must not depend on where bpy or the
        # user's folder happen to be installed on the machine that rendered it.
        builtin = {str(p) for p in builtin_hdris()} if h.get("builtin", True) else set()
        self.pool_names = [f"builtin:{Path(p).name}" if p in builtin else f"folder:{Path(p).name}" for p in self.pool]
        log.info("lighting pool: %d HDR maps", len(self.pool))

    def sample(self, rng: np.random.Generator) -> tuple[EnvironmentSpec, list[AreaLightSpec], dict[str, Any]]:
        h, s, a = self.cfg["hdri"], self.cfg["sky"], self.cfg["area_lights"]
        use_sky = not self.pool or rng.random() < float(s.get("probability", 0.0))
        if use_sky:
            sky = {"type": str(s.get("type", "NISHITA")),
                   "sun_elevation_deg": _uniform(rng, s["sun_elevation_deg"], "sky.sun_elevation_deg"),
                   "sun_azimuth_deg": _uniform(rng, s["sun_azimuth_deg"], "sky.sun_azimuth_deg"),
                   "air": _uniform(rng, s["air"], "sky.air"), "dust": _uniform(rng, s["dust"], "sky.dust")}
            env = EnvironmentSpec(hdri=None, sky=sky, strength=_uniform(rng, s["strength"], "sky.strength"))
            hdri_name = None
        else:
            pick = int(rng.integers(len(self.pool)))
            hdri_name = self.pool_names[pick]
            env = EnvironmentSpec(hdri=self.pool[pick],
                                  rotation_deg=_uniform(rng, h["rotation_deg"], "hdri.rotation_deg"),
                                  strength=_uniform(rng, h["strength"], "hdri.strength"))
        lo, hi = (int(x) for x in a["count"])
        lights = []
        for _ in range(int(rng.integers(lo, hi + 1))):
            az = rng.uniform(0.0, 2 * math.pi)
            el = math.radians(_uniform(rng, a["elevation_deg"], "area_lights.elevation_deg"))
            r = _uniform(rng, a["distance"], "area_lights.distance")
            warm = _uniform(rng, a["warmth"], "area_lights.warmth")
            lights.append(AreaLightSpec(
                position=(r * math.cos(el) * math.cos(az), r * math.cos(el) * math.sin(az), r * math.sin(el)),
                size=_uniform(rng, a["size"], "area_lights.size"),
                power_w=_uniform(rng, a["power_w"], "area_lights.power_w"),
                color=(1.0, 1.0 - 0.3 * warm, 1.0 - warm)))
        params = {"hdri": hdri_name,
                  "rotation_deg": env.rotation_deg, "strength": env.strength, "sky": env.sky,
                  "area_lights": [{"position": list(l.position), "size": l.size, "power_w": l.power_w,
                                   "color": list(l.color)} for l in lights]}
        return env, lights, params
