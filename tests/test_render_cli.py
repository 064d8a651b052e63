"""python -m synth.render: bad input (fast), and the real pipeline at tiny size (slow):
decodable shards, resume after kill -9, same bytes whatever the split."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth import render as R
from mousefacelift import shards as S
from synth.mouse import workers as W

REPO = Path(__file__).resolve().parents[1]
TINY = ["--rig", "sphere2", "--resolution", "64", "--samples", "4", "--quality", "preview",
        "--samples-per-shard", "1", "--workers", "1", "--seed", "11"]


def _cli(args, timeout=240, **kw):
    return subprocess.run([sys.executable, "-m", "synth.render", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kw)


# -- planning (fast) -------------------------------------------------------------------------
def test_partitioning_covers_every_shard_exactly_once():
    N, Ssz = 23, 4
    assert W.num_shards(N, Ssz) == 6 and list(W.shard_indices(5, N, Ssz)) == [20, 21, 22]
    parts = [W.job_shards(N, Ssz, 4, j) for j in range(4)]
    assert sorted(k for p in parts for k in p) == list(range(6)) and parts[1] == [1, 5]


def test_cluster_job_from_environment():
    assert W.resolve_job(None, None, {}) == W.JobSlot(1, 0, "single job")
    s = W.resolve_job(None, None, {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"})
    assert (s.num_jobs, s.job_index) == (4, 2)
    s = W.resolve_job(3, None, {"JOB_COMPLETION_INDEX": "2"})
    assert (s.num_jobs, s.job_index) == (3, 2)
    with pytest.raises(ValueError, match="JOB_COMPLETIONS"):
        W.resolve_job(None, None, {"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(ValueError, match=r"not in \[0, 2\)"):
        W.resolve_job(2, 5, {})
    with pytest.raises(ValueError, match="go together"):
        W.resolve_job(None, 1, {})


# -- bad input (fast: stops before any worker or Blender starts) -------------------------------
def _main_err(capsys, args):
    rc = R.main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_bad_inputs_stop_with_clear_messages(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert "run.poses (--poses) must be an integer >= 1, got 0" in _main_err(capsys, ["--poses", "0", "--out", out])
    assert "unknown rig 'cube9'" in _main_err(capsys, ["--poses", "2", "--rig", "cube9", "--out", out])
    assert "not 'procedural' and not an existing folder" in _main_err(
        capsys, ["--poses", "2", "--model", str(tmp_path / "no_mammal"), "--out", out])
    assert "quality config 'ultra': no file" in _main_err(capsys, ["--poses", "2", "--quality", "ultra", "--out", out])
    assert "KEY=VALUE" in _main_err(capsys, ["--poses", "2", "--out", out, "stray"])
    assert "render.yaml" in _main_err(capsys, ["--poses", "2", "--out", out, "no_such_key=1"])
    assert not Path(out).exists()


def test_bad_paths_and_config_mismatch_damage_nothing(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a folder" in _main_err(capsys, ["--poses", "2", "--out", str(f)])
    err = _main_err(capsys, ["--poses", "2", "--out", str(tmp_path / "o"), "--hdri-folder", str(tmp_path / "no_hdr")])
    assert "no_hdr" in err
    bad_hdr = tmp_path / "hdr"
    bad_hdr.mkdir()
    (bad_hdr / "x.exr").write_bytes(b"not an exr")
    assert "x.exr" in _main_err(capsys, ["--poses", "2", "--out", str(tmp_path / "o"), "--hdri-folder", str(bad_hdr)])
    # a folder holding another config's dataset is refused, and left as it was
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"schema": "mfl-manifest/1", "config_hash": "0000", "shards": [],
                                                   "prefix": "mouse", "source": "mouse"}))
    before = (out / "manifest.json").read_bytes()
    err = _main_err(capsys, ["--poses", "2", "--out", str(out)])
    assert "config_hash='0000'" in err and "--force-config" in err
    assert (out / "manifest.json").read_bytes() == before
    assert R.main(["--poses", "2", "--out", str(out), "--force-config", "--dry-run"]) == 0


# -- the real pipeline (slow, tiny) ----------------------------------------------------------
def _decode_all(out: Path) -> dict:
    from mousefacelift.shards import MultiViewSample

    got = {}
    for p in S.list_shards(out):
        for fields in S.iter_shard(p):
            s = MultiViewSample.decode(fields, where=p.name)
            got[s.key] = (fields, s)
    return got


@pytest.mark.slow
def test_render_resume_after_kill_and_split_determinism(tmp_path, caplog):
    pytest.importorskip("bpy")
    # 1) one job renders all 3 shards; the worker is recycled after 2 poses
    a = tmp_path / "a"
    r = _cli(["--poses", "3", "--out", str(a), "--recycle-every", "2", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "shard mouse-000002.tar: 1 samples" in r.stderr and " w1 " in r.stderr   # a second (recycled) worker
    ma = S.read_manifest(a)
    assert [s["name"] for s in ma["shards"]] == [f"mouse-{k:06d}.tar" for k in range(3)]
    samples = _decode_all(a)
    assert sorted(samples) == [f"mouse_{i:09d}" for i in range(3)]
    for key, (_, s) in samples.items():
        assert s.rgba.shape == (2, 64, 64, 4) and s.depth is not None and s.normal is not None
        assert s.meta["index"] == int(key.split("_")[1]) and s.meta["config_hash"] == ma["config_hash"]
        assert (s.rgba[..., 3] > 0).any() and (s.depth > 0).any()
        assert {"joints", "pose"} <= set(s.arrays)

    # 2) the same data split over 2 cluster jobs; job 0 is kill -9-ed after its first shard, then resumed
    b = tmp_path / "b"
    r = _cli(["--poses", "3", "--out", str(b), "--num-shards", "2", "--shard-index", "1", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in S.list_shards(b)] == ["mouse-000001.tar"]
    p = subprocess.Popen([sys.executable, "-m", "synth.render", "--poses", "3", "--out", str(b), *TINY],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})
    deadline = time.time() + 180
    while not (b / "mouse-000000.json").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)   # the worker dies with its parent (PR_SET_PDEATHSIG)
    assert (b / "mouse-000000.tar").exists()
    for tar in S.list_shards(b):     # whatever was published is complete, never truncated
        assert list(S.iter_shard(tar))
    first = (b / "mouse-000000.tar").stat()
    r = _cli(["--poses", "3", "--out", str(b), "--num-shards", "2", "--shard-index", "0", *TINY])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 already complete" in r.stderr or "2 already complete" in r.stderr
    assert "shard mouse-000000.tar" not in r.stderr                 # not rendered again
    assert (b / "mouse-000000.tar").stat().st_mtime_ns == first.st_mtime_ns
    assert not list(b.glob("*.tmp-*"))
    mb = S.read_manifest(b)
    # same shards, byte for byte, whatever the split (Cycles on CPU is deterministic across
    # runs and thread counts for a fixed seed; see docs/benchmarks.md)
    assert [(s["name"], s["sha256"], s["keys"]) for s in mb["shards"]] == \
        [(s["name"], s["sha256"], s["keys"]) for s in ma["shards"]]
    assert mb["config_hash"] == ma["config_hash"]
    # 3) re-running a complete job does nothing
    caplog.set_level(logging.INFO)
    assert R.main(["--poses", "3", "--out", str(a), *TINY[:-4], "--workers", "2", "--seed", "11"]) == 0
    assert "nothing to do" in caplog.text


def test_manifest_is_repaired_from_sidecars_when_a_run_died_before_merging(tmp_path, capsys):
    """A worker killed between a shard's sidecar and the manifest merge: the next run lists it again."""
    from mousefacelift.config import compose, to_container
    from synth.mouse.dataset import render_dataset

    args = ["--poses", "2", "--out", str(tmp_path), *TINY]
    cfg = to_container(compose("render", R.overrides_from_args(R.build_parser().parse_args(args))))
    dataset = render_dataset(cfg)
    header = {"source": "mouse", "prefix": "mouse", "samples_per_shard": 1, "seed": 11,
              "config": dataset.config, "config_hash": dataset.config_hash, "generator": cfg["generator"]}
    for k in range(2):
        with S.ShardWriter(tmp_path, k, prefix="mouse", header=header) as w:
            w.write({"__key__": f"mouse_{k:09d}", "meta.json": b"{}"})
    m = S.read_manifest(tmp_path)
    m["shards"] = m["shards"][1:]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert R.main(args) == 0
    assert [s["index"] for s in S.read_manifest(tmp_path)["shards"]] == [0, 1]


# -- render config sections (fast) -----------------------------------------------------------
def test_render_config_exposure_and_arena_sections_compose_into_the_scene():
    import numpy as np

    from mousefacelift.config import ConfigError, compose, to_container
    from synth.mouse.compose import arena_spec
    from synth.mouse.dataset import render_dataset

    cfg = to_container(compose("render", ["rig.name=sphere2", "arena.enabled=true", "arena.views=[1]"]))
    comp = W.make_composer(cfg, render_dataset(cfg))
    a, b = comp.compose(3), comp.compose(3)
    assert a.exposure == b.exposure and a.exposure.view_transform == "agx"
    lo, hi = cfg["exposure"]["offset_ev"]
    assert lo <= a.exposure.offset_ev <= hi
    assert a.arena == b.arena and a.arena_views == [1] and a.meta["arena"]["views"] == [1]
    assert a.arena.floor_z == pytest.approx(float(np.min(a.meshes[0].vertices[:, 2])))   # under the paws
    assert a.meshes[0].hair is not None and a.meshes[0].flow.shape == a.meshes[0].vertices.shape
    off = to_container(compose("render", ["rig.name=sphere2"]))
    plain = W.make_composer(off, render_dataset(off)).compose(3)
    assert plain.arena is None and plain.arena_views == [] and "arena" not in plain.meta
    assert plain.exposure == a.exposure                     # the arena's stream does not shift the others
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="arena.views"):
        arena_spec(dict(cfg["arena"], views=[5]), rng, 0.0, n_views=2)
    with pytest.raises(ConfigError, match="half_size"):
        arena_spec({k: v for k, v in cfg["arena"].items() if k != "half_size"}, rng, 0.0, n_views=2)
