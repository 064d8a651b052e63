"""Training health: a dead run is named, the geometry indicator tells surface from sheets, the
mean-image baseline is logged beside every evaluation, evaluation runs at step 0."""
import logging

import numpy as np
import pytest
import torch

from mousefacelift.analytic import sphere_sample, write_sphere_shards
from mousefacelift.cameras import stack_cameras
from mousefacelift.config import compose
from train.metrics import surface_agreement, surface_points
from train.trainer import Trainer

SIZE = 16


def _surface(sample):
    K, c2w = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in stack_cameras(sample.cameras))
    depth = torch.as_tensor(sample.depth)[:, None]
    return surface_points(depth, K, c2w), K, c2w, depth


def test_cloud_on_the_true_surface_scores_near_zero_and_a_view_aligned_sheet_scores_badly():
    s = sphere_sample("s", rig="sphere8", size=32, seed=3)
    surf, K, c2w, depth = _surface(s)
    # a cloud on the surface: the true points of the other views (same sphere, other samples)
    on = surf[torch.randperm(len(surf), generator=torch.Generator().manual_seed(0))[:3000]]
    good = surface_agreement(on, torch.ones(len(on)), surf, eps=0.05)
    assert float(good["chamfer"]) < 0.03 and float(good["on_surface"]) > 0.97
    # a flat sheet with view 0's exact silhouette, at the silhouette's mean depth: right in view 0,
    # wrong in 3D (the earlier failure's view-aligned Gaussians)
    flat = torch.where(depth[:1] > 0, depth[:1][depth[:1] > 0].mean(), torch.zeros_like(depth[:1]))
    sheet = surface_points(flat, K[:1], c2w[:1])
    bad = surface_agreement(sheet, torch.ones(len(sheet)), surf, eps=0.05)
    assert float(bad["on_surface"]) < 0.5 and float(bad["chamfer"]) > 3 * float(good["chamfer"])
    # transparent Gaussians do not count; with none visible the most opaque stand in (stays defined)
    faint = surface_agreement(on, torch.full((len(on),), 1e-4), surf, eps=0.05)
    assert torch.isfinite(faint["chamfer"])


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("health_shards")
    write_sphere_shards(str(root / "train"), samples=4, per_shard=2, size=SIZE, seed=5)
    write_sphere_shards(str(root / "eval"), samples=2, per_shard=2, size=SIZE, seed=6)
    return root


def _cfg(tmp_path, root, *extra):
    return compose("train", [
        "phase=synthetic", "model=tiny", "init_from=null", f"run_root={tmp_path}", f"data.shards={root / 'train'}",
        f"eval.shards={root / 'eval'}", "eval.max_samples=2", "data.resolution=16", "data.num_workers=0",
        "data.view_sampling.num_views=4", "data.view_sampling.num_input_views=2",
        "data.view_sampling.max_target_distance_deg=180", "train.log_every=1", "train.image_every=0",
        "train.tensorboard=false", "optim.warmup_steps=1", "device=cpu", *extra])


def test_a_run_whose_opacities_collapse_is_reported_dead_and_can_stop(tmp_path, shard_root, caplog):
    """Every Gaussian below 1/255 opacity is culled: an empty render, a fixed low PSNR and no
    render gradient. Evaluation must name it, at step 0 already, beside the baseline."""
    cfg = _cfg(tmp_path, shard_root, "model.opacity_bias=-30", "train.steps=4", "train.eval_every=2",
               "eval.stop_when_dead=true")
    tr = Trainer(cfg)
    with caplog.at_level(logging.WARNING):
        summary = tr.fit()
    tr.close()
    history = summary["eval_history"]
    assert history[0]["step"] == 0                                # evaluated before the first step
    assert history[0]["health/dead"] == 1.0 and history[0]["novel/mean_alpha"] < 0.01
    assert "baseline/novel_psnr" in history[0] and "health/above_baseline_db" in history[0]
    assert "DEAD MODEL" in caplog.text
    assert summary["step"] == 2                                   # stopped at the first evaluation after step 0


def test_a_live_model_is_not_dead_and_the_baseline_is_the_held_out_mean_image(tmp_path, shard_root, caplog):
    tr = Trainer(_cfg(tmp_path, shard_root, "train.steps=1", "train.eval_every=1"))
    with caplog.at_level(logging.WARNING):
        summary = tr.fit()
    tr.close()
    first = summary["eval_history"][0]
    assert first["health/dead"] == 0.0 and "DEAD MODEL" not in caplog.text
    assert 0 < first["baseline/novel_mask_iou"] <= 1 and np.isfinite(first["baseline/novel_psnr"])
    assert first["health/above_baseline_db"] == pytest.approx(first["novel/psnr"] - first["baseline/novel_psnr"])
    assert {"geometry/chamfer", "geometry/on_surface", "novel/depth_rel_err"} <= set(first)
