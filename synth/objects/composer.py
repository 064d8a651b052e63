"""Object index -> SceneSpec: the object source plugged into the mouse render's orchestration.

``configs/objects/render.yaml`` names this class as ``synth.render_objects:ObjectComposer``
(that string is part of the dataset config, so the command module re-exports it under that
name). Objects get the mouse's rig config, HDR lighting (:class:`LightingSampler`), Blender
backend and shard machinery. Object ``i`` is procedural object ``i`` (seeded by (seed, i))
or the i-th file of the sorted mesh folder.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mousefacelift.config import config_hash, load_typed, to_container
from mousefacelift.scene import SceneSpec
from mousefacelift.shards import SCHEMA
from synth.mouse.compose import rig_cameras, sample_key
from synth.mouse.dataset import RenderDataset, render_dataset
from synth.mouse.lighting import LightingSampler
from synth.mouse.meta import json_safe
from synth.objects.generate import MeshSkipped, ObjectConfig, find_mesh_files, load_mesh_file, procedural_object

STREAMS = ("object", "lighting", "rig")


class ObjectComposer:
    """index -> SceneSpec of one object (procedural, or the index-th file of a mesh folder),
    lit and framed like the mouse (same rig config and lighting sampler)."""

    def __init__(self, cfg: Any, dataset: RenderDataset | None = None):
        self.plain = to_container(cfg)
        ocfg = self.plain["objects"]
        self.objects = load_typed(ObjectConfig, "objects", str(ocfg["config"]), ocfg["overrides"])
        self.mesh_dir = ocfg["mesh_dir"]
        self.files = find_mesh_files(Path(self.mesh_dir).expanduser()) if self.mesh_dir else None
        if self.files is not None and not self.files:
            raise ValueError(f"mesh folder {self.mesh_dir} holds no .glb/.gltf/.obj/.ply files")
        self.dataset = dataset or render_dataset(self.plain)
        hashed = {**self.dataset.config, "objects_resolved": asdict(self.objects)}
        if self.files is not None:   # the data depends on which files are there
            hashed["mesh_files"] = config_hash([str(f.relative_to(Path(self.mesh_dir).expanduser())) for f in self.files])
        self.config_hash = config_hash(hashed)
        self.size = self.dataset.image_size
        self.lights = LightingSampler(self.plain["lighting"])

    def preflight(self) -> None:
        """Prove the lighting/rig settings work without depending on any one mesh file."""
        self._scene(0, *procedural_object(0, int(self.plain["seed"]), self.objects))

    def compose(self, index: int) -> SceneSpec:
        index = int(index)
        if index < 0:
            raise ValueError(f"object index must be >= 0, got {index}")
        seed = int(self.plain["seed"])
        if self.files is None:
            meshes, info = procedural_object(index, seed, self.objects)
        else:
            if index >= len(self.files):
                raise MeshSkipped(f"index {index}", f"the mesh folder holds only {len(self.files)} files")
            meshes, info = load_mesh_file(self.files[index], self.objects)
        return self._scene(index, meshes, info)

    def _scene(self, index: int, meshes, info: dict) -> SceneSpec:
        seed = int(self.plain["seed"])
        children = np.random.SeedSequence([seed, index, 1]).spawn(len(STREAMS))
        rngs = {k: np.random.default_rng(s) for k, s in zip(STREAMS, children)}
        environment, area_lights, lighting_meta = self.lights.sample(rngs["lighting"])
        rig = self.plain["rig"]
        allv = np.concatenate([m.vertices for m in meshes])
        cams = rig_cameras(rig, self.size, rngs["rig"], allv.min(0), allv.max(0), float(self.plain["depth_margin"]))
        gen = self.plain["generator"]
        meta = {"schema": SCHEMA, "source": "object", "index": index, "seed": seed,
                "seed_derivation": "object: (seed, index); lighting, rig: SeedSequence([seed, index, 1]).spawn(3)[1:]",
                "generator": {"name": gen["name"], "version": gen["version"]},
                "config_hash": self.config_hash,
                # objects have no metric size; 1 mm per unit keeps the schema's positive-number contract
                "mm_per_unit": 1.0, "object": json_safe(info), "lighting": json_safe(lighting_meta),
                "rig": str(rig["name"])}
        return SceneSpec(meshes=list(meshes), cameras=cams, environment=environment, area_lights=list(area_lights),
                         meta=meta, key=sample_key(index, "object")).validate()
