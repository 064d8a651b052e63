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
    assert b.stats["rejection_rate"] < 0.5 and b.forced.sum() <= 2
    fam = np.array([sampler.family_names.index(f) for f in b.family])
    score = sampler._evaluate(b.params.clone(), fam)[0]
    assert np.all(score[~b.forced] <= 0)
    # anatomical limits hold per segment (chains share the angle; the tail is draped, not limited)
    jr = b.params.joint_rot.numpy()
    for i, s in enumerate(sampler.seg_names):
        if s == "tail":
            continue
        js = model.segments[s]
        tot = jr[:, js].sum(axis=1) * (np.array([1, -1, 1]) if s.endswith("_r") else
                                       np.array([1, 1, -1]) if s.endswith("_l") else 1)
        lim = sampler._limits[i]
        assert np.all(tot >= lim[:, 0] - 1e-5) and np.all(tot <= lim[:, 1] + 1e-5), s
    # size: around the size fitted to the real mouse, within the configured factor range
    s = b.params.scale.numpy() / sampler.size["base"]
    assert s.min() >= 0.9 - 1e-6 and s.max() <= 1.1 + 1e-6 and 0.97 < np.median(s) < 1.03


def test_ground_contact_floor_and_tail_invariants(sampler, model):
    """Weight-bearing paws on the floor, nothing below it by more than 1 mm, tail lying down,
    bodies within their family's pitch/roll limits (300 poses, full mesh)."""
    b = sampler.sample(np.arange(300), seed=11)
    mm = model.mm_per_unit
    names = model.keypoint_names
    out = [model.pose(b.params.index(slice(i, i + 100))) for i in range(0, 300, 100)]
    V = torch.cat([o.vertices for o in out]).numpy() * mm
    kp = torch.cat([o.keypoints for o in out]).numpy() * mm
    ok = ~b.forced
    assert ok.mean() > 0.98
    assert V[ok, :, 2].min() > -1.0                                   # no part below the floor by > 1 mm
    paws = kp[:, [names.index(n) for n in ("HindpawL", "HindpawR", "ForepawL", "ForepawR")], 2]
    fam = np.array(b.family)
    standing = np.isin(fam, [f for f, s in zip(sampler.family_names, sampler.families) if s["support"].all()])
    on = (paws - paws.min(1, keepdims=True)) <= 4.0
    assert np.all(on[ok & standing].sum(1) >= 3)
    assert np.all(on[ok & ~standing][:, :2].all(1))                    # rear/groom/climb: both hind paws
    # lowest mesh point of a standing pose: within 1 mm of the floor (it stands on it)
    assert np.all(np.abs(V[ok, :, 2].min(1)) < 1.0)
    # tail: draped onto the floor (tip low), never a stiff vertical tail
    tip = kp[:, names.index("Tail(end)"), 2]
    assert np.median(tip) < 4.0 and np.percentile(tip, 95) < 25.0
    # tilt: root pitch and roll inside each family's limits
    from scipy.spatial.transform import Rotation
    Rg = Rotation.from_rotvec(b.params.global_orient.numpy()).as_matrix()
    pitch, roll = np.arcsin(Rg[:, 2, 0]), np.arcsin(Rg[:, 2, 1])
    for f, spec in zip(sampler.family_names, sampler.families):
        sel = ok & (fam == f)
        assert np.all(pitch[sel] >= spec["pitch_limit"][0] - 1e-4) and np.all(pitch[sel] <= spec["pitch_limit"][1] + 1e-4), f
        assert np.all(np.abs(roll[sel]) <= spec["roll_limit"] + 1e-4), f


def test_rear_poses_stand_on_the_hind_paws_not_the_tail(model):
    cfg = load_pose_config()
    only = dict(cfg, families={"rear": cfg["families"]["rear"]})
    b = PoseSampler(model, only).sample(np.arange(60), seed=2)
    out = model.pose(b.params)
    mm = model.mm_per_unit
    kp = out.keypoints.numpy() * mm
    names = model.keypoint_names
    hind = kp[:, [names.index("HindpawL"), names.index("HindpawR")], 2]
    fore = kp[:, [names.index("ForepawL"), names.index("ForepawR")], 2]
    assert np.all(hind.max(1) < 4.0)                                   # both hind paws down
    assert np.median(fore.min(1)) > 10.0                               # fore paws up
    tail = np.isin(np.asarray(model.skin_weights.argmax(axis=1)).ravel(), model.groups["tail"])
    V = out.vertices.numpy() * mm
    assert np.all(V[:, tail, 2].min(1) > -1.0)                         # the tail lies on, not in, the floor


def test_penetration_and_crossing_are_rejected(sampler, model):
    p = PoseParams.rest(model, batch=3)
    tail = model.segments["tail"]
    p.joint_rot[1, tail[:3], 0] = np.deg2rad(170 / 3)      # tail folded up and forward into the body
    hip_l, hip_r = model.segments["hip_l"][0], model.segments["hip_r"][0]
    p.joint_rot[2, hip_l, 2] = 1.3                         # legs adducted past the midline: the feet swap sides
    p.joint_rot[2, hip_r, 2] = -1.3
    score, reasons, _, _ = sampler._evaluate(p)
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
