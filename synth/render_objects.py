"""`python -m synth.render_objects --objects N [--mesh-dir DIR]`: object shards for pretraining.

The object source plugged into the mouse renderer's orchestration (synth.render: workers,
shards, resume, cluster partitioning, manifest): ``configs/objects/render.yaml`` is
``configs/render.yaml`` with ``composer: synth.render_objects:ObjectComposer``, so objects
get the same rigs, HDR lighting (synth.lighting), Blender backend and shard machinery.
Samples are ``source=object``, keys ``object_{index:09d}``. Object ``i`` is procedural
object ``i`` (seeded by (seed, i)) or the i-th file of the sorted mesh folder; a file that
cannot be used is recorded in the manifest's ``skipped`` list with its reason.

    python -m synth.render_objects --objects 64 --quality preview --out shards/objects
    python -m synth.render_objects --objects 1000 --mesh-dir ~/objaverse/glbs --workers 4 rig.name=sphere32
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from mousefacelift.cameras import make_rig
from mousefacelift.config import config_hash, configs_dir
from mousefacelift.shards import SCHEMA
from mousefacelift.scene import SceneSpec, depth_range_for
from synth.objects.generate import (MeshSkipped, ObjectConfig, config_to_meta, find_mesh_files, load_mesh_file,
                           procedural_object)

log = logging.getLogger("synth.render_objects")
STREAMS = ("object", "lighting", "rig")


def load_object_config(name_or_path: str, overrides: dict | None = None) -> ObjectConfig:
    """``configs/objects/{name}.yaml`` (or a path) + field overrides -> ObjectConfig."""
    p = Path(name_or_path)
    if not p.suffix:
        p = configs_dir() / "objects" / f"{name_or_path}.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"object config not found: {p}")
    d = yaml.safe_load(p.read_text()) or {}
    d.update(overrides or {})
    return ObjectConfig.from_dict(d, where=str(p))


class ObjectComposer:
    """index -> SceneSpec of one object (procedural, or the index-th file of a mesh folder),
    lit and framed like the mouse (same rig config and lighting sampler)."""

    def __init__(self, cfg: Any):
        from synth.mouse.compose import _lighting_api, _plain, dataset_config

        self.plain = _plain(cfg)
        ocfg = self.plain.get("objects") or {}
        self.objects = load_object_config(str(ocfg.get("config") or "procedural"), dict(ocfg.get("overrides") or {}))
        self.mesh_dir = ocfg.get("mesh_dir")
        self.files = find_mesh_files(Path(self.mesh_dir).expanduser()) if self.mesh_dir else None
        if self.files is not None and not self.files:
            raise ValueError(f"mesh folder {self.mesh_dir} holds no .glb/.gltf/.obj/.ply files")
        dc = dataset_config(cfg)
        dc["objects_resolved"] = config_to_meta(self.objects)
        if self.files is not None:   # the data depends on which files are there
            dc["mesh_files"] = config_hash([str(f.relative_to(Path(self.mesh_dir).expanduser())) for f in self.files])
        self.dataset_config = dc
        self.config_hash = config_hash(dc)
        self.size = int(dc["image_size"])
        self._lighting = _lighting_api(self.plain.get("lighting") or None)

    def preflight(self) -> None:
        """Prove the lighting/rig settings work without depending on any one mesh file."""
        self._scene(0, *procedural_object(0, int(self.plain.get("seed", 0)), self.objects), source_info=None)

    def compose(self, index: int) -> SceneSpec:
        index = int(index)
        if index < 0:
            raise ValueError(f"object index must be >= 0, got {index}")
        seed = int(self.plain.get("seed", 0))
        if self.files is None:
            meshes, info = procedural_object(index, seed, self.objects)
        else:
            if index >= len(self.files):
                raise MeshSkipped(f"index {index}", f"the mesh folder holds only {len(self.files)} files")
            meshes, info = load_mesh_file(self.files[index], self.objects)
        return self._scene(index, meshes, info, source_info=info)

    def _scene(self, index: int, meshes, info: dict, source_info) -> SceneSpec:
        seed = int(self.plain.get("seed", 0))
        children = np.random.SeedSequence([seed, index, 1]).spawn(len(STREAMS))
        rngs = {k: np.random.default_rng(s) for k, s in zip(STREAMS, children)}
        environment, area_lights, lighting_meta = self._lighting(rngs["lighting"])
        rig = self.plain["rig"]
        cams = make_rig(str(rig["name"]), size=self.size, radius=float(rig["radius"]), fov_deg=float(rig["fov_deg"]),
                        seed=rngs["rig"], min_elevation_deg=float(rig["min_elevation_deg"]),
                        ring_elevation_deg=float(rig["ring_elevation_deg"]))
        allv = np.concatenate([m.vertices for m in meshes])
        cams = depth_range_for(cams, allv.min(0), allv.max(0), margin=float(self.plain["depth_margin"]))
        gen = self.plain.get("generator") or {}
        from synth.mouse.compose import _json_safe

        meta = {"schema": SCHEMA, "source": "object", "index": index, "seed": seed,
                "seed_derivation": "object: (seed, index); lighting, rig: SeedSequence([seed, index, 1]).spawn(3)[1:]",
                "generator": {"name": gen.get("name", "synth.render_objects"), "version": gen.get("version", 1)},
                "config_hash": self.config_hash,
                # objects have no metric size; 1 mm per unit keeps the schema's positive-number contract
                "mm_per_unit": 1.0, "object": _json_safe(info), "lighting": _json_safe(lighting_meta),
                "rig": str(rig["name"])}
        return SceneSpec(meshes=list(meshes), cameras=cams, environment=environment, area_lights=list(area_lights),
                         meta=meta, key=f"object_{index:09d}").validate()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m synth.render_objects", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--objects", type=int, help="number of objects (indices 0..N-1); = run.poses")
    ap.add_argument("--mesh-dir", help="folder of GLB/GLTF/OBJ/PLY meshes (default: procedural objects)")
    ap.add_argument("--out", help="output folder (default shards/objects)")
    ap.add_argument("--quality", choices=("preview", "train", "final"))
    ap.add_argument("--resolution", type=int)
    ap.add_argument("--rig", help="rig config name or make_rig spec (sphere32, sphere26+mv6, ...)")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--samples-per-shard", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--force-config", action="store_true", help="re-render shards made with another config")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("overrides", nargs="*", help="hydra key=value overrides (objects.overrides.max_parts=3 ...)")
    return ap


def overrides_from_args(a: argparse.Namespace) -> list[str]:
    from synth.render import _quote, _rig_override

    out = []
    if a.objects is not None:
        out.append(f"run.poses={a.objects}")
    if a.mesh_dir:
        out.append(f"objects.mesh_dir={_quote(str(Path(a.mesh_dir).expanduser().resolve()))}")
    out.append(f"run.out={a.out or 'shards/objects'}")
    for flag, key in (("quality", "preset"), ("resolution", "resolution"), ("workers", "run.workers"),
                      ("samples_per_shard", "samples_per_shard"), ("seed", "seed")):
        v = getattr(a, flag)
        if v is not None:
            out.append(f"{key}={v}")
    if a.rig:
        out.append(_rig_override(a.rig))
    return out + list(a.overrides)


def main(argv: Sequence[str] | None = None) -> int:
    from mousefacelift.config import ConfigError, compose
    from synth.render import RenderError, run

    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = compose("objects/render", overrides_from_args(a))
        summary = run(cfg, force=a.force_config, dry_run=a.dry_run)
    except (ConfigError, RenderError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['shards_todo']} shard(s), {summary['poses_todo']} object(s) -> {summary['out']} "
          f"in {summary['seconds']:.1f}s (config {summary['config_hash']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
