"""3D keypoints for the real ingest: readers, mask seeds, up direction, per-camera scores, body prior, weak depth."""
from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mousefacelift.body import DANNCE22_NAMES
from mousefacelift.cameras import Camera
from mousefacelift.meshraster import rasterize
from mousefacelift.shards import SCHEMA, MultiViewSample
from synth.real.keypoints import (KeypointTrack, camera_keypoint_scores, estimate_up, keypoint_mask_agreement,
                                  load_keypoints, load_keypoints_config, project_seeds)

CFG = load_keypoints_config()


def dannce_file() -> Path:
    d = os.environ.get("MOUSEFACELIFT_DANNCE_DIR", "").strip()
    if not d or not (Path(d) / "label3d_dannce.mat").is_file():
        pytest.skip("MOUSEFACELIFT_DANNCE_DIR unset or without label3d_dannce.mat (DANNCE markerless_mouse_1 asset)")
    return Path(d) / "label3d_dannce.mat"


def angle_deg(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


# -- readers ----------------------------------------------------------------------------------
def test_sleap_anipose_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    tracks = rng.normal(size=(6, 2, 4, 3))
    tracks[2, 1, 3] = np.nan
    with h5py.File(tmp_path / "points3d.h5", "w") as f:
        f.create_dataset("tracks", data=tracks)
        f.create_dataset("frames", data=[10, 16])
    t = load_keypoints(tmp_path / "points3d.h5", units="cm", track=1, node_names=["a", "b", "c", "d"])
    assert t.names == ("a", "b", "c", "d") and t.unit == "cm" and t.frames.tolist() == list(range(10, 16))
    np.testing.assert_allclose(t.at(12)[:3], tracks[2, 1, :3])
    assert np.isnan(t.at(12)[3]).all()
    np.testing.assert_allclose(t.at_mm(10), tracks[0, 1] * 10)
    t0 = load_keypoints(tmp_path / "points3d.h5", units="mm")             # default: track 0, node0..
    assert t0.names[0] == "node0"
    np.testing.assert_allclose(t0.at(15), tracks[5, 0])


def test_anipose_csv_undoes_axis_alignment(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 2, 3)) * 20                    # calibration world, 5 frames, 2 parts
    M = Rotation.from_euler("xyz", [20, -35, 80], degrees=True).as_matrix()
    c = np.array([3.0, -4.0, 7.5])
    adj = X @ M.T - c                                        # what anipose writes when it aligns the axes
    head = []
    for p in ("nose", "tail"):
        head += [f"{p}_{s}" for s in ("x", "y", "z", "error", "ncams", "score")]
    head += [f"M_{i}{j}" for i in range(3) for j in range(3)] + [f"center_{i}" for i in range(3)] + ["fnum"]
    lines = [",".join(head)]
    for k in range(5):
        row = []
        for j in range(2):
            xyz = ["" if (k, j) == (3, 1) else repr(v) for v in adj[k, j]]
            row += xyz + ["0.5", "3", "0.9"]
        row += [repr(v) for v in M.ravel()] + [repr(v) for v in c] + [str(100 + 2 * k)]
        lines.append(",".join(row))
    (tmp_path / "pose.csv").write_text("\n".join(lines) + "\n")
    t = load_keypoints(tmp_path / "pose.csv", units="mm")
    assert t.names == ("nose", "tail") and t.frames.tolist() == [100, 102, 104, 106, 108]
    np.testing.assert_allclose(t.at(102), X[1], atol=1e-9)
    assert np.isnan(t.at(106)[1]).all() and np.isfinite(t.at(106)[0]).all()


def test_dannce_predictions_mat(tmp_path):
    import scipy.io

    pred = np.random.default_rng(2).normal(size=(4, 3, 22))
    scipy.io.savemat(tmp_path / "save_data_AVG.mat", {"pred": pred, "sampleID": np.array([[5, 6, 9, 12]])})
    t = load_keypoints(tmp_path / "save_data_AVG.mat")
    assert t.unit == "mm" and t.names == tuple(DANNCE22_NAMES) and t.frames.tolist() == [5, 6, 9, 12]
    np.testing.assert_allclose(t.at(9), pred[2].T)


def test_dannce_labels_mat():
    t = load_keypoints(dannce_file())
    assert len(t) == 81 and t.names == tuple(DANNCE22_NAMES) and t.unit == "mm"
    assert np.all(np.diff(t.frames) > 0)


@pytest.mark.parametrize("case", ["no_tracks", "tracks_2d", "csv_text", "mat_no_pred", "ext", "no_units", "pred_shape"])
def test_bad_files_give_one_clear_line(tmp_path, case):
    import scipy.io

    if case in ("no_tracks", "tracks_2d"):
        h5py = pytest.importorskip("h5py")
        p = tmp_path / "points3d.h5"
        with h5py.File(p, "w") as f:
            f.create_dataset("tracks" if case == "tracks_2d" else "points", data=np.zeros((5, 2, 4, 2)))
        units, field = "mm", "'tracks'"
    elif case == "csv_text":
        p = tmp_path / "pose.csv"
        p.write_text("nose_x,nose_y,nose_z\n1,2,3\n1,oops,3\n")
        units, field = "mm", "'nose_y'"
    elif case in ("mat_no_pred", "pred_shape"):
        p = tmp_path / "x.mat"
        scipy.io.savemat(p, {"pred": np.zeros((4, 22, 3))} if case == "pred_shape" else {"foo": np.zeros(3)})
        units, field = None, "'pred'"
    elif case == "ext":
        p = tmp_path / "x.json"
        p.write_text("{}")
        units, field = "mm", "'.json'"
    else:
        p = tmp_path / "pose.csv"
        p.write_text("nose_x,nose_y,nose_z\n1,2,3\n")
        units, field = None, "unit"
    with pytest.raises(ValueError) as e:
        load_keypoints(p, units=units)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and field in msg and ("expected" in msg or "pass" in msg)


def test_joint_map_orders_other_skeletons():
    t = KeypointTrack(np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3), ("nose", "neck", "hip"), [0, 1], "mm")
    o = t.in_order(DANNCE22_NAMES, {"Snout": "nose", "SpineF": "neck"})
    np.testing.assert_allclose(o.at(1)[DANNCE22_NAMES.index("Snout")], t.at(1)[0])
    assert np.isnan(o.at(0)[DANNCE22_NAMES.index("EarL")]).all()
    with pytest.raises(ValueError, match="joint_map"):
        t.in_order(DANNCE22_NAMES, {"Snout": "nosetip"})


# -- seeds -------------------------------------------------------------------------------------
def test_project_seeds_use_the_lens_and_mm():
    K = np.array([[500.0, 0, 160], [0, 500, 120], [0, 0, 1]])
    cam = Camera(K=K, w2c=np.eye(4), width=320, height=240, name="c", dist=np.array([-0.2, 0.05, 0.001, 0, 0]))
    pts_cm = np.array([[[6.0, 4.0, 20.0], [0.0, 0.0, -5.0], [np.nan, 0, 1]]])
    t = KeypointTrack(pts_cm, ("a", "b", "c"), [7], "cm")
    s = project_seeds(t, 7, cam)
    np.testing.assert_allclose(s[0], cam.project(pts_cm[0, :1] * 10)[0][0])
    assert abs(s[0, 0] - (160 + 500 * 0.3)) > 2                # distortion applied (not the pinhole value)
    assert np.isnan(s[1:]).all()                                 # behind the camera, missing
    mask = np.zeros((240, 320), bool)
    u, v = np.floor(s[0]).astype(int)
    mask[v, u] = True
    assert keypoint_mask_agreement(mask, s) == 1.0
    mask[v, u] = False
    mask[v, u + 3] = True
    assert keypoint_mask_agreement(mask, s) == 0.0 and keypoint_mask_agreement(mask, s, tolerance_px=3) == 1.0
    assert keypoint_mask_agreement(mask, np.array([[-5.0, 3.0]]), 10) == 0.0    # off the image counts as outside
    assert np.isnan(keypoint_mask_agreement(mask, s[1:]))


def test_project_seeds_reproduce_label3d_2d_labels():
    """Label3D stores each camera's 2D labels as the reprojection of the 3D label through the
    calibrated (distorted) camera: the seeds must land on them."""
    import scipy.io

    from mousefacelift.dannce import load_dannce_cameras

    path = dannce_file()
    t = load_keypoints(path)
    cams = load_dannce_cameras(path)
    m = scipy.io.loadmat(str(path))
    for ci in (0, 5):
        lab = m["labelData"][ci, 0][0, 0]
        p2 = np.asarray(lab["data_2d"], float).reshape(-1, 22, 2)
        fr = np.asarray(lab["data_frame"]).reshape(-1)
        err = np.concatenate([np.linalg.norm(project_seeds(t, int(f), cams[ci]) - p2[k], axis=1)
                              for k, f in enumerate(fr[:20])])
        assert np.nanmax(err) < 0.05 and np.isfinite(err).sum() > 300, (cams[ci].name, np.nanmax(err))


# -- up direction ------------------------------------------------------------------------------
def test_up_direction_synthetic_with_lifted_paws():
    rng = np.random.default_rng(3)
    F = 40
    pts = np.zeros((F, 22, 3))
    pts[..., :2] = rng.uniform(-150, 150, (F, 1, 2)) + rng.normal(0, 20, (F, 22, 2))
    pts[..., 2] = rng.uniform(15, 45, (F, 22))
    for n in ("HindpawL", "HindpawR", "ForepawL", "ForepawR"):
        pts[:, DANNCE22_NAMES.index(n), 2] = 2 + rng.normal(0, 0.7, F)
    pts[:8, DANNCE22_NAMES.index("ForepawL"), 2] += 30         # grooming / rearing: some paws leave the floor
    R = Rotation.random(random_state=4).as_matrix()
    t = KeypointTrack(pts @ R.T + 300, DANNCE22_NAMES, np.arange(F), "mm")
    est = estimate_up(t, CFG.up)
    assert angle_deg(est.up, R @ [0, 0, 1]) < 2 and est.confidence > 0.85 and est.sign_share == 1
    flipped = KeypointTrack(pts * [1, 1, -1] @ R.T, DANNCE22_NAMES, np.arange(F), "mm")   # spine below: sign flips
    assert angle_deg(estimate_up(flipped, CFG.up).up, R @ [0, 0, -1]) < 2


def test_up_direction_recovered_under_random_rotation():
    t = load_keypoints(dannce_file())
    rng = np.random.default_rng(5)
    errs = []
    for k in range(6):
        R = Rotation.random(random_state=k).as_matrix()
        sel = np.sort(rng.choice(len(t), 20, replace=False))
        moved = KeypointTrack(t.points[sel] @ R.T + rng.normal(0, 300, 3), t.names, t.frames[sel], "mm")
        est = estimate_up(moved, CFG.up)
        errs.append(angle_deg(est.up, R @ [0, 0, 1]))            # DANNCE world: Z up, floor z ~ 0
        assert est.confidence > CFG.up.min_confidence
    assert max(errs) < 3.0, errs


def test_resolve_up_policy():
    from synth.real.keypoints import UpEstimate, resolve_up

    est = UpEstimate(up=np.array([0.0, 1.0, 0.0]), confidence=0.5, inlier_share=0.5, sign_share=1.0, rms_mm=1.0,
                     height_mm=30.0, points=40)
    stated = np.array([0.0, 0.0, 2.0])
    up, info = resolve_up(stated, est, replace(CFG.up, use="auto", min_confidence=0.6))
    assert np.allclose(up, [0, 0, 1]) and info["source"] == "calibration" and info["angle_to_calibration_deg"] == 90
    up, info = resolve_up(stated, replace(est, confidence=0.9), replace(CFG.up, use="auto", min_confidence=0.6))
    assert np.allclose(up, [0, 1, 0]) and info["source"] == "keypoints"
    up, info = resolve_up(stated, est, replace(CFG.up, use="keypoints"))
    assert info["source"] == "keypoints"
    up, info = resolve_up(stated, replace(est, confidence=1.0), replace(CFG.up, use="calibration"))
    assert info["source"] == "calibration"
    with pytest.raises(ValueError, match="up.use"):
        replace(CFG.up, use="maybe")


def test_prepare_keypoints_for_an_ingest_run(tmp_path):
    """What the ingest calls once per run: a DANNCE file with its calibration in an arbitrary
    world frame (as with a board on a wall): the up comes from the keypoints, the prior fits."""
    from synth.real.body_prior import prepare_keypoints
    from synth.real.calibration import Calibration, load_calibration

    path = dannce_file()
    cal = load_calibration(path)
    R = Rotation.from_euler("xyz", [70, -20, 150], degrees=True).as_matrix()
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, [400.0, -90, 35]
    moved = [replace(c, w2c=c.w2c @ np.linalg.inv(T)) for c in cal.cameras]   # world' = T world
    t = load_keypoints(path)
    pts = t.points @ R.T + T[:3, 3]
    import scipy.io

    scipy.io.savemat(tmp_path / "save_data_AVG.mat", {"pred": pts.transpose(0, 2, 1), "sampleID": t.frames[None]})
    cal2 = Calibration(cameras=moved, units="mm", path="moved")        # states no up: +Z, which is wrong here
    cfg = replace(CFG, body_prior=replace(CFG.body_prior, fit_iters=120))
    frames = [int(t.frames[0]), int(t.frames[1]), 123456]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kin = prepare_keypoints(tmp_path / "save_data_AVG.mat", cal2, frames, cfg)
    assert kin.up_info["source"] == "keypoints" and angle_deg(kin.up, R @ [0, 0, 1]) < 2
    assert kin.prior.has(frames[0]) and not kin.prior.has(123456) and kin.seeds(123456, moved[0]) is None
    s = kin.seeds(frames[0], moved[0])       # the trunk joints only: outline joints are no sure foreground
    trunk = [t.names.index(n) for n in cfg.seeds.sure_joints]
    np.testing.assert_allclose(s, project_seeds(t, frames[0], cal.cameras[0])[trunk], atol=1e-6)   # same pixels


# -- body prior and per-camera scores (DANNCE) --------------------------------------------------
@pytest.fixture(scope="module")
def dannce_prior():
    from mousefacelift.dannce import load_dannce_cameras
    from synth.real.body_prior import BodyPrior

    path = dannce_file()
    t = load_keypoints(path)
    cams = [c.resized(c.width // 4, c.height // 4) for c in load_dannce_cameras(path)]   # 288x256: fast
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = BodyPrior.fit(t, cams, replace(CFG.body_prior, fit_iters=200), frames=t.frames[[0, 30, 60]])
    return t, cams, prior


def test_body_prior_silhouette_matches_the_mesh_through_the_lens(dannce_prior):
    from synth.real.fake_capture import distort_into
    from mousefacelift.imaging import pinhole

    t, cams, prior = dannce_prior
    f = int(t.frames[30])
    assert prior.has(f) and prior.residual_mm[f] < CFG.body_prior.max_residual_mm
    verts = prior.vertices(f)
    iou = lambda a, b: (a & b).sum() / (a | b).sum()                       # noqa: E731
    for i in (0, 1):                                                         # the two most distorted lenses
        cam = cams[i]
        pin = pinhole(cam)
        _, _, m = rasterize(verts, prior.faces, pin.K, pin.w2c, cam.width, cam.height)
        ref = distort_into(m.astype(np.float32), pin, cam)[..., 0] > 0.5     # the same mesh, another warp
        sil = prior.silhouette(f, i)
        assert sil.sum() > 500 and iou(sil, ref) > 0.92 and iou(sil, ref) > iou(m, ref) + 0.03, \
            (cam.name, iou(sil, ref), iou(m, ref))                            # the lens matters, and is applied
        d = prior.depth(f, i)
        z = verts @ cam.w2c[2, :3] + cam.w2c[2, 3]
        assert np.all((d[sil] >= z.min() - 1e-3) & (d[sil] <= z.max() + 1e-3)) and np.all(d[~sil] == 0)


def test_copied_calibration_camera_gets_the_worst_keypoint_score(dannce_prior):
    t, cams, prior = dannce_prior
    frames = [f for f in t.frames[[0, 30, 60]] if prior.has(int(f))]
    masks = [{int(f): prior.silhouette(int(f), i) for f in frames} for i in range(len(cams))]
    good = camera_keypoint_scores(t, masks, cams, CFG.seeds.tolerance_px)
    bad_cams = list(cams)
    bad_cams[4] = replace(cams[1], name=cams[4].name)           # Camera5 given Camera2's calibration
    bad = camera_keypoint_scores(t, masks, bad_cams, CFG.seeds.tolerance_px)
    assert min(bad, key=bad.get) == cams[4].name
    others = [v for k, v in bad.items() if k != cams[4].name]
    assert bad[cams[4].name] < 0.2 and min(others) > 0.4, bad
    assert min(good.values()) > 0.4, good


def test_add_body_depth_writes_approximate_depth_only_on_the_mask(dannce_prior):
    from mousefacelift.scene import depth_range_for
    from synth.real.body_prior import DEPTH_SOURCE, add_body_depth
    from synth.real.normalize import Normalization, framed_view

    t, cams, prior = dannce_prior
    f = int(t.frames[0])
    verts = prior.vertices(f)
    norm = Normalization(center_mm=verts.mean(0), mm_per_unit=60.0)
    vn = norm.points_to_norm(verts)
    lo, hi = vn.min(0), vn.max(0)
    views = depth_range_for([framed_view(norm.camera(c), lo, hi, 0.6, 48) for c in cams[:3]], lo, hi)
    rgba = np.zeros((3, 48, 48, 4), np.uint8)
    for i, c in enumerate(views):
        _, _, m = rasterize(vn, prior.faces, c.K, c.w2c, 48, 48)
        m[:, :24] = False                                         # the mask shows only half the mouse
        rgba[i, m, 3] = 255
    sample = MultiViewSample("real_000000027", {"schema": SCHEMA, "source": "real", "mm_per_unit": 60.0}, rgba, views).validate()
    out = add_body_depth(sample, prior, f, norm, CFG.body_prior.depth_min_alpha)
    assert out.meta["depth_source"] == DEPTH_SOURCE and out.meta["body_fit"]["residual_mm"] > 0
    assert np.all(out.depth[rgba[..., 3] == 0] == 0) and (out.depth > 0).sum() > 0.9 * (rgba[..., 3] > 0).sum()
    back = MultiViewSample.decode(out.encode())
    np.testing.assert_allclose(back.depth, out.depth, atol=1e-3)
    assert add_body_depth(sample, prior, 999999, norm, 0.5) is sample        # no fit for that frame: unchanged


# -- the weak-depth loss -------------------------------------------------------------------------
def test_real_depth_is_weighed_by_real_depth_weight_only():
    from train.tasks.gslrm.losses import LossConfig, compute_losses
    from mousefacelift.splat import RenderOutput

    B, V, H, W = 2, 2, 8, 8
    alpha = torch.zeros(B, V, 1, H, W)
    alpha[..., 2:6, 2:6] = 1
    batch = {"rgb": torch.rand(B, V, 3, H, W) * alpha, "alpha": alpha, "depth": alpha * 2.5,
             "has_depth": torch.ones(B), "source": ["real", "real"]}
    off = RenderOutput(batch["rgb"], alpha, alpha * 2.5 + 0.3 * alpha)
    _, p = compute_losses(off, batch, LossConfig.from_yaml(depth_weight=1.0), step=0)
    assert float(p["depth"]) == 0 and "real_depth" not in p        # default: real (approximate) depth is off
    _, p = compute_losses(off, batch, LossConfig.from_yaml(depth_weight=0.0, real_depth_weight=0.5), step=0)
    assert float(p["real_depth"]) > 0 and "depth" not in p
    _, p = compute_losses(off, {**batch, "source": ["synthetic", "real"]},
                          LossConfig.from_yaml(depth_weight=1.0, real_depth_weight=0.5), step=0)
    assert float(p["depth"]) > 0 and float(p["real_depth"]) > 0
