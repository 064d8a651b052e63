"""Objaverse-style object meshes for the ``pretrain`` phase, as :class:`MeshSpec` lists.

Two sources, one output (a list of MeshSpecs normalised into the [-1, 1]^3 cube):

- **A: a folder of meshes** (GLB/GLTF/OBJ/PLY, e.g. an Objaverse download) loaded with
  trimesh. Base colours, textures and UVs are kept where present; per-vertex/per-face
  colours are baked into a small texture so they survive the MeshSpec. A file that cannot
  be loaded, or is empty or degenerate, raises :class:`MeshSkipped` with the reason, which
  the render loop records in the manifest's ``skipped`` list instead of stopping.
- **B: procedural objects** (the default, so pretraining needs no download): compositions
  of primitives (boxes, spheres, cylinders, capsules, tori, cones) with random transforms
  and deformations (taper, twist, bend, noise), random colours and procedural patterns,
  some with thin parts (rods, plates) or articulated chains. Everything is drawn from a
  generator seeded by ``(seed, index)`` only, so any worker can make any index.

Settings: ``configs/objects/{name}.yaml`` (``procedural`` by default, documented there), read
into :class:`ObjectConfig` with ``mousefacelift.config.load_typed``; the file is the only
place their values are set.
"""
from __future__ import annotations

import colorsys
import logging
import math
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from mousefacelift.config import load_typed
from mousefacelift.framing import normalization
from mousefacelift.scene import MaterialSpec, MeshSpec
from synth.mouse.workers import SampleSkipped

log = logging.getLogger(__name__)

MESH_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply")
PRIMITIVES = ("box", "sphere", "cylinder", "capsule", "torus", "cone")
DEFORMATIONS = ("taper", "twist", "bend", "noise")


class MeshSkipped(SampleSkipped):
    """A mesh file that cannot be used; ``reason`` goes into the manifest's skipped list (a
    permanent skip: the render loop does not try the file again, see SampleSkipped)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class ObjectConfig:
    """Generator and loader settings; values and their meaning: configs/objects/procedural.yaml."""

    fit: float
    min_parts: int
    max_parts: int
    primitive_weights: dict[str, float]
    part_size: tuple[float, float]
    aspect: tuple[float, float]
    deform_probability: float
    taper: float
    twist_deg: float
    bend_deg: float
    noise_amplitude: float
    thin_probability: float
    thin_thickness: tuple[float, float]
    articulated_probability: float
    chain_segments: tuple[int, int]
    joint_deg: float
    max_edge_fraction: float
    pattern_weights: dict[str, float]
    palette_size: tuple[int, int]
    # Source A (mesh folder)
    up_axis: dict[str, str]
    max_faces: int
    max_meshes: int
    bake_texture_size: int
    default_color: tuple[float, float, float]

    def __post_init__(self):
        if not 0 < self.fit <= 1:
            raise ValueError(f"fit: expected a value in (0, 1], got {self.fit}")
        if not 1 <= self.min_parts <= self.max_parts:
            raise ValueError(f"expected 1 <= min_parts <= max_parts, got {self.min_parts}, {self.max_parts}")
        bad = sorted(set(self.primitive_weights) - set(PRIMITIVES))
        if bad or not any(v > 0 for v in self.primitive_weights.values()):
            raise ValueError(f"primitive_weights: keys must be among {PRIMITIVES} with a positive weight, got "
                             f"{self.primitive_weights}")
        bad = sorted(set(self.pattern_weights) - {"none", "noise", "patches", "agouti"})
        if bad:
            raise ValueError(f"pattern_weights: unknown patterns {bad}")
        for ext, axis in self.up_axis.items():
            if axis not in ("x", "y", "z"):
                raise ValueError(f"up_axis[{ext!r}]: expected x, y or z, got {axis!r}")


def object_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of object ``index``: a function of (seed, index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


# -- source B: procedural objects ----------------------------------------------------------
def _primitive(kind: str, max_edge: float) -> trimesh.Trimesh:
    """A unit-ish primitive centred at the origin, long axis along z (extent about 1)."""
    if kind == "box":
        m = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    elif kind == "sphere":
        m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    elif kind == "cylinder":
        m = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=32)
    elif kind == "capsule":
        m = trimesh.creation.capsule(height=0.6, radius=0.2, count=[16, 16])
        m.apply_translation(-m.bounds.mean(0))
    elif kind == "torus":
        m = trimesh.creation.torus(major_radius=0.36, minor_radius=0.12, major_sections=40, minor_sections=16)
    elif kind == "cone":
        m = trimesh.creation.cone(radius=0.5, height=1.0, sections=32)
        m.apply_translation(-m.bounds.mean(0))
    else:
        raise ValueError(f"unknown primitive {kind!r}; expected one of {PRIMITIVES}")
    v, f = trimesh.remesh.subdivide_to_size(m.vertices, m.faces, max_edge=max_edge, max_iter=8)
    return trimesh.Trimesh(v, f, process=False)


def _deform(v: np.ndarray, faces: np.ndarray, rng: np.random.Generator, cfg: ObjectConfig) -> tuple[np.ndarray, dict]:
    """Taper / twist / bend along the local z axis and smooth noise, each with some chance."""
    v = v.copy()
    info: dict[str, float] = {}
    half = max(float(np.abs(v[:, 2]).max()), 1e-6)
    zn = v[:, 2] / half
    if rng.random() < cfg.deform_probability:
        a = rng.uniform(-cfg.taper, cfg.taper)
        v[:, :2] *= np.clip(1 + a * zn, 0.2, None)[:, None]
        info["taper"] = round(a, 4)
    if rng.random() < cfg.deform_probability:
        tw = math.radians(rng.uniform(-cfg.twist_deg, cfg.twist_deg))
        ang = 0.5 * tw * zn
        c, s = np.cos(ang), np.sin(ang)
        v[:, 0], v[:, 1] = c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]
        info["twist_deg"] = round(math.degrees(tw), 2)
    if rng.random() < cfg.deform_probability:
        bend = math.radians(rng.uniform(-cfg.bend_deg, cfg.bend_deg))
        if abs(bend) > 1e-3:
            r = 2 * half / bend                      # radius of the arc the z axis is bent onto
            theta = v[:, 2] / r
            x = v[:, 0]
            v[:, 0] = r - (r - x) * np.cos(theta)
            v[:, 2] = (r - x) * np.sin(theta)
            info["bend_deg"] = round(math.degrees(bend), 2)
    if rng.random() < cfg.deform_probability:
        size = float(np.ptp(v, axis=0).max())
        amp = rng.uniform(0.2, 1.0) * cfg.noise_amplitude * size
        mesh = trimesh.Trimesh(v, faces, process=False)
        normals = mesh.vertex_normals
        disp = np.zeros(len(v))
        for _ in range(3):
            w = rng.normal(size=3) * rng.uniform(3, 9) / size
            disp += np.sin(v @ w + rng.uniform(0, 2 * math.pi)) / 3
        v = v + normals * (amp * disp)[:, None]
        info["noise"] = round(amp / size, 4)
    return v, info


def _random_material(rng: np.random.Generator, cfg: ObjectConfig) -> MaterialSpec:
    h, s, val = rng.random(), rng.uniform(0.0, 0.9), rng.uniform(0.15, 0.95)
    base = colorsys.hsv_to_rgb(h, s, val)
    h2 = (h + rng.uniform(0.2, 0.8)) % 1.0
    c2 = colorsys.hsv_to_rgb(h2, rng.uniform(0.0, 0.9), rng.uniform(0.1, 1.0))
    names = list(cfg.pattern_weights)
    w = np.array([cfg.pattern_weights[n] for n in names], dtype=float)
    pattern = names[int(rng.choice(len(names), p=w / w.sum()))]
    return MaterialSpec(base_color=tuple(float(x) for x in base), roughness=float(rng.uniform(0.15, 0.95)),
                        specular=float(rng.uniform(0.2, 0.7)), coat=float(rng.uniform(0, 0.6) if rng.random() < 0.2 else 0),
                        pattern=pattern, color2=tuple(float(x) for x in c2),
                        pattern_scale=float(rng.uniform(0.05, 0.4)), pattern_strength=float(rng.uniform(0.1, 0.6)),
                        coverage=float(rng.uniform(0.2, 0.6)))


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = [k for k, v in weights.items() if v > 0]
    w = np.array([weights[k] for k in names], dtype=float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _segment_transform(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rigid transform taking a z-aligned unit-length part centred at 0 onto segment a->b."""
    d = b - a
    length = float(np.linalg.norm(d))
    T = np.eye(4)
    T[:3, :3] = trimesh.geometry.align_vectors([0, 0, 1], d / length)[:3, :3]
    T[:3, 3] = (a + b) / 2
    return T


def procedural_object(index: int, seed: int = 0, cfg: ObjectConfig | None = None) -> tuple[list[MeshSpec], dict]:
    """Object ``index``: one MeshSpec (one region per part) normalised into the cube, plus a
    JSON-able description (parts, primitives, deformations, normalisation) for meta.json.
    ``cfg`` None = configs/objects/procedural.yaml."""
    cfg = cfg or load_typed(ObjectConfig, "objects", "procedural")
    rng = object_rng(seed, index)
    palette = [_random_material(rng, cfg) for _ in range(int(rng.integers(cfg.palette_size[0], cfg.palette_size[1] + 1)))]
    parts: list[tuple[np.ndarray, np.ndarray, int, dict]] = []   # vertices, faces, material index, info

    def add(mesh_v, mesh_f, info):
        parts.append((mesh_v, mesh_f, int(rng.integers(len(palette))), info))

    n_main = int(rng.integers(cfg.min_parts, cfg.max_parts + 1))
    for k in range(n_main):
        kind = _pick(rng, cfg.primitive_weights)
        size = rng.uniform(*cfg.part_size) * (1.0 if k == 0 else rng.uniform(0.4, 1.0))
        base = _primitive(kind, cfg.max_edge_fraction)
        stretch = np.exp(rng.uniform(math.log(cfg.aspect[0]), math.log(cfg.aspect[1]), size=3))
        v = base.vertices * stretch
        v, dinfo = _deform(v, base.faces, rng, cfg)
        v = v * size / max(float(np.ptp(v, axis=0).max()), 1e-9)
        R = Rotation.random(random_state=rng).as_matrix()
        v = v @ R.T
        if parts:   # attach to the surface of an earlier part so the object is one cluster
            pv = parts[int(rng.integers(len(parts)))][0]
            anchor = pv[int(rng.integers(len(pv)))]
            v = v + anchor + rng.normal(scale=0.05 * size, size=3)
        add(v, base.faces, {"primitive": kind, "size": round(size, 4), **dinfo})

    all_v = np.concatenate([p[0] for p in parts])
    extent = float(np.ptp(all_v, axis=0).max())
    if rng.random() < cfg.thin_probability:
        for _ in range(int(rng.integers(1, 4))):
            thick = rng.uniform(*cfg.thin_thickness) * extent
            length = rng.uniform(0.4, 1.0) * extent
            if rng.random() < 0.5:
                kind, base = "rod", _primitive("cylinder", cfg.max_edge_fraction)
                v = base.vertices * [thick, thick, length]
            else:
                kind, base = "plate", _primitive("box", cfg.max_edge_fraction)
                v = base.vertices * [rng.uniform(0.2, 0.6) * length, thick, length]
            anchor = all_v[int(rng.integers(len(all_v)))]
            direction = Rotation.random(random_state=rng).as_matrix()[:, 2]
            T = _segment_transform(anchor, anchor + direction * length)
            v = v @ T[:3, :3].T + T[:3, 3]
            add(v, base.faces, {"primitive": kind, "thickness": round(thick / extent, 4)})
    if rng.random() < cfg.articulated_probability:
        n_seg = int(rng.integers(cfg.chain_segments[0], cfg.chain_segments[1] + 1))
        joint = all_v[int(rng.integers(len(all_v)))]
        direction = Rotation.random(random_state=rng).as_matrix()[:, 2]
        radius = rng.uniform(0.03, 0.08) * extent
        angles = []
        for _ in range(n_seg):
            seg_len = rng.uniform(0.2, 0.45) * extent
            nxt = joint + direction * seg_len
            base = trimesh.creation.capsule(height=seg_len, radius=radius, count=[12, 12])
            base.apply_translation(-base.bounds.mean(0))
            T = _segment_transform(joint, nxt)
            v = base.vertices @ T[:3, :3].T + T[:3, 3]
            add(v, base.faces, {"primitive": "chain_segment"})
            ang = math.radians(rng.uniform(-cfg.joint_deg, cfg.joint_deg))
            axis = np.cross(direction, rng.normal(size=3))
            axis /= max(np.linalg.norm(axis), 1e-9)
            direction = Rotation.from_rotvec(axis * ang).apply(direction)
            angles.append(round(math.degrees(ang), 2))
            joint = nxt
        parts[-1][3]["chain_joint_deg"] = angles

    verts, faces, region, offset = [], [], [], 0
    for k, (v, f, _, _) in enumerate(parts):
        verts.append(v)
        faces.append(f + offset)
        region.append(np.full(len(f), k, dtype=np.int32))
        offset += len(v)
    V = np.concatenate(verts)
    center, scale = normalization(V.min(0), V.max(0), cfg.fit)
    V = (V - center) * scale
    regions = [f"part{k:02d}" for k in range(len(parts))]
    mesh = MeshSpec(vertices=V.astype(np.float32), faces=np.concatenate(faces).astype(np.int32),
                    face_region=np.concatenate(region), regions=regions,
                    materials={regions[k]: palette[p[2]] for k, p in enumerate(parts)}, smooth=True,
                    name=f"object_{index:09d}")
    mesh.validate(f"procedural object {index}")
    info = {"generator": "procedural", "index": int(index), "seed": int(seed),
            "parts": [p[3] for p in parts], "num_faces": int(len(mesh.faces)),
            "normalization": {"center": center.tolist(), "scale": float(scale)}}
    return [mesh], info


# -- source A: mesh files -----------------------------------------------------------------
def find_mesh_files(mesh_dir: str | Path) -> list[Path]:
    """All mesh files under ``mesh_dir`` (recursive), sorted, so index i is stable."""
    root = Path(mesh_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"mesh folder not found: {root} (expected a folder of {', '.join(MESH_EXTENSIONS)} files)")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS)


def _up_rotation(axis: str) -> np.ndarray:
    """Rotation that takes the file's up axis to world +Z."""
    if axis == "z":
        return np.eye(3)
    if axis == "y":
        return np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])    # +Y -> +Z, +Z -> -Y
    return np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])        # +X -> +Z


def _clip_color(c) -> tuple[float, float, float]:
    c = np.asarray(c, dtype=np.float64).reshape(-1)[:3]
    if c.max() > 1.0:
        c = c / 255.0
    return tuple(float(x) for x in np.clip(c, 0, 1))


def _image_array(img) -> np.ndarray | None:
    if img is None:
        return None
    try:
        arr = np.asarray(img.convert("RGBA"))
    except Exception:
        return None
    return arr if arr.ndim == 3 and arr.size else None


def _visual_to_appearance(geom: trimesh.Trimesh, cfg: ObjectConfig) -> tuple[MaterialSpec, np.ndarray | None, np.ndarray | None]:
    """MaterialSpec, per-corner UVs and texture for one geometry (kept where present)."""
    visual = geom.visual
    faces = np.asarray(geom.faces)
    if isinstance(visual, trimesh.visual.texture.TextureVisuals):
        mat = visual.material
        base, rough, tex = cfg.default_color, 0.6, None
        if isinstance(mat, trimesh.visual.material.PBRMaterial):
            if mat.baseColorFactor is not None:
                base = _clip_color(mat.baseColorFactor)
            if mat.roughnessFactor is not None:
                rough = float(np.clip(mat.roughnessFactor, 0, 1))
            tex = _image_array(mat.baseColorTexture)
        elif mat is not None:
            if getattr(mat, "diffuse", None) is not None:
                base = _clip_color(mat.diffuse)
            tex = _image_array(getattr(mat, "image", None))
        uv = None
        if tex is not None and visual.uv is not None and len(visual.uv) == len(geom.vertices):
            uv = np.asarray(visual.uv, dtype=np.float32)[faces]
            if tex is not None and getattr(mat, "image", None) is not None and not isinstance(mat, trimesh.visual.material.PBRMaterial):
                base = (1.0, 1.0, 1.0) if np.allclose(base, cfg.default_color) else base
        else:
            tex = None
        return MaterialSpec(base_color=base, roughness=rough), uv, tex
    if isinstance(visual, trimesh.visual.color.ColorVisuals) and visual.kind in ("face", "vertex"):
        fc = np.asarray(visual.face_colors, dtype=np.float64)[:, :3] / 255.0   # vertex colours averaged per face
        if np.ptp(fc, axis=0).max() < 1e-3:
            return MaterialSpec(base_color=tuple(float(x) for x in fc[0])), None, None
        uv, tex = _bake_face_colors(fc, cfg.bake_texture_size)
        return MaterialSpec(base_color=(1.0, 1.0, 1.0)), uv, tex
    return MaterialSpec(base_color=cfg.default_color), None, None


def _bake_face_colors(face_colors: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """One texel per face (shared when there are more faces than texels), all three corners
    mapped to its centre: per-face colour survives as an ordinary texture."""
    n = len(face_colors)
    side = int(min(max_side, max(1, math.ceil(math.sqrt(n)))))
    slot = np.arange(n) % (side * side)
    tex = np.zeros((side * side, 4), dtype=np.uint8)
    tex[slot, :3] = np.rint(face_colors * 255).astype(np.uint8)
    tex[:, 3] = 255
    row, col = slot // side, slot % side
    u = (col + 0.5) / side
    v = 1.0 - (row + 0.5) / side                # texture row 0 is the top (v = 1)
    uv = np.repeat(np.stack([u, v], -1)[:, None, :], 3, axis=1).astype(np.float32)
    return uv, tex.reshape(side, side, 4)


def load_mesh_file(path: str | Path, cfg: ObjectConfig | None = None) -> tuple[list[MeshSpec], dict]:
    """One mesh file -> MeshSpecs normalised jointly into the cube, plus meta info.

    Raises :class:`MeshSkipped` (with the reason) for anything that cannot be rendered.
    ``cfg`` None = configs/objects/procedural.yaml.
    """
    cfg = cfg or load_typed(ObjectConfig, "objects", "procedural")
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MESH_EXTENSIONS:
        raise MeshSkipped(path, f"unsupported extension {ext!r}; expected one of {MESH_EXTENSIONS}")
    try:
        loaded = trimesh.load(str(path), force="scene", process=False)
    except Exception as e:   # trimesh raises many unrelated types for bad files
        raise MeshSkipped(path, f"cannot be loaded by trimesh ({type(e).__name__}: {e})") from None
    try:
        geoms = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
    except Exception as e:
        raise MeshSkipped(path, f"scene graph cannot be resolved ({type(e).__name__}: {e})") from None
    geoms = [g for g in geoms if len(g.faces) > 0 and len(g.vertices) >= 3]
    if not geoms:
        raise MeshSkipped(path, "empty: no triangle faces")
    total_faces = sum(len(g.faces) for g in geoms)
    if total_faces > cfg.max_faces:
        raise MeshSkipped(path, f"too large: {total_faces} faces > max_faces {cfg.max_faces}")
    R_up = _up_rotation(cfg.up_axis.get(ext, "z"))
    prepared = []
    for g in geoms:
        v = np.asarray(g.vertices, dtype=np.float64)
        f = np.asarray(g.faces, dtype=np.int64)
        if not np.isfinite(v).all():
            raise MeshSkipped(path, "degenerate: non-finite vertex coordinates")
        if f.min() < 0 or f.max() >= len(v):
            raise MeshSkipped(path, f"corrupt: face indices out of range [0, {len(v) - 1}]")
        prepared.append((g, v @ R_up.T, f))
    allv = np.concatenate([p[1] for p in prepared])
    extent = float(np.ptp(allv, axis=0).max())
    if not extent > 1e-12:
        raise MeshSkipped(path, "degenerate: zero extent (all vertices coincide)")
    area = sum(float(trimesh.triangles.area(v[f]).sum()) for _, v, f in prepared)
    if not area > 1e-9 * extent * extent:
        raise MeshSkipped(path, f"degenerate: total surface area {area:.3g} is zero relative to extent {extent:.3g}")
    center, scale = normalization(allv.min(0), allv.max(0), cfg.fit)
    meshes: list[MeshSpec] = []
    for k, (g, v, f) in enumerate(prepared):
        if k >= cfg.max_meshes:
            break
        mat, uv, tex = _visual_to_appearance(g, cfg)
        m = MeshSpec(vertices=((v - center) * scale).astype(np.float32), faces=f.astype(np.int32),
                     face_region=np.zeros(len(f), dtype=np.int32), regions=["surface"], materials={"surface": mat},
                     uv=uv, texture=tex, smooth=True, name=f"{path.stem}_{k:02d}")
        meshes.append(m)
    if len(prepared) > cfg.max_meshes:   # merge the rest into one untextured mesh with their mean colour
        rest = prepared[cfg.max_meshes:]
        vs, fs, off = [], [], 0
        for _, v, f in rest:
            vs.append(v)
            fs.append(f + off)
            off += len(v)
        meshes.append(MeshSpec(vertices=((np.concatenate(vs) - center) * scale).astype(np.float32),
                               faces=np.concatenate(fs).astype(np.int32),
                               face_region=np.zeros(sum(len(f) for f in fs), dtype=np.int32), regions=["surface"],
                               materials={"surface": MaterialSpec(base_color=cfg.default_color)}, name=f"{path.stem}_rest"))
    for m in meshes:
        try:
            m.validate(str(path))
        except ValueError as e:
            raise MeshSkipped(path, f"invalid after loading: {e}") from None
    info = {"generator": "mesh_file", "path": str(path), "format": ext.lstrip("."), "num_meshes": len(meshes),
            "num_faces": int(total_faces), "textured": int(sum(m.texture is not None for m in meshes)),
            "up_axis": cfg.up_axis.get(ext, "z"),
            "normalization": {"center": center.tolist(), "scale": float(scale), "up_rotation": R_up.tolist()}}
    return meshes, info
