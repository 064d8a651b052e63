"""Training under bad input and bad luck: hostile checkpoints, corrupt or rotten shards, a shard
server that goes away, a killed checkpoint save, bad command lines, and a new user's first run
(the README's render followed by the README's training command)."""
import functools
import http.server
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import mousefacelift.shards.read as shard_read
from mousefacelift.analytic import write_sphere_shards
from mousefacelift.checkpoint import UnreadableCheckpoint, load_checkpoint, save_checkpoint
from mousefacelift.config import compose, load_yaml
from mousefacelift.shards import SampleError, ShardRejected, ShardUnavailable, ShardWriter, iter_shard
from mousefacelift.shards.atomic import host_tag
from train.data import (DataError, TrainStream, eval_examples, example_config, make_example, make_train_loader,
                        shard_sets_from_cfg)
from train.run import one_line, run_phase
from train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
SMALL = ["model=tiny", f"data.resolution={SIZE}", "data.num_workers=0", "data.view_sampling.num_views=4",
         "data.view_sampling.num_input_views=2", "data.view_sampling.max_target_distance_deg=180",
         "train.steps=2", "train.log_every=1", "train.image_every=0", "train.eval_every=2", "train.ckpt_every=100",
         "eval.max_samples=2", "optim.warmup_steps=1", "loss.perceptual_weight=0", "device=cpu"]


def data_cfg(shards, **over):
    base, _ = load_yaml("data", "base")
    test = dict(shards=shards, resolution=SIZE, batch_size=1, num_workers=0, augment=dict(enabled=False),
                view_sampling=dict(num_views=2, num_input_views=1, max_target_distance_deg=180))
    return OmegaConf.merge(base, test, over)


def stream(cfg, seed=0):
    return iter(TrainStream(shard_sets_from_cfg(cfg), example_config(cfg), seed=seed))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def cli(*args, timeout=240):
    proc = subprocess.run([sys.executable, "-m", "train.run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    return proc, errors


@pytest.fixture(scope="module")
def spheres(tmp_path_factory):
    root = tmp_path_factory.mktemp("spheres")
    urls = write_sphere_shards(str(root / "s"), samples=4, per_shard=2, size=SIZE, source="mouse", seed=7)
    return root / "s", urls


# -- 1. checkpoints: weights only, a pickled payload is refused, never run ---------------------
class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_code_is_refused_and_never_run(tmp_path, spheres):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker), "config": {"model": {"type": "gslrm"}}}, evil)
    with pytest.raises(UnreadableCheckpoint) as e:
        load_checkpoint(evil, what="init_from")
    msg = str(e.value)
    assert "\n" not in msg and str(evil) in msg and "expected a checkpoint of tensors" in msg and "posix.system" in msg
    # as a phase's starting point and as the checkpoint a resume continues: refused the same way
    folder, _ = spheres
    cfg = compose("train", SMALL + [f"run_root={tmp_path}/runs", f"data.shards={folder}", f"init_from={evil}"])
    with pytest.raises(UnreadableCheckpoint, match="evil.pt refused"):
        Trainer(cfg)
    (tmp_path / "runs/pretrain/checkpoints").mkdir(parents=True)
    shutil.copy(evil, tmp_path / "runs/pretrain/checkpoints/last.pt")
    cfg = compose("train", SMALL + [f"run_root={tmp_path}/runs", f"data.shards={folder}", "resume=true"])
    with pytest.raises(UnreadableCheckpoint, match="last.pt refused"):
        Trainer(cfg)
    assert not marker.exists()
    # from the command line: one line, exit status 2, nothing run
    proc, errors = cli(*SMALL, f"run_root={tmp_path}/runs2", f"data.shards={folder}", f"init_from={evil}")
    assert proc.returncode == 2 and len(errors) == 1 and "evil.pt refused" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_trainer_checkpoint_loads_weights_only_with_optimizer_state(tmp_path, spheres):
    folder, _ = spheres
    cfg = compose("train", SMALL + [f"run_root={tmp_path}", f"data.shards={folder}", "train.eval_every=0",
                                    "train.tensorboard=false"])
    trainer = Trainer(cfg)
    trainer.fit()
    trainer.close()
    path = tmp_path / "pretrain/checkpoints/last.pt"
    state = load_checkpoint(path)     # torch.load(weights_only=True) inside
    assert state["optimizer"]["state"] and "last_epoch" in state["scheduler"] and state["step"] == 2


# -- 2. corrupt samples: bounded skipping, huge PNGs refused before decoding --------------------
def _rewrite(src: str, out_dir, prefix: str, change) -> str:
    """A copy of shard ``src`` as ``out_dir/prefix/prefix-000000.tar``, ``change(i, sample)`` applied."""
    (Path(out_dir) / prefix).mkdir()
    with ShardWriter(Path(out_dir) / prefix, 0, prefix=prefix) as w:
        for i, sample in enumerate(iter_shard(src)):
            sample = {k: v for k, v in sample.items() if k != "__url__"}
            change(i, sample)
            w.write(sample)
    return str(w.path)


def test_all_corrupt_shard_stops_with_one_message_naming_it(tmp_path, spheres):
    _, urls = spheres

    def bad_meta(i, s):
        s["meta.json"] = b"{not json"
    bad = _rewrite(urls[0], tmp_path, "badmeta", bad_meta)
    cfg = data_cfg(bad, max_consecutive_corrupt=5)
    t0 = time.time()
    with pytest.raises(DataError) as e:
        next(stream(cfg))
    assert time.time() - t0 < 30
    msg = str(e.value)
    assert "\n" not in msg and bad in msg and "6 samples in a row" in msg and "max_consecutive_corrupt=5" in msg
    # a share cap: 1 good sample in 2 is too few at max_corrupt_share=0.4
    half = _rewrite(urls[0], tmp_path, "half", lambda i, s: bad_meta(i, s) if i == 0 else None)
    cfg = data_cfg(half, max_consecutive_corrupt=4, max_corrupt_share=0.4)
    it = stream(cfg)
    with pytest.raises(DataError, match=r"max_corrupt_share=0\.4"):
        for _ in range(50):
            next(it)


def test_png_over_the_pixel_limit_is_refused_before_decoding(tmp_path, spheres, monkeypatch):
    _, urls = spheres
    # a 10000x10000 RGBA header (400 MB once decoded) with no body: only the header may be read
    huge = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (10000).to_bytes(4, "big") * 2 + b"\x08\x06\x00\x00\x00"

    def giant(i, s):
        for k in list(s):
            if k.endswith(".rgba.png"):
                s[k] = huge
    bad = _rewrite(urls[0], tmp_path, "giant", giant)

    def no_decoding(*a, **k):
        raise AssertionError("a PNG over the limit was decoded")
    monkeypatch.setattr("mousefacelift.shards.sample._unpng", no_decoding)
    cfg = data_cfg(bad, max_consecutive_corrupt=3)
    raw = next(iter_shard(bad))
    with pytest.raises(SampleError, match=r"10000x10000 = 100000000 pixels, over data\.max_image_pixels=16777216"):
        make_example(raw, example_config(cfg), np.random.default_rng(0))
    with pytest.raises(DataError, match="giant-000000.tar"):
        next(stream(cfg))


# -- 5. bit rot: sha256 against the manifest --------------------------------------------------
def _rot(path: str) -> None:
    """Flip one byte in the middle of a shard (the tar structure usually survives)."""
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def test_rotten_shard_is_skipped_counted_once_and_named(tmp_path, spheres, monkeypatch):
    folder, _ = spheres
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    rotten = str(copy / "sphere-000001.tar")
    _rot(rotten)
    hashed = []
    real = shard_read.shard_sha256
    monkeypatch.setattr(shard_read, "shard_sha256", lambda p, *a: hashed.append(str(p)) or real(p, *a))
    exs = [e for _, e in zip(range(12), stream(data_cfg(str(copy))))]
    assert all(e["shard"] != rotten for e in exs)
    recs = [r for e in exs for r in e["corrupt"]]
    assert len(recs) == 1 and recs[0]["key"] is None and recs[0]["shard"] == rotten
    assert "sha256" in recs[0]["reason"] and "manifest.json" in recs[0]["reason"]
    assert sorted(hashed) == sorted({rotten, str(copy / "sphere-000000.tar")})   # once per shard, not per draw
    # evaluation skips it too, with the record
    ev = eval_examples(str(copy), data_cfg(str(copy)), seed=0)
    assert {e["shard"] for e in ev} == {str(copy / "sphere-000000.tar")}
    assert any(r["shard"] == rotten and "sha256" in r["reason"] for r in ev[0]["corrupt"])
    # nothing readable at all: one message, not an endless loop
    with pytest.raises(DataError, match="none of its 1 shard"):
        next(stream(data_cfg(rotten)))


def test_trainer_counts_rotten_shards(tmp_path, spheres):
    folder, _ = spheres
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    _rot(str(copy / "sphere-000000.tar"))
    cfg = compose("train", SMALL + [f"run_root={tmp_path}", f"data.shards={copy}", "train.eval_every=0",
                                    "train.tensorboard=false"])
    trainer = Trainer(cfg)
    summary = trainer.fit()
    trainer.close()
    assert summary["corrupt_shards"] == 1 and summary["corrupt_samples"] == 0 and summary["step"] == 2


# -- 9. checkpoint saves: no leftovers of killed writers, fsync before the rename -----------------
def test_stale_checkpoint_tmp_of_dead_writer_is_removed(tmp_path, spheres):
    ckdir = tmp_path / "pretrain/checkpoints"
    ckdir.mkdir(parents=True)
    stale = ckdir / f"last.pt.tmp-{host_tag()}-{dead_pid()}"
    live = ckdir / f"last.pt.tmp-{host_tag()}-{os.getpid()}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    folder, _ = spheres
    cfg = compose("train", SMALL + [f"run_root={tmp_path}", f"data.shards={folder}", "train.tensorboard=false"])
    Trainer(cfg)
    assert not stale.exists() and live.exists()
    stale.write_bytes(b"again")
    save_checkpoint(ckdir / "other.pt", {"x": torch.zeros(1)})
    assert not stale.exists()


def test_checkpoint_is_fsynced_before_rename_and_folder_after(tmp_path, monkeypatch):
    import stat
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        real_replace(a, b)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path / "last.pt", {"w": torch.ones(3)})
    assert events == ["file", "rename", "dir"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# -- 10. http shards: a server outage is ridden out, then stops with a clear message ----------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


class _Server:
    """A local shard server that can be stopped and started again on the same port."""

    def __init__(self, folder, handler=None):
        self.handler = handler or functools.partial(_Quiet, directory=str(folder))
        self.port = None
        self.start()

    def start(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port or 0), self.handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"


def test_http_server_restart_is_ridden_out(spheres):
    folder, urls = spheres
    want = [s["__key__"] for s in iter_shard(urls[0])]
    srv = _Server(folder)
    try:
        srv.stop()
        timer = threading.Timer(1.0, srv.start)
        timer.start()
        t0 = time.time()
        got = [s["__key__"] for s in iter_shard(srv.url("sphere-000000.tar"), retry_s=20, timeout_s=2)]
        assert got == want and time.time() - t0 >= 0.9
        timer.join()
        # 404: one line naming the URL and the status, at once
        with pytest.raises(ShardRejected, match=r"^http://127\.0\.0\.1:\d+/nope\.tar: HTTP 404"):
            list(iter_shard(srv.url("nope.tar"), retry_s=20, timeout_s=2))
        # down for longer than the window: the stream stops, naming the URL and the window
        srv.stop()
        t0 = time.time()
        with pytest.raises(ShardUnavailable, match=r"sphere-000000\.tar: shard server unreachable for 1 s"):
            list(iter_shard(srv.url("sphere-000000.tar"), retry_s=1, timeout_s=1))
        assert time.time() - t0 < 10
        cfg = data_cfg(srv.url("sphere-000000.tar"), remote_retry_s=1, remote_timeout_s=1)
        with pytest.raises(DataError, match=r"unreachable for 1 s.*data\.remote_retry_s=1"):
            next(stream(cfg))
    finally:
        try:
            srv.stop()
        except Exception:
            pass


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_http_transfer_broken_mid_shard_resumes(spheres, ranges):
    _, urls = spheres
    data = Path(urls[0]).read_bytes()
    calls = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            calls.append(self.headers.get("Range"))
            start = 0
            rng = self.headers.get("Range")
            if ranges and rng:
                start = int(rng.split("=")[1].rstrip("-"))
                self.send_response(206)
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if len(calls) == 1:         # the first transfer breaks halfway
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    srv = _Server(None, handler=Flaky)
    try:
        got = [s for s in iter_shard(srv.url("x.tar"), retry_s=10, timeout_s=2)]
    finally:
        srv.stop()
    want = list(iter_shard(urls[0]))
    assert [s["__key__"] for s in got] == [s["__key__"] for s in want]
    assert all(g[k] == w[k] for g, w in zip(got, want) for k in w if k != "__url__")
    assert len(calls) == 2 and calls[1] is not None and calls[1].startswith("bytes=")


# -- 8. messages: one line, exit status 2 ----------------------------------------------------
def test_command_line_errors_are_one_line_exit_2(tmp_path, spheres):
    folder, _ = spheres
    base = [f"run_root={tmp_path}", f"data.shards={folder}", *SMALL]
    proc, errors = cli(*base, "seed=abc")
    assert proc.returncode == 2 and errors == ["error: seed='abc': expected a whole number"], proc.stderr[-2000:]
    proc, errors = cli(*base, "train.stepz=3")
    assert proc.returncode == 2 and len(errors) == 1 and "train.stepz" in errors[0]
    proc, errors = cli(*base, f"init_from={tmp_path}/missing.pt")
    assert proc.returncode == 2 and len(errors) == 1 and f"{tmp_path}/missing.pt does not exist" in errors[0]
    assert "Traceback" not in proc.stderr
    proc, errors = cli(*base, "resume=true")
    assert proc.returncode == 2 and len(errors) == 1 and "resume=true" in errors[0] and "does not exist" in errors[0]
    srv = _Server(folder)
    try:   # a 404 shard, read in a DataLoader worker process: the worker's message, not its traceback
        proc, errors = cli(*base, f"data.shards={srv.url('gone.tar')}", "data.num_workers=1", "train.eval_every=0")
    finally:
        srv.stop()
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "gone.tar: HTTP 404" in errors[0] and "Traceback" not in errors[0]
    assert not list((tmp_path / "pretrain").glob("tb/events.*"))


def test_one_line_unwraps_dataloader_worker_errors():
    wrapped = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    raise DataError(msg)\ntrain.data.DataError: data set \'s\': none')
    assert one_line(wrapped) == "data set 's': none"
    assert one_line("In 'train': Could not find 'phase/x'\n\nAvailable options in 'phase':\n\tpretrain\n\treal\n"
                    "Config search path:\n\tprovider=hydra") == \
        "In 'train': Could not find 'phase/x'; Available options in 'phase': pretrain, real"


# -- 12. the README's render, then the README's training command --------------------------------
def _render_layout(root: Path, samples: int, per_shard: int) -> Path:
    """What ``python3 -m synth.render`` leaves in ``shards/``: mouse-NNNNNN.tar + manifest.json."""
    write_sphere_shards(str(root / "shards"), samples=samples, per_shard=per_shard, size=SIZE, source="mouse",
                        prefix="mouse", seed=3)
    return root / "shards"


@pytest.mark.parametrize("per_shard", [2, 4], ids=["two-shards", "one-shard"])
def test_first_run_on_a_fresh_render_trains_and_evaluates(tmp_path, per_shard, caplog):
    shards = _render_layout(tmp_path, samples=4, per_shard=per_shard)
    cfg = compose("train", SMALL + ["phase=synthetic", f"shard_root={shards}", f"run_root={tmp_path}/runs",
                                    "train.tensorboard=true"])
    with caplog.at_level(logging.INFO):
        summary = run_phase(cfg)
    log = caplog.text
    assert summary["step"] == 2 and "novel/psnr" in summary
    assert "mouse does not exist; using the" in log and "objects" in log and "optional" in log
    assert "starts from freshly initialised weights" in log and "init_default" in log
    assert "eval.shards is null: evaluating on the last 1 of the" in log
    assert "device cpu" in log and f"resolution {SIZE}x{SIZE}" in log and "M parameters" in log
    assert "first step took" in log
    assert list((tmp_path / "runs/synthetic/tb").glob("events.out.tfevents.*"))
    if per_shard == 4:    # one shard: the held-out samples never reach training
        trainer = Trainer(cfg)
        held = trainer.settings.eval.shards
        assert held.keys == {"mouse_000000003"}
        it = iter(make_train_loader(trainer.data, 0, sets=trainer.train_sets))
        keys = {next(it)["key"][0] for _ in range(12)}
        assert keys and "mouse_000000003" not in keys
        trainer.close()


def test_given_init_from_that_does_not_exist_stays_an_error(tmp_path):
    shards = _render_layout(tmp_path, samples=4, per_shard=2)
    proc, errors = cli(*SMALL, "phase=synthetic", f"shard_root={shards}", f"run_root={tmp_path}/runs",
                       f"init_from={tmp_path}/runs/pretrain/checkpoints/other.pt")
    assert proc.returncode == 2 and len(errors) == 1 and "other.pt does not exist" in errors[0]


def test_failed_start_leaves_no_empty_event_file(tmp_path, spheres):
    _, urls = spheres
    bad = _rewrite(urls[0], tmp_path, "badmeta", lambda i, s: s.__setitem__("meta.json", b"{"))
    cfg = compose("train", SMALL + [f"run_root={tmp_path}/runs", f"data.shards={bad}", "train.eval_every=0",
                                    "train.tensorboard=true", "data.max_consecutive_corrupt=3"])
    with pytest.raises(DataError, match="badmeta-000000.tar"):
        run_phase(cfg)
    assert not (tmp_path / "runs/pretrain/tb").exists()


@pytest.mark.slow
def test_readme_render_then_train_end_to_end(tmp_path):
    """The two README commands, at tiny size, in a fresh folder: render, then train and evaluate."""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    render = subprocess.run([sys.executable, "-m", "synth.render", "--poses", "2", "--quality", "preview"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert render.returncode == 0, render.stderr[-3000:]
    assert (tmp_path / "shards/manifest.json").exists() and list((tmp_path / "shards").glob("mouse-*.tar"))
    train = subprocess.run([sys.executable, "-m", "train.run", "phase=synthetic", "train.steps=2",
                            "data.resolution=32", "model=tiny", "data.num_workers=0", "train.eval_every=2",
                            "eval.max_samples=1"], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    logs = train.stdout + train.stderr
    assert "eval step 2" in logs and "held out of training" in logs
    assert (tmp_path / "runs/synthetic/checkpoints/last.pt").exists()
