"""The `small` preset (configs/model/small.yaml): the CPU overfit model of docs/benchmarks.md
must load, build and run a forward + backward pass at the benchmark's patch geometry."""
import torch

from mousefacelift.cameras import make_rig, stack_cameras
from mousefacelift.models.gslrm import GSLRM, load_model_config


def test_small_preset_builds_and_runs_forward_and_backward():
    cfg = load_model_config("small")
    assert cfg.name == "small" and cfg.head_hidden > 0 and cfg.width >= 3 * cfg.patch_size ** 2
    torch.manual_seed(0)
    model = GSLRM.from_config("small")
    assert 1e5 < model.num_parameters() < 5e6, model.num_parameters()
    size, V = 32, 2
    K, c2w = stack_cameras(make_rig("ring8", size=size)[:V])
    images = torch.rand(1, V, 3, size, size, generator=torch.Generator().manual_seed(0))
    g = model(images, K[None], c2w[None])
    assert g.means.shape == (1, V * size * size, 3) and g.sh.shape == (1, V * size * size, 1, 3)
    assert torch.isfinite(g.means).all() and torch.all((g.opacities > 0) & (g.opacities < 1))
    dist = model.ray_distance_map(g, K[None], c2w[None], size, size).detach()
    assert float(dist.min()) >= cfg.near - 1e-5 and float(dist.max()) <= cfg.far + 1e-5
    (g.sh.square().mean() + g.opacities.mean()).backward()
    assert model.tokenizer.weight.grad is not None and model.tokenizer.weight.grad.abs().sum() > 0
