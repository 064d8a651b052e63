"""The mvdiffusion task end to end at small size: phase=mvdiffusion trains, evaluates through the
exported pipeline, and the exported folder reproduces the trained model; bad configs fail in one line."""
import pytest
import torch

from mousefacelift.analytic import write_sphere_shards
from mousefacelift.checkpoint import load_checkpoint
from mousefacelift.config import ConfigError, compose
from mousefacelift.diffusion.pipeline import MVDiffusionPipeline
from train.run import run_phase
from train.tasks import build_task
from train.trainer import Trainer

SMALL = ["phase=mvdiffusion", "model.image_size=32", "data.num_workers=0", "train.steps=2", "train.log_every=1",
         "train.image_every=2", "train.eval_every=2", "train.ckpt_every=100", "eval.max_samples=2",
         "optim.warmup_steps=1", "device=cpu", "diffusion.eval_steps=2", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def mv_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("mv_shards")
    write_sphere_shards(str(root / "mv"), samples=3, per_shard=2, size=32, rig="mvinput", seed=4)
    return root


def test_phase_trains_evaluates_and_exports_a_pipeline_that_reproduces_the_model(tmp_path, mv_shards):
    runs = tmp_path / "runs"
    summary = run_phase(compose("train", SMALL + [f"run_root={runs}", f"shard_root={mv_shards}",
                                                  f"eval.shards={mv_shards}/mv"]))
    assert summary["step"] == 2
    for key in ("psnr_masked", "ssim_masked", "mask_iou", "consistency_psnr", "consistency_psnr_true",
                "baseline/psnr_masked", "ceiling/psnr_masked", "camera/elevation_err_deg", "camera/fov_err_deg"):
        assert key in summary, key
    assert [r["step"] for r in summary["eval_history"]] == [0, 2]
    folder = runs / "mvdiffusion" / "pipeline"
    assert (folder / "model_index.json").exists() and not (runs / "mvdiffusion" / "pipeline.tmp").exists()

    # the folder reproduces the trained (EMA) weights: same input, same seed, same views
    cfg = compose("train", SMALL + [f"run_root={tmp_path / 'again'}", f"shard_root={mv_shards}",
                                    f"eval.shards={mv_shards}/mv", f"init_from={runs}/mvdiffusion/checkpoints/last.pt"])
    trainer = Trainer(cfg)
    try:
        from train.data import eval_examples
        from train.evaluate import eval_batches
        examples = eval_examples(f"{mv_shards}/mv", trainer.data, 0, max_samples=1)
        batch = next(eval_batches(trainer.task, examples, 1, torch.device("cpu")))
        state = load_checkpoint(runs / "mvdiffusion/checkpoints/last.pt")
        trainer.model.load_state_dict({k: v.to(trainer.model.state_dict()[k].dtype) for k, v in state["ema"].items()})
        trainer.model.eval()
        mine = trainer.task.generate(trainer.model, batch, seed=7)
        loaded = MVDiffusionPipeline.from_pretrained(folder)
        trainer.task.pipeline = lambda model, sampler=None: loaded      # same call, the folder's components
        theirs = trainer.task.generate(trainer.model, batch, seed=7)
    finally:
        trainer.close()
    assert mine.shape == (1, 6, 4, 32, 32)
    assert torch.equal(mine, theirs)


@pytest.mark.parametrize("gamma", ["null", "5.0"])
def test_loss_is_zero_for_the_exact_v_target_and_weights_by_min_snr(mv_shards, gamma):
    task = build_task(compose("train", SMALL + [f"shard_root={mv_shards}", f"diffusion.min_snr_gamma={gamma}"]))
    from train.tasks.mvdiffusion.task import DiffusionPrediction
    B, V, C = 2, 6, task.model_config.latent_channels
    target = torch.randn(B, V, C, 16, 16)
    cam = torch.tensor([[30.0, 40.0], [80.0, 20.0]])
    exact = DiffusionPrediction(pred=target.clone(), target=target, noisy=target, timesteps=torch.tensor([10, 900]),
                                camera_pred=cam, camera_true=cam)
    total, parts = task.loss(exact, {"valid": torch.ones(B, dtype=torch.bool)}, 0)
    assert float(total) == 0.0
    off = DiffusionPrediction(pred=target + 1, target=target, noisy=target, timesteps=torch.tensor([10, 900]),
                              camera_pred=cam, camera_true=cam)
    _, parts = task.loss(off, {"valid": torch.ones(B, dtype=torch.bool)}, 0)
    assert float(parts["v_mse"]) == pytest.approx(1.0)
    if gamma == "null":     # plain v-MSE
        assert float(parts["denoise"]) == pytest.approx(1.0)
    else:                   # min(SNR, 5) / (SNR + 1) < 1 at every t
        assert float(parts["denoise"]) < 1.0


@pytest.mark.parametrize("override,message", [
    ("data.view_sampling.num_views=4", r"task mvdiffusion reads 1 input \+ 6 targets"),
    ("diffusion.drop_image=0.95", r"diffusion.drop_image/drop_latent/drop_both are \[0.95, 0.05, 0.05\]"),
    ("diffusion.sampler=heun", r"diffusion.sampler='heun': expected one of"),
    ("model=tiny", r"task mvdiffusion trains model type mvdiffusion, but model.type is 'gslrm'"),
    ("diffusion.pretrained=/nonexistent/sd21", r"diffusion.pretrained='/nonexistent/sd21': no such folder"),
    ("diffusion.rig=sphere32", r"sphere32"),
])
def test_bad_mvdiffusion_configs_fail_in_one_line(override, message, mv_shards):
    base = [o for o in SMALL if not (override.startswith("model=") and o.startswith("model."))]
    with pytest.raises(ConfigError, match=message) as e:
        build_task(compose("train", base + [f"shard_root={mv_shards}", override]))
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path, mv_shards):
    """Two ranks on the CPU (gloo): the input-camera head, called beside the UNet, is reduced too."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train.run",
           *SMALL, f"run_root={tmp_path}", f"data.shards={mv_shards}/mv", f"eval.shards={mv_shards}/mv",
           "train.steps=3", "train.grad_accum=2"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    ck = load_checkpoint(tmp_path / "mvdiffusion/checkpoints/last.pt")
    assert ck["world_size"] == 2 and ck["step"] == 3
    assert (tmp_path / "mvdiffusion/pipeline/model_index.json").exists()
