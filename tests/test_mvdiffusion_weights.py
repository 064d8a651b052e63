"""Strict loading of published UNet weights (SD 2.1 unCLIP, FaceLift's multi-view UNet) from local folders."""
import inspect
import json
from dataclasses import replace

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding

from mousefacelift.diffusion.weights import (load_facelift_unet, load_pretrained_unet, load_sd_unclip_unet,
                                             load_unet_state)
from mousefacelift.models import model_config
from mousefacelift.models.facelift_ckpt import IncompatibleCheckpoint
from mousefacelift.models.mvdiffusion import CAMERA_FEATURES, MVDiffusionUNet

# stabilityai/stable-diffusion-2-1-unclip unet/config.json (shape-relevant fields as published)
SD_UNCLIP = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "class_embed_type": "projection",
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4,
    "projection_class_embeddings_input_dim": 2048, "resnet_time_scale_shift": "default", "sample_size": 96,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": True, "use_linear_projection": True}
# FaceLift's pipeckpts/unet/config.json: UNetMV2DConditionModel.from_pretrained_2d on the SD 2.1 unCLIP
# config with its mvdiffusion training config (unclip, 6 views, 64x64 latents, sparse, no extra modules)
FACELIFT = {**SD_UNCLIP, "_class_name": "UNetMV2DConditionModel", "in_channels": 8, "out_channels": 4,
            "sample_size": 64, "num_views": 6, "cd_attention_last": False, "cd_attention_mid": False,
            "multiview_attention": True, "sparse_mv_attention": True, "selfattn_block": "custom",
            "addition_downsample": False, "addition_channels": [1280, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlockMV2D"] * 3 + ["DownBlock2D"],
            "mid_block_type": "UNetMidBlockMV2DCrossAttn",
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlockMV2D"] * 3}
STOCK_NAMES = {"CrossAttnDownBlockMV2D": "CrossAttnDownBlock2D", "CrossAttnUpBlockMV2D": "CrossAttnUpBlock2D",
               "UNetMidBlockMV2DCrossAttn": "UNetMidBlock2DCrossAttn"}


def source_unet(config: dict) -> UNet2DConditionModel:
    """A diffusers UNet with the parameter names and shapes of ``config`` (FaceLift's MV2D blocks
    have the stock blocks' parameters under the same names)."""
    known = inspect.signature(UNet2DConditionModel.__init__).parameters
    kw = {k: v for k, v in config.items() if k in known}
    for k in ("down_block_types", "up_block_types", "mid_block_type"):
        if k in kw:
            kw[k] = [STOCK_NAMES.get(v, v) for v in kw[k]] if isinstance(kw[k], list) else STOCK_NAMES.get(kw[k], kw[k])
    return UNet2DConditionModel(**kw)


@pytest.fixture(scope="module")
def meta_base():
    with torch.device("meta"):
        return MVDiffusionUNet(model_config("mvdiffusion_base"))


@pytest.mark.parametrize("config, kind", [(SD_UNCLIP, "sd_unclip"), (FACELIFT, "facelift")], ids=["sd21_unclip", "facelift"])
def test_published_layout_loads_into_base_without_missing_or_unexpected_keys(meta_base, config, kind):
    with torch.device("meta"):
        state = source_unet(config).state_dict()
    report = load_unet_state(meta_base, config, state, kind, where=kind)
    assert len(report["loaded"]) == len(state)
    assert report["expanded"] == ["unet.conv_in.weight", "unet.conv_out.weight", "unet.conv_out.bias"]
    own = meta_base.state_dict()
    assert set(report["new"]) == {k for k in own if not k.startswith("unet.")} | {"unet.time_embedding.cond_proj.weight"}
    assert set(report["loaded"]) | set(report["new"]) == set(own)


def test_facelift_extra_modules_are_named(meta_base):
    config = {**FACELIFT, "cd_attention_mid": True}
    with torch.device("meta"):
        state = source_unet(FACELIFT).state_dict()
    block = "down_blocks.0.attentions.0.transformer_blocks.0."
    for name in ("attn_joint_mid.to_q.weight", "attn_joint_mid.to_out.0.weight", "norm_joint_mid.weight"):
        state[block + name] = torch.empty(320, device="meta")
    with pytest.raises(IncompatibleCheckpoint, match=r"cd_attention_mid.*\(3\).*attn_joint_mid\.to_q") as e:
        load_unet_state(meta_base, config, state, "facelift")
    assert "\n" not in str(e.value)


def test_architecture_mismatch_is_named(meta_base):
    config = {**SD_UNCLIP, "cross_attention_dim": 768, "attention_head_dim": 8}
    expected = r"2 field\(s\): attention_head_dim: folder \(8, 8, 8, 8\) vs model \(5, 10, 20, 20\); cross_attention_dim"
    with pytest.raises(IncompatibleCheckpoint, match=expected):
        load_unet_state(meta_base, config, {}, "sd_unclip")
    with pytest.raises(IncompatibleCheckpoint, match="_class_name is 'UNet2DConditionModel', expected 'UNetMV2D"):
        load_unet_state(meta_base, SD_UNCLIP, {}, "facelift")


# -- reduced size, real folders and numbers -------------------------------------------------------
SMALL = dict(block_out_channels=(32, 64), attention_head_dim=(2, 4), layers_per_block=1, norm_num_groups=8,
             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
             cross_attention_dim=64, image_embed_dim=32, image_size=64, num_views=1, context_tokens=2, camera_dim=16,
             grad_checkpoint=False, mv_attention="dense")


def small_source(kind):
    cfg = {**(SD_UNCLIP if kind == "sd_unclip" else FACELIFT), **{k: list(v) if isinstance(v, tuple) else v
                                                                 for k, v in SMALL.items() if k in SD_UNCLIP},
           "projection_class_embeddings_input_dim": 64, "sample_size": 8}
    if kind == "facelift":
        cfg["down_block_types"] = ["CrossAttnDownBlockMV2D", "DownBlock2D"]
        cfg["up_block_types"] = ["UpBlock2D", "CrossAttnUpBlockMV2D"]
    torch.manual_seed(3)
    unet = source_unet(cfg)
    with torch.no_grad():   # non-trivial values everywhere (diffusers zero-initialises some layers)
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return cfg, unet


def write_folder(tmp_path, cfg, unet):
    folder = tmp_path / "pipe"
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))   # the published class name and flags
    return folder


@pytest.mark.parametrize("kind", ["sd_unclip", "facelift"])
def test_loaded_model_computes_what_the_source_computed(tmp_path, kind):
    cfg, src = small_source(kind)
    folder = write_folder(tmp_path, cfg, src)
    torch.manual_seed(0)
    model = MVDiffusionUNet(replace(model_config("mvdiffusion_base"), **SMALL)).eval()
    report = (load_sd_unclip_unet if kind == "sd_unclip" else load_facelift_unet)(model, folder)
    assert report == load_pretrained_unet(model, folder / "unet")          # the unet folder itself works too
    C = model.config.latent_channels
    w = model.unet.conv_in.weight.detach()
    torch.testing.assert_close(w[:, :4], src.conv_in.weight[:, :4])
    assert w[:, 4].abs().sum() == 0 and w[:, C + 4].abs().sum() == 0      # alpha channels start at zero
    if kind == "facelift":
        torch.testing.assert_close(w[:, C:C + 4], src.conv_in.weight[:, 4:8])
    else:
        assert w[:, C:].abs().sum() == 0

    g = torch.Generator().manual_seed(1)
    noisy, cond = torch.randn(2, 1, C, 8, 8, generator=g), torch.randn(2, C, 8, 8, generator=g)
    embed, t = torch.randn(2, 32, generator=g), torch.tensor([10, 700])
    with torch.no_grad():
        ours = model(noisy, t, cond, embed, torch.randn(2, 1, CAMERA_FEATURES, generator=g))
        x = noisy[:, 0, :4] if kind == "sd_unclip" else torch.cat([noisy[:, 0, :4], cond[:, :4]], dim=1)
        level = get_timestep_embedding(torch.zeros(2), 32, flip_sin_to_cos=True, downscale_freq_shift=0)
        theirs = src(x, t, encoder_hidden_states=model.context[None].expand(2, -1, -1),
                     class_labels=torch.cat([embed, level], dim=-1)).sample
    torch.testing.assert_close(ours[:, 0, :4], theirs, atol=1e-4, rtol=1e-4)
    assert ours[:, 0, 4].abs().max() == 0                                  # the alpha row of conv_out starts at zero


def test_mismatch_names_keys_and_loads_nothing(tmp_path):
    cfg, src = small_source("sd_unclip")
    state = src.state_dict()
    state.pop("mid_block.resnets.0.conv1.weight")
    state["mid_block.extra.weight"] = torch.zeros(3)
    state["time_embedding.linear_1.bias"] = torch.zeros(7)
    model = MVDiffusionUNet(replace(model_config("mvdiffusion_base"), **SMALL))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(IncompatibleCheckpoint) as e:
        load_unet_state(model, cfg, state, "sd_unclip", where="folder X")
    msg = str(e.value)
    assert "\n" not in msg and "folder X" in msg and "nothing was loaded" in msg
    assert "missing (1) ['unet.mid_block.resnets.0.conv1.weight']" in msg
    assert "unexpected (1) ['mid_block.extra.weight']" in msg
    assert "shape mismatch (1) ['time_embedding.linear_1.bias [7] vs [128]']" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_pixel_latent_model_refuses_sd_weights(tmp_path):
    cfg, src = small_source("sd_unclip")
    folder = write_folder(tmp_path, cfg, src)
    tiny = MVDiffusionUNet(replace(model_config("mvdiffusion_tiny"), num_views=1))
    with pytest.raises(IncompatibleCheckpoint, match="architecture differs"):
        load_sd_unclip_unet(tiny, folder)


def test_missing_folder_or_files_is_one_line(tmp_path):
    model = MVDiffusionUNet(replace(model_config("mvdiffusion_tiny"), num_views=1))
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        load_pretrained_unet(model, tmp_path / "nowhere")
    assert "\n" not in str(e.value)
    (tmp_path / "empty" / "unet").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no unet/config.json"):
        load_pretrained_unet(model, tmp_path / "empty")
    (tmp_path / "empty" / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_pretrained_unet(model, tmp_path / "empty")
    (tmp_path / "empty" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(IncompatibleCheckpoint, match="not a readable weights file") as e:
        load_pretrained_unet(model, tmp_path / "empty")
    assert "\n" not in str(e.value)
    (tmp_path / "empty" / "unet" / "config.json").write_text('{"_class_name": "Something"}')
    with pytest.raises(IncompatibleCheckpoint, match="_class_name 'Something' is not one of"):
        load_pretrained_unet(model, tmp_path / "empty")
