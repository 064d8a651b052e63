"""synth.shards: atomic shard writing, sidecars + locked manifest merge, resume, readers."""
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from mousefacelift.config import compose, config_hash, to_container
from mousefacelift import shards as S

HEADER = {"source": "mouse", "prefix": "t", "samples_per_shard": 2, "seed": 0,
          "config": {"a": 1}, "config_hash": "abc123", "generator": {"name": "test", "version": 1}}


def _sample(key: str, n: int = 3) -> dict:
    return {"__key__": key, "meta.json": json.dumps({"k": key}).encode(),
            **{f"{i:03d}.rgba.png": bytes([i]) * (100 + i) for i in range(n)}, "pose.npy": b"\x93NUMPY" + key.encode()}


def _write_shard(out, k, keys, header=HEADER):
    with S.ShardWriter(out, k, prefix=header["prefix"], header=header) as w:
        for key in keys:
            w.write(_sample(key))
    return w


def test_roundtrip_sidecar_and_manifest(tmp_path):
    _write_shard(tmp_path, 0, ["a_0", "a_1"])
    _write_shard(tmp_path, 1, ["a_2"])
    assert [p.name for p in S.list_shards(tmp_path)] == ["t-000000.tar", "t-000001.tar"]
    got = list(S.iter_shard(tmp_path / "t-000000.tar"))
    assert [g["__key__"] for g in got] == ["a_0", "a_1"]
    want = _sample("a_1")
    assert {k: v for k, v in got[1].items() if not k.startswith("__")} == {k: v for k, v in want.items() if k != "__key__"}
    # webdataset reads the same layout
    import webdataset as wds
    wk = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "t-000000.tar"), shardshuffle=False)]
    assert wk == ["a_0", "a_1"]
    m = S.read_manifest(tmp_path)
    assert m["schema"] == "mfl-manifest/1" and m["config_hash"] == "abc123" and m["config"] == {"a": 1}
    assert [(s["name"], s["index"], s["samples"], s["keys"]) for s in m["shards"]] == \
        [("t-000000.tar", 0, 2, ["a_0", "a_1"]), ("t-000001.tar", 1, 1, ["a_2"])]
    for s in m["shards"]:
        p = tmp_path / s["name"]
        assert s["bytes"] == p.stat().st_size and s["sha256"] == S.shard_sha256(p)
        side = json.loads(S.sidecar_path(p).read_text())
        assert side["sha256"] == s["sha256"] and side["config_hash"] == "abc123"
    assert set(S.complete_shards(tmp_path)) == {0, 1}


def test_shards_are_byte_deterministic(tmp_path):
    (tmp_path / "x").mkdir()
    _write_shard(tmp_path / "x", 0, ["a_0", "a_1"])
    time.sleep(1.1)   # a different mtime must not change the bytes
    (tmp_path / "y").mkdir()
    _write_shard(tmp_path / "y", 0, ["a_0", "a_1"])
    assert (tmp_path / "x/t-000000.tar").read_bytes() == (tmp_path / "y/t-000000.tar").read_bytes()


def test_exception_mid_shard_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with S.ShardWriter(tmp_path, 3, prefix="t", header=HEADER) as w:
            w.write(_sample("b_0"))
            raise RuntimeError("render failed")
    assert list(tmp_path.glob("*.tar")) == [] and list(tmp_path.glob("*.tmp-*")) == []
    assert not (tmp_path / "manifest.json").exists()


def _killed_writer(out: str, ready) -> None:   # runs in a child process
    w = S.ShardWriter(out, 0, prefix="t", header=HEADER)
    w.write(_sample("c_0"))
    ready.set()
    time.sleep(60)


def test_killed_writer_leaves_only_tmp_that_is_cleaned(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_killed_writer, args=(str(tmp_path), ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert list(tmp_path.glob("*.tar")) == []
    tmps = list(tmp_path.glob("t-000000.tar.tmp-*"))
    assert len(tmps) == 1
    assert S.complete_shards(tmp_path) == {}
    assert S.clean_stale_tmp(tmp_path) == tmps
    assert list(tmp_path.glob("*.tmp-*")) == []


def test_live_writers_tmp_is_not_cleaned(tmp_path):
    w = S.ShardWriter(tmp_path, 0, prefix="t", header=HEADER)
    w.write(_sample("d_0"))
    assert S.clean_stale_tmp(tmp_path) == []      # our own pid: alive
    w.close()
    # another host's fresh temp file is kept, an old one is removed
    fresh = tmp_path / "t-000005.tar.tmp-otherhost-123"
    old = tmp_path / "t-000006.tar.tmp-otherhost-124"
    fresh.write_bytes(b"x")
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 10 * 3600,) * 2)
    assert S.clean_stale_tmp(tmp_path, stale_after_s=3600) == [old]
    assert fresh.exists()


def test_size_mismatch_or_missing_sidecar_is_not_complete(tmp_path):
    _write_shard(tmp_path, 0, ["a_0"])
    _write_shard(tmp_path, 1, ["a_1"])
    _write_shard(tmp_path, 2, ["a_2"])
    S.sidecar_path(tmp_path / "t-000001.tar").unlink()
    with open(tmp_path / "t-000002.tar", "ab") as f:
        f.write(b"junk")
    assert set(S.complete_shards(tmp_path)) == {0}
    assert set(S.complete_shards(tmp_path, config_hash="abc123")) == {0}
    assert S.complete_shards(tmp_path, config_hash="other") == {}


def _merge_worker(out: str, k: int) -> None:
    _write_shard(out, k, [f"m_{k}_0", f"m_{k}_1"])


def test_concurrent_writers_merge_manifest_without_loss(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_merge_worker, args=(str(tmp_path), k)) for k in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    m = S.read_manifest(tmp_path)
    assert [s["index"] for s in m["shards"]] == list(range(6))


def test_rebuild_manifest_from_sidecars(tmp_path):
    _write_shard(tmp_path, 0, ["a_0"])
    _write_shard(tmp_path, 4, ["a_4"])
    (tmp_path / "manifest.json").unlink()
    m = S.rebuild_manifest(tmp_path, HEADER)
    assert [s["name"] for s in m["shards"]] == ["t-000000.tar", "t-000004.tar"]
    assert S.read_manifest(tmp_path) == m


def test_skipped_indices_are_recorded(tmp_path):
    with S.ShardWriter(tmp_path, 0, prefix="t", header=HEADER) as w:
        w.write(_sample("a_0"))
        w.skip(1, "renderer crashed")
    m = S.read_manifest(tmp_path)
    assert m["skipped"] == [{"index": 1, "reason": "renderer crashed", "shard": 0}]
    _write_shard(tmp_path, 1, ["a_2"])     # another shard's merge keeps shard 0's skip
    assert S.read_manifest(tmp_path)["skipped"] == [{"index": 1, "reason": "renderer crashed", "shard": 0}]


def test_notes_of_written_samples_survive_merges_and_rebuilds(tmp_path):
    with S.ShardWriter(tmp_path, 0, prefix="t", header=HEADER) as w:
        w.write(_sample("a_0"))
        w.note(0, "camera_dropped", camera="Camera3", score=0.02)
    want = [{"index": 0, "kind": "camera_dropped", "camera": "Camera3", "score": 0.02, "shard": 0}]
    assert S.read_manifest(tmp_path)["notes"] == want
    _write_shard(tmp_path, 1, ["a_1"])     # another shard's merge keeps shard 0's note
    assert S.read_manifest(tmp_path)["notes"] == want
    (tmp_path / "manifest.json").unlink()
    assert S.rebuild_manifest(tmp_path, HEADER)["notes"] == want


def test_config_mismatch_is_refused(tmp_path):
    _write_shard(tmp_path, 0, ["a_0"])
    with pytest.raises(S.ManifestMismatch, match="config_hash='abc123'.*--force-config"):
        _write_shard(tmp_path, 1, ["a_1"], header={**HEADER, "config_hash": "zzz"})


def test_truncated_and_corrupt_shards_name_shard_and_member(tmp_path):
    _write_shard(tmp_path, 0, ["a_0", "a_1"])
    p = tmp_path / "t-000000.tar"
    data = p.read_bytes()
    bad = tmp_path / "bad-000000.tar"
    bad.write_bytes(data[:1600])          # cut inside a member
    with pytest.raises(S.ShardError, match=r"bad-000000\.tar.*(truncated|corrupt).*a_0\."):
        list(S.iter_shard(bad))
    garbage = tmp_path / "garbage-000000.tar"
    garbage.write_bytes(b"\x01" * 3000)
    with pytest.raises(S.ShardError, match="garbage-000000.tar"):
        list(S.iter_shard(garbage))
    with pytest.raises(S.ShardError, match="not found"):
        list(S.iter_shard(tmp_path / "nope.tar"))


def test_bad_keys_rejected(tmp_path):
    with S.ShardWriter(tmp_path, 0, prefix="t", header=HEADER) as w:
        with pytest.raises(S.ShardError, match="without '.'"):
            w.write({"__key__": "a.b", "x.json": b"{}"})
        w.write(_sample("ok"))
        with pytest.raises(S.ShardError, match="duplicate"):
            w.write(_sample("ok"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_out_dir_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(S.ShardError, match="cannot write.*--out"):
            S.check_writable_dir(ro)
        with pytest.raises(S.ShardError, match="cannot write"):
            S.ShardWriter(ro, 0, prefix="t", header=HEADER)
    finally:
        ro.chmod(0o755)


def test_disk_full_leaves_finished_shards_intact(tmp_path):
    """A tiny tmpfs-free simulation: fail the write with ENOSPC through a full file (/dev/full)."""
    _write_shard(tmp_path, 0, ["a_0"])
    before = (tmp_path / "t-000000.tar").read_bytes()
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not available")
    w = S.ShardWriter(tmp_path, 1, prefix="t", header=HEADER)
    tmp = w.tmp_path
    w._file.close()
    w._file = open("/dev/full", "wb", buffering=0)
    w._hf._f = w._file
    with pytest.raises(S.ShardError, match="disk full.*finished shards are intact"):
        w.write(_sample("a_1", n=40))
        w.close()
    assert not tmp.exists() and not (tmp_path / "t-000001.tar").exists()
    assert (tmp_path / "t-000000.tar").read_bytes() == before
    assert set(S.complete_shards(tmp_path)) == {0}


def test_config_compose_and_hash():
    a = compose("render", ["seed=3"])
    b = compose("render", ["seed=3"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(compose("render", ["seed=4"])) != config_hash(a)
    assert to_container(a)["seed"] == 3 and to_container(a)["rig"]["name"] == "sphere32"
    from mousefacelift.config import ConfigError
    with pytest.raises(ConfigError, match="no config 'nope'"):
        compose("nope")
    with pytest.raises(ConfigError, match="render.yaml"):
        compose("render", ["rig=does_not_exist"])


def test_out_dir_under_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(S.ShardError, match=str(f)):
        S.check_writable_dir(f / "sub")
    with pytest.raises(S.ShardError, match="not a folder"):
        S.check_writable_dir(f)
