"""SceneSpec: plain data describing one render job, independent of any renderer.

Everything that can be decided without Blender (pose, mesh, materials, lights, cameras,
depth ranges) is decided before this object exists, so it is reproducible from the seed
alone and testable without bpy. ``blender/`` turns a SceneSpec into images; nothing in it
refers to Blender. Mesh coordinates are project world units (docs/architecture.md §3).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .cameras import Camera
from .framing import box_corners


@dataclass
class MaterialSpec:
    """A physically based surface for one face region.

    ``pattern`` adds procedural variation in object space: ``"none"``; ``"noise"`` (subtle
    value variation of ``base_color``, fur-like); ``"patches"`` (piebald: blobs of
    ``color2`` covering about ``coverage`` of the surface); ``"agouti"`` (``color2`` ticking
    speckles). ``pattern_scale`` is the feature size in world units.
    """

    base_color: tuple[float, float, float]
    roughness: float = 0.6
    sheen: float = 0.0                     # fur's grazing-angle glow (Principled sheen weight)
    sheen_tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    specular: float = 0.5
    subsurface: float = 0.0                # thin skin (ears) lets light through
    subsurface_radius: float = 0.02        # world units
    coat: float = 0.0                      # clear-coat for wet, glossy eyes and nose
    pattern: str = "none"
    color2: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pattern_scale: float = 0.15
    pattern_strength: float = 0.1
    coverage: float = 0.5

    def validate(self, where: str) -> None:
        for name in ("base_color", "sheen_tint", "color2"):
            c = getattr(self, name)
            if len(c) != 3 or not all(0.0 <= float(x) <= 1.0 for x in c):
                raise ValueError(f"{where}.{name}: expected 3 values in [0, 1], got {c}")
        for name in ("roughness", "sheen", "specular", "subsurface", "coat", "pattern_strength", "coverage"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{where}.{name}: expected a value in [0, 1], got {v}")
        if self.pattern not in ("none", "noise", "patches", "agouti"):
            raise ValueError(f"{where}.pattern: expected none/noise/patches/agouti, got {self.pattern!r}")
        if self.pattern_scale <= 0:
            raise ValueError(f"{where}.pattern_scale: expected > 0, got {self.pattern_scale}")


@dataclass
class EnvironmentSpec:
    """Image-based lighting: an HDR map (``.hdr``/``.exr``) rotated about world Z, or a
    procedural sky when ``hdri`` is None and ``sky`` is set; a flat ``color`` otherwise.
    The environment lights the subject; the film stays transparent."""

    hdri: str | None = None
    rotation_deg: float = 0.0
    strength: float = 1.0
    sky: dict[str, float] | None = None     # {"sun_elevation_deg", "sun_azimuth_deg", "turbidity"/"air"...}
    color: tuple[float, float, float] = (0.05, 0.05, 0.05)


@dataclass
class AreaLightSpec:
    """A square area light at ``position`` pointing at ``target`` (world units)."""

    position: tuple[float, float, float]
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    size: float = 1.0
    power_w: float = 100.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class MeshSpec:
    """A triangle mesh in world units with per-face region labels.

    ``uv`` (optional) holds per-corner texture coordinates [F, 3, 2]. ``regions`` names the
    region of each label; ``face_region`` [F] indexes into it; ``materials`` maps every name
    in ``regions`` to its :class:`MaterialSpec`. ``texture`` (optional) is an RGB(A) uint8
    image sampled through ``uv`` and multiplied with the base colour (objects from files).
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_region: np.ndarray
    regions: list[str]
    materials: dict[str, MaterialSpec]
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    smooth: bool = True
    name: str = "subject"

    def validate(self, where: str = "mesh") -> None:
        v, f, r = np.asarray(self.vertices), np.asarray(self.faces), np.asarray(self.face_region)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
            raise ValueError(f"{where}.vertices: expected [N>=3, 3], got {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"{where}.vertices: contains NaN or infinite coordinates")
        if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
            raise ValueError(f"{where}.faces: expected [F>0, 3], got {f.shape}")
        if f.min() < 0 or f.max() >= len(v):
            raise ValueError(f"{where}.faces: indices must lie in [0, {len(v) - 1}], got [{f.min()}, {f.max()}]")
        if r.shape != (len(f),):
            raise ValueError(f"{where}.face_region: expected [{len(f)}], got {r.shape}")
        if len(self.regions) == 0 or r.min() < 0 or r.max() >= len(self.regions):
            raise ValueError(f"{where}.face_region: labels must index regions (0..{len(self.regions) - 1})")
        missing = [name for name in self.regions if name not in self.materials]
        if missing:
            raise ValueError(f"{where}.materials: no material for regions {missing}")
        for name, m in self.materials.items():
            m.validate(f"{where}.materials[{name!r}]")
        if self.uv is not None and np.asarray(self.uv).shape != (len(f), 3, 2):
            raise ValueError(f"{where}.uv: expected per-corner [{len(f)}, 3, 2], got {np.asarray(self.uv).shape}")


@dataclass
class SceneSpec:
    """One render job: meshes, lights and the cameras to render them from.

    ``meta`` travels unchanged into the sample's ``meta.json`` (pose family, appearance and
    lighting parameters, seed, ``mm_per_unit``...). ``arrays`` travel into the sample as
    ``.npy`` members (``joints``, ``pose``). ``meta["normalization"]`` records how the
    subject was brought into the cube (``{"center": [x, y, z], "scale": s}``: world =
    (model - center) * scale), so its mesh can be rebuilt from ``pose.npy`` for checks.
    """

    meshes: list[MeshSpec]
    cameras: list[Camera]
    environment: EnvironmentSpec = field(default_factory=EnvironmentSpec)
    area_lights: list[AreaLightSpec] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    key: str = ""

    def validate(self) -> "SceneSpec":
        where = f"scene {self.key!r}" if self.key else "scene"
        if not self.meshes:
            raise ValueError(f"{where}: no meshes")
        if not self.cameras:
            raise ValueError(f"{where}: no cameras")
        for i, m in enumerate(self.meshes):
            m.validate(f"{where}.meshes[{i}]")
        if self.environment.strength < 0:
            raise ValueError(f"{where}.environment.strength: expected >= 0, got {self.environment.strength}")
        if "." in self.key:
            raise ValueError(f"{where}: keys may not contain dots (WebDataset splits at the first dot)")
        return self

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        allv = np.concatenate([np.asarray(m.vertices) for m in self.meshes])
        return allv.min(0), allv.max(0)


def depth_range_for(cameras: Sequence[Camera], lo: np.ndarray, hi: np.ndarray, margin: float = 0.02) -> list[Camera]:
    """Set each camera's ``depth_range`` tightly around the box [lo, hi] (world units).

    Tight per-view ranges make the 16-bit depth encoding precise (about 1e-5 of the subject
    size); computed here, outside the renderer, so it is reproducible and testable.
    """
    from dataclasses import replace

    corners = box_corners(lo, hi)
    out = []
    for c in cameras:
        z = corners @ c.w2c[2, :3] + c.w2c[2, 3]
        near = max(float(z.min()) - margin, 1e-3)
        far = float(z.max()) + margin
        if far <= near:
            raise ValueError(f"camera {c.name!r}: subject box lies behind the camera (z range {z.min():.3f}..{z.max():.3f})")
        out.append(replace(c, depth_range=(near, far)))
    return out


def materials_to_meta(materials: dict[str, MaterialSpec]) -> dict[str, dict]:
    return {k: asdict(v) for k, v in materials.items()}
