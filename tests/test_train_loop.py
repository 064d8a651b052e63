"""train.trainer at tiny size on CPU: resume exactness, missing checkpoints, skipped steps, freezing, EMA."""
from dataclasses import replace

import pytest
import torch

from mousefacelift.analytic import write_sphere_shards
from mousefacelift.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mousefacelift.config import ConfigError, compose, typed
from mousefacelift.models import build_model
from train.data import make_train_loader
from train.ema import EMA
from train.schedule import lr_factor, param_groups
from train.settings import PhaseConfig
from train.trainer import Trainer, apply_freeze

SIZE = 16   # the CPU reference splatter dominates; 16 px x 4 views keeps a step ~0.1 s


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_shards")
    write_sphere_shards(str(root / "objects"), samples=4, per_shard=2, size=SIZE, source="object", prefix="obj", seed=4)
    write_sphere_shards(str(root / "mouse"), samples=4, per_shard=2, size=SIZE, source="mouse", seed=5)
    return root


def tiny_cfg(run_root, shard_root, *extra):
    return compose("train", [
        "model=tiny", f"run_root={run_root}", f"shard_root={shard_root}", "data.resolution=16", "data.num_workers=0",
        "data.view_sampling.num_views=4", "data.view_sampling.num_input_views=2",
        "data.view_sampling.max_target_distance_deg=180", "train.log_every=1", "train.eval_every=0",
        "train.image_every=0", "train.ckpt_every=100", "train.tensorboard=false", "optim.warmup_steps=1",
        "loss.perceptual_weight=0", "device=cpu", *extra])


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_is_exact(tmp_path, shard_root):
    straight = Trainer(tiny_cfg(tmp_path / "a", shard_root, "phase=pretrain", "train.steps=4"))
    straight.fit()
    first = Trainer(tiny_cfg(tmp_path / "b", shard_root, "phase=pretrain", "train.steps=4", "train.stop_after_steps=2"))
    first.fit()
    last = tmp_path / "b/pretrain/checkpoints/last.pt"
    ck = load_checkpoint(last)
    assert ck["step"] == 2 and ck["config"]["model"]["type"] == "gslrm" and ck["config"]["task"] == "gslrm"
    # a checkpoint from before tasks and model types: its weights are GS-LRM's and it resumes exactly
    del ck["config"]["task"], ck["config"]["model"]["type"]
    save_checkpoint(last, ck)
    ck["config"]["model"]["type"] = "unet"
    save_checkpoint(tmp_path / "c/pretrain/checkpoints/last.pt", ck)
    with pytest.raises(ValueError, match="holds a model of type 'unet', but model.type is 'gslrm'"):
        Trainer(tiny_cfg(tmp_path / "c", shard_root, "phase=pretrain", "train.steps=4", "resume=true"))
    second = Trainer(tiny_cfg(tmp_path / "b", shard_root, "phase=pretrain", "train.steps=4", "resume=true"))
    assert second.step == 2
    second.fit()
    a, b = _params(straight.model), _params(second.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.counters["samples"] == second.counters["samples"] == 4
    ck = load_checkpoint(tmp_path / "b/pretrain/checkpoints/last.pt")
    for field in ("optimizer", "scheduler", "rng", "config", "git_revision", "data_manifests", "stream_positions"):
        assert field in ck, field
    assert any("manifest_sha256" in r for recs in ck["data_manifests"].values() for r in recs)


def test_missing_checkpoints_are_errors(tmp_path, shard_root):
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(tiny_cfg(tmp_path, shard_root, "phase=pretrain", f"init_from={tmp_path}/nope.pt"))
    with pytest.raises(CheckpointError, match="resume=true"):
        Trainer(tiny_cfg(tmp_path, shard_root, "phase=pretrain", "resume=true"))
    # phase=synthetic starts from the pretrain output when it exists; absent, from fresh weights (logged) ...
    assert Trainer(tiny_cfg(tmp_path, shard_root, "phase=synthetic")).step == 0
    # ... but a path given by the user that does not exist is an error, and so is phase=real's required start
    with pytest.raises(CheckpointError, match="init_from of phase synthetic"):
        Trainer(tiny_cfg(tmp_path, shard_root, "phase=synthetic", f"init_from={tmp_path}/pretrain/other.pt"))
    with pytest.raises(CheckpointError, match="init_from of phase real"):
        Trainer(tiny_cfg(tmp_path, shard_root, "phase=real", f"data.shards={shard_root / 'mouse'}"))


def test_nonfinite_and_spike_steps_are_skipped(tmp_path, shard_root):
    tr = Trainer(tiny_cfg(tmp_path, shard_root, "phase=pretrain", "train.steps=3"))
    real = tr.task.loss

    def poisoned(prediction, batch, step):
        total, parts = real(prediction, batch, step)
        return (total * float("nan") if step == 1 else total), parts

    tr.task.loss = poisoned
    it = iter(make_train_loader(tr.cfg.data, 0))
    tr.train_step(it)
    before = _params(tr.model)
    res = tr.train_step(it)
    assert res["skipped"] == "nonfinite" and tr.counters["skipped_nonfinite"] == 1
    assert all(torch.equal(before[k], v) for k, v in _params(tr.model).items())
    res = tr.train_step(it)
    assert res["skipped"] is None
    assert any(not torch.equal(before[k], v) for k, v in _params(tr.model).items())
    # a grad-norm spike against the running median is skipped too
    tr.spikes.cfg = replace(tr.loop.skip, min_history=1, spike_factor=1e-6, floor=0.0)
    assert tr.train_step(it)["skipped"] == "spike" and tr.counters["skipped_spike"] == 1


def test_spike_filter_keeps_stepping_when_gradients_are_tiny_or_settle_higher():
    """The deadlock: accepted norms ~0 (transparent Gaussians) made every real gradient a spike,
    and only accepted norms entered the median, so a norm that settled higher was skipped forever."""
    from train.settings import SkipConfig
    from train.spikes import SpikeFilter

    f = SpikeFilter(SkipConfig(spike_factor=10.0, history=20, min_history=5, floor=1.0))
    for _ in range(20):
        assert f.decide(1e-9) is None
    assert f.decide(0.5) is None                       # below the floor: never a spike, however small the median
    assert f.decide(50.0) == "spike"                   # a real outlier still is
    for _ in range(9):
        f.decide(40.0)                                 # the norm settles 40x higher ...
    assert [f.decide(40.0) for _ in range(5)] == [None] * 5   # ... and the median follows: steps resume
    assert f.decide(float("nan")) == "nonfinite" and f.decide(1.0, loss_finite=False) == "nonfinite"


def test_freeze_policy_and_param_groups(tmp_path, shard_root):
    cfg = tiny_cfg(tmp_path, shard_root, "phase=real")
    pats = typed(PhaseConfig, cfg.phase, "phase").freeze_patterns()
    assert "blocks.0.*" in pats and "blocks.1.*" in pats and "blocks.2.*" not in pats
    m = build_model(cfg.model)
    frozen = apply_freeze(m, pats)
    assert "tokenizer.weight" in frozen and not any(n.startswith("blocks.2.") for n in frozen)
    assert all(not p.requires_grad for n, p in m.named_parameters() if n.startswith("blocks.1."))
    groups = param_groups(m, 0.05)
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])
    assert groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="matches no parameter"):
        apply_freeze(m, ["encoder.*"])
    assert cfg.loss.depth_weight == 0 and cfg.optim.lr < compose("train", ["phase=synthetic"]).optim.lr


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, 10, 100, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.1, abs=1e-3)


def test_ema_follows_the_weights_and_resumes_exactly(tmp_path, shard_root):
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=100)                       # past the warm-up: decay_t = 0.9
    assert torch.allclose(ema.state_dict()["weight"], 0.9 * start["weight"] + 0.1 * model.weight)
    with ema.applied(model):
        assert torch.equal(model.weight, ema.state_dict()["weight"])
    assert torch.equal(model.weight, start["weight"] + 1.0)   # the model's own weights are back

    over = ["phase=pretrain", "train.steps=4", "train.ema_decay=0.9"]
    straight = Trainer(tiny_cfg(tmp_path / "a", shard_root, *over))
    straight.fit()
    Trainer(tiny_cfg(tmp_path / "b", shard_root, *over, "train.stop_after_steps=2")).fit()
    second = Trainer(tiny_cfg(tmp_path / "b", shard_root, *over, "resume=true"))
    second.fit()
    a, b = straight.ema.state_dict(), load_checkpoint(tmp_path / "b/pretrain/checkpoints/last.pt")["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], straight.model.state_dict()[k]) for k in a)


def test_trainer_sections_name_unknown_and_bad_keys(tmp_path, shard_root):
    cfg = tiny_cfg(tmp_path, shard_root, "phase=pretrain", "+train.stpes=3")
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['stpes'\]"):
        Trainer(cfg)
    with pytest.raises(ConfigError, match="train.ema_decay must be in"):
        Trainer(tiny_cfg(tmp_path, shard_root, "phase=pretrain", "train.ema_decay=1.5"))
