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
    strands: float = 0.0                   # bump strength of the hair-clump relief (0 = smooth)
    strand_width: float = 0.012            # clump width, world units
    strand_length: float = 6.0             # clump length / width along the flow
    strand_color: float = 0.0              # +- colour variation between clumps
    anisotropy: float = 0.0                # specular anisotropy along the flow

    def validate(self, where: str) -> None:
        for name in ("base_color", "sheen_tint", "color2"):
            c = getattr(self, name)
            if len(c) != 3 or not all(0.0 <= float(x) <= 1.0 for x in c):
                raise ValueError(f"{where}.{name}: expected 3 values in [0, 1], got {c}")
        for name in ("roughness", "sheen", "specular", "subsurface", "coat", "pattern_strength", "coverage",
                     "strands", "strand_color", "anisotropy"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{where}.{name}: expected a value in [0, 1], got {v}")
        if self.pattern not in ("none", "noise", "patches", "agouti"):
            raise ValueError(f"{where}.pattern: expected none/noise/patches/agouti, got {self.pattern!r}")
        if self.pattern_scale <= 0:
            raise ValueError(f"{where}.pattern_scale: expected > 0, got {self.pattern_scale}")
        if self.strand_width <= 0 or self.strand_length < 1:
            raise ValueError(f"{where}: expected strand_width > 0 and strand_length >= 1, got "
                             f"{self.strand_width}, {self.strand_length}")


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
class ExposureSpec:
    """How the renderer turns linear light into 8-bit colour, like a camera.

    ``view_transform`` "agx" develops every view with AgX (highlights roll off instead of
    clipping; :func:`blender.conventions.agx_display`) after multiplying by one exposure per
    sample, metered by incident light (:func:`blender.conventions.metered_exposure`: a surface
    of albedo 1 under the subject's albedo-weighted mean light lands at linear ``key``),
    plus ``offset_ev`` stops (drawn per sample), limited to [``min_ev``, ``max_ev``]. One
    exposure for all views keeps a surface point's colour the same in every view.
    "standard" is the plain conversion (exposure 1, values above 1 clip). ``fixed_ev`` set:
    no metering, the exposure is 2^``fixed_ev`` (a camera on manual exposure; benchmarks
    develop renders of a subset of views with the full set's exposure this way).
    The renderer records what it did in the scene's ``meta["exposure"]``.
    """

    view_transform: str = "agx"
    key: float = 0.5
    offset_ev: float = 0.0
    min_ev: float = -8.0
    max_ev: float = 8.0
    fixed_ev: float | None = None

    def validate(self, where: str = "exposure") -> None:
        if self.view_transform not in ("standard", "agx"):
            raise ValueError(f"{where}.view_transform: expected 'standard' or 'agx', got {self.view_transform!r}")
        if not float(self.key) > 0:
            raise ValueError(f"{where}.key: expected > 0, got {self.key}")
        if not float(self.min_ev) <= float(self.max_ev):
            raise ValueError(f"{where}: min_ev {self.min_ev} > max_ev {self.max_ev}")
        if not np.isfinite(float(self.offset_ev)):
            raise ValueError(f"{where}.offset_ev: expected a finite number of stops, got {self.offset_ev}")


@dataclass
class ArenaSpec:
    """Lab surroundings for extra copies of some views (``SceneSpec.arena_views``): a floor of
    bedding at height ``floor_z`` under the subject and four clear acrylic walls (a square of
    half-size ``half_size`` centred at ``center`` [x, y], turned ``rotation_deg`` about Z,
    ``wall_height`` high). The clean views are unchanged; the copies show the arena and the
    environment behind it, with no alpha. World units."""

    floor_z: float
    center: tuple[float, float] = (0.0, 0.0)
    half_size: float = 2.0
    rotation_deg: float = 0.0
    wall_height: float = 1.2
    bedding_color: tuple[float, float, float] = (0.55, 0.42, 0.28)
    bedding_scale: float = 0.04            # size of a bedding chip
    wall_roughness: float = 0.03

    def validate(self, where: str = "arena") -> None:
        if not (self.half_size > 0 and self.wall_height > 0 and self.bedding_scale > 0 and 0 <= self.wall_roughness <= 1):
            raise ValueError(f"{where}: expected half_size, wall_height, bedding_scale > 0 and wall_roughness in "
                             f"[0, 1], got {self.half_size}, {self.wall_height}, {self.bedding_scale}, {self.wall_roughness}")
        if len(self.bedding_color) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.bedding_color):
            raise ValueError(f"{where}.bedding_color: expected 3 values in [0, 1], got {self.bedding_color}")


@dataclass
class MeshSpec:
    """A triangle mesh in world units with per-face region labels.

    ``uv`` (optional) holds per-corner texture coordinates [F, 3, 2]. ``regions`` names the
    region of each label; ``face_region`` [F] indexes into it; ``materials`` maps every name
    in ``regions`` to its :class:`MaterialSpec`. ``texture`` (optional) is an RGB(A) uint8
    image sampled through ``uv`` and multiplied with the base colour (objects from files).
    ``hair`` (optional) [N, 3] are the fur's texture coordinates (world units, +X along the
    hair), fixed on the body so that the clumps move with it; ``flow`` (optional) [N, 3] is the
    hair direction at each vertex of the posed mesh (unit tangents, zero where undefined:
    :func:`surface_flow` of ``hair[:, 0]``), the fur's anisotropy tangent.
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
    flow: np.ndarray | None = None
    hair: np.ndarray | None = None

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
        for name in ("flow", "hair"):
            x = getattr(self, name)
            if x is not None and (np.asarray(x).shape != v.shape or not np.isfinite(x).all()):
                raise ValueError(f"{where}.{name}: expected finite per-vertex [{len(v)}, 3] values, got "
                                 f"{np.asarray(x).shape}")
        if self.uv is not None and np.asarray(self.uv).shape != (len(f), 3, 2):
            raise ValueError(f"{where}.uv: expected per-corner [{len(f)}, 3, 2], got {np.asarray(self.uv).shape}")


@dataclass
class SceneSpec:
    """One render job: meshes, lights and the cameras to render them from.

    ``arena_views`` are rendered a second time inside ``arena`` (floor, walls, environment
    visible); the renderer adds them to ``arrays["arena_rgb"]`` (uint8 [len(arena_views), H, W, 3],
    same exposure as the clean views), the clean views stay as they are.
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
    exposure: ExposureSpec | None = None    # None: plain sRGB at exposure 1 (no metering)
    arena: ArenaSpec | None = None          # lab surroundings for the views in arena_views
    arena_views: list[int] = field(default_factory=list)   # rendered again inside the arena -> arrays["arena_rgb"]
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
        if self.exposure is not None:
            self.exposure.validate(f"{where}.exposure")
        if self.arena_views:
            if self.arena is None:
                raise ValueError(f"{where}.arena_views: {self.arena_views} given without an arena")
            self.arena.validate(f"{where}.arena")
            bad = [v for v in self.arena_views if not 0 <= int(v) < len(self.cameras)]
            if bad:
                raise ValueError(f"{where}.arena_views: {bad} are not view indices (0..{len(self.cameras) - 1})")
        if "." in self.key:
            raise ValueError(f"{where}: keys may not contain dots (WebDataset splits at the first dot)")
        return self

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        allv = np.concatenate([np.asarray(m.vertices) for m in self.meshes])
        return allv.min(0), allv.max(0)


def surface_flow(vertices: np.ndarray, faces: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Per-vertex unit direction in which the scalar ``field`` [N] increases along the surface
    (zero where it is flat): the area-weighted mean of the per-triangle gradients, each the
    in-plane vector g with g.(p1-p0) = f1-f0 and g.(p2-p0) = f2-f0.

    With ``field`` defined on the rest pose (e.g. nose-to-tail and downwards for hair) the
    direction follows the surface through any pose."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    s = np.asarray(field, np.float64)
    e1, e2 = v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]
    d1, d2 = s[f[:, 1]] - s[f[:, 0]], s[f[:, 2]] - s[f[:, 0]]
    a, b, c = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    det = a * c - b * b
    ok = det > 1e-20
    det = np.where(ok, det, 1.0)
    x, y = (c * d1 - b * d2) / det, (a * d2 - b * d1) / det
    area2 = np.sqrt(np.maximum(det, 0.0))                  # |e1 x e2| = twice the triangle area
    g = (x[:, None] * e1 + y[:, None] * e2) * (area2 * ok)[:, None]
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, f[:, k], g)
    n = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(n > 1e-12, out / np.maximum(n, 1e-12), 0.0).astype(np.float32)


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
