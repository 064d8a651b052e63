"""Multi-view diffusion UNet: presets, conditioning, multi-view attention, bad inputs, CPU training step."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from mousefacelift.cameras import intrinsics_from_fov, look_at, spherical_to_position
from mousefacelift.config import ConfigError
from mousefacelift.diffusion.attention import MultiViewAttnProcessor, install_multiview_attention
from mousefacelift.models import MODELS, build_model, load_preset, model_config
from mousefacelift.models.mvdiffusion import (CAMERA_FEATURES, MVDiffusionConfig, MVDiffusionUNet, camera_angles,
                                              camera_features, view_conditioning)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("mvdiffusion_tiny")


def inputs(cfg, B=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    C, V, h = cfg.latent_channels, cfg.num_views, cfg.sample_size
    return dict(noisy=torch.randn(B, V, C, h, h, generator=g), timesteps=torch.randint(0, 1000, (B,), generator=g),
                cond_latent=torch.randn(B, C, h, h, generator=g), image_embed=torch.randn(B, cfg.image_embed_dim, generator=g),
                camera=torch.randn(B, V, CAMERA_FEATURES, generator=g))


# -- presets ----------------------------------------------------------------------------------
def test_presets_are_registered_and_typed():
    assert MODELS["mvdiffusion"] == (MVDiffusionConfig, MVDiffusionUNet)
    tiny, base = model_config("mvdiffusion_tiny"), model_config("mvdiffusion_base")
    assert (tiny.latent, tiny.latent_channels, tiny.sample_size) == ("pixel", 16, 32)
    assert (base.latent, base.latent_channels, base.sample_size) == ("sd_vae", 5, 64)
    assert base.unet_config()["projection_class_embeddings_input_dim"] == 2048


def test_tiny_size(tiny):
    n = sum(p.numel() for p in tiny.parameters())
    assert 0.5e6 < n < 3e6, n


def test_base_shapes_on_meta_device():
    """SD 2.1 sized: checked without allocating memory."""
    with torch.device("meta"):
        m = MVDiffusionUNet(model_config("mvdiffusion_base"))
    sd = m.state_dict()
    assert all(t.is_meta for t in sd.values())
    assert sd["unet.conv_in.weight"].shape == (320, 10, 3, 3)
    assert sd["unet.conv_out.weight"].shape == (5, 320, 3, 3)
    assert sd["unet.class_embedding.linear_1.weight"].shape == (1280, 2048)
    assert sd["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 1024)
    assert 850e6 < sum(p.numel() for p in m.parameters()) < 900e6
    out = m(**{k: v.to("meta") for k, v in inputs(m.config).items()})
    assert out.shape == (1, 6, 5, 64, 64)


# -- camera conditioning ------------------------------------------------------------------------
def orbit(az, el, fov=50.0, size=64, radius=2.7):
    w2c = look_at(spherical_to_position(az, el, radius))
    return torch.tensor(intrinsics_from_fov(fov, size), dtype=torch.float32), torch.tensor(np.linalg.inv(w2c),
                                                                                       dtype=torch.float32)


def test_camera_angles_match_the_orbit_convention():
    for az, el, fov in [(0, 0, 50), (130, 35, 30), (-100, 70, 20), (250, -10, 60), (40, 89.9, 40)]:
        K, c2w = orbit(az, el, fov)
        a, e, f = camera_angles(K, c2w, 64)
        assert math.isclose(((float(a) - az + 180) % 360) - 180, 0, abs_tol=1e-2)
        assert math.isclose(float(e), el, abs_tol=1e-2) and math.isclose(float(f), fov, abs_tol=1e-3)


def test_view_conditioning_shapes_and_relative_azimuth():
    offsets, in_az, in_el = [0, 60, 120, 180, 240, 300], [30.0, 250.0], [70.0, 10.0]
    Ks, c2ws, targets = [], [], []
    for az, el in zip(in_az, in_el):
        K, c2w = orbit(az, el, fov=35.0)
        Ks.append(K)
        c2ws.append(c2w)
        targets.append(torch.stack([orbit(az + o, 20.0)[1] for o in offsets]))
    input_camera, camera = view_conditioning(torch.stack(Ks), torch.stack(c2ws), torch.stack(targets), 64)
    assert input_camera.shape == (2, 2) and camera.shape == (2, 6, CAMERA_FEATURES)
    torch.testing.assert_close(input_camera, torch.tensor([[70.0, 35.0], [10.0, 35.0]]), atol=1e-3, rtol=0)
    expected = camera_features(torch.tensor(in_el), torch.full((2,), 35.0),
                               torch.tensor([offsets, offsets], dtype=torch.float32), torch.full((2, 6), 20.0))
    torch.testing.assert_close(camera, expected, atol=1e-4, rtol=0)
    # same relative layout at a different input azimuth -> the same features (no absolute "front")
    assert torch.allclose(camera[0, :, :4], camera[1, :, :4], atol=1e-4)


def test_view_conditioning_bad_shapes():
    K, c2w = orbit(0, 30)
    with pytest.raises(ValueError, match="target_c2w must be"):
        view_conditioning(K[None], c2w[None], c2w[None], 64)
    with pytest.raises(ValueError, match="input_K must be"):
        view_conditioning(K, c2w[None], c2w[None, None], 64)


# -- multi-view attention ---------------------------------------------------------------------
def attention(dim=32, heads=4):
    torch.manual_seed(1)
    return Attention(query_dim=dim, heads=heads, dim_head=dim // heads).eval()


def test_dense_with_one_view_is_ordinary_self_attention():
    attn, x = attention(), torch.randn(3, 10, 32)
    torch.testing.assert_close(MultiViewAttnProcessor(1, "dense")(attn, x), AttnProcessor2_0()(attn, x))


def test_dense_is_self_attention_over_the_objects_tokens():
    attn, x = attention(), torch.randn(2 * 3, 10, 32)                # B=2 objects, V=3 views, 10 tokens each
    joint = AttnProcessor2_0()(attn, x.reshape(2, 30, 32)).reshape(6, 10, 32)
    torch.testing.assert_close(MultiViewAttnProcessor(3, "dense")(attn, x), joint)


def test_sparse_is_first_view_plus_self():
    attn, x = attention(), torch.randn(2 * 2, 10, 32)                # V=2: view 1 sees {view 0, itself} = all
    sparse, dense = MultiViewAttnProcessor(2, "sparse")(attn, x), MultiViewAttnProcessor(2, "dense")(attn, x)
    torch.testing.assert_close(sparse[1::2], dense[1::2])
    torch.testing.assert_close(sparse[0::2], AttnProcessor2_0()(attn, x[0::2]))   # the first view: itself only
    x3 = torch.randn(3, 10, 32)                                      # V=3: view 2 ignores view 1
    s3 = MultiViewAttnProcessor(3, "sparse")(attn, x3)
    ref = AttnProcessor2_0()(attn, torch.cat([x3[0], x3[2]])[None])[0, 10:]
    torch.testing.assert_close(s3[2], ref)


def test_processors_installed_on_self_attention_only(tiny):
    procs = tiny.unet.attn_processors
    assert procs and all(isinstance(p, MultiViewAttnProcessor) for n, p in procs.items() if ".attn1." in n)
    assert all(isinstance(p, AttnProcessor2_0) for n, p in procs.items() if ".attn2." in n)
    with pytest.raises(ValueError, match="mv_attention is 'ring'"):
        install_multiview_attention(tiny.unet, 6, "ring")


def test_views_interact_only_through_attention(tiny):
    """Changing one view's noisy latent changes the other views' outputs (multi-view attention), and
    the result does not depend on which object is batched next to it."""
    x = inputs(tiny.config, B=2)
    with torch.no_grad():
        out = tiny(**x)
        y = dict(x, noisy=x["noisy"].clone())
        y["noisy"][0, 3] += 1.0
        out2 = tiny(**y)
        alone = tiny(**{k: v[1:] for k, v in x.items()})
    assert (out2[0, 0] - out[0, 0]).abs().max() > 1e-4
    torch.testing.assert_close(out2[1], out[1])
    torch.testing.assert_close(alone[0], out[1], atol=1e-4, rtol=1e-4)


# -- forward / backward -------------------------------------------------------------------------
def test_tiny_forward_backward_and_camera_head(tiny):
    x = inputs(tiny.config, B=1)
    tiny.zero_grad()
    out = tiny(**x, noise_level=torch.tensor([100]))
    assert out.shape == x["noisy"].shape and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = {n: p.grad for n, p in tiny.named_parameters()}
    assert grads["unet.conv_in.weight"].abs().sum() > 0
    assert grads["camera_mlp.2.weight"].abs().sum() > 0          # zero-initialised, still learns
    assert grads["unet.time_embedding.cond_proj.weight"].abs().sum() > 0
    assert grads["camera_head.embed.weight"] is None              # the head is trained through its own call
    est = tiny.predict_input_camera(x["cond_latent"], x["image_embed"])
    assert est.shape == (1, 2)
    lo, hi = tiny.config.input_fov_range_deg
    assert -90 <= float(est[0, 0].detach()) <= 90 and lo <= float(est[0, 1].detach()) <= hi
    est.sum().backward()
    assert tiny.camera_head.embed.weight.grad.abs().sum() > 0


def test_camera_starts_as_a_no_op_and_checkpointing_matches():
    torch.manual_seed(0)
    cfg = replace(model_config("mvdiffusion_tiny"), num_views=2)
    m = MVDiffusionUNet(cfg)
    x = inputs(cfg)
    with torch.no_grad():
        a = m(**x)
        b = m(**dict(x, camera=torch.randn_like(x["camera"])))
    torch.testing.assert_close(a, b)         # zero-initialised camera paths: a pretrained UNet starts unchanged
    m.train()
    grads = []
    for on in (False, True):
        m.set_grad_checkpoint(on)
        assert m.unet.is_gradient_checkpointing == on
        m.zero_grad()
        m(**x).square().mean().backward()
        grads.append(m.unet.down_blocks[1].attentions[0].proj_in.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# -- bad inputs ---------------------------------------------------------------------------------
def test_unknown_preset_is_one_line():
    with pytest.raises(ConfigError, match="mvdiffusion_huge.*known") as e:
        build_model("mvdiffusion_huge")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, pattern", [
    ({"mv_attention": "ring"}, "mv_attention"),
    ({"latent": "sd_vae", "latent_factor": 2}, "latent_factor.*8"),
    ({"attention_head_dim": [2]}, "attention_head_dim.*2 entries"),
    ({"image_size": 66}, "image_size"),
    ({"input_fov_range_deg": [50, 10]}, "input_fov_range_deg")])
def test_bad_config_is_one_clear_line(override, pattern):
    spec = dict(load_preset("mvdiffusion_tiny"), **override)
    with pytest.raises(ConfigError, match=pattern) as e:
        model_config(spec)
    assert "\n" not in str(e.value)


def test_wrong_channels_or_views_are_one_clear_line(tiny):
    x = inputs(tiny.config)
    bad = {"noisy": x["noisy"][:, :, :4], "cond_latent": x["cond_latent"][:, :4],
           "camera": x["camera"][:, :5], "image_embed": x["image_embed"][:, :10]}
    for name, value in bad.items():
        with pytest.raises(ValueError, match=rf"{name} has shape .* expected") as e:
            tiny(**dict(x, **{name: value}))
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"noisy has shape \[1, 5, 16, 32, 32\].*num_views=6"):
        tiny(**dict(x, noisy=x["noisy"][:, :5]))
