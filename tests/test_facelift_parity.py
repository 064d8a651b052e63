"""FaceLift's GS-LRM weights give FaceLift's Gaussians here, and training can start from them.

FaceLift itself is not installed: ``facelift_forward`` below is a float64 reference of its
GS-LRM forward written from its code (weijielyu/FaceLift ``gslrm/model/gslrm.py``,
``utils_transformer.py``, ``transform_data.py``, ``gaussians_renderer.GaussianModel``) with plain
tensor operations, straight on FaceLift's parameter names. The same random weights go into it and,
through ``facelift_ckpt``, into this project's model.
"""
import logging
import math
from dataclasses import replace

import pytest
import torch

from mousefacelift.analytic import write_sphere_shards
from mousefacelift.checkpoint import load_checkpoint
from mousefacelift.config import compose
from mousefacelift.inference import load_model
from mousefacelift.models import build_model, load_preset, model_config
from mousefacelift.models.facelift_ckpt import (IncompatibleCheckpoint, facelift_architecture,
                                                is_facelift_checkpoint, load_facelift_checkpoint)
from train.run import run_phase

# FaceLift's released configuration at test size: head dimension 64 as in FaceLift
SIZE = dict(width=128, heads=2, layers=2, patch_size=4, grad_checkpoint=False)
# FaceLift's default branch (use_custom_plucker: false, no depth_min/max): distance 2.7 + 1.5 (2 sigma - 1)
STANDARD = dict(ray_features="plucker", near_far_relative=False, near=1.2, far=4.2)


def facelift_weights(d, layers, p, sh_degree, n_gaussians, marker, seed=0):
    """Random weights under FaceLift's names and shapes, scaled so every layer acts (not
    FaceLift's 0.02 init, under which the network is nearly linear), plus a loss-net tensor."""
    gen = torch.Generator().manual_seed(seed)
    P = 3 + (sh_degree + 1) ** 2 * 3 + 3 + 4 + 1
    lin = lambda o, i: torch.randn(o, i, generator=gen, dtype=torch.float64) / math.sqrt(i)
    norm = lambda: 1 + 0.2 * torch.randn(d, generator=gen, dtype=torch.float64)
    sd = {"patch_embedder.1.weight": lin(d, 9 * p * p),
          "gaussian_position_embeddings": torch.randn(n_gaussians, d, generator=gen, dtype=torch.float64),
          "input_layer_norm.weight": norm(), "gaussian_upsampler.layernorm.weight": norm(),
          "gaussian_upsampler.linear.weight": lin(P, d), "pixel_gaussian_decoder.0.weight": norm(),
          "pixel_gaussian_decoder.1.weight": lin(p * p * P, d),
          "loss_calculator.perceptual_loss_module.vgg.0.weight": torch.zeros(4, 3, 3, 3, dtype=torch.float64)}
    if marker:
        sd["view_type_embeddings"] = 0.5 * torch.randn(2, d, generator=gen, dtype=torch.float64)
    for i in range(layers):
        pre = f"transformer_layers.{i}."
        sd.update({pre + "norm1.weight": norm(), pre + "norm2.weight": norm(),
                   pre + "attn.to_qkv.weight": 2 * lin(3 * d, d), pre + "attn.fc.weight": lin(d, d),
                   pre + "mlp.mlp.0.weight": lin(4 * d, d), pre + "mlp.mlp.2.weight": lin(d, 4 * d)})
    return sd


def cameras(V, size, seed):
    """OpenCV cameras 2-6 units from the origin, aimed near it, with off-centre principal points."""
    gen = torch.Generator().manual_seed(seed)
    K, c2w = torch.zeros(V, 3, 3, dtype=torch.float64), torch.zeros(V, 4, 4, dtype=torch.float64)
    for v in range(V):
        direction = torch.nn.functional.normalize(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
        centre = direction * (2 + 4 * torch.rand(1, generator=gen, dtype=torch.float64))
        aim = 0.3 * torch.randn(3, generator=gen, dtype=torch.float64)       # looks near, not at, the origin
        forward = torch.nn.functional.normalize(aim - centre, dim=0)
        right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0],
                                                                                       dtype=torch.float64)), dim=0)
        down = torch.linalg.cross(forward, right)
        c2w[v, :3, :3] = torch.stack([right, down, forward], dim=1)
        c2w[v, :3, 3], c2w[v, 3, 3] = centre, 1.0
        f = size * (0.8 + torch.rand(1, generator=gen, dtype=torch.float64))
        K[v] = torch.tensor([[f, 0, size / 2 + 1.5], [0, f * 1.05, size / 2 - 2.0], [0, 0, 1]], dtype=torch.float64)
    return K, c2w


def layer_norm(x, weight):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * weight


def facelift_forward(sd, image, K, c2w, custom_plucker, n_gaussians, sh_degree, d_head=64, depth_bias=0.0):
    """FaceLift's GS-LRM forward in float64, hard_pixelalign on, no xyz clipping (FaceLift's
    ``not config.inference`` is false for its released config), activations applied as
    ``GaussianModel`` does. Returns (xyz, features, scaling, rotation, opacity, pixel) with the
    pixel-aligned Gaussians in FaceLift's order and ``pixel`` [N, 3] = (view, row, col) of each."""
    b, V, _, h, w = image.shape
    width = sd["patch_embedder.1.weight"].shape[0]
    p = math.isqrt(sd["patch_embedder.1.weight"].shape[1] // 9)
    # transform_data.compute_camera_rays: pixel centres, unit camera direction, rotated, unit again
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    fx, fy, cx, cy = (K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2])
    x = (xs + 0.5 - cx[..., None, None]) / fx[..., None, None]
    y = (ys + 0.5 - cy[..., None, None]) / fy[..., None, None]
    d_cam = torch.nn.functional.normalize(torch.stack([x, y, torch.ones_like(x)], dim=-1), dim=-1)
    ray_d = torch.nn.functional.normalize(torch.einsum("bvij,bvhwj->bvhwi", c2w[..., :3, :3], d_cam), dim=-1)
    ray_o = c2w[..., None, None, :3, 3].expand_as(ray_d)
    o_dot_d = (-ray_o * ray_d).sum(-1, keepdim=True)
    if custom_plucker:          # rgb, ray direction, the ray's point nearest the origin
        rays = torch.cat([ray_d, ray_o + o_dot_d * ray_d], dim=-1)
    else:                       # rgb, o x d, d
        rays = torch.cat([torch.linalg.cross(ray_o, ray_d, dim=-1), ray_d], dim=-1)
    posed = torch.cat([image * 2 - 1, rays.permute(0, 1, 4, 2, 3)], dim=2)           # [b,V,9,h,w]
    # patch_embedder: "(height patch_h) (width patch_w) -> (height width) (patch_h patch_w channels)"
    hp, wp, ph, pw = torch.meshgrid(*(torch.arange(n) for n in (h // p, w // p, p, p)), indexing="ij")
    rows, cols = hp * p + ph, wp * p + pw                                                  # [h/p, w/p, p, p]
    patches = posed[:, :, :, rows, cols].permute(0, 1, 3, 4, 5, 6, 2)                  # [b,V,h/p,w/p,p,p,9]
    tokens = patches.reshape(b, V * (h // p) * (w // p), p * p * 9) @ sd["patch_embedder.1.weight"].T
    if "view_type_embeddings" in sd:    # reference marker on view 0, source marker on the others
        marks = torch.stack([sd["view_type_embeddings"][0]] + [sd["view_type_embeddings"][1]] * (V - 1))
        tokens = (tokens.reshape(b, V, -1, width) + marks[None, :, None]).reshape(b, -1, width)
    x = torch.cat([sd["gaussian_position_embeddings"].expand(b, -1, -1), tokens], dim=1)
    x = layer_norm(x, sd["input_layer_norm.weight"])
    nh = width // d_head
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("transformer_layers.")})):
        g = lambda name: sd[f"transformer_layers.{i}.{name}.weight"]
        q, k, v = (layer_norm(x, g("norm1")) @ g("attn.to_qkv").T).split(width, dim=-1)
        q, k, v = (t.reshape(b, -1, nh, d_head).transpose(1, 2) for t in (q, k, v))        # "b l (nh dh)"
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d_head), dim=-1) @ v
        x = x + att.transpose(1, 2).reshape(b, -1, width) @ g("attn.fc").T
        hidden = layer_norm(x, g("norm2")) @ g("mlp.mlp.0").T
        x = x + torch.nn.functional.gelu(hidden) @ g("mlp.mlp.2").T
    glob, img = x[:, :n_gaussians], x[:, n_gaussians:]
    P = 3 + (sh_degree + 1) ** 2 * 3 + 3 + 4 + 1
    graw = layer_norm(glob, sd["gaussian_upsampler.layernorm.weight"]) @ sd["gaussian_upsampler.linear.weight"].T
    praw = layer_norm(img, sd["pixel_gaussian_decoder.0.weight"]) @ sd["pixel_gaussian_decoder.1.weight"].T
    raw = torch.cat([graw, praw.reshape(b, -1, P)], dim=1)
    xyz, features, scaling, rotation, opacity = raw.split([3, (sh_degree + 1) ** 2 * 3, 3, 4, 1], dim=-1)
    features = features.reshape(b, raw.shape[1], (sh_degree + 1) ** 2, 3)
    # pixel-aligned Gaussians: order (view, patch row, patch col, row in patch, col in patch)
    view = torch.arange(V)[:, None, None, None, None].expand(V, *rows.shape).reshape(-1)
    prow, pcol = rows[None].expand(V, *rows.shape).reshape(-1), cols[None].expand(V, *cols.shape).reshape(-1)
    o, dd, odd = ray_o[:, view, prow, pcol], ray_d[:, view, prow, pcol], o_dot_d[:, view, prow, pcol]
    t = torch.sigmoid(xyz[:, n_gaussians:].mean(-1, keepdim=True) + depth_bias)
    dist = (2 * t - 1) * 1.8 + odd if custom_plucker else (2 * t - 1) * 1.5 + 2.7
    xyz = torch.cat([xyz[:, :n_gaussians], o + dist * dd], dim=1)
    scaling = torch.exp((scaling - 2.3).clamp(max=-1.2))
    rotation = rotation / rotation.norm(dim=-1, keepdim=True)
    opacity = torch.sigmoid(opacity - 2.0)
    return xyz, features, scaling, rotation, opacity, torch.stack([view, prow, pcol], dim=1)


def project_config(custom_plucker, sh_degree, n_gaussians, marker):
    over = {} if custom_plucker else STANDARD
    return replace(model_config("facelift"), **SIZE, **over, sh_degree=sh_degree, num_global_gaussians=n_gaussians,
                   view_markers=marker)


CASES = [pytest.param(True, 0, 2, False, id="use_custom_plucker=true (released)"),
         pytest.param(False, 1, 3, True, id="use_custom_plucker=false, sh1, markers")]


@pytest.mark.parametrize("custom_plucker, sh_degree, n_gaussians, marker", CASES)
def test_facelift_weights_give_facelift_gaussians(custom_plucker, sh_degree, n_gaussians, marker):
    V, size, p = 3, 16, SIZE["patch_size"]
    sd = facelift_weights(SIZE["width"], SIZE["layers"], p, sh_degree, n_gaussians, marker, seed=1)
    K, c2w = cameras(V, size, seed=2)
    image = torch.rand(1, V, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = facelift_forward(sd, image, K[None], c2w[None], custom_plucker, n_gaussians, sh_degree)

    model = build_model(project_config(custom_plucker, sh_degree, n_gaussians, marker)).double().eval()
    load_facelift_checkpoint(model, {"model": sd, "optimizer": {}}, released=custom_plucker)
    with torch.no_grad():
        g = model(image, K[None], c2w[None])
    assert g.means.dtype == torch.float64 and g.num_gaussians == n_gaussians + V * size * size
    # FaceLift's pixel order -> raster order: every Gaussian matched to exactly one of ours
    view, row, col = ref[5].unbind(-1)
    order = torch.cat([torch.arange(n_gaussians), n_gaussians + (view * size + row) * size + col])
    assert torch.equal(order.sort().values, torch.arange(g.num_gaussians))
    ours = (g.means, g.sh, g.scales, g.rotations, g.opacities)
    diffs = {name: float((mine[:, order] - theirs).abs().max())
             for name, theirs, mine in zip(("xyz", "features", "scaling", "rotation", "opacity"), ref[:5], ours)}
    print("max |ours - FaceLift|:", {k: f"{v:.1e}" for k, v in diffs.items()})      # pytest -s shows the figures
    assert max(diffs.values()) <= 1e-4, diffs
    assert float(ref[0][:, n_gaussians:].std()) > 0.3          # the Gaussians are spread out, not at one point


def test_the_ray_conventions_decide_the_output():
    """The other branch's ray features or distance anchor give another output (what the
    project's base conventions gave with FaceLift's released weights)."""
    V, size = 2, 16
    sd = facelift_weights(SIZE["width"], SIZE["layers"], SIZE["patch_size"], 0, 2, False, seed=4)
    K, c2w = cameras(V, size, seed=5)
    image = torch.rand(1, V, 3, size, size, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ref_xyz = facelift_forward(sd, image, K[None], c2w[None], True, 2, 0)[0]
    for over in (dict(ray_features="plucker"), dict(near_far_anchor="camera_distance")):
        model = build_model(replace(project_config(True, 0, 2, False), **over)).double().eval()
        load_facelift_checkpoint(model, sd, released=False)
        with torch.no_grad():
            xyz = model(image, K[None], c2w[None]).means
        assert torch.sort(xyz.flatten()).values.sub(torch.sort(ref_xyz.flatten()).values).abs().max() > 1e-2, over


def test_released_weights_refuse_other_conventions_by_option_name():
    sd = facelift_weights(SIZE["width"], SIZE["layers"], SIZE["patch_size"], 0, 2, False)
    assert facelift_architecture(sd) == dict(width=128, patch_size=4, layers=2, mlp_ratio=4, sh_degree=0,
                                             num_global_gaussians=2, view_markers=False)
    base = replace(model_config("base"), **SIZE, num_global_gaussians=2)
    model = build_model(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(IncompatibleCheckpoint) as err:
        load_facelift_checkpoint(model, sd)
    msg = str(err.value)
    assert "model.ray_features is 'plucker', FaceLift's released configuration has 'direction_nearest'" in msg
    assert "model.near_far_anchor is 'camera_distance'" in msg and "model.near is -1.5" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())     # nothing copied
    with pytest.raises(IncompatibleCheckpoint, match=r"model\.num_global_gaussians is 0, the checkpoint's is 2"):
        load_facelift_checkpoint(build_model(replace(model_config("facelift"), **SIZE, num_global_gaussians=0)), sd)
    with pytest.raises(IncompatibleCheckpoint, match=r"model\.heads is 4: head dimension 32"):
        load_facelift_checkpoint(build_model(replace(model_config("facelift"), **SIZE | {"heads": 4})), sd)


def test_load_model_selects_the_facelift_preset(tmp_path):
    """Without a config, FaceLift weights go into the released configuration; weights of
    another size are refused naming the options (the preset itself is 300M parameters)."""
    sd = facelift_weights(SIZE["width"], SIZE["layers"], SIZE["patch_size"], 0, 2, False)
    path = tmp_path / "ckpt_0000000000021125.pt"
    torch.save({"model": sd, "fwdbwd_pass_step": 21125}, path)
    with pytest.raises(ValueError, match=r"model\.width is 1024, the checkpoint's is 128.*model\.layers is 24"):
        load_model(path)
    model = load_model(path, facelift_config={**load_preset("facelift"), **SIZE})
    assert model.config.ray_features == "direction_nearest" and model.config.num_global_gaussians == 2


# -- training starts from FaceLift weights ---------------------------------------------------------
TRAIN = ["phase=synthetic", "model=facelift", "model.width=64", "model.heads=1", "model.layers=2",
         "model.grad_checkpoint=false", "data.resolution=16", "data.num_workers=0", "data.view_sampling.num_views=4",
         "data.view_sampling.num_input_views=2", "data.view_sampling.max_target_distance_deg=180", "train.steps=2",
         "train.log_every=1", "train.image_every=0", "train.eval_every=0", "train.ckpt_every=100",
         "train.tensorboard=false", "optim.warmup_steps=1", "device=cpu", "phase.freeze_first_blocks=1"]


@pytest.fixture(scope="module")
def mouse_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("facelift_shards")
    write_sphere_shards(str(root / "mouse"), samples=2, per_shard=2, size=16, source="mouse", seed=2)
    return root


def test_phase_synthetic_starts_from_a_facelift_checkpoint(tmp_path, mouse_shards, caplog):
    sd = {k: v.float() for k, v in facelift_weights(64, 2, 8, 0, 2, False, seed=7).items()}
    path = tmp_path / "facelift.pt"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"state": {}, "param_groups": []},
                "fwdbwd_pass_step": 21125, "param_update_step": 21125}, path)
    assert is_facelift_checkpoint(load_checkpoint(path))
    over = TRAIN + [f"run_root={tmp_path / 'runs'}", f"shard_root={mouse_shards}",
                    f"init_from={path}"]
    with caplog.at_level(logging.INFO, logger="train.trainer"):
        summary = run_phase(compose("train", over))
    assert summary["step"] == 2
    assert any("initialised from" in r.message and "FaceLift GS-LRM weights (19 tensors" in r.message
               for r in caplog.records)
    out = load_checkpoint(tmp_path / "runs/synthetic/checkpoints/last.pt")
    assert out["config"]["model"]["name"] == "facelift"
    # block 0 was frozen: it still holds FaceLift's values; the trained rest moved away from them
    torch.testing.assert_close(out["model"]["blocks.0.attn.qkv.weight"], sd["transformer_layers.0.attn.to_qkv.weight"])
    assert not torch.equal(out["model"]["blocks.1.attn.qkv.weight"], sd["transformer_layers.1.attn.to_qkv.weight"])

    # the project's tiny preset does not fit: refused before training, naming the options
    bad = [o for o in over if not o.startswith("model.")] + ["model=tiny"]
    with pytest.raises(IncompatibleCheckpoint, match=r"model\.width is 128, the checkpoint's is 64.*"
                                                     r"model\.ray_features is 'plucker'"):
        run_phase(compose("train", bad))
