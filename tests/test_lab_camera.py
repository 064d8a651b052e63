"""mousefacelift.labcamera: the lab-camera look changes input colour only, exactly as configured."""
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mousefacelift import labcamera as lc
from mousefacelift.analytic import write_sphere_shards
from mousefacelift.config import ConfigError, load_yaml
from mousefacelift.shards import iter_shard
from train.augment import AugmentConfig, augment_inputs
from train.data import example_config, make_example

H, W = 40, 52      # not a multiple of the 16-pixel blocks: padding is exercised

OPS = {
    "vignette": lambda x: lc.vignette(x, 0.5, (0.1, -0.1)),
    "defocus": lambda x: lc.defocus(x, 2.0),
    "motion": lambda x: lc.motion_blur(x, 5.0, 30.0),
    "grey": lambda x: lc.grey_response(x, (0.9, 0.3, 0.3)),
    "noise": lambda x: lc.sensor_noise(x, 0.01, 0.02, np.random.default_rng(0)),
    "quantise": lambda x: lc.quantise(x, 8),
    "compress8": lambda x: lc.compress(x, 36, 8),
    "compress16": lambda x: lc.compress(x, 36, 16),
    "srgb": lambda x: lc.linear_to_srgb(lc.srgb_to_linear(x)),
}

EVERY_OP = dict(enabled=True, probability=1.0, vignetting={"probability": 1.0}, defocus={"probability": 1.0},
                motion={"probability": 1.0}, grey={"probability": 1.0}, noise={"probability": 1.0},
                compression={"probability": 1.0})
NO_OP = dict(enabled=True, probability=1.0, vignetting={"probability": 0.0}, defocus={"probability": 0.0},
             motion={"probability": 0.0}, grey={"probability": 0.0}, noise={"probability": 0.0},
             compression={"probability": 0.0})
NO_WARP = dict(probability=0.0, jitter_rotation_deg=0.0, jitter_focal=0.0, jitter_principal_px=0.0,
               grid_distortion_px=0.0)


def _views(v=2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(v, 3, H, W, generator=g, dtype=dtype)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    alpha = (((yy - H / 2) ** 2 + (xx - W / 2) ** 2) < (H / 3) ** 2).to(dtype).expand(v, 1, H, W).clone()
    alpha[:, :, H // 2, :] = 0.5                      # some partial coverage
    return rgb, alpha


def _cams(v=2):
    K = torch.tensor([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]]).expand(v, 3, 3).clone()
    c2w = torch.eye(4).expand(v, 4, 4).clone()
    c2w[:, :3, 3] = torch.tensor([0.0, 0.0, -2.5])
    return K, c2w


def _cfg(lab=None, **over):
    return AugmentConfig.from_yaml(**over, lab_camera=lab or {})


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_op_keeps_shape_range_and_dtype(name, dtype):
    x, _ = _views(dtype=dtype)
    x[0, :, :4] = 0.0
    x[1, :, -4:] = 1.0                               # saturated and black regions
    y = OPS[name](x)
    assert y.shape == x.shape and y.dtype == dtype
    assert y.min() >= 0.0 and y.max() <= 1.0 and torch.isfinite(y).all()


def test_grey_views_have_equal_channels_through_the_whole_chain():
    rgb, alpha = _views(1)
    look = lc.LabLook(arena_grey=0.3, vignetting=(0.4, 0.05, 0.0), defocus_px=1.5, motion=(4.0, 20.0),
                      grey=(0.7, 0.15, 0.15), grey_mode="ir", noise=(0.005, 0.01), bits=8, compression=(34, 8),
                      noise_seed=7)
    out = lc.apply_look(rgb[0], alpha[0], look)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert not torch.equal(out, rgb[0])


@pytest.mark.parametrize("lab", [NO_OP, dict(EVERY_OP, probability=0.0), dict(EVERY_OP, enabled=False)],
                         ids=["ops-zero", "view-zero", "disabled"])
def test_zero_probability_config_is_the_identity(lab):
    rgb, alpha = _views(3)
    K, c2w = _cams(3)
    cfg = _cfg(lab, **NO_WARP)
    out, a, K2, c2w2, info = augment_inputs(rgb, alpha, K, c2w, cfg, np.random.default_rng(0))
    assert torch.equal(out, rgb) and torch.equal(a, alpha) and torch.equal(K2, K) and torch.equal(c2w2, c2w)
    assert not info["lab_camera"].any()


def test_augment_inputs_changes_only_input_colour():
    """Every lab op at probability 1 (the warps, which move alpha by design, off): input colour
    changes; the caller's tensors (targets are the rest of them), alpha and cameras are bit-exact."""
    rgb, alpha = _views(5)
    K, c2w = _cams(5)
    before = [t.clone() for t in (rgb, alpha, K, c2w)]
    nin = 2
    out, a, K2, c2w2, info = augment_inputs(rgb[:nin], alpha[:nin], K[:nin], c2w[:nin], _cfg(EVERY_OP, **NO_WARP),
                                            np.random.default_rng(3))
    for t, b in zip((rgb, alpha, K, c2w), before):
        assert torch.equal(t, b)
    assert torch.equal(a, alpha[:nin]) and torch.equal(K2, K[:nin]) and torch.equal(c2w2, c2w[:nin])
    assert info["lab_camera"].all() and all(lk is not None for lk in info["lab_looks"])
    assert (out - rgb[:nin]).abs().amax((1, 2, 3)).min() > 0.05


def test_make_example_keeps_targets_alpha_and_cameras(tmp_path):
    """Through the training example: with every lab op on, only ``input_rgb`` differs."""
    write_sphere_shards(str(tmp_path), samples=1, per_shard=1, size=32, seed=4)
    raw = next(iter(iter_shard(str(next(tmp_path.glob("*.tar"))))))
    base, _ = load_yaml("data", "base")

    def example(lab):
        cfg = OmegaConf.merge(base, {"shards": str(tmp_path), "resolution": 32,
                                     "augment": dict(NO_WARP, enabled=True, lab_camera=lab)})
        return make_example(raw, example_config(cfg), np.random.default_rng(11))

    plain, looked = example(dict(EVERY_OP, enabled=False)), example(EVERY_OP)
    for k in ("rgb", "alpha", "depth", "K", "c2w", "input_alpha", "input_K", "input_c2w", "input_depth", "background"):
        assert torch.equal(plain[k], looked[k]), k
    assert not torch.equal(plain["input_rgb"], looked["input_rgb"])


def test_stage_one_input_gets_the_look(tmp_path):
    """phase=mvdiffusion (data/mv.yaml) turns the look on for its one input view."""
    from mousefacelift.config import compose

    write_sphere_shards(str(tmp_path), samples=1, per_shard=1, size=32, seed=5)
    raw = next(iter(iter_shard(str(next(tmp_path.glob("*.tar"))))))
    cfg = compose("train", ["phase=mvdiffusion", f"data.shards={tmp_path}", "data.resolution=32",
                            "data.augment.probability=0", "data.augment.lab_camera.probability=1",
                            "data.augment.lab_camera.noise.probability=1"])
    assert cfg.data.augment.lab_camera.enabled
    ex = make_example(raw, example_config(cfg.data), np.random.default_rng(0))
    assert not torch.equal(ex["input_rgb"][0], ex["rgb"][0])
    assert torch.equal(ex["input_alpha"][0], ex["alpha"][0]) and torch.equal(ex["input_K"][0], ex["K"][0])
    clean = make_example(raw, example_config(cfg.data, train=False), np.random.default_rng(0))
    assert torch.equal(clean["input_rgb"][0], clean["rgb"][0])       # evaluation is never augmented


def test_deterministic_per_seed():
    rgb, alpha = _views(4)
    cfg = _cfg(dict(EVERY_OP, probability=0.7))
    K, c2w = _cams(4)
    run = lambda seed: augment_inputs(rgb, alpha, K, c2w, cfg, np.random.default_rng(seed))  # noqa: E731
    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4]))
    assert a[4]["lab_looks"] == b[4]["lab_looks"]
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("length, angle", [(7.0, 0.0), (9.0, 90.0), (8.0, 35.0), (4.0, 120.0)])
def test_motion_blur_of_a_point_is_a_line_of_that_length(length, angle):
    img = torch.zeros(1, 41, 41)
    img[0, 20, 20] = 1.0
    out = lc.motion_blur(img, length, angle)[0].double()
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    d = torch.tensor([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    along = (xx - 20) * d[0] + (yy - 20) * d[1]
    across = -(xx - 20) * d[1] + (yy - 20) * d[0]
    # a uniform segment of length L has variance L^2/12 along it (+ at most 1/4 from bilinear splatting)
    var_along = (out * along ** 2).sum().item()
    assert length ** 2 / 12 - 0.01 <= var_along <= length ** 2 / 12 + 0.26
    assert (out * across ** 2).sum().item() < 0.26
    assert (out * along).sum().item() == pytest.approx(0.0, abs=1e-6)      # centred: pixels do not move
    support = along[out > 1e-4]
    assert length - 0.01 <= support.max() - support.min() <= length + 2.0


@pytest.mark.parametrize("level, shot, read", [(0.18, 0.0, 0.02), (0.5, 0.0, 0.005), (0.4, 0.01, 0.01)])
def test_noise_std_matches_the_configured_sigma(level, shot, read):
    lin = torch.full((3, 256, 256), level)
    out = lc.sensor_noise(lin, shot, read, np.random.default_rng(1))
    want = np.sqrt(shot * level + read ** 2)
    assert out.std().item() == pytest.approx(want, rel=0.03)
    assert out.mean().item() == pytest.approx(level, abs=0.002)
    mono = lc.sensor_noise(lin, shot, read, np.random.default_rng(1), mono=True)
    assert torch.equal(mono[0], mono[2]) and mono[0].std().item() == pytest.approx(want, rel=0.05)


def _high_energy(x):
    f = torch.fft.fft2(x.double() - x.double().mean((-2, -1), keepdim=True))
    fy = torch.fft.fftfreq(x.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(x.shape[-1]).abs()[None, :]
    return (f.abs() ** 2 * ((fy > 0.25) | (fx > 0.25))).sum().item()


@pytest.mark.parametrize("block", [8, 16])
def test_compression_reduces_high_frequency_energy_and_error_grows_with_qp(block):
    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.2 * torch.randn(3, 64, 64, generator=g)).clamp(0, 1)
    lo, hi = lc.compress(x, 22, block), lc.compress(x, 40, block)
    assert _high_energy(hi) < 0.5 * _high_energy(x)
    assert _high_energy(hi) < _high_energy(lo) < _high_energy(x)
    assert (lo - x).pow(2).mean() < (hi - x).pow(2).mean()
    flat = torch.full((3, 32, 32), 100 / 255)        # a flat image stays flat: DC only, off by < one DC step
    out = lc.compress(flat, 40, block)
    assert out.unique().numel() == 1 and (out - flat).abs().max() <= (lc.qstep(40) / block + 1) / 255


def test_render_mode_changes_only_the_input_colour_and_replays_from_meta():
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, size=(3, H, W, 4), dtype=np.uint8)
    cfg = lc.input_look_config({"enabled": True, "lab_camera": {k: v for k, v in EVERY_OP.items() if k != "enabled"}})
    assert cfg.enabled and cfg.probability == 1.0
    looks, meta = lc.input_view_looks(cfg, np.random.default_rng(9))
    out = lc.look_rgba(rgba, looks)
    assert out.dtype == np.uint8 and out.shape == rgba.shape
    assert np.array_equal(out[..., 3], rgba[..., 3]) and np.array_equal(out[1:], rgba[1:])
    assert not np.array_equal(out[0], rgba[0])
    # the record in meta.json is enough to apply the look after rendering, bit-exact
    replay = lc.look_rgba(rgba, lc.looks_from_meta(json.loads(json.dumps(meta))))
    assert np.array_equal(out, replay)
    assert lc.input_look_config({"enabled": False}) is None and lc.input_look_config(None) is None
    with pytest.raises(ConfigError, match="input_look: unknown key"):
        lc.input_look_config({"enabled": True, "probabilty": 1.0})


@pytest.mark.parametrize("over, field", [({"probability": 1.5}, "probability"),
                                         ({"noise": {"read": [0.1, 0.01]}}, "noise.read"),
                                         ({"compression": {"qp": [20, 60]}}, "compression.qp"),
                                         ({"compression": {"block_px": [12]}}, "block_px")])
def test_bad_config_names_the_field(over, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _cfg(over)
