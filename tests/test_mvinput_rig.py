"""The mvinput rig (input view from a random direction + targets relative to it) and the
metrics of generated views (per view and 3D consistency through the true geometry)."""
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mousefacelift.cameras import (Camera, InputViews, TargetLayout, camera_rays, load_input_views, load_target_layout,
                                   make_rig, orbit_angles, relative_targets, stack_cameras)
from mousefacelift.config import ConfigError, compose, load_yaml, to_container
from synth.mouse import compose as C
from train.tasks.mvdiffusion import metrics as M

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layout():
    return load_target_layout()


@pytest.fixture(scope="module")
def inputs():
    return load_input_views()


def _fov(cam: Camera) -> float:
    return math.degrees(2 * math.atan(0.5 * cam.width / cam.fx))


def _looks_at_origin(cam: Camera) -> bool:
    uv, z = cam.project(np.zeros((1, 3)))
    return bool(z[0] > 0 and np.allclose(uv[0], [cam.width / 2, cam.height / 2], atol=1e-6))


def _rel(a: float, b: float) -> float:
    """a - b wrapped into [-180, 180)."""
    return (a - b + 180.0) % 360.0 - 180.0


# -- the rig ----------------------------------------------------------------------------------
def test_yaml_states_every_field_and_the_dataclasses_repeat_no_value():
    for cls, key in ((TargetLayout, "targets"), (InputViews, "input")):
        stated, _ = load_yaml("rig", "mvinput", key=key)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(stated) == set(fields)
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields.values())


def test_input_direction_covers_minus10_to_90_with_the_lab_share(inputs, layout):
    angles = np.array([orbit_angles(make_rig("mvinput", size=32, seed=s, input_views=inputs, target_layout=layout)[0])
                       for s in range(400)])
    az, el = angles[:, 0], angles[:, 1]
    lo, hi = inputs.elevation_deg
    llo, lhi = inputs.lab_elevation_deg
    assert el.min() >= lo - 1e-6 and el.max() <= hi + 1e-6
    assert (el > 80).sum() >= 10 and (el < 0).sum() >= 5             # top-down and from below the body
    assert abs(((el >= llo) & (el <= lhi)).mean() - inputs.lab_share) < 0.08
    assert np.histogram(az, bins=4, range=(0, 360))[0].min() >= 60    # azimuth uniform
    # the same seed gives the same rig; another seed another input
    a = make_rig("mvinput", size=32, seed=3, input_views=inputs, target_layout=layout)
    b = make_rig("mvinput", size=32, seed=3, input_views=inputs, target_layout=layout)
    assert all(np.array_equal(x.w2c, y.w2c) for x, y in zip(a, b))
    assert not np.allclose(a[0].w2c, make_rig("mvinput", size=32, seed=4, input_views=inputs, target_layout=layout)[0].w2c)


def test_targets_sit_at_the_layout_offsets_from_the_input_azimuth(inputs, layout):
    for seed in range(20):
        cams = make_rig("mvinput", size=64, seed=seed, input_views=inputs, target_layout=layout)
        assert len(cams) == 1 + layout.num_views
        in_az = orbit_angles(cams[0])[0]
        for cam, off, el in zip(cams[1:], layout.azimuth_offsets_deg, layout.elevations_deg):
            az, tel, dist = orbit_angles(cam)
            assert abs(_rel(az - off, in_az)) < 1e-6
            assert tel == pytest.approx(el, abs=1e-6) and dist == pytest.approx(layout.radius)
            assert _fov(cam) == pytest.approx(layout.fov_deg) and _looks_at_origin(cam)
            c2w = cam.c2w
            assert np.dot(c2w[:3, 1], [0, 0, 1]) < 0                  # image up (-y) points up the world


def test_relative_targets_rotate_with_the_input_azimuth(layout):
    """The pipeline's targets (input azimuth 0) and the rig's are one layout turned about world up."""
    base, turned = relative_targets(0.0, layout, 32), relative_targets(137.0, layout, 32)
    a = math.radians(137.0)
    Rz = np.eye(4)
    Rz[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    for c0, c1 in zip(base, turned):
        np.testing.assert_allclose(c1.c2w, Rz @ c0.c2w, atol=1e-9)
        np.testing.assert_array_equal(c0.K, c1.K)


def test_top_down_input_keeps_its_azimuth():
    top = InputViews(elevation_deg=(-10.0, 90.0), lab_elevation_deg=(90.0, 90.0), lab_share=1.0)
    lay = TargetLayout(azimuth_offsets_deg=(0.0, 90.0), elevations_deg=(20.0, 90.0), radius=2.7, fov_deg=50.0)
    for seed in range(5):
        cams = make_rig("mvinput", size=32, seed=seed, input_views=top, target_layout=lay)
        az, el, _ = orbit_angles(cams[0])
        assert el == pytest.approx(90.0) and _looks_at_origin(cams[0]) and _looks_at_origin(cams[2])
        assert _rel(orbit_angles(cams[1])[0], az) == pytest.approx(0.0, abs=1e-6)
        assert _rel(orbit_angles(cams[2])[0], az) == pytest.approx(90.0, abs=1e-6)


def test_render_config_frames_the_input_and_keeps_the_targets_fixed(inputs, layout):
    cfg = to_container(compose("render", ["rig=mvinput", "resolution=64"]))
    rig = cfg["rig"]
    lo, hi = np.array([-0.5, -0.2, -0.15]), np.array([0.5, 0.2, 0.15])
    plain = make_rig("mvinput", size=64, seed=np.random.default_rng(5), input_views=inputs, target_layout=layout)
    cams = C.rig_cameras(rig, 64, np.random.default_rng(5), lo, hi, 0.02)
    az, el, dist = orbit_angles(cams[0])
    assert (az, el) == pytest.approx(orbit_angles(plain[0])[:2]) and rig["distance"][0] <= dist <= rig["distance"][1]
    from mousefacelift.framing import framed_intrinsics
    np.testing.assert_allclose(cams[0].K, framed_intrinsics(cams[0].w2c, lo, hi, rig["view_fill"], 64))
    for c, p in zip(cams[1:], plain[1:]):
        np.testing.assert_allclose(c.w2c, p.w2c)
        np.testing.assert_allclose(c.K, p.K)
        assert c.depth_range is not None
    views = C.rig_views_meta(rig, cams)
    assert views["input"] == 0 and views["targets"] == list(range(1, 7))
    assert views["input_azimuth_deg"] == pytest.approx(az) and views["input_fov_deg"] == pytest.approx(_fov(cams[0]))
    assert views["target_layout"]["azimuth_offsets_deg"] == list(layout.azimuth_offsets_deg)
    assert C.rig_views_meta(to_container(compose("render", []))["rig"], cams) is None   # other rigs record none


@pytest.mark.parametrize("kwargs, msg", [
    (dict(azimuth_offsets_deg=(0.0, 60.0), elevations_deg=(20.0,), radius=2.7, fov_deg=50.0),
     "elevations_deg: expected one elevation per azimuth offset"),
    (dict(azimuth_offsets_deg=(), elevations_deg=(), radius=2.7, fov_deg=50.0), "at least one target"),
    (dict(azimuth_offsets_deg=(0.0,), elevations_deg=(95.0,), radius=2.7, fov_deg=50.0), "outside [-90, 90]"),
    (dict(azimuth_offsets_deg=(0.0,), elevations_deg=(20.0,), radius=1.5, fov_deg=50.0), "targets.radius=1.5"),
    (dict(azimuth_offsets_deg=(0.0,), elevations_deg=(20.0,), radius=2.7, fov_deg=180.0), "targets.fov_deg=180"),
])
def test_bad_target_layout_is_named(kwargs, msg):
    with pytest.raises(ValueError, match=None) as e:
        TargetLayout(**kwargs)
    assert msg in str(e.value)


def test_bad_rig_config_is_one_clear_line(inputs, layout, capsys):
    with pytest.raises(ConfigError, match=r"targets\.radius=1\.0"):
        load_target_layout("mvinput", ["radius=1.0"])
    with pytest.raises(ConfigError, match=r"input.lab_elevation_deg.*inside elevation_deg"):
        load_input_views("mvinput", ["lab_elevation_deg=[45,100]"])
    with pytest.raises(ConfigError, match=r"input.lab_share"):
        load_input_views("mvinput", ["lab_share=1.5"])
    with pytest.raises(ValueError, match="mvinput needs its input distribution and targets layout"):
        make_rig("mvinput", size=8)
    with pytest.raises(ValueError, match="mvinput stands alone"):
        make_rig("mvinput+sphere4", size=8, input_views=inputs, target_layout=layout)
    with pytest.raises(ConfigError, match=r"rig.targets: the mvinput rig needs this section"):
        C.mvinput_sections({"name": "mvinput", "input": {}})
    from synth import render as R
    rc = R.main(["--poses", "1", "--rig", "mvinput", "--out", "unused_never_created", "rig.targets.fov_deg=200"])
    err = capsys.readouterr().err
    assert rc == 2 and "targets.fov_deg=200" in err and len(err.strip().splitlines()) == 1
    assert not (REPO / "unused_never_created").exists()


@pytest.mark.slow
def test_preview_render_writes_input_plus_targets(tmp_path):
    """A real render (1 pose, 64², preview): 7 views whose cameras are the rig's, meta naming the
    input and targets, and the rendered truth scoring as consistent while a swap does not."""
    pytest.importorskip("bpy")
    from mousefacelift import shards as S
    from mousefacelift.shards import MultiViewSample

    out = tmp_path / "mv"
    r = subprocess.run([sys.executable, "-m", "synth.render", "--poses", "1", "--rig", "mvinput", "--resolution", "64",
                        "--samples", "4", "--quality", "preview", "--samples-per-shard", "1", "--workers", "1",
                        "--seed", "5", "--out", str(out), "run.threads=1"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (shard,) = S.list_shards(out)
    (s,) = [MultiViewSample.decode(f) for f in S.iter_shard(shard)]
    assert s.rgba.shape == (7, 64, 64, 4) and s.depth is not None
    views = s.meta["rig_views"]
    assert s.meta["rig"] == "mvinput" and views["input"] == 0 and views["targets"] == [1, 2, 3, 4, 5, 6]
    layout = TargetLayout(**{k: tuple(v) if isinstance(v, list) else v for k, v in views["target_layout"].items()})
    expected = relative_targets(views["input_azimuth_deg"], layout, 64)
    for cam, want in zip(s.cameras[1:], expected):
        np.testing.assert_allclose(cam.w2c, want.w2c, atol=1e-6)
    assert (s.rgba[..., 3] > 128).sum(axis=(1, 2)).min() > 20       # the mouse is in every view
    rgba = torch.tensor(s.rgba[1:]).permute(0, 3, 1, 2)[None].float() / 255
    depth = torch.tensor(s.depth[1:])[None]
    K, c2w = (x[None] for x in stack_cameras(s.cameras[1:]))
    true = M.consistency(rgba, rgba, depth, K, c2w)["consistency_psnr"]
    swapped = rgba[:, [3, 1, 2, 0, 4, 5]]
    bad = M.consistency(swapped, rgba, depth, K, c2w)["consistency_psnr"]
    assert float(bad[0, [0, 3]].mean()) < float(true[0, [0, 3]].mean()) - 3


# -- metrics of generated views: an analytic textured sphere as the truth ---------------------
def _sphere_views(cams: list[Camera], texture_turn_deg: float = 0.0, radius: float = 0.8):
    """Exact RGBA [V,4,H,W] and planar depth [V,H,W] of a sphere whose colour is a smooth
    function of the world point (view-independent), optionally turned about world up."""
    K, c2w = stack_cameras(cams)
    H = W = cams[0].width
    o, d = camera_rays(K.double(), c2w.double(), H, W)
    b = (o * d).sum(-1)
    disc = b ** 2 - ((o * o).sum(-1) - radius ** 2)
    hit = disc > 0
    t = -b - disc.clamp_min(0).sqrt()
    p = o + d * t[..., None]
    a = math.radians(texture_turn_deg)
    x, y = p[..., 0] * math.cos(a) + p[..., 1] * math.sin(a), -p[..., 0] * math.sin(a) + p[..., 1] * math.cos(a)
    rgb = torch.stack([0.5 + 0.35 * torch.sin(3 * x + 1.0), 0.5 + 0.35 * torch.sin(3 * y - 0.5) * torch.cos(2 * p[..., 2]),
                       0.5 + 0.35 * torch.cos(2.5 * (x + p[..., 2]))], -1)
    rgb = rgb * hit[..., None]
    rgba = torch.cat([rgb, hit[..., None].double()], -1).permute(0, 3, 1, 2).float()
    z = (t * (d * c2w[:, None, None, :3, 2].double()).sum(-1)) * hit
    return rgba[None], z.float()[None], K[None], c2w[None]


@pytest.fixture(scope="module")
def sphere(layout):
    cams = relative_targets(37.0, layout, 48)
    return cams, _sphere_views(cams)


def test_true_views_score_perfect_and_consistent(sphere):
    _, (rgba, depth, K, c2w) = sphere
    m = M.generation_metrics(rgba, rgba, depth, K, c2w)
    assert torch.all(m["psnr_masked"] >= 99) and torch.allclose(m["ssim_masked"], torch.ones(1, 6))
    assert torch.all(m["mask_iou"] == 1)
    assert torch.all(m["consistency_pairs"] > 100)
    assert float(m["consistency_psnr"].min()) > 35 and torch.equal(m["consistency_psnr"], m["consistency_psnr_true"])
    s = M.summarize(m, prefix="eval/")
    assert s["eval/consistency_psnr"] > 35 and set(s) >= {"eval/mask_iou", "eval/psnr_masked/view5"}


def test_sharp_but_inconsistent_views_score_worse(sphere):
    cams, (rgba, depth, K, c2w) = sphere
    true = M.consistency(rgba, rgba, depth, K, c2w)["consistency_psnr"][0]
    # one view's texture turned by 40 deg: a sharp, plausible sphere view of another object
    turned = rgba.clone()
    turned[:, 2] = _sphere_views(cams, texture_turn_deg=40.0)[0][:, 2]
    c = M.consistency(turned, rgba, depth, K, c2w)["consistency_psnr"][0]
    assert float(c[2]) < float(true[2]) - 15 and float(c.mean()) < float(true.mean()) - 5
    # two targets swapped: each image sharp, silhouettes identical (a sphere), the set inconsistent
    swapped = rgba[:, [3, 1, 2, 0, 4, 5]]
    assert torch.equal(M.view_metrics(swapped, rgba)["mask_iou"], torch.ones(1, 6))
    c = M.consistency(swapped, rgba, depth, K, c2w)["consistency_psnr"][0]
    assert float(c[[0, 3]].max()) < float(true[[0, 3]].min()) - 15
    # a view rotated in the image plane
    rot = rgba.clone()
    rot[:, 4] = rgba[:, 4].flip(-1).flip(-2)
    assert float(M.consistency(rot, rgba, depth, K, c2w)["consistency_psnr"][0, 4]) < float(true[4]) - 15


def test_view_metrics_see_a_missing_view_and_a_wrong_silhouette(sphere):
    _, (rgba, _, _, _) = sphere
    pred = rgba.clone()
    pred[:, 1] = 0                                   # an empty view
    pred[:, 2, :, :, :24] = 0                        # half a silhouette
    m = M.view_metrics(pred, rgba)
    assert m["mask_iou"][0, 1] == 0 and 0.2 < float(m["mask_iou"][0, 2]) < 0.8
    assert float(m["psnr_masked"][0, 1]) < 15 and torch.all(m["psnr_masked"][0, [0, 3, 4, 5]] >= 99)
    # the true-foreground variant does not count the missing half beyond the truth's mask either way
    assert float(M.view_metrics(pred, rgba, foreground="true")["psnr_masked"][0, 2]) < 20


def test_bad_shapes_are_one_clear_line(sphere):
    _, (rgba, depth, K, c2w) = sphere
    with pytest.raises(ValueError, match=r"pred must be \[B,V,4,H,W\], got shape \(1, 6, 3, 48, 48\)"):
        M.view_metrics(rgba[:, :, :3], rgba)
    with pytest.raises(ValueError, match=r"K must be \[B,V,3,3\]=\[1,6,3,3\]"):
        M.consistency(rgba, rgba, depth, K[:, :5], c2w)
    with pytest.raises(ValueError, match="same"):
        M.consistency(rgba, rgba, depth[..., :40], K, c2w)
    with pytest.raises(ValueError, match="depth_tol"):
        M.consistency(rgba, rgba, depth, K, c2w, depth_tol=0)
    with pytest.raises(ValueError, match="foreground='both'"):
        M.view_metrics(rgba, rgba, foreground="both")
