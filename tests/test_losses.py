"""Losses and metrics: each term responds to what it should and nothing else."""
import math

import numpy as np

import pytest
import torch

from mousefacelift.splat import RenderOutput
from mousefacelift.config import ConfigError
from train.tasks.gslrm.losses import LossConfig, compute_losses, composite_target, perceptual_scale
from train.metrics import depth_error, mask_iou, masked_psnr, masked_ssim, psnr, render_metrics, ssim


def scene(B=1, V=2, H=16, W=16):
    alpha = torch.zeros(B, V, 1, H, W)
    alpha[..., 4:10, 4:10] = 1
    rgb = torch.ones(B, V, 3, H, W)
    rgb = torch.where(alpha > 0, torch.tensor([0.8, 0.3, 0.2])[:, None, None].expand(3, H, W), rgb)
    depth = alpha * 2.5
    c2w = torch.eye(4).expand(B, V, 4, 4).clone()
    c2w[..., 2, 3] = -2.5                                    # camera 2.5 from the origin
    batch = {"rgb": rgb, "alpha": alpha, "depth": depth, "has_depth": torch.ones(B), "background": torch.ones(B, 3),
             "c2w": c2w}
    return batch


def test_perfect_render_has_zero_loss_and_terms_react():
    batch = scene()
    perfect = RenderOutput(batch["rgb"].clone(), batch["alpha"].clone(), batch["depth"].clone())
    cfg = LossConfig.from_yaml(depth_weight=1.0)
    total, parts = compute_losses(perfect, batch, cfg, step=0)
    assert float(total) == 0.0 and set(parts) >= {"rgb", "alpha", "depth", "total", "psnr_masked"}
    off = RenderOutput(perfect.rgb, perfect.alpha, perfect.depth + 0.1 * batch["alpha"])
    _, p2 = compute_losses(off, batch, cfg, step=0)
    assert float(p2["depth"]) > 0 and float(p2["rgb"]) == 0
    # depth is ignored for samples without depth
    _, p3 = compute_losses(off, {**batch, "has_depth": torch.zeros(1)}, cfg, step=0)
    assert float(p3["depth"]) == 0


def test_depth_loss_is_relative_charbonnier_over_the_true_surface():
    batch = scene()
    cfg = LossConfig.from_yaml(depth_weight=1.0, depth_eps=0.01)
    far = RenderOutput(batch["rgb"], batch["alpha"], batch["depth"] + 0.25 * batch["alpha"])
    _, p = compute_losses(far, batch, cfg, 0)
    expect = math.sqrt(0.1 ** 2 + 0.01 ** 2) - 0.01              # 0.25 / 2.5 = 10 % relative error
    assert abs(float(p["depth"]) - expect) < 1e-6
    # the same relative error scores the same at twice the distance (cameras at 2 to 6 body lengths)
    b2 = {**batch, "depth": batch["depth"] * 2}
    _, p2 = compute_losses(RenderOutput(b2["rgb"], b2["alpha"], b2["depth"] * 1.1), b2, cfg, 0)
    assert abs(float(p2["depth"]) - expect) < 1e-6
    # scored wherever the render has any coverage, not only where it is opaque
    faint = RenderOutput(batch["rgb"], batch["alpha"] * 0.05, far.depth)
    _, pf = compute_losses(faint, batch, cfg, 0)
    assert abs(float(pf["depth"]) - expect) < 1e-6


def test_a_transparent_cloud_still_gets_depth_and_opacity_gradient():
    """The collapse this guards against: every Gaussian fading below 1/255 is culled by the
    rasteriser, so render losses pass exactly zero gradient; the depth term still pulls where
    Gaussians cover the true surface, and the pixel-alpha term reaches the culled ones."""
    from mousefacelift.cameras import make_rig, stack_cameras
    from mousefacelift.gaussians import Gaussians
    from mousefacelift.splat import render
    from train.tasks.gslrm.losses import pixel_alpha_loss, rendered_depth_loss

    H = W = 8
    K, c2w = (torch.tensor(np.asarray(a), dtype=torch.float32)[None] for a in stack_cameras(make_rig("ring2", size=H)))
    n = H * W * 2
    gen = torch.Generator().manual_seed(0)
    means = (torch.rand(1, n, 3, generator=gen) - 0.5) * 0.6
    raw_op = torch.full((1, n, 1), -5.0, requires_grad=True)           # opacity 0.0067: faint but drawn
    means.requires_grad_(True)
    g = Gaussians(means, torch.full((1, n, 3), 0.08), torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4),
                  torch.sigmoid(raw_op), torch.zeros(1, n, 1, 3))
    out = render(g, K, c2w, H, W, background=(0.0, 0.0, 0.0), backend="torch")
    depth = torch.full((1, 2, 1, H, W), 2.7)
    assert 0.01 < float(out.alpha.max()) < 0.5                          # faint everywhere, opaque nowhere
    rendered_depth_loss(out, depth, None).backward()
    assert float(means.grad.abs().sum()) > 0                            # pulled towards the surface
    # culled entirely (opacity 1e-4 < 1/255): only the pixel-alpha term reaches them
    raw2 = torch.full((1, n, 1), -9.0, requires_grad=True)
    g2 = Gaussians(means.detach().clone(), torch.full((1, n, 3), 0.08), torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4),
                   torch.sigmoid(raw2), torch.zeros(1, n, 1, 3))
    out2 = render(g2, K, c2w, H, W, background=(0.0, 0.0, 0.0), backend="torch")
    (out2.rgb.sum() + out2.alpha.sum()).backward(retain_graph=True)
    assert raw2.grad is None or float(raw2.grad.abs().sum()) == 0.0
    raw2.grad = None
    pixel_alpha_loss(g2, torch.ones(1, 2, 1, H, W)).backward()
    assert float(raw2.grad.abs().min()) > 0 and float(raw2.grad.max()) < 0   # every opacity pushed up


def test_alpha_loss_l1_and_bce():
    batch = scene()
    empty = RenderOutput(batch["rgb"], torch.zeros_like(batch["alpha"]), batch["depth"])
    _, p = compute_losses(empty, batch, LossConfig.from_yaml(), 0)
    assert abs(float(p["alpha"]) - float(batch["alpha"].mean())) < 1e-6
    _, pb = compute_losses(empty, batch, LossConfig.from_yaml(alpha_loss="bce"), 0)
    assert float(pb["alpha"]) > float(p["alpha"])


def test_regularisers_need_gaussians_and_penalise_large_scales():
    from mousefacelift.gaussians import Gaussians
    batch = scene()
    out = RenderOutput(batch["rgb"], batch["alpha"], batch["depth"])
    g = Gaussians(torch.zeros(1, 2, 3), torch.tensor([[[0.01] * 3, [0.25] * 3]]), torch.tensor([[[1., 0, 0, 0]] * 2]),
                  torch.tensor([[[0.2], [0.6]]]), torch.zeros(1, 2, 1, 3))
    cfg = LossConfig.from_yaml(opacity_reg_weight=1.0, scale_reg_weight=1.0, scale_reg_max=0.05)
    total, p = compute_losses(out, batch, cfg, 0, gaussians=g)
    assert abs(float(p["opacity_reg"]) - 0.4) < 1e-6 and abs(float(p["scale_reg"]) - 0.1) < 1e-6
    assert abs(float(total) - 0.5) < 1e-6


def test_perceptual_needs_local_weights_and_warms_up(tmp_path):
    with pytest.raises(ValueError, match="perceptual_weights"):
        LossConfig.from_yaml(perceptual_weight=0.5)
    cfg = LossConfig.from_yaml(perceptual_weight=0.5, perceptual_weights=str(tmp_path / "vgg16.pth"),
                               perceptual_warmup_steps=100, perceptual_ramp_steps=10)
    assert perceptual_scale(cfg, 99) == 0.0 and perceptual_scale(cfg, 104) == 0.5 and perceptual_scale(cfg, 500) == 1
    batch = scene()
    out = RenderOutput(batch["rgb"], batch["alpha"], batch["depth"])
    compute_losses(out, batch, cfg, step=10)           # before warm-up: the file is not needed
    with pytest.raises(FileNotFoundError, match="vgg16.pth"):
        compute_losses(out, batch, cfg, step=100)
    from train.tasks.gslrm.losses import VGGPerceptual
    torch.save(VGGPerceptual().state_dict(), tmp_path / "vgg16.pth")
    _, p = compute_losses(RenderOutput(batch["rgb"] * 0.5, batch["alpha"], batch["depth"]), batch, cfg, step=200)
    assert float(p["perceptual"]) > 0


def test_config_overrides_are_checked():
    assert LossConfig.from_yaml(rgb_weight=2).rgb_weight == 2.0
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rgb_wieght'\]"):
        LossConfig.from_yaml(rgb_wieght=2.0)
    with pytest.raises(ConfigError, match="alpha_loss must be 'l1' or 'bce'"):
        LossConfig.from_yaml(alpha_loss="l2")


def test_composite_target():
    b = scene()
    b2 = {**b, "rgb": b["rgb"] * 0 + 0.5}
    out = composite_target(b2, torch.tensor([0.0, 0.0, 1.0]))
    assert float(out[0, 0, 2, 0, 0]) == 1.0 and float(out[0, 0, 0, 5, 5]) == 0.5


def test_masked_psnr_counts_only_the_foreground_union():
    b = scene()
    pred = b["rgb"].clone()
    pred[..., 4:10, 4:10] += 0.1                 # error 0.1 on the 36-px subject only
    whole = float(psnr(pred, b["rgb"]).mean())
    masked = float(masked_psnr(pred, b["rgb"], b["alpha"]).mean())
    assert abs(masked - 20.0) < 1e-3             # mse 0.01 inside the mask
    assert whole > masked + 8                    # the background inflates the whole-image figure
    # a floater outside the true mask enters through the predicted alpha (union)
    pa = b["alpha"].clone()
    pa[..., 0:2, 0:2] = 1
    pred2 = b["rgb"].clone()
    pred2[..., 0:2, 0:2] = 0
    assert math.isinf(float(masked_psnr(pred2, b["rgb"], b["alpha"]).mean())) or \
        float(masked_psnr(pred2, b["rgb"], b["alpha"]).mean()) > 90
    assert float(masked_psnr(pred2, b["rgb"], b["alpha"], pa).mean()) < 15


def test_ssim_iou_and_depth_error():
    b = scene()
    assert abs(float(ssim(b["rgb"], b["rgb"]).mean()) - 1) < 1e-5
    noisy = b["rgb"] + 0.2 * torch.randn_like(b["rgb"])
    assert float(masked_ssim(noisy, b["rgb"], b["alpha"]).mean()) < 0.9
    pa = torch.zeros_like(b["alpha"])
    pa[..., 4:10, 4:7] = 1
    assert abs(float(mask_iou(pa, b["alpha"]).mean()) - 0.5) < 1e-6
    err = depth_error(b["depth"] + 0.3, b["depth"], b["alpha"])
    torch.testing.assert_close(err, torch.full((1, 2), 0.3))
    assert float(depth_error(b["depth"], torch.zeros_like(b["depth"]), b["alpha"]).sum()) == 0   # no depth: 0
    m = render_metrics(RenderOutput(b["rgb"], b["alpha"], b["depth"]), b)
    assert list(m)[0] == "psnr_masked" and m["mask_iou"] == 1.0 and m["depth_abs_err"] == 0.0


def test_pointmap_depth_loss_measures_each_pixel_gaussian_against_its_pixel_depth():
    import numpy as np

    from mousefacelift.cameras import camera_rays, make_rig, stack_cameras
    from mousefacelift.gaussians import Gaussians
    from train.tasks.gslrm.losses import pointmap_depth_loss

    H = W = 8
    cams = make_rig("ring2", size=H)
    K, c2w = (torch.tensor(np.asarray(a), dtype=torch.float32)[None] for a in stack_cameras(cams))
    depth = torch.full((1, 2, 1, H, W), 2.5)
    depth[..., :2, :] = 0.0                                   # rows without depth are ignored
    alpha = torch.ones(1, 2, 1, H, W)
    alpha[..., :, :1] = 0.0                                   # so is the background
    o, d = camera_rays(K, c2w, H, W)                           # unit rays: planar z = t * cos
    fwd = c2w[..., :3, 2][:, :, None, None, :]
    t = 2.5 / (d * fwd).sum(-1, keepdim=True)
    means = (o + t * d).reshape(1, -1, 3)
    glob = torch.zeros(1, 5, 3)                                # global Gaussians come first and are skipped
    mk = lambda m: Gaussians(torch.cat([glob, m], 1), torch.ones(1, m.shape[1] + 5, 3) * 0.01,
                             torch.tensor([1.0, 0, 0, 0]).expand(1, m.shape[1] + 5, 4),
                             torch.ones(1, m.shape[1] + 5, 1), torch.zeros(1, m.shape[1] + 5, 1, 3))
    assert float(pointmap_depth_loss(mk(means), c2w, depth, alpha)) < 1e-5
    shifted = (o + (t + 0.1) * d).reshape(1, -1, 3)            # 0.1 further along each ray
    expect = float((0.1 * (d * fwd).sum(-1))[:, :, 2:, 1:].mean()) / 2.5      # relative to the true depth
    assert abs(float(pointmap_depth_loss(mk(shifted), c2w, depth, alpha)) - expect) < 1e-4
    assert float(pointmap_depth_loss(mk(shifted), c2w, depth, torch.zeros_like(alpha))) == 0.0
    # through compute_losses: on with pointmap_weight and input_depth, weighted into the total
    batch = {"rgb": torch.ones(1, 2, 3, H, W), "alpha": alpha, "depth": depth, "has_depth": torch.ones(1),
             "background": torch.ones(1, 3), "input_c2w": c2w, "input_depth": depth, "input_alpha": alpha}
    perfect = RenderOutput(batch["rgb"], alpha * 0 + 0.0, depth * 0)
    base, p0 = compute_losses(perfect, batch, LossConfig.from_yaml(alpha_weight=0.0), 0, gaussians=mk(shifted))
    total, p1 = compute_losses(perfect, batch, LossConfig.from_yaml(alpha_weight=0.0, pointmap_weight=2.0), 0,
                               gaussians=mk(shifted))
    rel = (0.1 * (d * fwd).sum(-1))[:, :, 2:, 1:] / 2.5           # the phases' Charbonnier on it
    expect_ch = float(((rel ** 2 + 0.01 ** 2).sqrt() - 0.01).mean())
    assert "pointmap" not in p0 and abs(float(total - base) - 2 * expect_ch) < 1e-4
