"""PoseSampler: determinism per (seed, index), families, limits, rejection, grounding."""
import warnings

import numpy as np
import pytest
import torch

from mousefacelift.body import PoseParams, PoseSampler, load_pose_config

warnings.filterwarnings("ignore", message="Sparse invariant checks")


@pytest.fixture(scope="module")
def model(procedural):
    return procedural


@pytest.fixture(scope="module")
def sampler(model):
    return PoseSampler(model)


def test_same_pose_for_an_index_however_the_run_is_split(sampler):
    whole = sampler.sample(np.arange(100, 164), seed=7)
    parts = [sampler.sample(np.arange(100, 132), seed=7), sampler.sample(np.arange(132, 164), seed=7)]
    a = whole.params.to_array()
    b = np.concatenate([p.params.to_array() for p in parts])
    assert np.array_equal(a, b)
    one = sampler.sample([150], seed=7)
    assert np.array_equal(one.params.to_array()[0], a[50])
    assert whole.family == parts[0].family + parts[1].family
    other = sampler.sample(np.arange(100, 164), seed=8)
    assert not np.allclose(other.params.to_array(), a)


def test_families_follow_the_config_mix(sampler):
    b = sampler.sample(np.arange(2000), seed=0)
    cfg = load_pose_config()
    w = np.array([cfg["families"][f]["weight"] for f in sampler.family_names], float)
    counts = np.array([b.family.count(f) for f in sampler.family_names])
    assert np.all(counts > 0)
    assert np.allclose(counts / counts.sum(), w / w.sum(), atol=0.04)
    only = dict(cfg, families={"rear": cfg["families"]["rear"]})
    assert set(PoseSampler(sampler.model, only).sample(np.arange(20)).family) == {"rear"}


def test_sampled_poses_are_plausible_grounded_and_within_limits(sampler, model):
    b = sampler.sample(np.arange(200), seed=3)
    assert b.stats["rejection_rate"] < 0.5 and not b.forced.any()
    score, _, _ = sampler._evaluate(b.params)
    assert np.all(score <= 0)
    # ground: the posed mesh stands on z = 0 (proxy-based placement, within 1.5 mm)
    out = model.pose(b.params.index(slice(0, 40)))
    zmin = out.vertices[..., 2].min(dim=1).values.numpy() * model.mm_per_unit
    assert np.all(zmin > -1.5) and np.all(zmin < 1.5)
    # anatomical limits hold per segment (chains share the angle)
    jr = b.params.joint_rot.numpy()
    for i, s in enumerate(sampler.seg_names):
        js = model.segments[s]
        tot = jr[:, js].sum(axis=1) * (np.array([1, -1, 1]) if s.endswith("_r") else
                                       np.array([1, 1, -1]) if s.endswith("_l") else 1)
        lim = sampler._limits[i]
        assert np.all(tot >= lim[:, 0] - 1e-5) and np.all(tot <= lim[:, 1] + 1e-5), s
    # adult size range
    s = b.params.scale.numpy()
    assert s.min() >= 0.93 - 1e-6 and s.max() <= 1.07 + 1e-6


def test_penetration_and_crossing_are_rejected(sampler, model):
    p = PoseParams.rest(model, batch=3)
    tail = model.segments["tail"]
    p.joint_rot[1, tail[:3], 0] = np.deg2rad(170 / 3)      # tail folded up and forward into the body
    hip_l, hip_r = model.segments["hip_l"][0], model.segments["hip_r"][0]
    p.joint_rot[2, hip_l, 1] = -np.pi / 2                  # legs twisted so the feet swap sides
    p.joint_rot[2, hip_r, 1] = np.pi / 2
    score, reasons, _ = sampler._evaluate(p)
    assert score[0] == 0
    assert reasons["penetration"][1] and score[1] > 0
    assert reasons["crossing"][2] and score[2] > 0
    flipped = PoseParams.rest(model)
    flipped.global_orient[0] = torch.tensor([np.pi, 0.0, 0.0])  # upside down
    assert sampler._evaluate(flipped)[1]["flip"][0]


def test_config_errors_name_the_problem(model):
    cfg = load_pose_config()
    bad = dict(cfg, families={"x": {"weight": 1, "segments": {"wing": {"flex": [0, 1]}}}})
    with pytest.raises(ValueError, match="unknown segment 'wing'"):
        PoseSampler(model, bad)
    with pytest.raises(ValueError, match="weights"):
        PoseSampler(model, dict(cfg, families={"x": {"weight": 0}}))


def test_mammal_sampling_and_keypoints(mammal):
    m = mammal
    b = PoseSampler(m).sample(np.arange(16), seed=0)
    out = m.pose(b.params, with_vertices=False)
    assert out.keypoints.shape == (16, 22, 3) and torch.isfinite(out.keypoints).all()
    full = m.pose(b.params.index(slice(0, 2)))
    assert torch.allclose(full.keypoints, out.keypoints[:2], atol=1e-6)
