"""train.data: shard streaming, mixing, view sampling, backgrounds, corrupt/real samples, resume."""
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mousefacelift.cameras import make_rig
from mousefacelift.config import load_yaml
from mousefacelift.shards import ShardWriter, iter_shard, resolve_shards
from train.data import TrainStream, eval_examples, example_config, make_train_loader, shard_sets_from_cfg
from mousefacelift.analytic import write_sphere_shards
from train.views import ViewSamplingConfig, constraint_violations, select_views, view_directions

SIZE = 32


def data_cfg(shards, **over):
    """configs/data/base.yaml at test size, unaugmented, with ``over`` merged in."""
    base, _ = load_yaml("data", "base")
    test = dict(shards=shards, resolution=SIZE, batch_size=2, num_workers=0,
                augment=dict(enabled=False, probability=1.0))
    return OmegaConf.merge(base, test, over)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_sphere_shards(str(root / "mouse"), samples=6, per_shard=3, size=SIZE, source="mouse", seed=1)
    write_sphere_shards(str(root / "objects"), samples=4, per_shard=2, size=SIZE, prefix="obj", source="object", seed=2)
    write_sphere_shards(str(root / "real"), samples=2, per_shard=2, size=SIZE, prefix="real", source="real",
                        rig="ring8", seed=3, with_depth=False)
    return root


def take(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def test_resolve_shards_forms_and_errors(shards):
    folder = resolve_shards(str(shards / "mouse"))
    assert [os.path.basename(u) for u in folder] == ["sphere-000000.tar", "sphere-000001.tar"]
    assert resolve_shards(str(shards / "mouse" / "sphere-{000000..000001}.tar")) == folder
    assert resolve_shards(str(shards / "mouse" / "*.tar")) == folder
    assert resolve_shards("pipe:cat /x/a-{0..1}.tar") == ["pipe:cat /x/a-0.tar", "pipe:cat /x/a-1.tar"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_shards(str(shards / "missing"))
    # pipe: URLs really stream
    url = f"pipe:cat {folder[0]}"
    assert [s["__key__"] for s in iter_shard(url)] == ["mouse_000000000", "mouse_000000001", "mouse_000000002"]


def test_batch_fields_and_weighted_mixing(shards):
    cfg = data_cfg(None, sets=[{"name": "mouse", "shards": str(shards / "mouse"), "weight": 0.75},
                               {"name": "objects", "shards": str(shards / "objects"), "weight": 0.25}],
                   view_sampling={"num_views": 2, "num_input_views": 1, "max_target_distance_deg": 180})
    ds = TrainStream(shard_sets_from_cfg(cfg), example_config(cfg), seed=0)
    exs = take(ds, 160)
    frac = np.mean([e["set"] == "mouse" for e in exs])
    assert 0.63 < frac < 0.87, frac          # 0.75 +- ~4 sigma of a binomial(160)
    assert {e["source"] for e in exs if e["set"] == "objects"} == {"object"}
    b = next(iter(make_train_loader(data_cfg(str(shards / "mouse")), seed=0)))
    assert b["rgb"].shape == (2, 8, 3, SIZE, SIZE) and b["input_rgb"].shape == (2, 4, 3, SIZE, SIZE)
    assert b["K"].shape == (2, 8, 3, 3) and b["c2w"].shape == (2, 8, 4, 4) and bool(b["has_depth"].all())
    # the inputs are the first views of the supervised set (no augmentation here)
    assert torch.allclose(b["input_rgb"], b["rgb"][:, :4]) and torch.allclose(b["input_c2w"], b["c2w"][:, :4])
    assert torch.equal(b["input_depth"], b["depth"][:, :4]) and torch.equal(b["input_alpha"], b["alpha"][:, :4])
    # augmented inputs lose their point-map depth (their pixels moved off the surface it described)
    aug = data_cfg(str(shards / "mouse"), augment={"enabled": True, "probability": 0.5})
    exs = take(TrainStream(shard_sets_from_cfg(aug), example_config(aug), seed=0), 6)
    moved = torch.cat([e["input_jittered"] | (e["input_grid_px"] > 0) for e in exs])
    known = torch.cat([(e["input_depth"] > 0).flatten(1).any(1) for e in exs])
    assert moved.any() and (~moved).any() and torch.equal(known, ~moved)


def test_view_sampling_constraint_and_policies():
    cams = make_rig("sphere32", size=16, seed=0)
    c2w = np.stack([c.c2w for c in cams])
    cfg = ViewSamplingConfig.from_yaml(min_input_separation_deg=40, max_target_distance_deg=60)
    rng = np.random.default_rng(0)
    dirs = view_directions(c2w)
    assert np.allclose(dirs, np.stack([c.center for c in cams]) / 2.7, atol=1e-6)
    for _ in range(20):
        idx, fallback = select_views(c2w, cfg, rng)
        assert len(set(idx.tolist())) == 8
        assert fallback or constraint_violations(dirs, idx, 4, cfg) == 0
        assert not fallback
        inp = dirs[idx[:4]]
        ang = np.degrees(np.arccos(np.clip(inp @ inp.T, -1, 1)))[np.triu_indices(4, 1)]
        assert ang.min() >= 40
        near = np.degrees(np.arccos(np.clip(dirs[idx] @ inp.T, -1, 1))).min(1)
        assert near.max() <= 60
    impossible = ViewSamplingConfig.from_yaml(min_input_separation_deg=170, max_tries=4)
    _, fallback = select_views(c2w, impossible, rng)
    assert fallback
    fixed = ViewSamplingConfig.from_yaml(policy="fixed", fixed_views=(0, 5, 10, 15, 1, 2, 3, 4))
    assert select_views(c2w, fixed, rng)[0].tolist() == [0, 5, 10, 15, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="fixed_views"):
        ViewSamplingConfig.from_yaml(policy="fixed", fixed_views=(0, 1))
    out_of_range = ViewSamplingConfig.from_yaml(policy="fixed", fixed_views=(0, 1, 2, 3, 4, 5, 6, 25))
    with pytest.raises(ValueError, match="out of range"):
        select_views(c2w[:20], out_of_range, rng)


@pytest.mark.parametrize("mode,colour", [("white", 1.0), ("black", 0.0), ("grey", 0.5), ("random", None)])
def test_backgrounds_composited_from_straight_alpha(shards, mode, colour):
    cfg = data_cfg(str(shards / "mouse"), backgrounds=[mode])
    ex = take(TrainStream(shard_sets_from_cfg(cfg), example_config(cfg), seed=3), 1)[0]
    bg = ex["background"]
    if colour is not None:
        assert torch.allclose(bg, torch.full((3,), colour))
    empty = ex["alpha"][:, 0] == 0
    full = ex["alpha"][:, 0] == 1
    assert empty.any() and full.any()
    rgb = ex["rgb"].permute(0, 2, 3, 1)
    assert torch.allclose(rgb[empty], bg.expand(int(empty.sum()), 3), atol=1e-6)
    assert torch.allclose(ex["input_rgb"].permute(0, 2, 3, 1)[empty[:4]], bg.expand(int(empty[:4].sum()), 3), atol=1e-6)


def test_resolution_from_config_scales_intrinsics(shards):
    cfg = data_cfg(str(shards / "mouse"), resolution=16)
    ex = take(TrainStream(shard_sets_from_cfg(cfg), example_config(cfg), seed=0), 1)[0]
    assert ex["rgb"].shape[-2:] == (16, 16) and ex["depth"].shape[-2:] == (16, 16)
    cams = make_rig("sphere32", size=SIZE)
    assert torch.allclose(ex["K"][0, 0, 0], torch.tensor(cams[0].resized(16, 16).K[0, 0], dtype=torch.float32))
    # depth stays valid-aware: no depth where the resized alpha is empty
    assert float(ex["depth"][ex["alpha"] < 0.01].abs().max()) == 0.0


def _corrupt_copy(src: str, out_dir, bad_key: str) -> str:
    """A copy of shard ``src`` whose sample ``bad_key`` has an undecodable view 2, as ``bad-000000.tar``."""
    with ShardWriter(out_dir, 0, prefix="bad") as w:
        for sample in iter_shard(src):
            if sample["__key__"] == bad_key:
                sample["002.rgba.png"] = b"not a png"
            w.write({k: v for k, v in sample.items() if k != "__url__"})
    return str(w.path)


def test_corrupt_sample_skipped_counted_and_named(shards, tmp_path):
    src = resolve_shards(str(shards / "mouse"))[0]
    bad = _corrupt_copy(src, tmp_path, "mouse_000000001")
    cfg = data_cfg(bad, view_sampling={"policy": "fixed", "fixed_views": [0, 1, 2, 3, 4, 5, 6, 7]})
    exs = take(TrainStream(shard_sets_from_cfg(cfg), example_config(cfg), seed=0), 4)
    keys = [e["key"] for e in exs]
    assert "mouse_000000001" not in keys
    recs = [r for e in exs for r in e["corrupt"]]
    assert recs and all(r["shard"] == bad and r["key"] == "mouse_000000001" for r in recs)
    assert "002.rgba.png" in recs[0]["reason"]
    # evaluation is exact: the corrupt sample is skipped (and reported), never replaced
    ev = eval_examples(bad, cfg, seed=0)
    assert [e["key"] for e in ev if bool(e["valid"])] == ["mouse_000000000", "mouse_000000002"]
    assert ev[0]["corrupt"][0]["key"] == "mouse_000000001"
    # a truncated shard is reported with its name and the stream goes on
    trunc = str(tmp_path / "trunc-000000.tar")
    raw = open(src, "rb").read()
    open(trunc, "wb").write(raw[: len(raw) // 2])
    cfg2 = data_cfg([trunc, src])
    exs = take(TrainStream(shard_sets_from_cfg(cfg2), example_config(cfg2), seed=0), 8)
    recs = [r for e in exs for r in e["corrupt"]]
    assert any(r["shard"] == trunc for r in recs)


def test_real_samples_without_depth(shards):
    cfg = data_cfg(str(shards / "real"), view_sampling={"num_views": 6, "num_input_views": 3,
                                                         "min_input_separation_deg": 20, "max_target_distance_deg": 90})
    b = next(iter(make_train_loader(cfg, seed=0)))
    assert b["source"] == ["real", "real"]
    assert not bool(b["has_depth"].any()) and float(b["depth"].abs().max()) == 0.0
    mixed = data_cfg(None, sets=[{"name": "m", "shards": str(shards / "mouse"), "weight": 1},
                                 {"name": "r", "shards": str(shards / "real"), "weight": 1}],
                     view_sampling={"num_views": 6, "num_input_views": 3, "max_target_distance_deg": 90})
    exs = take(TrainStream(shard_sets_from_cfg(mixed), example_config(mixed), seed=0), 12)
    assert {(e["source"], bool(e["has_depth"])) for e in exs} == {("real", False), ("mouse", True)}


def test_stream_resume_replays_exactly(shards):
    cfg = data_cfg(str(shards / "mouse"), augment={"enabled": True})
    sets, ecfg = shard_sets_from_cfg(cfg), example_config(cfg)
    straight = take(TrainStream(sets, ecfg, seed=5), 7)
    pos = {0: int(straight[3]["stream_pos"])}
    resumed = take(TrainStream(sets, ecfg, seed=5, resume_positions=pos), 3)
    for a, b in zip(straight[4:], resumed):
        assert a["key"] == b["key"] and torch.equal(a["input_rgb"], b["input_rgb"]) and torch.equal(a["c2w"], b["c2w"])


def test_eval_split_is_exact_and_rank_equalised(shards, monkeypatch):
    cfg = data_cfg(str(shards / "mouse"))
    seen, lens = [], []
    for rank in range(4):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "4")
        ev = eval_examples(str(shards / "mouse"), cfg, seed=0)
        lens.append(len(ev))
        seen += [e["key"] for e in ev if bool(e["valid"])]
    assert lens == [2, 2, 2, 2]
    assert sorted(seen) == [f"mouse_{i:09d}" for i in range(6)]
    # deterministic per key: same views on every call
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    a, b = eval_examples(str(shards / "mouse"), cfg, 0), eval_examples(str(shards / "mouse"), cfg, 0)
    assert all(torch.equal(x["view_index"], y["view_index"]) for x, y in zip(a, b))
