"""Keypoint fit (mousefacelift.body.fit) and the sampler tuned from it."""
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mousefacelift.body import PoseSampler, load_pose_config
from mousefacelift.body.fit import FitConfig, fit_keypoints, umeyama
from mousefacelift.body.poses import segment_joint_map

warnings.filterwarnings("ignore", message="Sparse invariant checks")



def test_segment_map_matches_the_sampler_convention(procedural):
    m = procedural
    seg = list(m.segments)
    M = segment_joint_map(m, seg)
    ang = np.zeros((len(seg), 3))
    i = seg.index("hip_r")
    ang[i] = [0.3, 0.2, 0.1]
    jr = (ang.reshape(-1) @ M).reshape(m.num_joints, 3)
    j = m.segments["hip_r"]
    assert np.allclose(jr[j], [0.3 / len(j), -0.2 / len(j), 0.1 / len(j)])     # right side mirrors twist
    assert np.count_nonzero(np.abs(jr).sum(1)) == len(j)


def test_synthetic_round_trip_recovers_keypoints_and_similarity(procedural):
    m = procedural
    b = PoseSampler(m).sample(np.arange(4), seed=11)
    p = b.params
    # the sampler drapes the tail joint by joint; the fit shares one angle over the tail chain,
    # so give the targets a tail the fit can express (one shared angle)
    tail = m.segments["tail"]
    p.joint_rot[:, tail] = p.joint_rot[:, tail].mean(dim=1, keepdim=True)
    # put the poses into a "lab" frame in millimetres with a known similarity
    Rl = Rotation.from_rotvec([[0.3, -0.2, 1.1]]).as_matrix()[0]
    sl, tl = 95.0, np.array([40.0, -12.0, 7.0])
    kp = m.pose(p, with_vertices=False).keypoints.double().numpy()
    target = sl * kp @ Rl.T + tl
    target[0, 3] = np.nan                                  # an unlabelled keypoint is ignored
    r = fit_keypoints(m, target, FitConfig(iters=300, lr=0.15, w_prior=0.01))
    assert r.residual_mm.max() < 1.0, r.residual_mm
    assert np.isnan(r.keypoint_error_mm[0, 3]) and np.isfinite(r.keypoint_error_mm[0, 4])
    # the fitted params reproduce the fit through model.pose
    again = m.pose(r.params, with_vertices=False).keypoints.double().numpy()
    ok = np.isfinite(target)
    assert np.abs(again - target)[ok].max() < 3.0
    # the similarity scale is recovered (the rotation trades off against root-adjacent segment
    # angles within a few degrees of keypoint-equivalent poses; checked exactly below)
    true_s = sl * p.scale[:, 0].double().numpy()
    assert np.allclose(r.scale, true_s, rtol=0.03), (r.scale, true_s)


def test_similarity_of_a_rigidly_moved_rest_pose_is_recovered(procedural):
    m = procedural
    Rl = Rotation.from_rotvec([[0.2, 0.4, -2.0], [1.2, 0.1, 0.3]]).as_matrix()
    sl, tl = np.array([80.0, 120.0]), np.array([[5.0, 6.0, 7.0], [-50.0, 0.0, 20.0]])
    kp = m.rest_keypoints().astype(np.float64)
    target = sl[:, None, None] * np.einsum("bij,kj->bki", Rl, kp) + tl[:, None]
    r = fit_keypoints(m, target, FitConfig(iters=60))
    assert r.residual_mm.max() < 0.5
    ang_err = np.rad2deg(Rotation.from_matrix(np.einsum("bji,bjk->bik", Rl, r.rotation)).magnitude())
    assert np.all(ang_err < 1.0), ang_err
    assert np.allclose(r.scale, sl, rtol=0.005) and np.allclose(r.translation, tl, atol=1.0)


def test_umeyama_exact_and_bad_input(procedural):
    X = torch.randn(2, 10, 3, dtype=torch.float64)
    R = torch.as_tensor(Rotation.random(2, random_state=1).as_matrix())
    Y = 2.5 * X @ R.transpose(1, 2) + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    Re, s, t = umeyama(X, Y, torch.ones(2, 10, dtype=torch.bool))
    assert torch.allclose(Re, R, atol=1e-8) and torch.allclose(s, torch.full((2,), 2.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"target must be \[B,22,3\]"):
        fit_keypoints(procedural, np.zeros((2, 21, 3)))
    few = np.full((1, 22, 3), np.nan)
    few[0, :3] = 1.0
    with pytest.raises(ValueError, match="fewer than 4 labelled"):
        fit_keypoints(procedural, few)


def test_fitted_statistics_are_used_and_sampling_stays_deterministic(procedural):
    cfg = load_pose_config()
    assert cfg["fitted"] and "procedural" in cfg["fitted"]["models"], "configs/poses/fitted_dannce.yaml missing"
    tuned, hand = PoseSampler(procedural, cfg), PoseSampler(procedural, {**cfg, "fitted": None})
    assert tuned.fitted is not None and hand.fitted is None
    stance = cfg["fitted"]["models"]["procedural"]["stance"]
    i = tuned.seg_names.index("hip_l")
    assert np.rad2deg(tuned.common[i, 0, 0] - hand.common[i, 0, 0]) == pytest.approx(
        stance["hip"]["flex"][0] - 0.0, abs=1e-6)
    a = tuned.sample(np.arange(40, 72), seed=5)
    parts = [tuned.sample(np.arange(40, 56), seed=5), tuned.sample(np.arange(56, 72), seed=5)]
    assert np.array_equal(a.params.to_array(), np.concatenate([p.params.to_array() for p in parts]))
    assert 0 <= a.stats["rejection_rate"] < 0.5 and a.stats["candidates"] >= 32
    assert set(a.stats["reasons"]) == {"penetration", "crossing", "flip", "floor", "contact", "tilt"}


def test_missing_fitted_file_is_named(procedural, tmp_path):
    cfg = load_pose_config()
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        PoseSampler(procedural, {**cfg, "fitted": str(tmp_path / "nope.yaml")})


def test_real_labels_fit_below_bound(mammal, dannce_dir):
    from mousefacelift.dannce import load_labelled_keypoints
    m = mammal
    lab = load_labelled_keypoints(dannce_dir / "label3d_dannce.mat")
    sel = lab.chronological()[::4]                    # 21 poses spread over the session
    r = fit_keypoints(m, lab.points[sel], FitConfig(iters=200, shared_shape=True))
    # bound: the MAMMAL mapper's Tail(base) sits ~15 mm forward of the labellers' tail base, which no
    # pose removes (docs/benchmarks.md); the sampled-pose coverage error before tuning was 11.6 mm
    assert np.median(r.residual_mm) < 7.0 and np.percentile(r.residual_mm, 90) < 8.0, r.residual_mm
    assert r.limit_excess_deg.max() < 5.0
    assert 80 < np.median(r.scale) < 140                  # mm per model unit: an adult-sized mouse
