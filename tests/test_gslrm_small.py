"""The `small` preset (configs/model/small.yaml): the CPU overfit model of docs/benchmarks.md
must load, build and run a forward + backward pass at the benchmark's patch geometry."""
import torch

from mousefacelift.cameras import make_rig, stack_cameras
from mousefacelift.models import build_model, model_config
from mousefacelift.models.gslrm import GSLRM


def test_small_preset_builds_and_runs_forward_and_backward():
    cfg = model_config("small")
    assert cfg.name == "small" and cfg.head_hidden > 0 and cfg.width >= 3 * cfg.patch_size ** 2
    torch.manual_seed(0)
    model = build_model("small")
    assert 1e5 < model.num_parameters() < 5e6, model.num_parameters()
    size, V = 32, 2
    K, c2w = stack_cameras(make_rig("ring8", size=size)[:V])
    images = torch.rand(1, V, 3, size, size, generator=torch.Generator().manual_seed(0))
    g = model(images, K[None], c2w[None])
    assert g.means.shape == (1, V * size * size, 3) and g.sh.shape == (1, V * size * size, 1, 3)
    assert torch.isfinite(g.means).all() and torch.all((g.opacities > 0) & (g.opacities < 1))
    dist = model.ray_distance_map(g, K[None], c2w[None], size, size).detach()
    assert cfg.near_far_relative                                  # ring8 cameras sit 2.7 from the origin
    assert float(dist.min()) >= 2.7 + cfg.near - 1e-4 and float(dist.max()) <= 2.7 + cfg.far + 1e-4
    (g.sh.square().mean() + g.opacities.mean()).backward()
    assert model.tokenizer.weight.grad is not None and model.tokenizer.weight.grad.abs().sum() > 0
    assert cfg.pixel_skip and model.pixel_skip.weight.grad.abs().sum() > 0


def test_pixel_skip_starts_as_facelifts_head_and_reaches_only_its_own_pixel():
    from dataclasses import replace
    cfg = replace(model_config("tiny"), pixel_skip=True)
    torch.manual_seed(0)
    with_skip = GSLRM(cfg)
    plain = GSLRM(replace(cfg, pixel_skip=False))
    missing, unexpected = plain.load_state_dict(with_skip.state_dict(), strict=False)
    assert not missing and unexpected == ["pixel_skip.weight"]
    size, V = 16, 2
    K, c2w = stack_cameras(make_rig("ring8", size=size)[:V])
    images = torch.rand(1, V, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(with_skip(images, K[None], c2w[None]).sh, plain(images, K[None], c2w[None]).sh)
        with_skip.pixel_skip.weight.normal_()
        g0 = with_skip(images, K[None], c2w[None])
        # the skip alone (transformer bypassed): a pixel's colour feeds its own Gaussian only
        with_skip.blocks = torch.nn.ModuleList()
        with_skip.pixel_head.linear.weight.zero_()
        a = with_skip(images, K[None], c2w[None]).sh
        changed = images.clone()
        changed[0, 1, :, 5, 7] = 1 - changed[0, 1, :, 5, 7]
        diff = (with_skip(changed, K[None], c2w[None]).sh - a).abs().flatten(2).sum(-1)[0]
    assert torch.isfinite(g0.means).all()
    assert diff.nonzero().flatten().tolist() == [size * size + 5 * size + 7]
