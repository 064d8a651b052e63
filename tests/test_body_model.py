"""Body models: frames, size, structure, LBS posing and pose arrays (procedural + MAMMAL)."""
import pickle
import warnings

import numpy as np
import pytest
import torch

from mousefacelift.body import PoseParams, load_body_model
from mousefacelift.body.model import REGION_NAMES
from mousefacelift.body.safe_pickle import UnsafePickleError, safe_load_pickle

warnings.filterwarnings("ignore", message="Sparse invariant checks")



@pytest.fixture(params=["procedural", "mammal"])
def model(request):
    return request.getfixturevalue(request.param)


def _region_verts(m, name):
    reg = m.region_of_vertices()
    return m.rest_vertices[reg == REGION_NAMES.index(name)]


def test_upright_facing_left_right_and_adult_size(model):
    m = model
    v, kp = m.rest_vertices, m.rest_keypoints()
    names = m.keypoint_names
    k = {n: kp[i] for i, n in enumerate(names)}
    height = v[:, 2].max()
    # upright: feet on the ground, paws in the lowest part, the back well above them
    paws = _region_verts(m, "paw_skin")
    assert v[:, 2].min() == pytest.approx(0.0, abs=1e-6)
    assert paws[:, 2].min() * m.mm_per_unit < 3.0        # MAMMAL's rest tail hangs 1.8 mm lower
    assert np.median(paws[:, 2]) < 0.3 * height
    spine_top = max(k["SpineF"][2], k["SpineM"][2])
    assert spine_top > 0.6 * height and spine_top > max(k[p][2] for p in ("WristL", "WristR", "AnkleL", "AnkleR")) * 2
    # facing +X: the snout is the most forward keypoint, the tail behind
    assert k["Snout"][0] == max(p[0] for p in kp) and k["Snout"][0] > 0
    assert k["Tail(end)"][0] < k["Tail(base)"][0] < k["SpineM"][0] < k["SpineF"][0] < k["Snout"][0]
    # left toward +Y on every paired landmark
    for n in ("Ear", "Wrist", "Elbow", "Shoulder", "Ankle", "Knee", "Forepaw", "Hindpaw"):
        assert k[n + "L"][1] > 0 > k[n + "R"][1], n
    # body centred over the origin in x/y
    assert abs(v[:, 0].min() + v[:, 0].max()) < 1e-5 and abs(v[:, 1].min() + v[:, 1].max()) < 1e-5
    # adult size: nose to tail base (rest pose, stretched) of an adult mouse; MAMMAL's mm_per_unit is
    # the DANNCE adult's fitted scale and its Tail(base) keypoint sits ~15 mm forward of the tail base
    mm = np.linalg.norm(k["Snout"] - k["Tail(base)"]) * m.mm_per_unit
    assert 60 <= mm <= 100, mm


def test_structure_regions_and_groups(model):
    m = model
    assert m.num_vertices >= 5000 and len(m.keypoint_names) == 22
    assert m.region_names == REGION_NAMES
    assert set(np.unique(m.face_regions)) == set(range(len(REGION_NAMES)))   # every material used
    assert (m.face_regions == REGION_NAMES.index("fur")).mean() > 0.3
    for g in ("spine", "neck_head", "tail", "fore_l", "fore_r", "hind_l", "hind_r", "ears", "jaw", "digits"):
        assert len(m.groups[g]) > 0
    assert len(set(m.groups["fore_l"]) & set(m.groups["fore_r"])) == 0
    # anatomical frames are rotations
    F = m.rest_frames
    assert np.allclose(F @ F.transpose(0, 2, 1), np.eye(3), atol=1e-6)
    assert np.allclose(np.linalg.det(F), 1, atol=1e-6)


def test_procedural_mesh_is_closed(procedural):
    f = procedural.faces
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)


def test_rest_parameters_reproduce_the_rest_mesh(model):
    out = model.pose(PoseParams.rest(model, batch=2))
    assert torch.allclose(out.vertices[1], torch.from_numpy(model.rest_vertices), atol=1e-6)
    assert torch.allclose(out.joints[0], torch.from_numpy(model.rest_joints), atol=1e-6)
    assert out.keypoints.shape == (2, 22, 3)


def test_single_joint_rotation_moves_only_what_it_weights(model):
    m = model
    j = int(m.segments["knee_l"][0])
    desc = {j}
    for c in range(m.num_joints):
        if m.parents[c] in desc:
            desc.add(c)
    W = m.skin_weights.tocsc()
    moved_expected = np.asarray(W[:, sorted(desc)].sum(axis=1)).ravel() > 1e-6
    p = PoseParams.rest(m)
    p.joint_rot[0, j] = torch.tensor([0.5, 0.2, -0.3])
    v = m.pose(p).vertices[0].numpy()
    d = np.linalg.norm(v - m.rest_vertices, axis=1)
    assert np.all(d[~moved_expected] < 1e-6)
    assert np.all(d[np.asarray(W[:, j].todense()).ravel() > 0.5] > 1e-4)
    # the joint itself stays, its child moves
    J = m.pose(p, with_vertices=False).joints[0].numpy()
    assert np.allclose(J[j], m.rest_joints[j], atol=1e-6)
    child = [c for c in range(m.num_joints) if m.parents[c] == j][0]
    assert np.linalg.norm(J[child] - m.rest_joints[child]) > 1e-3


def test_pose_array_round_trip_reproduces_mesh_exactly(model):
    g = torch.Generator().manual_seed(0)
    p = PoseParams.rest(model, batch=3)
    p.joint_rot = 0.2 * torch.randn(p.joint_rot.shape, generator=g)
    p.global_orient = torch.randn(3, 3, generator=g)
    p.transl = torch.randn(3, 3, generator=g)
    p.bone_scale = 1 + 0.05 * torch.randn(p.bone_scale.shape, generator=g)
    p.girth = torch.full((3, 1), 1.1)
    arr = p.to_array()
    assert arr.dtype == np.float32 and arr.shape == (3, PoseParams.array_size(model))
    q = PoseParams.from_array(model, arr)
    assert torch.equal(model.pose(p).vertices, model.pose(q).vertices)
    with pytest.raises(ValueError, match="expected \\[B,"):
        PoseParams.from_array(model, arr[:, :-1])


def test_posing_a_row_does_not_depend_on_its_batch(model):
    # 64 rows: past the size where a CPU bmm over 3*B rows stops using its own loop and calls BLAS
    g = torch.Generator().manual_seed(1)
    p = PoseParams.rest(model, batch=64)
    p.joint_rot = 0.3 * torch.randn(p.joint_rot.shape, generator=g)
    p.global_orient = torch.randn(64, 3, generator=g)
    p.bone_scale = 1 + 0.05 * torch.randn(p.bone_scale.shape, generator=g)
    p.girth = 1 + 0.1 * torch.rand(64, 1, generator=g)
    for use_smplx in (True, False):
        posed, A = model.skinning_transforms(p, use_smplx=use_smplx)
        for i in (0, 37, 63):
            pi, Ai = model.skinning_transforms(p.index(slice(i, i + 1)), use_smplx=use_smplx)
            assert torch.equal(posed[i:i + 1], pi) and torch.equal(A[i:i + 1], Ai), (use_smplx, i)
    whole = model.pose(p.index(slice(0, 48)))
    one = model.pose(p.index(slice(40, 41)))
    assert torch.equal(whole.vertices[40:41], one.vertices) and torch.equal(whole.keypoints[40:41], one.keypoints)


def test_posing_is_differentiable_and_global_transform_applies(procedural):
    m = procedural
    p = PoseParams.rest(m)
    p.joint_rot.requires_grad_(True)
    out = m.pose(p)
    out.keypoints[0, 2, 2].backward()           # snout height
    g = p.joint_rot.grad[0]
    assert g[m.segments["neck"]].abs().sum() > 0 and g[m.segments["tail"]].abs().sum() == 0
    q = PoseParams.rest(m)
    q.global_orient[0] = torch.tensor([0, 0, np.pi / 2])
    q.scale[0] = 2.0
    q.transl[0] = torch.tensor([1.0, 2.0, 3.0])
    v = m.pose(q).vertices[0].numpy()
    r = m.rest_vertices
    assert np.allclose(v, np.stack([-2 * r[:, 1] + 1, 2 * r[:, 0] + 2, 2 * r[:, 2] + 3], 1), atol=1e-5)


def test_bone_length_and_girth_change_shape(procedural):
    m = procedural
    p = PoseParams.rest(m, batch=2)
    p.bone_scale[1, m.bone_group_names.index("tail")] = 1.2
    p.girth[1] = 1.2
    out = m.pose(p)
    kp = out.keypoints.numpy()
    i_b, i_e = m.keypoint_names.index("Tail(base)"), m.keypoint_names.index("Tail(end)")
    L0, L1 = (np.linalg.norm(kp[b, i_e] - kp[b, i_b]) for b in (0, 1))
    assert L1 == pytest.approx(1.2 * L0, rel=0.02)
    trunk = np.isin(np.asarray(m.skin_weights.argmax(axis=1)).ravel(), m.girth_joints)
    w = out.vertices[:, torch.from_numpy(trunk), 1].abs().mean(dim=1)
    assert w[1] > w[0] * 1.1


def test_restricted_unpickler_refuses_code(tmp_path):
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"a": np.arange(3)}))
    assert np.array_equal(safe_load_pickle(ok)["a"], np.arange(3))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(UnsafePickleError, match=r"bad\.pkl.*builtins\.print"):
        safe_load_pickle(bad)


def test_mammal_specifics(mammal, mammal_dir):
    m = mammal
    assert m.num_vertices == 14522 and m.num_joints == 140 and m.uvs is not None
    assert m.faces_uv.shape == m.faces.shape and m.uvs.min() >= 0 and m.uvs.max() <= 1
    assert m.num_bone_groups == 20


def test_mammal_missing_and_malformed_files_are_named(mammal_dir, tmp_path, monkeypatch):
    from mousefacelift.body.mammal import load_mammal
    (tmp_path / "mouse.pkl").symlink_to(mammal_dir / "mouse.pkl")
    with pytest.raises(FileNotFoundError, match="joint_names.txt"):
        load_mammal(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "mouse.pkl").write_bytes(pickle.dumps({"vertices": np.zeros((4, 3))}))
    with pytest.raises(ValueError, match=r"mouse\.pkl: missing field 'faces_vert'"):
        load_mammal(broken)
    monkeypatch.delenv("MOUSEFACELIFT_MAMMAL_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="MOUSEFACELIFT_MAMMAL_DIR"):
        load_body_model("mammal")


def _stance_keypoints(m, changes=()):
    """Keypoints (mm) at the pose sampler's base stance plus segment-angle changes (degrees)."""
    from mousefacelift.body import PoseSampler
    from mousefacelift.body.poses import _COMP, segment_joint_map
    smp = PoseSampler(m)
    ang = smp.common[..., 0].copy()
    for seg, comp, deg in changes:
        ang[smp.seg_names.index(seg), _COMP[comp]] += np.deg2rad(deg)
    p = PoseParams.rest(m)
    p.joint_rot = torch.as_tensor((ang.reshape(-1) @ segment_joint_map(m, smp.seg_names)).reshape(1, -1, 3),
                                  dtype=torch.float32)
    return m.pose(p, with_vertices=False).keypoints[0].numpy() * m.mm_per_unit


def test_joint_semantics_flexion_sagittal_abduction_lateral(model):
    """One meaning on every rig, from the sampler's base stance: flexion moves a paw in the
    sagittal plane (distal end backward for flex > 0), abduction moves it away from the midline."""
    m = model
    names = m.keypoint_names
    k0 = _stance_keypoints(m)
    for prox, paw in (("hip", "Hindpaw"), ("shoulder", "Forepaw")):
        iL, iR = names.index(paw + "L"), names.index(paw + "R")
        k = _stance_keypoints(m, [(f"{prox}_l", "abd", 20), (f"{prox}_r", "abd", 20)])
        assert k[iL, 1] - k0[iL, 1] > 2.0 and k[iR, 1] - k0[iR, 1] < -2.0, (m.name, prox, k[iL] - k0[iL])
        k = _stance_keypoints(m, [(f"{prox}_l", "flex", 22), (f"{prox}_r", "flex", 22)])
        for i in (iL, iR):
            d = k[i] - k0[i]
            assert abs(d[1]) < 1.5 and d[0] < -2.0, (m.name, prox, d)     # no sideways swing; backward
