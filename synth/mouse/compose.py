"""Pose + coat + lights + rig -> SceneSpec for one pose index (no Blender needed).

Determinism: everything about sample ``index`` is drawn from ``SeedSequence([seed, index])``
alone (the pose sampler derives its own stream from the same pair), so the same index gives
the same scene whatever batch, worker, shard split or cluster job it is composed in. The
sequence is split into independent child streams (appearance, lighting, rig, exposure, arena,
input_look), so
adding a random draw to one part never shifts the others (``spawn`` children do not depend on
how many are spawned, so appending a stream keeps the earlier ones).

Normalisation (docs/architecture.md §3, :mod:`mousefacelift.framing`): the box of the posed body
WITHOUT THE TAIL is centred at the origin and its longest half-extent scaled to
``cfg.normalize.fill``. ``meta["normalization"] = {"center", "scale", "rule", "body_box"}``
records world = (model - center) * scale, and ``meta["mm_per_unit"] = model.mm_per_unit / scale``
keeps metric size.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from mousefacelift.cameras import InputViews, TargetLayout, look_at, make_rig, orbit_angles
from mousefacelift.config import to_container
from mousefacelift.labcamera import input_look_config, input_view_looks
from mousefacelift.framing import body_box, framed_intrinsics, normalization, sample_distances
from mousefacelift.scene import ArenaSpec, ExposureSpec, MaterialSpec, MeshSpec, SceneSpec, depth_range_for, surface_flow
from mousefacelift.shards import SCHEMA
from synth.mouse.appearance import AppearanceSampler
from synth.mouse.dataset import RenderDataset, render_dataset
from synth.mouse.lighting import LightingSampler
from synth.mouse.meta import json_safe

# Child streams of SeedSequence([seed, index]); the order is part of the data definition.
STREAMS = ("appearance", "lighting", "rig", "exposure", "arena", "input_look")   # appended streams leave earlier draws as they were


def sample_key(index: int, source: str = "mouse") -> str:
    return f"{source}_{int(index):09d}"


def index_rng(seed: int, index: int) -> dict[str, np.random.Generator]:
    """Independent generators for each part of sample ``index`` (see module docstring)."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(len(STREAMS))
    return {name: np.random.default_rng(ss) for name, ss in zip(STREAMS, children)}


def exposure_spec(cfg: dict | None, rng: np.random.Generator, where: str = "exposure") -> ExposureSpec | None:
    """The render config's ``exposure`` section -> this sample's ExposureSpec (the offset drawn
    uniformly from ``offset_ev``); None when the section is absent (plain sRGB, exposure 1)."""
    from mousefacelift.config import ConfigError

    if cfg is None:
        return None
    try:
        lo, hi = (float(x) for x in cfg["offset_ev"])
        spec = ExposureSpec(view_transform=str(cfg["view_transform"]), key=float(cfg["key"]),
                            offset_ev=float(rng.uniform(lo, hi)) if hi > lo else lo,
                            min_ev=float(cfg["min_ev"]), max_ev=float(cfg["max_ev"]),
                            fixed_ev=None if cfg.get("fixed_ev") is None else float(cfg["fixed_ev"]))
        if hi < lo:
            raise ValueError(f"{where}.offset_ev: high < low: {[lo, hi]}")
        spec.validate(where)
    except KeyError as e:
        raise ConfigError(f"{where}: missing key {e} (see configs/render.yaml)") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    return spec


def arena_spec(cfg: dict | None, rng: np.random.Generator, floor_z: float, n_views: int,
               where: str = "arena") -> tuple[ArenaSpec | None, list[int]]:
    """The render config's ``arena`` section -> (this sample's ArenaSpec, its view indices);
    (None, []) when absent or not enabled. The floor lies at ``floor_z`` (the posed body's
    lowest point), the subject somewhere near the middle."""
    from mousefacelift.config import ConfigError

    if not cfg or not cfg.get("enabled"):
        return None, []
    try:
        views = [int(v) for v in cfg["views"]]
        bad = [v for v in views if not 0 <= v < n_views]
        if bad:
            raise ValueError(f"{where}.views: {bad} are not view indices of this rig (0..{n_views - 1})")
        u = lambda key: float(rng.uniform(*(float(x) for x in cfg[key])))   # noqa: E731
        half = u("half_size")
        reach = max(half - 0.5, 0.0) * float(cfg["off_centre"])
        colors = [tuple(float(c) for c in col) for col in cfg["bedding_colors"]]
        spec = ArenaSpec(floor_z=float(floor_z), half_size=half, wall_height=u("wall_height"),
                         center=tuple(float(x) for x in rng.uniform(-reach, reach, 2)),
                         rotation_deg=float(rng.uniform(0.0, 90.0)),
                         bedding_color=colors[int(rng.integers(len(colors)))], bedding_scale=u("bedding_scale"),
                         wall_roughness=u("wall_roughness"))
        spec.validate(where)
    except KeyError as e:
        raise ConfigError(f"{where}: missing key {e} (see configs/render.yaml)") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    return spec, views


def rig_cameras(rig: dict, size: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
                margin: float, body: tuple[np.ndarray, np.ndarray] | None = None) -> list:
    """The render config's ``rig`` section as cameras of ``size`` pixels, depth ranges fitted to
    the subject box [lo, hi] plus ``margin``: one framing for every rendered source.

    With ``rig.distance: [near, far]`` each view keeps the rig's direction but sits at its own
    log-uniform distance (world units = body lengths) with the focal length at which the body
    box ``body`` (default [lo, hi]) spans ``rig.view_fill`` of the image
    (:func:`mousefacelift.framing.framed_intrinsics`); without it the rig's fixed radius and
    field of view are used (FaceLift's rigs). These draws come after the rig's own, so rigs
    without ``distance`` draw exactly as before.

    The ``mvinput`` rig frames only its view 0 (the input) this way; its targets keep the
    layout's fixed radius and field of view, the cameras the diffusion pipeline assumes."""
    name = str(rig["name"])
    extra = mvinput_sections(rig) if is_mvinput(name) else {}
    cams = make_rig(name, size=size, radius=float(rig["radius"]), fov_deg=float(rig["fov_deg"]), seed=rng,
                    min_elevation_deg=float(rig["min_elevation_deg"]), ring_elevation_deg=float(rig["ring_elevation_deg"]),
                    **extra)
    if rig.get("distance") is not None:
        near, far = (float(x) for x in rig["distance"])
        blo, bhi = body if body is not None else (lo, hi)
        n_framed = 1 if extra else len(cams)
        dists = sample_distances(rng, n_framed, near, far)
        framed = []
        for cam, dist in zip(cams[:n_framed], dists):
            eye = cam.center / np.linalg.norm(cam.center) * dist
            if extra:   # the input keeps its orientation (orbit_w2c: defined at the poles too)
                w2c = cam.w2c.copy()
                w2c[:3, 3] = -w2c[:3, :3] @ eye
            else:
                w2c = look_at(eye)
            K = framed_intrinsics(w2c, blo, bhi, float(rig["view_fill"]), cam.width, cam.height)
            framed.append(replace(cam, K=K, w2c=w2c, name=f"{cam.name}_d{dist:.2f}"))
        cams = framed + list(cams[n_framed:])
    return depth_range_for(cams, lo, hi, margin=margin)


def is_mvinput(rig_name: str) -> bool:
    """Whether a rig spec is the multi-view-diffusion rig (input view + relative targets)."""
    return str(rig_name).strip() == "mvinput"


def mvinput_sections(rig: dict, where: str = "rig") -> dict:
    """The ``input`` and ``targets`` sections of an ``mvinput`` rig config, typed and checked:
    ``make_rig`` keyword arguments. Bad values raise ConfigError naming the key."""
    from mousefacelift.config import ConfigError, typed

    for key in ("input", "targets"):
        if not isinstance(rig.get(key), dict):
            raise ConfigError(f"{where}.{key}: the mvinput rig needs this section (see configs/rig/mvinput.yaml), "
                              f"got {rig.get(key)!r}")
    return {"input_views": typed(InputViews, rig["input"], f"{where}.input"),
            "target_layout": typed(TargetLayout, rig["targets"], f"{where}.targets")}


def rig_views_meta(rig: dict, cams: list) -> dict | None:
    """What identifies the views of an ``mvinput`` sample (``meta.rig_views``): view 0 is the
    input with its drawn direction, views 1..N the targets with their layout; None otherwise."""
    if not is_mvinput(str(rig["name"])):
        return None
    layout = mvinput_sections(rig)["target_layout"]
    az, el, dist = orbit_angles(cams[0])
    return {"input": 0, "targets": list(range(1, len(cams))),
            "input_azimuth_deg": az, "input_elevation_deg": el, "input_distance": dist,
            "input_fov_deg": float(np.degrees(2 * np.arctan(0.5 * cams[0].width / cams[0].fx))),
            "target_layout": json_safe(layout)}


def body_keep(model) -> np.ndarray | None:
    """Per-vertex mask of the body without the tail (the framing rule's body), or None when the
    model has no tail region."""
    regions = list(model.region_names)
    if "tail_skin" not in regions:
        return None
    return model.region_of_vertices() != regions.index("tail_skin")


HAIR_FLOW_DOWN = 0.5    # hair runs nose -> tail and this much downwards (per unit of length)


def hair_coordinates(rest_vertices: np.ndarray, scale: float) -> np.ndarray:
    """Fur texture coordinates (MeshSpec.hair): the rest pose in a frame whose +X is the hair
    direction, towards the tail (-X in the project's body frame, the snout at +X) and down
    the flanks and legs (-Z), times the sample's normalisation ``scale`` (world units). On the
    surface the hair runs along the gradient of the first coordinate; the coordinates ride
    on the body, so the clumps move with it through any pose."""
    d = np.array([-1.0, 0.0, -HAIR_FLOW_DOWN])
    d /= np.linalg.norm(d)
    side = np.array([0.0, 1.0, 0.0])
    frame = np.stack([d, side, np.cross(d, side)])
    return (np.asarray(rest_vertices, np.float64) @ frame.T * float(scale)).astype(np.float32)


# -- the composer --------------------------------------------------------------------------
class MouseComposer:
    """Holds what is expensive to build once per worker (body model, pose sampler, HDRI pool)
    and composes any pose index into a SceneSpec."""

    def __init__(self, model, cfg: Any, dataset: RenderDataset | None = None):
        from mousefacelift.body import PoseSampler

        self.model = model
        self.plain = to_container(cfg)
        self.dataset = dataset or render_dataset(self.plain)
        self.config_hash = self.dataset.config_hash
        self.sampler = PoseSampler(model, self.plain["pose"])
        self.size = self.dataset.image_size
        self.coats = AppearanceSampler(self.plain["appearance"])
        self.lights = LightingSampler(self.plain["lighting"])
        self.body_keep = body_keep(model)
        self.input_look = input_look_config(self.plain.get("input_look")) if is_mvinput(self.plain["rig"]["name"]) else None

    def compose(self, index: int, seed: int | None = None) -> SceneSpec:
        index = int(index)
        if index < 0:
            raise ValueError(f"pose index must be >= 0, got {index}")
        seed = int(self.plain["seed"] if seed is None else seed)
        model, plain = self.model, self.plain
        rngs = index_rng(seed, index)

        batch = self.sampler.sample(indices=np.array([index]), seed=seed)
        with torch.no_grad():
            out = model.pose(batch.params)
        verts = out.vertices[0].detach().cpu().numpy().astype(np.float64)
        joints = out.joints[0].detach().cpu().numpy().astype(np.float64)
        kps = out.keypoints[0].detach().cpu().numpy().astype(np.float64)
        blo, bhi = body_box(verts, self.body_keep)
        center, scale = normalization(blo, bhi, float(plain["normalize"]["fill"]))
        to_world = lambda x: ((x - center) * scale).astype(np.float32)   # noqa: E731
        wverts = to_world(verts)
        body = ((blo - center) * scale, (bhi - center) * scale)

        materials, appearance_meta = self._coat(rngs["appearance"], list(model.region_names))
        environment, area_lights, lighting_meta = self.lights.sample(rngs["lighting"])

        rig = plain["rig"]
        cams = rig_cameras(rig, self.size, rngs["rig"], wverts.min(0), wverts.max(0), float(plain["depth_margin"]),
                           body=body)

        uv = None
        if getattr(model, "uvs", None) is not None and getattr(model, "faces_uv", None) is not None:
            uv = np.asarray(model.uvs, np.float32)[np.asarray(model.faces_uv)]
        faces = np.asarray(model.faces)
        hair = hair_coordinates(model.rest_vertices, scale)
        mesh = MeshSpec(vertices=wverts, faces=faces, face_region=np.asarray(model.face_regions),
                        regions=list(model.region_names), materials=materials, uv=uv, name="mouse",
                        hair=hair, flow=surface_flow(wverts, faces, hair[:, 0]))

        arena, arena_views = arena_spec(plain.get("arena"), rngs["arena"], float(wverts[:, 2].min()), len(cams))
        J, P = len(joints), len(kps)
        pose_meta = {"family": str(batch.family[0]), "attempts": int(batch.attempts[0]),
                     "forced": bool(batch.forced[0]), "params_layout": {
                         k: [s.start, s.stop] for k, s in type(batch.params).layout(model).items()}}
        source = str(plain["source"])
        gen = plain["generator"]
        meta = {
            "schema": SCHEMA, "source": source, "index": index, "seed": seed,
            "seed_derivation": "numpy SeedSequence([seed, index]).spawn(6) -> appearance, lighting, rig, exposure, arena, "
                               "input_look; "
                               "pose: PoseSampler.sample(indices=[index], seed=seed)",
            "generator": {"name": gen["name"], "version": gen["version"]},
            "config_hash": self.config_hash,
            "body_model": getattr(model, "name", "?"),
            "mm_per_unit": float(model.mm_per_unit) / scale,
            "normalization": {"center": [float(x) for x in center], "scale": float(scale),
                              "rule": "body box without the tail: centred, longest half-extent = normalize.fill",
                              "body_box": [[float(x) for x in body[0]], [float(x) for x in body[1]]]},
            "pose": pose_meta,
            "appearance": json_safe(appearance_meta),
            "lighting": json_safe(lighting_meta),
            "rig": str(rig["name"]),
            **({"rig_views": views} if (views := rig_views_meta(rig, cams)) is not None else {}),
            **({"arena": {"views": arena_views, **json_safe(arena)}} if arena is not None else {}),
            "joints_layout": {"joints": [0, J], "keypoints": [J, J + P],
                              "keypoint_names": list(getattr(model, "keypoint_names", [])),
                              "units": "world (normalised)"},
        }
        if self.input_look is not None:     # drawn here, applied to view 0's colour after rendering (workers)
            meta["lab_camera"] = input_view_looks(self.input_look, rngs["input_look"], views=(0,))[1]
        scene = SceneSpec(meshes=[mesh], cameras=cams, environment=environment, area_lights=list(area_lights),
                          exposure=exposure_spec(plain.get("exposure"), rngs["exposure"]), arena=arena,
                          arena_views=arena_views, meta=meta, arrays={"joints": np.concatenate([to_world(joints), to_world(kps)]),
                                             "pose": np.asarray(batch.params.to_array()[0], np.float32)},
                          key=sample_key(index, source))
        return scene.validate()

    def _coat(self, rng: np.random.Generator, regions: list[str]) -> tuple[dict[str, MaterialSpec], dict]:
        """A material for every region of the body model (a model with a region the coat
        sampler does not cover fails clearly)."""
        materials, meta = self.coats.sample(rng)
        missing = [r for r in regions if r not in materials]
        if missing:
            raise ValueError(f"appearance: no material for body regions {missing} (the coat sampler covers "
                             f"{sorted(materials)})")
        return {r: materials[r] for r in regions}, meta
