"""The data engine under faults: failed poses are retried, broken input is a listed skip,
damaged shards are re-rendered, bad values stop up front with one line, imports stay inside
their folder, renderers leave no temp folders, and verify's limits hold at small sizes.

Fast tests build shard folders with ShardWriter (no Blender); the ``slow`` ones run the real
renderer at tiny size (2 views, 32-128 px)."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mousefacelift import shards as S
from mousefacelift.analytic import critter_sample
from synth import render as R
from synth.tools import verify

REPO = Path(__file__).resolve().parents[1]
TINY = ["--rig", "sphere2", "--resolution", "32", "--samples", "1", "--quality", "preview", "--workers", "1"]


def _cli(module: str, args, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _render_header(args: list[str]) -> tuple[dict, dict]:
    """The plain render config and manifest header that ``synth.render ARGS`` would use."""
    from mousefacelift.config import compose, to_container
    from synth.mouse.dataset import render_dataset

    cfg = to_container(compose("render", R.overrides_from_args(R.build_parser().parse_args(args))))
    dataset = render_dataset(cfg)
    header = {"source": "mouse", "prefix": "mouse", "samples_per_shard": int(cfg["samples_per_shard"]),
              "seed": int(cfg["seed"]), "config": dataset.config, "config_hash": dataset.config_hash,
              "generator": cfg["generator"]}
    return cfg, header


def _dry_run(args: list[str]) -> dict:
    from mousefacelift.config import compose

    return R.run(compose("render", R.overrides_from_args(R.build_parser().parse_args(args))), dry_run=True)


# -- failed poses are not complete; input skips are ------------------------------------------
def test_failed_pose_leaves_its_shard_incomplete_and_resume_renders_it(tmp_path, caplog):
    args = ["--poses", "4", "--samples-per-shard", "2", "--out", str(tmp_path), *TINY]
    _, header = _render_header(args)
    with S.ShardWriter(tmp_path, 0, prefix="mouse", header=header) as w:    # a render failure: retried
        w.write({"__key__": "mouse_000000000", "meta.json": b"{}"})
        w.skip(1, "HdrError: environment map bad.exr: unreadable", retry=True)
    with S.ShardWriter(tmp_path, 1, prefix="mouse", header=header) as w:    # an input skip: final
        w.write({"__key__": "mouse_000000002", "meta.json": b"{}"})
        w.skip(3, "mesh file broken.glb: corrupt")
    caplog.set_level("INFO")
    summary = _dry_run(args)
    assert summary["shards_todo"] == 1 and summary["poses_todo"] == 2
    assert "failed to render in an earlier run" in caplog.text and "bad.exr" in caplog.text
    m = S.read_manifest(tmp_path)
    assert [e.get("retry", False) for e in m["skipped"]] == [True, False]


def test_verify_fails_a_set_with_failed_poses_and_accepts_input_skips(tmp_path, capsys):
    header = {"source": "object", "prefix": "test", "samples_per_shard": 2, "seed": 0, "config": {},
              "config_hash": "x", "generator": "test"}
    for name, retry in (("failed", True), ("skipped", False)):
        out = tmp_path / name
        out.mkdir()
        with S.ShardWriter(out, 0, prefix="test", header=header) as w:
            w.write(critter_sample("obj_000000", rig="sphere6", size=32).encode())
            w.skip(1, "HdrError: environment map bad.exr: unreadable", retry=retry)
        with S.ShardWriter(out, 1, prefix="test", header=header) as w:
            w.write(critter_sample("obj_000002", rig="sphere6", size=32, seed=2).encode())
    assert verify.main([str(tmp_path / "failed"), "--quiet", "--schema-only"]) == 1
    text = capsys.readouterr().out
    assert "1 pose(s) failed to render and are missing" in text and "bad.exr" in text
    assert verify.main([str(tmp_path / "skipped"), "--quiet", "--schema-only"]) == 0


def test_verify_reports_a_gap_in_the_shard_sequence(tmp_path, capsys):
    S.write_samples(tmp_path, [critter_sample(f"obj_{i:06d}", rig="sphere6", size=32, seed=i) for i in range(3)],
                    samples_per_shard=1)
    (tmp_path / "test-000001.tar").unlink()
    (tmp_path / "test-000001.json").unlink()
    S.rebuild_manifest(tmp_path)
    assert verify.main([str(tmp_path), "--quiet", "--schema-only"]) == 1
    assert "shards [1] are missing" in capsys.readouterr().out


# -- bit rot is repaired on resume -------------------------------------------------------------
def test_resume_rerenders_a_same_size_shard_whose_sha256_changed(tmp_path, caplog):
    args = ["--poses", "2", "--samples-per-shard", "1", "--out", str(tmp_path), *TINY]
    _, header = _render_header(args)
    for k in range(2):
        with S.ShardWriter(tmp_path, k, prefix="mouse", header=header) as w:
            w.write({"__key__": f"mouse_{k:09d}", "meta.json": b'{"x": 1}'})
    assert _dry_run(args)["shards_todo"] == 0
    shard = tmp_path / "mouse-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0x01                        # one flipped bit, same size
    shard.write_bytes(bytes(data))
    caplog.set_level("INFO")
    summary = _dry_run(args)
    assert summary["shards_todo"] == 1 and summary["damaged_shards"] == ["mouse-000001.tar"]
    assert re.search(r"mouse-000001\.tar: sha256 .* differs from the recorded", caplog.text)


# -- bad values stop before anything is written -----------------------------------------------
@pytest.mark.parametrize("override, words", [
    ("encode.png_compress_level=42", ["encode.png_compress_level=42", "0..9"]),
    ("prefix=../evil", ["prefix='../evil'", "letters, digits"]),
    ("seed=-1", ["seed=-1", ">= 0"]),
    ("run.device=tpu", ["run.device='tpu'", "auto, cpu or gpu"]),
])
def test_bad_config_values_are_one_line_before_any_work(tmp_path, capsys, override, words):
    out = tmp_path / "o"
    assert R.main(["--poses", "2", "--out", str(out), override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not out.exists()


def test_refused_model_pickle_is_one_line(tmp_path):
    model = tmp_path / "mouse_model"
    model.mkdir()
    (model / "mouse.pkl").write_bytes(pickle.dumps({"x": print}))
    out = tmp_path / "o"
    r = _cli("synth.render", ["--poses", "1", "--model", str(model), "--out", str(out)], timeout=120)
    err = [line for line in r.stderr.splitlines() if "Traceback" in line or "error" in line]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert len(err) == 1 and "mouse.pkl" in err[0] and "refused to load global builtins.print" in err[0]
    assert not out.exists()


def test_verify_without_manifest_says_a_rerun_rebuilds_it(tmp_path, capsys):
    S.write_samples(tmp_path, [critter_sample("obj_000000", rig="sphere6", size=32)])
    (tmp_path / "manifest.json").unlink()
    assert verify.main([str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "manifest.json not found" in err and "re-running the render command" in err and "rebuilds it" in err


# -- real calibration with non-finite values ---------------------------------------------------
def _calibration(n=4, size=(64, 48)) -> dict:
    from mousefacelift.cameras import look_at

    cams = []
    for i in range(n):
        az = 2 * np.pi * i / n
        eye = np.array([300 * np.cos(az), 300 * np.sin(az), 120.0])
        w2c = look_at(eye, np.zeros(3))
        cams.append({"name": f"cam{i}", "width": size[0], "height": size[1],
                     "K": [[80.0, 0, size[0] / 2], [0, 80.0, size[1] / 2], [0, 0, 1]], "dist": [],
                     "R": w2c[:3, :3].tolist(), "t": w2c[:3, 3].tolist()})
    return {"units": "mm", "cameras": cams}


def test_nan_calibration_is_refused_naming_file_camera_and_field(tmp_path, capsys):
    from synth.real.calibration import load_calibration
    from synth.real.ingest import main as ingest_main

    cal = _calibration()
    cal["cameras"][2]["K"][0][0] = float("nan")
    p = tmp_path / "cams.json"
    p.write_text(json.dumps(cal))                  # json writes NaN, as numpy-made files do
    with pytest.raises(ValueError, match=r"cams\.json: camera 'cam2', cameras\[2\]: field 'K' has a non-finite value"):
        load_calibration(p)
    frames = tmp_path / "frames"
    for c in cal["cameras"]:
        (frames / c["name"]).mkdir(parents=True)
        Image.new("RGB", (64, 48)).save(frames / c["name"] / "000000.png")
    rc = ingest_main(["--calib", str(p), "--frames", str(frames), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "'cam2'" in err and "'K'" in err
    assert not (tmp_path / "out").exists()


def test_ingest_that_writes_nothing_exits_non_zero(tmp_path, capsys):
    from synth.real.ingest import main as ingest_main

    cal = _calibration()
    (tmp_path / "cams.json").write_text(json.dumps(cal))
    frames, masks = tmp_path / "frames", tmp_path / "masks"
    for c in cal["cameras"]:
        for root in (frames, masks):
            (root / c["name"]).mkdir(parents=True)
            for f in range(2):
                Image.new("RGB", (64, 48)).save(root / c["name"] / f"{f:06d}.png")   # no mouse anywhere
    rc = ingest_main(["--calib", str(tmp_path / "cams.json"), "--frames", str(frames), "--masks", str(masks),
                      "--out", str(tmp_path / "out"), "splits.train=[0,1]", "splits.val=[1,1]", "splits.test=[1,1]",
                      "split_gap_frames=0"])
    err = capsys.readouterr().err
    assert rc == 1 and "no sample written" in err and "all 2 selected frame sets were skipped" in err


# -- FaceLift import stays inside each sample folder -------------------------------------------
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_import_refuses_image_paths_outside_the_folder(tmp_path, capsys, kind):
    from synth.tools import export

    secret = tmp_path / "secret.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(secret)
    d = tmp_path / "fl" / "x"
    (d / "images").mkdir(parents=True)
    fp = {"dotdot": "../../secret.png", "absolute": str(secret), "symlink": "images/cam_000.png"}[kind]
    if kind == "symlink":
        (d / "images" / "cam_000.png").symlink_to(secret)
    (d / "opencv_cameras.json").write_text(json.dumps({"frames": [
        {"w": 8, "h": 8, "fx": 8, "fy": 8, "cx": 4, "cy": 4, "w2c": np.eye(4).tolist(), "file_path": fp}]}))
    out = tmp_path / "out"
    assert export.main(["--import", str(tmp_path / "fl"), str(out), "--source", "real", "--mm-per-unit", "1",
                        "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "leaves the folder" in err and "frames[0]" in err
    assert not out.exists()


# -- verify's mask limits do not depend on the image size --------------------------------------
def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


@pytest.mark.parametrize("size", [32, 64])
def test_clean_small_sample_passes_and_a_shifted_alpha_fails(tmp_path, size):
    """Alpha under 50 % on the outline pixels (an anti-aliased edge whose centres the depth
    pass hits) is what a clean small render looks like; a mask moved by 3 px is not."""
    clean = critter_sample("obj_000000", rig="sphere6", size=size)
    for v in range(clean.num_views):
        a = clean.rgba[v, ..., 3]
        a[_outline(clean.depth[v] > 0)] = 100
    shifted = critter_sample("obj_000001", rig="sphere6", size=size, seed=1)
    shifted.rgba[2, ..., 3] = np.roll(shifted.rgba[2, ..., 3], 3, axis=1)
    S.write_samples(tmp_path / "shards", [clean, shifted])
    rc = verify.main([str(tmp_path / "shards"), "--quiet", "--json", str(tmp_path / "r.json")])
    rep = json.loads((tmp_path / "r.json").read_text())
    good, bad = rep["samples"]
    assert good["passed"], good["problems"]
    assert not bad["passed"] and any(p.startswith("depth_alpha_iou_min") for p in bad["problems"])
    assert rc == 1
    # the plain IoU (band 0) is what made the clean sample fail
    assert verify.main([str(tmp_path / "shards"), "--quiet", "--iou-band-px", "0", "--json",
                        str(tmp_path / "r0.json")]) == 1
    assert not json.loads((tmp_path / "r0.json").read_text())["samples"][0]["passed"]


# -- the real renderer (slow) ------------------------------------------------------------------
def _tmp_dirs(stderr: str) -> list[str]:
    return re.findall(r"tmp=(\S+mfl_blender_\S+)", stderr)


def _mixed_seed(args: list[str]) -> int:
    """A seed whose 3 poses draw both the good and the broken map (the draw is per index)."""
    from synth.mouse import workers as W
    from synth.mouse.dataset import render_dataset

    for seed in range(20):
        cfg, _ = _render_header([*args, "--seed", str(seed)])
        c = W.make_composer(cfg, render_dataset(cfg))
        picks = [c.compose(i).meta["lighting"]["hdri"] for i in range(3)]
        if 0 < picks.count("folder:bad.exr") < 3:
            return seed
    raise AssertionError("no seed mixes the two maps")


@pytest.mark.slow
def test_failed_poses_are_reported_and_rendered_by_the_next_run(tmp_path):
    pytest.importorskip("bpy")
    from synth.mouse.lighting import builtin_hdris

    hdr = tmp_path / "hdr"
    hdr.mkdir()
    good = builtin_hdris()[0]
    shutil.copy(good, hdr / "good.exr")
    (hdr / "bad.exr").write_bytes(good.read_bytes()[:20000])          # truncated: the header still reads
    out = tmp_path / "o"
    args = ["--poses", "3", "--samples-per-shard", "3", "--out", str(out), "--hdri-folder", str(hdr), *TINY,
            "lighting.hdri.builtin=false", "lighting.sky.probability=0"]
    args += ["--seed", str(_mixed_seed(args))]
    r = _cli("synth.render", args)
    assert r.returncode == 1, r.stderr[-3000:]
    m = S.read_manifest(out)
    failed = [e for e in m["skipped"] if e.get("retry")]
    assert failed and all("bad.exr" in e["reason"] for e in failed)
    assert m["shards"][0]["samples"] == 3 - len(failed)
    last = r.stderr.strip().splitlines()[-1]
    assert f"warning: {len(failed)} of 3 poses failed to render" in last and "re-run the same command" in last
    assert verify.main([str(out), "--quiet", "--schema-only"]) == 1
    # the input is fixed: the same command renders the shard again, whole
    shutil.copy(good, hdr / "bad.exr")
    r2 = _cli("synth.render", args)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "rendering those shards again" in r2.stderr
    m = S.read_manifest(out)
    assert m["shards"][0]["samples"] == 3 and m["skipped"] == []
    assert verify.main([str(out), "--quiet", "--schema-only"]) == 0
    r3 = _cli("synth.render", args)
    assert r3.returncode == 0 and "nothing to do" in r3.stderr
    # every worker removed its RAM temp folder on the way out
    dirs = _tmp_dirs(r.stderr + r2.stderr)
    assert dirs and not [d for d in dirs if os.path.exists(d)]


@pytest.mark.slow
def test_a_shard_of_broken_meshes_is_skipped_and_the_set_completes(tmp_path):
    pytest.importorskip("bpy")
    import trimesh

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for name in ("a.glb", "b.ply", "c.obj"):
        (meshes / name).write_bytes(b"\x00 not a mesh \xff" * 8)
    trimesh.creation.box().export(meshes / "d.obj")
    out = tmp_path / "objects"
    args = ["--objects", "4", "--mesh-dir", str(meshes), "--out", str(out), "--samples-per-shard", "3",
            "--quality", "preview", "--resolution", "32", "--rig", "sphere2", "samples=1"]
    r = _cli("synth.render_objects", args)
    assert r.returncode == 0, r.stderr[-3000:]
    m = S.read_manifest(out)
    assert [s["samples"] for s in m["shards"]] == [0, 1]
    assert [Path(e["reason"].split(":")[0]).name for e in m["skipped"]] == ["a.glb", "b.ply", "c.obj"]
    assert not any(e.get("retry") for e in m["skipped"])
    assert "3 skipped (listed in the manifest)" in r.stdout
    r2 = _cli("synth.render_objects", args)
    assert r2.returncode == 0 and "nothing to do" in r2.stderr, r2.stderr[-3000:]
    assert verify.main([str(out), "--quiet", "--schema-only"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 128])
def test_clean_preview_render_passes_full_verify(tmp_path, size):
    pytest.importorskip("bpy")
    out = tmp_path / "o"
    r = _cli("synth.render", ["--poses", "1", "--quality", "preview", "--resolution", str(size), "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    rc = verify.main([str(out), "--quiet", "--json", str(tmp_path / "r.json")])
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0, rep["problems"] + [p for s in rep["samples"] for p in s["problems"]]
    assert rep["summary"]["mesh_iou_samples"] == 1


def test_stale_renderer_temp_folders_of_dead_processes_are_removed(tmp_path):
    backend = pytest.importorskip("blender.backend")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = tmp_path / f"mfl_blender_{p.pid}_abc"
    alive = tmp_path / f"mfl_blender_{os.getpid()}_def"
    unnamed = tmp_path / "mfl_blender_xyz"
    for d in (dead, alive, unnamed):
        d.mkdir()
    (dead / "view.exr").write_bytes(b"x")
    assert backend.clean_stale_tmpdirs(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and alive.exists() and unnamed.exists()
