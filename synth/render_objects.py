"""`python -m synth.render_objects --objects N [--mesh-dir DIR]`: object shards for pretraining.

The object source plugged into the mouse renderer's orchestration (synth.render: workers,
shards, resume, cluster partitioning, manifest): ``configs/objects/render.yaml`` is
``configs/render.yaml`` with ``composer: synth.render_objects:ObjectComposer``, so objects
get the same rigs, HDR lighting (synth.mouse.lighting), Blender backend and shard machinery
(the composer itself lives in synth.objects.composer).
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
from typing import Sequence

# configs/objects/render.yaml names the composer "synth.render_objects:ObjectComposer"; that
# string is part of the dataset config hash, so the class stays importable under this name.
from synth.objects.composer import ObjectComposer

__all__ = ["ObjectComposer", "build_parser", "main", "overrides_from_args"]


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
    from synth.render import quote_value, rig_override

    out = []
    if a.objects is not None:
        out.append(f"run.poses={a.objects}")
    if a.mesh_dir:
        out.append(f"objects.mesh_dir={quote_value(str(Path(a.mesh_dir).expanduser().resolve()))}")
    out.append(f"run.out={a.out or 'shards/objects'}")
    for flag, key in (("quality", "preset"), ("resolution", "resolution"), ("workers", "run.workers"),
                      ("samples_per_shard", "samples_per_shard"), ("seed", "seed")):
        v = getattr(a, flag)
        if v is not None:
            out.append(f"{key}={v}")
    if a.rig:
        out.append(rig_override(a.rig))
    return out + list(a.overrides)


def main(argv: Sequence[str] | None = None) -> int:
    from mousefacelift.config import ConfigError, compose
    from synth.render import RenderError, incomplete_status, run

    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = compose("objects/render", overrides_from_args(a))
        summary = run(cfg, force=a.force_config, dry_run=a.dry_run)
    except (ConfigError, RenderError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped = f", {len(summary['poses_skipped'])} skipped (listed in the manifest)" if summary.get("poses_skipped") else ""
    print(f"{summary['shards_todo']} shard(s), {summary['poses_todo']} object(s) -> {summary['out']} "
          f"in {summary['seconds']:.1f}s (config {summary['config_hash']}){skipped}")
    return incomplete_status(summary, "synth.render_objects")


if __name__ == "__main__":
    raise SystemExit(main())
