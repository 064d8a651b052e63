"""Camera-like exposure (incident metering + AgX) and the hair-flow field: pure numpy, no bpy."""
import numpy as np
import pytest

from blender.conventions import (agx_display, clipped_share, develop_views, developed_srgb8, meter_sums,
                                 metered_exposure, straight_srgb8)
from mousefacelift.config import ConfigError
from mousefacelift.scene import ExposureSpec, surface_flow
from synth.mouse.compose import exposure_spec, hair_coordinates


def _view(shading, albedo, alpha=1.0, shape=(8, 8)):
    """A premultiplied linear view of a grey surface and its premultiplied albedo pass."""
    rgb = np.full(shape + (3,), shading * albedo, np.float32)
    a = np.full(shape + (1,), alpha, np.float32)
    return np.concatenate([rgb * a, a], -1), np.full(shape + (3,), albedo, np.float32) * a


def test_agx_curve_is_monotonic_keeps_black_and_clips_only_far_above_white():
    x = np.geomspace(1e-4, 1e3, 400)
    y = agx_display(np.stack([x] * 3, -1))
    assert (np.diff(y[:, 0]) >= -1e-7).all() and np.allclose(y[:, 0], y[:, 1], atol=1e-3)
    assert agx_display(np.zeros(3)).max() == 0.0
    assert abs(agx_display(np.full(3, 0.18))[0] * 255 - 127.6) < 0.5        # middle grey lands mid-scale
    at254 = x[np.argmax(y[:, 0] * 255 >= 253.5)]
    assert 12.0 < at254 < 18.0                                               # ~6 stops above middle grey x 16
    red = agx_display(np.array([4.0, 0.5, 0.5]))
    assert red[0] > red[1] and red[0] < 1.0                                  # hue kept, no per-channel clip


def test_standard_view_transform_is_the_plain_conversion():
    pre, _ = _view(0.7, 1.0, alpha=0.4)
    np.testing.assert_array_equal(developed_srgb8(pre, 1.0, "standard"), straight_srgb8(pre))
    with pytest.raises(ValueError, match="view_transform"):
        developed_srgb8(pre, 1.0, "filmic2")


def test_incident_metering_keeps_white_light_and_black_dark():
    light = 6.0                                                              # far too bright for plain sRGB
    white, wa = _view(light, 0.8)
    black, ba = _view(light, 0.02)
    ew, mw = metered_exposure(*meter_sums(white, wa), key=1.0, offset_ev=0.0, min_ev=-8, max_ev=8)
    eb, mb = metered_exposure(*meter_sums(black, ba), key=1.0, offset_ev=0.0, min_ev=-8, max_ev=8)
    assert mw == pytest.approx(light, rel=1e-4) and mb == pytest.approx(light, rel=1e-4)
    assert ew == pytest.approx(eb) == pytest.approx(1.0 / light, rel=1e-4)  # the same light -> the same exposure
    w8, b8 = developed_srgb8(white, ew, "agx"), developed_srgb8(black, eb, "agx")
    assert clipped_share(straight_srgb8(white)) == 1.0 and clipped_share(w8) == 0.0
    assert w8[0, 0, 0] > 150 and b8[0, 0, 0] < 40                           # coat colour survives the exposure
    e2, _ = metered_exposure(*meter_sums(white, wa), key=1.0, offset_ev=1.0, min_ev=-8, max_ev=8)
    assert e2 == pytest.approx(2 * ew)                                       # the offset is in stops
    e3, _ = metered_exposure(*meter_sums(white, wa), key=1.0, offset_ev=0.0, min_ev=-1, max_ev=8)
    assert e3 == pytest.approx(0.5)                                          # limited to min_ev
    e4, m4 = metered_exposure(0.0, 0.0, key=1.0, offset_ev=-0.5, min_ev=-8, max_ev=8)
    assert e4 == pytest.approx(2 ** -0.5) and np.isnan(m4)                   # nothing to meter


def test_metering_reads_straight_colour_of_the_foreground_only():
    pre, alb = _view(2.0, 0.5, alpha=0.8)
    L, A = meter_sums(pre, alb)
    assert L / A == pytest.approx(2.0, rel=1e-4) and A == pytest.approx(64 * 0.5, rel=1e-4)
    edge, ealb = _view(2.0, 0.5, alpha=0.3)
    assert meter_sums(edge, ealb) == (0.0, 0.0)                              # alpha <= 0.5 is not foreground


def test_develop_views_uses_one_exposure_for_all_views_and_records_it():
    bright, ba = _view(8.0, 0.7)
    dim, da = _view(2.0, 0.7)
    views = np.stack([bright, dim])
    meter = tuple(np.add(meter_sums(bright, ba), meter_sums(dim, da)))
    spec = ExposureSpec(view_transform="agx", key=1.0, offset_ev=0.25)
    out, rec = develop_views(views, meter, spec)
    gain = 2 ** 0.25 / 5.0                                                   # mean light (8 + 2) / 2
    assert rec["exposure"] == pytest.approx(gain, rel=1e-4) and rec["meter"] == pytest.approx(5.0, rel=1e-4)
    assert rec["view_transform"] == "agx" and rec["offset_ev"] == 0.25
    assert rec["exposure_ev"] == pytest.approx(np.log2(gain), abs=1e-6)
    np.testing.assert_array_equal(out[1], developed_srgb8(dim, gain, "agx"))
    assert out[0, 0, 0, 0] > out[1, 0, 0, 0]                                 # the brighter view stays brighter
    plain, none = develop_views(views, meter, None)
    assert none is None and np.array_equal(plain[0], straight_srgb8(bright))
    _, std = develop_views(views, meter, ExposureSpec(view_transform="standard"))
    assert std["exposure"] == 1.0 and std["meter"] is None


def test_clipped_share_counts_any_channel_over_the_foreground():
    im = np.zeros((2, 2, 4), np.uint8)
    im[..., 3] = [[255, 255], [255, 0]]
    im[0, 0, :3] = [254, 10, 10]
    im[0, 1, :3] = [253, 253, 253]
    im[1, 1, :3] = 255                                                       # background: not counted
    assert clipped_share(im) == pytest.approx(1 / 3)
    assert clipped_share(np.zeros((2, 2, 4), np.uint8)) == 0.0


def test_exposure_config_is_drawn_from_the_samples_stream_and_checked():
    cfg = {"view_transform": "agx", "key": 1.0, "offset_ev": [-1.0, 0.5], "min_ev": -8, "max_ev": 8}
    a = exposure_spec(cfg, np.random.default_rng(3))
    b = exposure_spec(cfg, np.random.default_rng(3))
    assert a == b and -1.0 <= a.offset_ev <= 0.5
    offsets = [exposure_spec(cfg, np.random.default_rng(s)).offset_ev for s in range(50)]
    assert min(offsets) < -0.5 and max(offsets) > 0.0
    assert exposure_spec(None, np.random.default_rng(0)) is None
    with pytest.raises(ConfigError, match="key"):
        exposure_spec({k: v for k, v in cfg.items() if k != "key"}, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="view_transform"):
        exposure_spec(dict(cfg, view_transform="filmic"), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="high < low"):
        exposure_spec(dict(cfg, offset_ev=[1.0, -1.0]), np.random.default_rng(0))


def test_surface_flow_is_the_in_surface_gradient_and_follows_a_pose():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(400, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)                            # points on the unit sphere
    from scipy.spatial import ConvexHull
    f = ConvexHull(v).simplices
    f = np.where((np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]) * v[f[:, 0]]).sum(1, keepdims=True) < 0,
                 f[:, ::-1], f)
    field = -v[:, 0]                                                         # "towards -X" on the rest shape
    t = surface_flow(v, f, field)
    ok = np.abs(v[:, 0]) < 0.9                                               # away from the poles of the field
    assert np.allclose(np.linalg.norm(t[ok], axis=1), 1.0, atol=1e-5)
    exact = -(np.array([1.0, 0, 0]) - v[ok][:, :1] * v[ok])                 # -x projected on the sphere
    exact /= np.linalg.norm(exact, axis=1, keepdims=True)
    cos = (t[ok] * exact).sum(1)
    assert np.median(cos) > 0.99 and cos.min() > 0.9                         # a coarse mesh's gradient
    assert np.median(np.abs((t[ok] * v[ok]).sum(1))) < 0.05                  # tangent to the surface
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])       # the same surface, "posed"
    np.testing.assert_allclose(surface_flow(v @ R.T, f, field), t @ R.T, atol=1e-5)
    assert not surface_flow(v, f, np.zeros(len(v))).any()                    # flat field: no direction


def test_hair_coordinates_run_to_the_tail_and_down_in_world_units():
    rest = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    h = hair_coordinates(rest, scale=0.5)
    assert h[1, 0] > h[0, 0] and h[3, 0] > h[2, 0]                           # snout at +X, up at +Z
    assert h[4, 0] == 0.0                                                    # sideways is across the hair
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 0.5, rtol=1e-6)    # a rotation, then the scale


def test_meta_readers_of_the_exposure_record():
    from synth.mouse.meta import exposure_ev, view_transform
    rec = {"exposure": {"view_transform": "agx", "exposure_ev": -1.25}}
    assert view_transform(rec) == "agx" and exposure_ev(rec) == -1.25
    assert view_transform({}) is None and exposure_ev({"exposure": {"exposure_ev": True}}) is None


def test_fixed_exposure_skips_metering():
    pre, alb = _view(3.0, 0.5)
    out, rec = develop_views(pre[None], meter_sums(pre, alb), ExposureSpec(key=1.0, fixed_ev=-1.0))
    assert rec["exposure"] == 0.5 and rec["metering"] == "fixed" and rec["meter"] is None
    np.testing.assert_array_equal(out[0], developed_srgb8(pre, 0.5, "agx"))
