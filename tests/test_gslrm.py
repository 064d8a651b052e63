"""GS-LRM: shapes, parameterisation, trainability, presets and the FaceLift checkpoint map."""
from dataclasses import replace

import pytest
import torch

from mousefacelift.cameras import make_rig, stack_cameras
from mousefacelift.models.facelift_ckpt import IncompatibleCheckpoint, load_facelift_checkpoint
from mousefacelift.config import ConfigError
from mousefacelift.models import build_model, load_preset, model_config
from mousefacelift.models.gslrm import GSLRM
from mousefacelift.splat import render

SMALL = dict(name="test", width=32, layers=2, heads=2, patch_size=8, grad_checkpoint=False)


def small_config(**over):
    """The base preset's parameterisation (FaceLift's) at test size."""
    return replace(model_config("base"), **{**SMALL, **over})


def batch(B=1, V=2, size=16, seed=0):
    cams = make_rig("ring8", size=size)[:V]
    K, c2w = stack_cameras(cams)
    imgs = torch.rand(B, V, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return imgs, K.expand(B, V, 3, 3), c2w.expand(B, V, 4, 4)


def test_forward_shapes_and_pixel_alignment():
    torch.manual_seed(0)
    m = GSLRM(small_config())
    imgs, K, c2w = batch(B=2, V=3, size=16)
    g = m(imgs, K, c2w)
    assert g.means.shape == (2, 3 * 16 * 16, 3) and g.sh.shape == (2, 768, 1, 3)
    assert torch.all((g.opacities > 0) & (g.opacities < 1))
    torch.testing.assert_close(g.rotations.norm(dim=-1), torch.ones(2, 768))
    assert float(g.scales.max().detach()) <= torch.exp(torch.tensor(m.config.scale_max_log)) + 1e-6
    dist = m.ray_distance_map(g, K, c2w, 16, 16)
    assert dist.shape == (2, 3, 1, 16, 16)
    cam_dist = c2w[..., :3, 3].norm(dim=-1)[..., None, None, None] if m.config.near_far_relative else 0.0
    assert bool((dist >= cam_dist + m.config.near - 1e-4).all() and (dist <= cam_dist + m.config.far + 1e-4).all())
    # raster order: Gaussian of pixel (v, i, j) projects back onto that pixel of view v
    v, i, j = 1, 5, 11
    X = g.means[0].reshape(3, 16, 16, 3)[v, i, j]
    w2c = torch.linalg.inv(c2w[0, v])
    x = K[0, v] @ (w2c[:3, :3] @ X + w2c[:3, 3])
    torch.testing.assert_close(x[:2] / x[2], torch.tensor([j + 0.5, i + 0.5]), atol=1e-3, rtol=0)


def test_global_gaussians_and_view_markers():
    m = GSLRM(small_config(num_global_gaussians=10, view_markers=True, sh_degree=1))
    imgs, K, c2w = batch(V=2)
    g = m(imgs, K, c2w)
    assert g.num_gaussians == 10 + 2 * 256 and g.sh.shape[2] == 4


def test_few_optimisation_steps_lower_the_render_loss():
    torch.manual_seed(0)
    m = GSLRM(small_config())
    imgs, K, c2w = batch(V=2, size=16)
    target = torch.zeros(1, 2, 3, 16, 16)
    target[..., 4:12, 4:12] = torch.tensor([0.9, 0.3, 0.1])[:, None, None]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = render(m(imgs, K, c2w), K, c2w, 16, 16, background=(0, 0, 0))
        loss = torch.nn.functional.mse_loss(out.rgb, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_gradient_checkpointing_matches_plain_backward():
    torch.manual_seed(0)
    a = GSLRM(small_config())
    b = GSLRM(small_config(grad_checkpoint=True))
    b.load_state_dict(a.state_dict())
    imgs, K, c2w = batch()
    for m in (a, b):
        m.train()
        m(imgs, K, c2w).means.sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_bf16_autocast_forward_returns_float32_gaussians():
    m = GSLRM(small_config())
    imgs, K, c2w = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = m(imgs, K, c2w)
    assert g.means.dtype == torch.float32 and torch.isfinite(g.means).all()


def write_yaml(path, mapping):
    from omegaconf import OmegaConf
    OmegaConf.save(OmegaConf.create(mapping), path)
    return path


def test_presets_and_base_size_on_meta_device(tmp_path):
    tiny = model_config("tiny")
    assert tiny.name == "tiny" and tiny.patch_size == 8
    base = model_config("base")
    assert (base.layers, base.width, base.heads) == (24, 1024, 16)
    with torch.device("meta"):
        m = GSLRM(base)
    assert 280e6 < m.num_parameters() < 320e6, m.num_parameters()
    assert isinstance(build_model("tiny"), GSLRM)
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\) \['depht'\]"):
        model_config({**load_preset("tiny"), "depht": 3})
    with pytest.raises(ConfigError, match=r"model.type is 'unet', expected one of \['gslrm'"):
        model_config({**load_preset("tiny"), "type": "unet"})
    with pytest.raises(ConfigError, match=r"model.type is None"):
        model_config({k: v for k, v in load_preset("tiny").items() if k != "type"})
    with pytest.raises(ConfigError, match=r"tiny.yaml.width: 'wide' is not a valid int"):
        model_config(write_yaml(tmp_path / "tiny.yaml", {**load_preset("tiny"), "width": "wide"}))
    with pytest.raises(ConfigError, match=r"model config .gigantic.: no file .*known: \[.base., .facelift., .*.tiny.\]"):
        model_config("gigantic")


def test_input_validation():
    m = GSLRM(small_config())
    imgs, K, c2w = batch()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        m(imgs[..., :12, :12], K, c2w)
    with pytest.raises(ValueError, match="K must be"):
        m(imgs, K[:, :1], c2w)


def facelift_state_dict(d, layers, p, sh_degree, n_gaussians, marker, seed=0):
    """A synthetic state dict in the published FaceLift GS-LRM layout (names and shapes as in
    FaceLift's gslrm.py / utils_transformer.py), including the frozen loss nets it carries."""
    gen = torch.Generator().manual_seed(seed)
    P = 3 + (sh_degree + 1) ** 2 * 3 + 3 + 4 + 1
    r = lambda *s: torch.randn(*s, generator=gen) * 0.02
    sd = {"patch_embedder.1.weight": r(d, 9 * p * p), "gaussian_position_embeddings": r(n_gaussians, d),
          "input_layer_norm.weight": 1 + r(d), "gaussian_upsampler.layernorm.weight": 1 + r(d),
          "gaussian_upsampler.linear.weight": r(P, d), "pixel_gaussian_decoder.0.weight": 1 + r(d),
          "pixel_gaussian_decoder.1.weight": r(p * p * P, d),
          "loss_calculator.perceptual_loss_module.vgg.0.weight": r(4, 3, 3, 3)}
    if marker:
        sd["view_type_embeddings"] = r(2, d)
    for i in range(layers):
        pre = f"transformer_layers.{i}."
        sd.update({pre + "norm1.weight": 1 + r(d), pre + "norm2.weight": 1 + r(d),
                   pre + "attn.to_qkv.weight": r(3 * d, d), pre + "attn.fc.weight": r(d, d),
                   pre + "mlp.mlp.0.weight": r(4 * d, d), pre + "mlp.mlp.2.weight": r(d, 4 * d)})
    return sd


def test_facelift_checkpoint_is_mapped_and_loaded(tmp_path):
    cfg = small_config(num_global_gaussians=6, view_markers=True)
    sd = facelift_state_dict(32, 2, 8, 0, 6, True)
    m = GSLRM(cfg)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    report = load_facelift_checkpoint(m, path, released=False)    # the key map; conventions: test_facelift_parity
    assert len(report["loaded"]) == len(m.state_dict())
    assert report["skipped"] == ["loss_calculator.perceptual_loss_module.vgg.0.weight"]
    torch.testing.assert_close(m.blocks[1].attn.qkv.weight, sd["transformer_layers.1.attn.to_qkv.weight"])
    torch.testing.assert_close(m.pixel_head.linear.weight, sd["pixel_gaussian_decoder.1.weight"])
    torch.testing.assert_close(m.global_tokens, sd["gaussian_position_embeddings"])
    imgs, K, c2w = batch()
    assert torch.isfinite(m(imgs, K, c2w).means).all()


def test_incompatible_checkpoint_is_refused_with_key_lists():
    m = GSLRM(small_config())           # no global Gaussians, no markers
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sd = facelift_state_dict(32, 3, 8, 1, 6, False)   # 3 layers, SH degree 1, 6 global Gaussians
    del sd["input_layer_norm.weight"]
    with pytest.raises(IncompatibleCheckpoint) as err:
        load_facelift_checkpoint(m, sd)
    msg = str(err.value)
    assert "missing (1): ['input_norm.weight']" in msg
    assert "transformer_layers.2.attn.fc.weight" in msg and "unexpected" in msg
    assert "gaussian_position_embeddings" in msg
    assert "shape mismatch" in msg and "pixel_gaussian_decoder.1.weight" in msg
    for k, v in m.state_dict().items():       # nothing was copied
        torch.testing.assert_close(v, before[k])
    with pytest.raises(IncompatibleCheckpoint, match="not a state dict"):
        load_facelift_checkpoint(m, {"model": "weights"})


def test_facelift_convention_options_are_validated_and_default_for_old_checkpoints():
    with pytest.raises(ConfigError, match=r"ray_features is 'moment', expected one of \['plucker', 'direction_near"):
        model_config({**load_preset("tiny"), "ray_features": "moment"})
    with pytest.raises(ConfigError, match=r"near_far_anchor is 'origin', expected one of \['camera_distance', "):
        model_config({**load_preset("tiny"), "near_far_anchor": "origin"})
    old = {k: v for k, v in load_preset("tiny").items() if k not in ("ray_features", "near_far_anchor")}
    cfg = model_config(old)          # a checkpoint written before the options: the project's conventions
    assert (cfg.ray_features, cfg.near_far_anchor) == ("plucker", "camera_distance")
    facelift = model_config("facelift")
    assert (facelift.ray_features, facelift.near_far_anchor, facelift.num_global_gaussians) == \
        ("direction_nearest", "closest_approach", 2)


def test_closest_approach_anchor_and_nearest_point_features():
    """The facelift conventions: the distance range is centred on each ray's point nearest the
    origin (-o.d), and the ray channels are d and that point, d x (o x d)."""
    from mousefacelift.models.gslrm import ray_input_features
    o, d = torch.randn(5, 3), torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    feats = ray_input_features(o, d, "direction_nearest")
    torch.testing.assert_close(feats[:, :3], d)
    torch.testing.assert_close(feats[:, 3:], torch.linalg.cross(d, torch.linalg.cross(o, d, dim=-1), dim=-1))
    assert float((feats[:, 3:] * d).sum(-1).abs().max()) < 1e-5        # the nearest point is orthogonal to d
    m = GSLRM(small_config(ray_features="direction_nearest", near_far_anchor="closest_approach", near=-1.8, far=1.8))
    imgs, K, c2w = batch(V=2)
    with torch.no_grad():
        g = m(imgs, K, c2w)
        m.pixel_head.linear.weight.zero_()      # sigmoid(0) = 1/2: every Gaussian mid-range, on the anchor
        g0 = m(imgs, K, c2w)
    from mousefacelift.cameras import camera_rays
    o, d = camera_rays(K, c2w, 16, 16)
    nearest = (o - (o * d).sum(-1, keepdim=True) * d).reshape(1, -1, 3)
    torch.testing.assert_close(g0.means, nearest, atol=1e-5, rtol=0)
    dist = m.ray_distance_map(g, K, c2w, 16, 16)[:, :, 0]
    anchor = -(o * d).sum(-1)
    assert bool(((dist - anchor).abs() <= 1.8 + 1e-4).all())
