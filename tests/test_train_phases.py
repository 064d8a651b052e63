"""End to end at tiny size on CPU: the three phases chained from hydra, and a 2-process gloo DDP run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mousefacelift.config import compose
from mousefacelift.checkpoint import load_checkpoint
from mousefacelift.analytic import write_sphere_shards
from train.run import run_phase

REPO = Path(__file__).resolve().parents[1]
COMMON = ["model=tiny", "data.resolution=16", "data.num_workers=0", "data.view_sampling.num_views=4",
          "data.view_sampling.num_input_views=2", "data.view_sampling.max_target_distance_deg=180",
          "train.steps=2", "train.log_every=1", "train.image_every=2", "train.eval_every=2", "train.ckpt_every=100",
          "eval.max_samples=2", "optim.warmup_steps=1", "device=cpu"]


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("phase_shards")
    write_sphere_shards(str(root / "objects"), samples=4, per_shard=2, size=16, source="object", prefix="obj", seed=1)
    write_sphere_shards(str(root / "mouse"), samples=4, per_shard=2, size=16, source="mouse", seed=2)
    write_sphere_shards(str(root / "real"), samples=2, per_shard=2, size=16, source="real", prefix="real",
                        rig="ring8", seed=3, with_depth=False)
    return root


@pytest.mark.slow
def test_three_phases_chain_from_hydra(tmp_path, shard_root):
    runs = tmp_path / "runs"
    base = COMMON + [f"run_root={runs}", f"shard_root={shard_root}", f"eval.shards={shard_root}/mouse"]
    s1 = run_phase(compose("train", base + ["phase=pretrain"]))
    assert s1["step"] == 2 and "novel/psnr" in s1
    s2 = run_phase(compose("train", base + ["phase=synthetic"]))
    assert s2["step"] == 2 and "novel/depth_abs_err" in s2
    pre = load_checkpoint(runs / "pretrain/checkpoints/last.pt")
    syn = load_checkpoint(runs / "synthetic/checkpoints/last.pt")
    assert syn["config"]["init_from"] == str(runs / "pretrain/checkpoints/last.pt")
    assert syn["config"]["loss"]["depth_weight"] > 0 and pre["config"]["loss"]["depth_weight"] == 0
    # phase=real through the CLI, loading the synthetic checkpoint by default
    cmd = [sys.executable, "-m", "train.run", "phase=real", *base, f"eval.shards={shard_root}/real",
           "train.tensorboard=true"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = proc.stdout + proc.stderr
    assert "initialised from" in logs and "synthetic/checkpoints/last.pt" in logs
    real = load_checkpoint(runs / "real/checkpoints/last.pt")
    assert real["phase"] == "real" and real["config"]["loss"]["depth_weight"] == 0
    # frozen early blocks did not move, later ones did
    assert torch.equal(real["model"]["blocks.0.attn.qkv.weight"], syn["model"]["blocks.0.attn.qkv.weight"])
    assert not torch.equal(real["model"]["blocks.3.attn.qkv.weight"], syn["model"]["blocks.3.attn.qkv.weight"])
    assert list((runs / "real/tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path, shard_root):
    # 1 shard for 2 ranks: the resampled stream still feeds both, so nobody hangs
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train.run",
           "phase=pretrain", *COMMON, f"run_root={tmp_path}", f"data.shards={shard_root}/objects/obj-000000.tar",
           f"eval.shards={shard_root}/mouse", "eval.max_samples=3", "train.steps=3", "train.grad_accum=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ck = load_checkpoint(tmp_path / "pretrain/checkpoints/last.pt")
    assert ck["world_size"] == 2 and ck["step"] == 3
    assert set(ck["stream_positions"]) == {0, 1}
    assert ck["counters"]["samples"] == 3 * 2   # this rank's micro-batches (B=1) x grad_accum
