"""mousefacelift.inference: checkpoint -> model -> Gaussians -> renders, PLY and turntable."""
import pathlib
import re

import imageio.v2 as imageio
import pytest
import torch

from mousefacelift.cameras import make_rig, stack_cameras
from mousefacelift.checkpoint import load_checkpoint, model_config_of, save_checkpoint
from mousefacelift.gaussians import Gaussians
from mousefacelift.inference import export, load_model, predict, reconstruct, render_views
from mousefacelift.models import build_model, load_preset
from mousefacelift.models.facelift_ckpt import map_facelift_key
from mousefacelift.models.gslrm import GSLRM

SIZE, V_IN, V_OUT = 16, 2, 3


def views():
    K, c2w = stack_cameras(make_rig("ring8", size=SIZE))
    images = torch.rand(1, V_IN, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return images, K[None, :V_IN], c2w[None, :V_IN], K[None, V_IN:V_IN + V_OUT], c2w[None, V_IN:V_IN + V_OUT]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    return build_model("tiny").eval()


def test_checkpoint_round_trip_to_gaussians_renders_and_ply(tmp_path, tiny):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"model": tiny.state_dict(), "config": {"model": load_preset("tiny")}})
    model = load_model(path)
    assert isinstance(model, GSLRM) and not model.training
    for k, v in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    images, K, c2w, tK, tc2w = views()
    with torch.no_grad():
        g = reconstruct(model, images, K, c2w)
        out = render_views(g, tK, tc2w, SIZE, SIZE, background=(0.0, 0.0, 0.0))
        pred = predict(model, images, K, c2w, tK, tc2w, background=(0.0, 0.0, 0.0))
        torch.testing.assert_close(g.means, tiny(images, K, c2w).means)
    assert g.means.shape == (1, V_IN * SIZE * SIZE, 3) and g.sh.shape == (1, V_IN * SIZE * SIZE, 1, 3)
    assert out.rgb.shape == (1, V_OUT, 3, SIZE, SIZE)
    assert out.alpha.shape == out.depth.shape == (1, V_OUT, 1, SIZE, SIZE)
    assert float(out.alpha.max()) > 0.05          # the untrained cloud is visible from the other views
    torch.testing.assert_close(pred.render.rgb, out.rgb)
    paths = export(g, tmp_path / "out", frames=4, size=SIZE)
    back = Gaussians.load_ply(paths["ply"])
    assert back.num_gaussians == g.num_gaussians
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.opacities, g.opacities, atol=1e-6, rtol=1e-5)
    assert len(imageio.mimread(paths["turntable"])) == 4


def test_checkpoint_without_model_type_loads_as_gslrm(tmp_path, tiny):
    old = {k: v for k, v in load_preset("tiny").items() if k != "type"}
    state = {"model": tiny.state_dict(), "config": {"model": old}}
    assert model_config_of(state, "old")["type"] == "gslrm"
    assert isinstance(load_model(save_checkpoint(tmp_path / "old.pt", state)), GSLRM)
    with pytest.raises(ValueError, match="facelift_config is only for FaceLift weights"):
        load_model(tmp_path / "old.pt", facelift_config="tiny")


def test_only_tensors_and_plain_values_are_unpickled(tmp_path, tiny):
    path = tmp_path / "odd.pt"
    torch.save({"model": tiny.state_dict(), "config": {"model": load_preset("tiny")},
                "where": pathlib.PurePosixPath("/x")}, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*PurePosixPath"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_facelift_weights_load_through_the_same_loader(tmp_path, tiny):
    reverse = [(r"tokenizer\.weight", "patch_embedder.1.weight"), (r"input_norm\.weight", "input_layer_norm.weight"),
               (r"blocks\.(\d+)\.(norm[12])\.weight", r"transformer_layers.\1.\2.weight"),
               (r"blocks\.(\d+)\.attn\.qkv\.weight", r"transformer_layers.\1.attn.to_qkv.weight"),
               (r"blocks\.(\d+)\.attn\.proj\.weight", r"transformer_layers.\1.attn.fc.weight"),
               (r"blocks\.(\d+)\.mlp\.fc1\.weight", r"transformer_layers.\1.mlp.mlp.0.weight"),
               (r"blocks\.(\d+)\.mlp\.fc2\.weight", r"transformer_layers.\1.mlp.mlp.2.weight"),
               (r"pixel_head\.norm\.weight", "pixel_gaussian_decoder.0.weight"),
               (r"pixel_head\.linear\.weight", "pixel_gaussian_decoder.1.weight")]
    facelift = {}
    for key, value in tiny.state_dict().items():
        name = next(re.sub(p, t, key) for p, t in reverse if re.fullmatch(p, key))
        assert map_facelift_key(name) == key
        facelift[name] = value
    path = tmp_path / "facelift.ckpt"
    torch.save({"state_dict": facelift}, path)
    with pytest.raises(ValueError, match="pass facelift_config"):
        load_model(path)
    model = load_model(path, facelift_config="tiny")
    images, K, c2w, _, _ = views()
    with torch.no_grad():
        torch.testing.assert_close(model(images, K, c2w).sh, tiny(images, K, c2w).sh)


def test_the_moving_average_is_loaded_when_the_checkpoint_has_one(tmp_path, tiny):
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in tiny.state_dict().items()}
    path = save_checkpoint(tmp_path / "ckpt.pt", {"model": tiny.state_dict(), "ema": ema,
                                                  "config": {"model": load_preset("tiny")}})
    assert torch.equal(load_model(path).state_dict()["tokenizer.weight"], ema["tokenizer.weight"])
    assert torch.equal(load_model(path, use_ema=False).state_dict()["tokenizer.weight"],
                       tiny.state_dict()["tokenizer.weight"])
