"""Latent codecs, image encoder, noise-schedule helpers and the multi-view diffusion pipeline:
exact pixel round trip, a tiny SD-style VAE folder, the v-prediction round trip through DDIM
and Euler, save/reload reproducibility, the model_index allow-list and bad inputs."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler

from mousefacelift.cameras import load_target_layout, relative_targets
from mousefacelift.config import ConfigError
from mousefacelift.diffusion.codec import PixelCodec, SDVAECodec, build_codec
from mousefacelift.diffusion.image_encoder import ImageEncoder, build_image_encoder
from mousefacelift.diffusion.pipeline import MVDiffusionPipeline
from mousefacelift.diffusion.schedule import build_scheduler, min_snr_weights, snr, v_target
from mousefacelift.models import load_preset, model_config
from mousefacelift.models.mvdiffusion import camera_features

SIZE = 64   # the tiny preset's view size


def tiny_config(**changes):
    return model_config({**load_preset("mvdiffusion_tiny"), **changes}, "mvdiffusion_tiny (test)")


def rgba_on_grid(n, size, seed=0):
    """Random straight RGBA on the 8-bit grid, colour 0 where alpha is 0 (as in the shards)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 256, (n, 4, size, size), generator=g).float() / 255.0
    q[:, 3:4] = torch.where(q[:, 3:4] < 0.3, torch.zeros_like(q[:, 3:4]), q[:, 3:4])
    q[:, :3] *= (q[:, 3:4] > 0).float()
    return q


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, f"expected one line, got {msg!r}"
    return msg


# -- codecs -----------------------------------------------------------------------------------
def test_pixel_codec_round_trip_is_exact():
    cfg = tiny_config()
    codec = build_codec(cfg)
    assert isinstance(codec, PixelCodec) and codec.latent_channels == cfg.latent_channels == 16
    x = rgba_on_grid(3, 64)
    z = codec.encode(x)
    assert z.shape == (3, 16, 32, 32) and float(z.min()) >= -1 and float(z.max()) <= 1
    y = codec.decode(z)
    assert y.shape == x.shape
    assert torch.equal((y * 255).round(), (x * 255).round())
    assert float((y - x).abs().max()) < 1e-6
    # space-to-depth: latent pixel (0, 0) holds exactly the top-left 2x2 block of every channel
    assert torch.allclose(z[0, :, 0, 0].view(4, 2, 2), x[0, :, :2, :2] * 2 - 1)


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    """A tiny diffusers AutoencoderKL (4 levels: factor 8, like SD) saved as FOLDER/vae."""
    folder = tmp_path_factory.mktemp("sd_folder")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=64,
                        scaling_factor=0.5)
    vae.save_pretrained(folder / "vae")
    return folder


def test_sd_vae_codec_from_folder(vae_folder):
    cfg = tiny_config(latent="sd_vae", latent_factor=8)
    codec = build_codec(cfg, vae_folder)
    assert isinstance(codec, SDVAECodec) and codec.factor == 8 and codec.latent_channels == 5 == cfg.latent_channels
    assert not any(p.requires_grad for p in codec.parameters())
    x = rgba_on_grid(2, 32)
    z = codec.encode(x)
    assert z.shape == (2, 5, 4, 4)
    # alpha: the coverage averaged over each 8x8 cell, mapped to [-1, 1]
    assert torch.allclose(z[:, 4:], F.avg_pool2d(x[:, 3:], 8) * 2 - 1, atol=1e-6)
    # colour is encoded on black: what lies under alpha 0 does not matter
    x2 = x.clone()
    x2[:, :3] = torch.where(x[:, 3:] == 0, torch.rand_like(x[:, :3]), x[:, :3])
    assert torch.allclose(codec.encode(x2), z, atol=1e-5)
    y = codec.decode(z)
    assert y.shape == (2, 4, 32, 32) and float(y.min()) >= 0 and float(y.max()) <= 1
    # a constant alpha latent decodes to that constant coverage
    z_const = z.clone()
    z_const[:, 4] = 0.5
    assert torch.allclose(codec.decode(z_const)[:, 3], torch.full((2, 32, 32), 0.75), atol=1e-6)
    # no alpha channel (a 4-channel model): colour only, opaque alpha
    rgb_only = build_codec(tiny_config(latent="sd_vae", latent_factor=8, alpha_channel=False), vae_folder)
    assert rgb_only.latent_channels == 4 and torch.equal(rgb_only.decode(z[:, :4])[:, 3], torch.ones(2, 32, 32))


def test_sd_vae_codec_bad_inputs(vae_folder, tmp_path):
    cfg = tiny_config(latent="sd_vae", latent_factor=8)
    with pytest.raises(ConfigError) as e:
        build_codec(cfg, tmp_path / "missing")
    assert "vae" in one_line(e) and "missing" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_codec(cfg)
    one_line(e)
    codec = build_codec(cfg, vae_folder)
    with pytest.raises(ValueError) as e:
        codec.encode(torch.rand(1, 3, 64, 64))
    assert "4 channels" in one_line(e)
    with pytest.raises(ValueError) as e:
        codec.encode(torch.rand(1, 4, 60, 60))
    assert "multiple of the latent factor 8" in one_line(e)


# -- image encoder ----------------------------------------------------------------------------
def test_small_image_encoder(tmp_path):
    cfg = tiny_config()
    enc = build_image_encoder(cfg)
    assert isinstance(enc, ImageEncoder) and enc.embed_dim == cfg.image_embed_dim
    again = build_image_encoder(cfg)   # seeded: the same config gives the same encoder
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values()))
    x = rgba_on_grid(2, 64)
    e = enc.encode(x)
    assert e.shape == (2, cfg.image_embed_dim) and torch.isfinite(e).all()
    assert not torch.allclose(e[0], e[1])
    # composited on black: colour under alpha 0 is invisible
    x2 = x.clone()
    x2[:, :3] = torch.where(x[:, 3:] == 0, torch.rand_like(x[:, :3]), x[:, :3])
    assert torch.allclose(enc.encode(x2), e, atol=1e-5)
    enc.save_pretrained(tmp_path / "image_encoder")
    loaded = build_image_encoder(cfg, tmp_path)
    assert torch.allclose(loaded.encode(x), e, atol=1e-6)


def test_image_encoder_bad_inputs(tmp_path):
    cfg = tiny_config()
    with pytest.raises(ConfigError) as e:
        build_image_encoder(cfg, tmp_path / "nowhere")
    assert "image_encoder" in one_line(e)
    with pytest.raises(ConfigError) as e:   # an encoder of another width than the model's
        build_image_encoder(tiny_config(image_embed_dim=32)).save_pretrained(tmp_path / "image_encoder")
        build_image_encoder(cfg, tmp_path)
    assert "image_embed_dim is 64" in one_line(e)
    with pytest.raises(ValueError) as e:
        build_image_encoder(cfg).encode(torch.rand(1, 3, 64, 64))
    assert "got shape (1, 3, 64, 64)" in one_line(e)


# -- noise schedule ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ddim", "euler"])
def test_v_prediction_round_trip(kind):
    """add_noise, then one step with the exact v target recovers x0 (both samplers)."""
    cfg = tiny_config()
    sched = build_scheduler(kind, cfg)
    assert sched.config.prediction_type == "v_prediction"
    train = build_scheduler("ddpm", cfg)   # the training noising: x_t = sqrt(ac) x0 + sqrt(1-ac) n
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 6, 16, 8, 8, generator=g), torch.randn(2, 6, 16, 8, 8, generator=g)
    for steps in (1, 4):
        sched.set_timesteps(steps)
        t = sched.timesteps[0]
        tt = torch.full((2,), int(round(float(t))))
        v = v_target(train, x0, noise, tt)
        if kind == "euler":   # Euler's state is x0 + sigma n; it feeds the model sample / sqrt(sigma^2 + 1)
            sample = sched.add_noise(x0, noise, t.reshape(1).expand(2))
            assert torch.allclose(sched.scale_model_input(sample, t), train.add_noise(x0, noise, tt), atol=1e-4)
        else:
            sample = sched.add_noise(x0, noise, tt)
        out = sched.step(v, t, sample)
        assert torch.allclose(out.pred_original_sample, x0, atol=1e-3), steps
        if steps == 1:   # the only step goes all the way to the clean sample; Euler's state there is
            # x0 + sigma n with sigma ~ 2e4 (cosine schedule), so float32 round-off alone is ~ sigma * 1e-7
            tol = 1e-3 + 2e-7 * float(getattr(sched, "sigmas", torch.zeros(1)).max())
            assert torch.allclose(out.prev_sample, x0, atol=tol)


def test_min_snr_weights_and_bad_schedule():
    sched = build_scheduler("ddim", tiny_config())
    t = torch.tensor([0, 100, 500, 999])
    s = snr(sched, t)
    assert bool((s[:-1] > s[1:]).all())   # SNR falls with t
    w = min_snr_weights(sched, t, 5.0)
    expected = torch.minimum(s, torch.tensor(5.0)) / (s + 1)
    assert torch.allclose(w, expected)
    assert float(s[0]) > 5 > float(s[-1])   # both branches of the min are exercised
    assert float(w[0]) == pytest.approx(5.0 / (float(s[0]) + 1))
    assert float(w[-1]) == pytest.approx(float(s[-1]) / (float(s[-1]) + 1))
    with pytest.raises(ConfigError) as e:
        build_scheduler("heun", tiny_config())
    assert "heun" in one_line(e)
    with pytest.raises(ValueError) as e:
        v_target(sched, torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([1000]))
    one_line(e)


# -- pipeline ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    p = MVDiffusionPipeline.build(tiny_config(), load_target_layout(), "ddim")
    # the camera pathway starts as a no-op (zero-initialised); give it weights, as training would
    torch.nn.init.normal_(p.unet.camera_mlp[-1].weight, std=0.5)
    return p


@pytest.fixture(scope="module")
def image():
    return rgba_on_grid(1, SIZE, seed=3)


def run(p, image, seed=1, **kw):
    kw = {"num_inference_steps": 2, "guidance_scale": 1.0, "progress": False, **kw}
    return p(image, generator=torch.Generator().manual_seed(seed), **kw)


def test_camera_conditioning_is_the_layout_relative_to_the_input(pipe):
    layout = load_target_layout()
    elevation, fov = torch.tensor([60.0, 90.0]), torch.tensor([30.0, 50.0])
    targets, camera = pipe.camera_conditioning(elevation, fov)
    rel = torch.remainder(torch.tensor(layout.azimuth_offsets_deg) + 180.0, 360.0) - 180.0
    expected = camera_features(elevation, fov, rel.expand(2, -1), torch.tensor(layout.elevations_deg).expand(2, -1))
    assert camera.shape == (2, layout.num_views, expected.shape[-1])
    assert torch.allclose(camera, expected, atol=1e-5)   # top-down input (90 deg) included


def test_pipeline_outputs_and_determinism(pipe, image):
    out = run(pipe, image, input_elevation_deg=60.0, input_fov_deg=30.0, guidance_scale=2.0)
    assert out.views.shape == (1, 6, 4, SIZE, SIZE)
    assert float(out.views.min()) >= 0 and float(out.views.max()) <= 1
    assert out.input_camera.tolist() == [[60.0, 30.0]]
    targets = relative_targets(0.0, load_target_layout(), SIZE)
    assert len(out.cameras) == 1 and [c.name for c in out.cameras[0]] == [c.name for c in targets]
    assert all(np.allclose(a.w2c, b.w2c) for a, b in zip(out.cameras[0], targets))
    assert torch.equal(run(pipe, image, input_elevation_deg=60.0, input_fov_deg=30.0, guidance_scale=2.0).views,
                       out.views)
    # guidance, the seed, and the input camera (through the conditioning) change the views
    plain = run(pipe, image, input_elevation_deg=60.0, input_fov_deg=30.0)
    assert not torch.equal(plain.views, out.views)
    assert not torch.equal(run(pipe, image, seed=2, input_elevation_deg=60.0, input_fov_deg=30.0).views, plain.views)
    assert not torch.equal(run(pipe, image, input_elevation_deg=85.0, input_fov_deg=30.0).views, plain.views)
    # unknown camera: the model's head estimates it
    est = run(pipe, image)
    with torch.no_grad():
        head = pipe.unet.predict_input_camera(pipe.codec.encode(image), pipe.image_encoder.encode(image))
    assert torch.allclose(est.input_camera, head)


def test_pipeline_save_reload_identical(pipe, image, tmp_path, capsys):
    out = run(pipe, image, progress=True, guidance_scale=2.0)
    assert "2/2" in capsys.readouterr().err   # the progress bar
    pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"] and index["target_layout"]["radius"] == 2.7
    loaded = MVDiffusionPipeline.from_pretrained(tmp_path / "p")
    assert loaded.target_layout == pipe.target_layout
    assert torch.equal(run(loaded, image, guidance_scale=2.0).views, out.views)
    assert capsys.readouterr().err == ""   # progress=False, and saving/loading, are silent


def test_euler_swap_runs_and_round_trips(pipe, image, tmp_path):
    ddim = pipe.scheduler
    try:
        pipe.scheduler = EulerDiscreteScheduler.from_config(ddim.config)
        assert pipe.config.scheduler == ("diffusers", "EulerDiscreteScheduler")
        out = run(pipe, image, num_inference_steps=3, input_elevation_deg=45.0, input_fov_deg=40.0)
        assert out.views.shape == (1, 6, 4, SIZE, SIZE) and torch.isfinite(out.views).all()
        pipe.save_pretrained(tmp_path / "euler")
        loaded = MVDiffusionPipeline.from_pretrained(tmp_path / "euler")
        assert isinstance(loaded.scheduler, EulerDiscreteScheduler)
        assert torch.equal(run(loaded, image, num_inference_steps=3, input_elevation_deg=45.0,
                               input_fov_deg=40.0).views, out.views)
    finally:
        pipe.scheduler = ddim
    assert isinstance(pipe.scheduler, DDIMScheduler)


def test_from_pretrained_refuses_unlisted_classes(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "p")
    index_path = folder / "model_index.json"
    good = json.loads(index_path.read_text())
    for name, entry in [("unet", ["os", "system"]), ("scheduler", ["diffusers", "StableDiffusionPipeline"]),
                        ("safety_checker", ["builtins", "eval"])]:
        index_path.write_text(json.dumps({**good, name: entry}))
        with pytest.raises(ConfigError) as e:
            MVDiffusionPipeline.from_pretrained(folder)
        msg = one_line(e)
        assert "model_index.json" in msg and ("refused" in msg or "not allowed" in msg) and entry[1] in msg
    index_path.write_text(json.dumps({**good, "_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ConfigError) as e:
        MVDiffusionPipeline.from_pretrained(folder)
    assert "_class_name" in one_line(e)


def test_pipeline_bad_inputs(pipe, image, tmp_path):
    with pytest.raises(ConfigError) as e:
        MVDiffusionPipeline.from_pretrained(tmp_path / "no_such_pipeline")
    assert "does not exist" in one_line(e)
    with pytest.raises(ValueError) as e:
        run(pipe, image[:, :3])
    assert "4 channels" in one_line(e)
    with pytest.raises(ValueError) as e:
        run(pipe, F.interpolate(image, size=(48, 48)))
    assert "48x48 is not the model's 64x64" in one_line(e)
    with pytest.raises(ValueError) as e:
        run(pipe, image * 255)
    assert "[0, 1]" in one_line(e)
    with pytest.raises(ValueError) as e:
        run(pipe, image, input_elevation_deg=120.0)
    assert "input_elevation_deg" in one_line(e)
    with pytest.raises(ValueError) as e:
        run(pipe, image, num_inference_steps=0)
    assert "num_inference_steps" in one_line(e)
    other = MVDiffusionPipeline.build(tiny_config(), load_target_layout(), "ddim")
    with pytest.raises(ConfigError) as e:   # a scheduler trained for another objective
        other.scheduler = DDIMScheduler.from_config({**other.scheduler.config, "prediction_type": "epsilon"})
        run(other, image)
    assert "v_prediction" in one_line(e)
