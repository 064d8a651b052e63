"""Real captures: calibration readers, normalisation maths, crop/resize sync, masks, ingest."""
import json
from dataclasses import replace

import numpy as np
import pytest

from mousefacelift.cameras import Camera, look_at
from mousefacelift.config import load_typed, load_yaml
from mousefacelift.framing import box_corners, framed_intrinsics
from mousefacelift.imaging import pinhole, pixels_to_normalized, resample_view
from mousefacelift.shards import MultiViewSample
from synth.real.calibration import Calibration, load_calibration, save_calibration
from synth.real.fake_capture import FakeCaptureConfig
from synth.real.ingest import ingest
from mousefacelift.imaging import threshold_mask
from synth.real.masks import MaskConfig, median_background, subtract_background
from synth.real.normalize import (NormalizeConfig, Normalization, build_real_sample, estimate_normalization,
                                  mask_is_cut, normalize_frame_set, rotation_between, rotation_to_z, triangulate)

NORMALIZE = load_typed(NormalizeConfig, "real", "ingest", key="normalize")
MASKS = load_typed(MaskConfig, "real", "ingest", key="masks")


def _ring_cams(n=6, radius=300.0, size=(160, 128), dist=None, center=(20.0, -10.0, 15.0)) -> list[Camera]:
    """Cameras in mm around ``center``, off-centre principal points, optional distortion."""
    cams = []
    for i in range(n):
        az = 2 * np.pi * i / n
        eye = np.array(center) + [radius * np.cos(az), radius * np.sin(az), 120.0 + 20 * (i % 2)]
        K = np.array([[220.0, 0, size[0] / 2 + 7], [0, 225.0, size[1] / 2 - 5], [0, 0, 1]])
        cams.append(Camera(K=K, w2c=look_at(eye, center), width=size[0], height=size[1], name=f"cam{i}", dist=dist))
    return cams


def _ellipsoid_points(center, radii, samples=200_000, seed=0):
    """Points filling an axis-aligned ellipsoid."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(samples, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.asarray(center) + d * radii * rng.random((samples, 1)) ** (1 / 3)


def _tail_points(root, direction, length, radius, samples=40_000, seed=1):
    """Points filling a thin cylinder (a tail) from ``root`` along ``direction``."""
    rng = np.random.default_rng(seed)
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    a = np.cross(d, [0, 0, 1.0]) if abs(d[2]) < 0.9 else np.cross(d, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(d, a)
    phi, r = rng.uniform(0, 2 * np.pi, samples), radius * np.sqrt(rng.random(samples))
    return (np.asarray(root) + rng.uniform(0, length, (samples, 1)) * d
            + (r * np.cos(phi))[:, None] * a + (r * np.sin(phi))[:, None] * b)


def _ellipsoid_masks(cams, center, radii, samples=200_000, seed=0, extra_points=None):
    """Silhouettes of an axis-aligned ellipsoid (and ``extra_points``), volume points splatted."""
    pts = _ellipsoid_points(center, radii, samples, seed)
    if extra_points is not None:
        pts = np.concatenate([pts, extra_points])
    masks = []
    for c in cams:
        uv, _ = c.project(pts)
        m = np.zeros((c.height, c.width), bool)
        ij = np.floor(uv).astype(int)
        ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < c.width) & (ij[:, 1] < c.height)
        m[ij[ok, 1], ij[ok, 0]] = True
        masks.append(m)
    return masks


# -- calibration ------------------------------------------------------------------------------
def test_dannce_calibration(dannce_dir):
    cal = load_calibration(dannce_dir / "label3d_dannce.mat")
    assert cal.units == "mm" and len(cal.cameras) == 6
    assert all(c.dist is not None for c in cal.cameras)
    assert (cal.cameras[0].width, cal.cameras[0].height) == (1152, 1024)
    with pytest.raises(ValueError, match="calibration is in 'mm' but the config expects 'm'"):
        load_calibration(dannce_dir / "label3d_dannce.mat", units="m")


@pytest.mark.parametrize("ext", [".json", ".yaml"])
def test_opencv_round_trip_and_units(tmp_path, ext):
    cams = _ring_cams(dist=np.array([-0.1, 0.05, 0.001, -0.002, 0.0]))
    p = tmp_path / f"cams{ext}"
    save_calibration(p, Calibration(cameras=cams, units="m"))
    cal = load_calibration(p, units="m")
    for a, b in zip(cams, cal.cameras):
        assert np.allclose(a.K, b.K) and np.allclose(a.w2c, b.w2c) and np.allclose(a.dist, b.dist)
        assert a.name == b.name and (a.width, a.height) == (b.width, b.height)
    mm = cal.cameras_mm()
    assert np.allclose(mm[0].center, cams[0].center * 1000)      # metres -> millimetres
    with pytest.raises(ValueError, match="calibration is in 'm' but the config expects 'mm'"):
        load_calibration(p, units="mm")


def test_units_must_be_stated_and_fields_named(tmp_path):
    p = tmp_path / "c.json"
    d = {"cameras": [{"name": "a", "width": 10, "height": 10, "K": np.eye(3).tolist(), "R": np.eye(3).tolist(),
                      "t": [0, 0, 1]}]}
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="units are not stated"):
        load_calibration(p)
    assert load_calibration(p, units="cm").mm_per_unit == 10.0
    d["units"] = "furlong"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="furlong"):
        load_calibration(p)
    d["units"] = "mm"
    del d["cameras"][0]["R"]
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"cameras\[0\]: missing field 'R'"):
        load_calibration(p)


# -- normalisation maths ----------------------------------------------------------------------
def test_rotation_to_z():
    for up in ([0, 0, 1], [0, 1, 0], [1, 2, 3], [0, 0, -1]):
        R = rotation_to_z(np.array(up, float))
        assert np.allclose(R @ (np.array(up) / np.linalg.norm(up)), [0, 0, 1])
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
    for a, b in (([1, 0, 0], [0, 1, 0]), ([1, 2, 3], [-3, 0.5, 1]), ([1, 0, 0], [-1, 0, 0]),
                 ([0.2, 0.1, 1], [0.2, 0.1, 1])):
        a, b = np.array(a, float), np.array(b, float)
        R = rotation_between(a, b)
        assert np.allclose(R @ a / np.linalg.norm(a), b / np.linalg.norm(b))
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
        axis = np.cross(a, b)
        if np.linalg.norm(axis) > 1e-9:
            assert np.allclose(R @ axis, axis)        # the smallest rotation: about a x b


def test_normalization_keeps_projection_and_distance_ratios():
    cams = _ring_cams(dist=np.array([-0.1, 0.05, 0, 0, 0]))
    norm = Normalization(center_mm=np.array([20.0, -10, 15]), mm_per_unit=50.0, up_rotation=rotation_to_z([0.1, -0.2, 1]))
    X = np.random.default_rng(1).normal(scale=30, size=(50, 3)) + norm.center_mm
    Xn = norm.points_to_norm(X)
    assert np.allclose(norm.points_to_mm(Xn), X)
    for c in cams:
        cn = norm.camera(c)
        uv0, z0 = c.project(X)
        uv1, z1 = cn.project(Xn)
        assert np.allclose(uv0, uv1, atol=1e-9)          # same pixels
        assert np.allclose(z1 * norm.mm_per_unit, z0)    # depth in world units, uniform scale
    d_mm = np.linalg.norm(cams[0].center - cams[3].center)
    d_n = np.linalg.norm(norm.camera(cams[0]).center - norm.camera(cams[3]).center)
    assert np.isclose(d_n * norm.mm_per_unit, d_mm)


def test_triangulate_exact():
    cams = [pinhole(c) for c in _ring_cams()]
    X = np.array([25.0, -3.0, 21.0])
    uv = np.stack([c.project(X[None])[0][0] for c in cams])
    assert np.allclose(triangulate(cams, uv), X, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 views"):
        triangulate(cams[:1], uv[:1])


def test_estimate_normalization_from_ellipsoid_hull():
    center, radii = np.array([20.0, -10.0, 15.0]), np.array([45.0, 15.0, 12.0])
    cams = _ring_cams(dist=np.array([-0.08, 0.03, 0.001, 0.0, 0.0]))
    masks = _ellipsoid_masks(cams, center, radii)
    cfg = replace(NORMALIZE, hull_box_mm=200)
    norm, diag = estimate_normalization(cams, masks, np.array([0, 0, 1.0]), cfg)
    assert np.linalg.norm(norm.center_mm - center) < 3.0                     # mm
    truth = radii.max() / cfg.fill                                           # body box half-extent -> fill
    assert truth * 0.97 < norm.mm_per_unit < truth * 1.12                    # conservative hull, few %
    lo, hi = np.asarray(diag["body_box"])
    assert np.allclose(-lo, hi) and np.isclose(hi.max(), cfg.fill)          # centred, longest half-extent = fill
    cfg_len = replace(cfg, body_length_mm=90.0)
    norm2, diag2 = estimate_normalization(cams, masks, np.array([0, 0, 1.0]), cfg_len)
    assert np.isclose(norm2.mm_per_unit, 45.0 / cfg.fill) and diag2["scale_method"] == "body_length"
    with pytest.raises(ValueError, match="only 0 views"):
        estimate_normalization(cams, [np.zeros_like(m) for m in masks], np.array([0, 0, 1.0]), cfg)


def test_a_long_thin_tail_does_not_change_centre_or_scale():
    """The framing rule: the body without the tail sets centre and scale, also from masks alone."""
    center, radii = np.array([20.0, -10.0, 15.0]), np.array([45.0, 15.0, 12.0])
    cams = _ring_cams(size=(240, 200))
    up = np.array([0, 0, 1.0])
    tail = _tail_points(center + [40.0, 0, -3.0], [1.0, 0.3, -0.1], length=80.0, radius=1.5)
    cfg = replace(NORMALIZE, hull_box_mm=300)
    plain = _ellipsoid_masks(cams, center, radii)
    tailed = _ellipsoid_masks(cams, center, radii, extra_points=tail)
    assert not any(mask_is_cut(m, cfg.edge_margin_px) for m in tailed)
    ref, dref = estimate_normalization(cams, plain, up, cfg)
    norm, diag = estimate_normalization(cams, tailed, up, cfg)
    assert diag["hull_extent_mm"][0] > 1.5 * dref["hull_extent_mm"][0]      # the tail is in the hull ...
    assert abs(norm.mm_per_unit / ref.mm_per_unit - 1) < 0.04               # ... but not in the scale
    assert np.linalg.norm(norm.center_mm - ref.center_mm) < 3.0             # mm, nor in the centre
    assert np.linalg.norm(norm.center_mm - center) < 3.0
    assert diag["hull_box"][1][0] > 1.2                                      # the tail reaches far beyond the body box
    assert np.isclose(max(np.abs(diag["body_box"]).max(0)), cfg.fill)


# -- crop / resize / undistort keep images and cameras in sync ---------------------------------
def test_resample_keeps_a_feature_on_its_projection():
    cam = _ring_cams(size=(200, 160), dist=np.array([-0.2, 0.08, 0.002, -0.001, 0.0]))[0]
    cam = replace(cam, K=cam.K + np.array([[0, -3.0, 0], [0, 0, 0], [0, 0, 0]]))   # with skew, like DANNCE
    X = np.array([[35.0, 5.0, 30.0]])
    uv, _ = cam.project(X)
    img = np.zeros((cam.height, cam.width), np.float32)
    yy, xx = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    img += np.exp(-((xx - uv[0, 0]) ** 2 + (yy - uv[0, 1]) ** 2) / (2 * 1.5 ** 2))   # a blob at the projection
    ideal = pinhole(cam)
    up, _ = ideal.project(X)
    for fx, fy, side, size in ((0.3, 0.6, 120, 64), (0.7, 0.45, 60, 96), (0.5, 0.5, 260, 50)):
        x0, y0 = int(up[0, 0] - fx * side), int(up[0, 1] - fy * side)   # crops (some past the border) holding X
        out_cam = ideal.cropped(x0, y0, side, side).resized(size, size)
        out, valid, _ = resample_view(img[..., None], cam, out_cam)
        expect, _ = out_cam.project(X)
        w = out[..., 0]
        cy, cx = np.unravel_index(np.argmax(w), w.shape)
        sl = (slice(max(cy - 4, 0), cy + 5), slice(max(cx - 4, 0), cx + 5))
        yy2, xx2 = np.mgrid[0:size, 0:size] + 0.5
        got = np.array([(xx2[sl] * w[sl]).sum(), (yy2[sl] * w[sl]).sum()]) / w[sl].sum()
        assert np.linalg.norm(got - expect[0]) < 0.15 * max(1.0, size / side * 1.5), (x0, y0, side, size, got, expect)
        assert 0 < valid.mean() <= 1


def test_pixels_to_normalized_inverts_projection():
    cam = _ring_cams(dist=np.array([-0.2, 0.08, 0.002, -0.001, 0.01]))[2]
    cam = replace(cam, K=cam.K + np.array([[0, 4.0, 0], [0, 0, 0], [0, 0, 0]]))
    X = np.random.default_rng(0).normal(scale=20, size=(40, 3)) + [20, -10, 15]
    uv, _ = cam.project(X)
    cam_pts = X @ cam.w2c[:3, :3].T + cam.w2c[:3, 3]
    assert np.allclose(pixels_to_normalized(cam, uv), cam_pts[:, :2] / cam_pts[:, 2:], atol=1e-8)


# -- masks -----------------------------------------------------------------------------------
def test_background_subtraction_finds_the_moving_blob():
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 200, size=(48, 64, 3)).astype(np.uint8)
    frames, truth = [], []
    for k in range(5):
        f = np.clip(bg.astype(int) + rng.normal(0, 2, bg.shape), 0, 255).astype(np.uint8)
        m = np.zeros((48, 64), bool)
        m[10:22, 5 + 11 * k:17 + 11 * k] = True
        f[m] = (20, 20, 20)
        f[40, 3 + 12 * k] = (255, 255, 255)            # a one-frame speckle the clean-up must remove
        frames.append(f)
        truth.append(m)
    med = median_background(np.stack(frames))
    assert np.abs(med.astype(int) - bg.astype(int)).max() < 12
    for f, m in zip(frames, truth):
        got = subtract_background(f, med, MASKS)
        assert (got == m).mean() > 0.99 and not got[40].any()


def test_threshold_mask_handles_lossy_and_bit_depths():
    m = np.array([[0, 10, 120, 135, 250]], np.uint8)
    assert threshold_mask(m, MASKS.given_threshold).tolist() == [[False, False, False, True, True]]
    assert threshold_mask(m.astype(np.uint16) * 257, MASKS.given_threshold).tolist() == [[False, False, False, True, True]]
    rgb = np.stack([m, m, m], -1)
    assert threshold_mask(rgb, MASKS.given_threshold).tolist() == [[False, False, False, True, True]]


# -- whole frame sets ---------------------------------------------------------------------------
def test_normalize_frame_set_outputs_consistent_views():
    center, radii = np.array([20.0, -10.0, 15.0]), np.array([45.0, 15.0, 12.0])
    cams = _ring_cams(dist=np.array([-0.08, 0.03, 0.001, 0.0, 0.0]))
    masks = _ellipsoid_masks(cams, center, radii)
    frames = [np.where(m[..., None], 200, 40).astype(np.uint8).repeat(3, -1) for m in masks]
    views, norm, diag = normalize_frame_set(frames, masks, cams, np.array([0, 0, 1.0]),
                                            replace(NORMALIZE, size=48, hull_box_mm=200))
    sample = build_real_sample(
        "real_000000007", views, norm, diag, {"frame": 7, "index": 7})
    dec = MultiViewSample.decode(sample.encode())
    assert dec.depth is None and dec.meta["source"] == "real" and dec.rgba.shape == (6, 48, 48, 4)
    for v, cam in zip(dec.rgba, dec.cameras):
        # the ellipsoid centre lands at the middle of every view; its alpha stays inside the body
        # box's projection (view_fill of the side), less for views along the long axis
        uv, _ = cam.project(norm.points_to_norm(center[None]))
        assert np.all(np.abs(uv[0] - 24) < 2)
        ys, xs = np.nonzero(v[..., 3] > 127)
        assert 0.25 < (max(np.ptp(xs), np.ptp(ys)) + 1) / 48 <= NORMALIZE.view_fill + 2 / 48
    with pytest.raises(ValueError, match="calibration says 160x128"):
        normalize_frame_set([f[:100] for f in frames], masks, cams, np.array([0, 0, 1.0]), NORMALIZE)


def test_ingested_views_frame_the_body_like_a_render():
    """Each view is a virtual camera at the captured one's centre looking at the body centre,
    principal point centred, the body box reaching view_fill of the half-image: the K a
    render would get there (framing.framed_intrinsics)."""
    center, radii = np.array([20.0, -10.0, 15.0]), np.array([45.0, 15.0, 12.0])
    cams = _ring_cams(dist=np.array([-0.08, 0.03, 0.001, 0.0, 0.0]))
    skew_shift = np.array([[0, -2.0, 30.0], [0, 0, -20.0], [0, 0, 0]])          # skewed, off-centre principal point
    cams = [replace(c, K=c.K + skew_shift) for c in cams]
    masks = _ellipsoid_masks(cams, center, radii)
    frames = [np.where(m[..., None], 200, 40).astype(np.uint8).repeat(3, -1) for m in masks]
    S = 64
    cfg = replace(NORMALIZE, size=S, hull_box_mm=200)
    views, norm, diag = normalize_frame_set(frames, masks, cams, np.array([0, 0, 1.0]), cfg)
    lo, hi = np.asarray(diag["body_box"])
    by_name = {c.name: c for c in cams}
    assert len(views) == 6
    for v in views:
        c, src = v.camera, norm.camera(by_name[v.camera.name])
        assert c.dist is None and np.allclose(c.K[:2, 2], S / 2) and np.isclose(c.fx, c.fy) and c.K[0, 1] == 0
        assert np.allclose(c.center, src.center)                               # a rotation, no parallax
        uv, _ = c.project(np.zeros((1, 3)))
        assert np.allclose(uv, S / 2)                                          # body centre on the optical axis
        uv, _ = c.project(box_corners(lo, hi))
        assert np.isclose(np.abs(uv - S / 2).max() / (S / 2), cfg.view_fill)   # body box reaches view_fill
        assert np.allclose(c.K, framed_intrinsics(c.w2c, lo, hi, cfg.view_fill, S))
        rot = np.asarray(v.warp["rotation_from_capture"])
        assert np.allclose(rot @ src.w2c[:3, :3], c.w2c[:3, :3])
        # the image follows: the ellipsoid's alpha sits at the centre, inside the box's projection
        ys, xs = np.nonzero(v.rgba[..., 3] > 127)
        assert np.all(np.abs([xs.mean() + 0.5 - S / 2, ys.mean() + 0.5 - S / 2]) < 1.5)
        assert max(np.ptp(xs), np.ptp(ys)) + 1 <= cfg.view_fill * S + 2


def _shifted(cam: Camera, dx: float) -> Camera:
    """The same camera with its principal point moved by ``dx`` pixels (the subject slides
    toward one edge of the sensor)."""
    K = cam.K.copy()
    K[0, 2] += dx
    return replace(cam, K=K)


def test_mouse_cut_by_the_sensor_edge_neither_shrinks_the_hull_nor_enters_the_sample():
    center, radii = np.array([20.0, -10.0, 15.0]), np.array([45.0, 15.0, 12.0])
    up = np.array([0, 0, 1.0])
    cams = _ring_cams()
    cut = {1, 2}                                   # two cameras see the body run off their sensor
    cams = [_shifted(c, 60.0) if i in cut else c for i, c in enumerate(cams)]
    masks = _ellipsoid_masks(cams, center, radii)
    assert all(mask_is_cut(masks[i], 2) == (i in cut) for i in range(6))
    cfg = replace(NORMALIZE, hull_box_mm=200, size=32)
    whole, _ = estimate_normalization(_ring_cams(), _ellipsoid_masks(_ring_cams(), center, radii), up, cfg)
    norm, diag = estimate_normalization(cams, masks, up, cfg)
    # the cut views abstain beyond their edge: same centre and scale as with every view whole
    assert np.linalg.norm(norm.center_mm - whole.center_mm) < 3.0
    assert abs(norm.mm_per_unit / whole.mm_per_unit - 1) < 0.04
    frames = [np.where(m[..., None], 200, 40).astype(np.uint8).repeat(3, -1) for m in masks]
    views, _, diag = normalize_frame_set(frames, masks, cams, up, cfg)
    assert [v.camera.name for v in views] == ["cam0", "cam3", "cam4", "cam5"]
    assert sorted(diag["views_dropped"]) == ["cam1", "cam2"] and "cut off" in diag["views_dropped"]["cam1"]
    with pytest.raises(ValueError, match=r"only 4 of 6 views are usable \(normalize.min_views = 5\).*cam1"):
        normalize_frame_set(frames, masks, cams, up, replace(cfg, min_views=5))


def test_bad_real_config_values_are_named(tmp_path):
    cfg, where = load_yaml("real", "ingest", ["normalize.size=big"])
    with pytest.raises(ValueError, match=r"ingest.yaml with overrides \['normalize.size=big'\].normalize.size: 'big' is not "
                                         r"a valid int"):
        ingest(None, [], tmp_path, cfg, where=where)
    with pytest.raises(ValueError, match=r"ingest.yaml normalize with overrides \['size=big'\].size: 'big' is not a valid int"):
        load_typed(NormalizeConfig, "real", "ingest", ["size=big"], key="normalize")
    with pytest.raises(ValueError, match=r"ingest.yaml masks with overrides \['treshold'\]: unknown key\(s\) \['treshold'\]"):
        load_typed(MaskConfig, "real", "ingest", {"treshold": 3}, key="masks")
    with pytest.raises(ValueError, match=r"fake_capture.yaml with overrides \['renderer'\].renderer: 'opengl' is not one of "
                                         r"\['blender', 'raster'\]"):
        load_typed(FakeCaptureConfig, "real", "fake_capture", {"renderer": "opengl"})
