"""Does the multi-view diffusion stage learn? One-sample overfit and held-out mice, through train.run.

Both modes train ``phase=mvdiffusion`` with the product's own code (``train.run``'s
``run_phase``) and score the generated target views with the task's evaluation, i.e. the
exported pipeline's sampler: masked PSNR/SSIM and mask IoU against the rendered truth, the
3D-consistency PSNR of the generated views with each other through the true depth (beside the
truth's own, its ceiling), the held-out mean image (the floor) and the input-camera head's error.

- ``--overfit``: renders ONE ``rig=mvinput`` pose (or takes ``--sample SHARDS``: their samples,
  use a one-pose render) and trains on it alone, augmentation off: the proof that model, codec,
  loss and sampler fit. Goal: >= 20 dB masked PSNR on its targets.
- held-out: ``--train SHARDS --heldout SHARDS``: poses, coats and lighting the training never saw.

Then the saved pipeline folder is loaded twice and run on the first evaluated input with one seed:
both runs and the in-memory model must give identical views. Prints the curve, writes
``results.json``, ``curve.md`` and ``panel.png`` (input | true targets over generated ones) to
``--out``.

    python benchmarks/mvdiffusion_eval.py --overfit --steps 1500 --out OUT/mv_overfit
    python -m synth.render --poses 256 --quality preview --resolution 64 --rig mvinput --out OUT/mv/train
    python -m synth.render --poses 64 --quality preview --resolution 64 --rig mvinput --out OUT/mv/heldout seed=1
    python benchmarks/mvdiffusion_eval.py --train OUT/mv/train --heldout OUT/mv/heldout --steps 3000 --out OUT/mv_heldout

At GPU scale: ``--model mvdiffusion_base --pretrained SD21_UNCLIP_FOLDER --device cuda --resolution 512``
with shards rendered at 512 (``--quality train --resolution 512``).
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = [("psnr_masked", "PSNR masked (dB)"), ("ssim_masked", "SSIM masked"), ("mask_iou", "mask IoU"),
           ("consistency_psnr", "3D consistency (dB)"), ("consistency_psnr_true", "truth's consistency (dB)"),
           ("baseline/psnr_masked", "mean image PSNR (dB)"), ("baseline/mask_iou", "mean image IoU"),
           ("camera/elevation_err_deg", "elev. err (deg)"), ("camera/fov_err_deg", "fov err (deg)")]


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_one(out: Path, seed: int) -> Path:
    """One ``rig=mvinput`` pose at 64 px, preview quality (the real render program)."""
    folder = out / "one_sample"
    if not (folder / "manifest.json").exists():
        cmd = [sys.executable, "-m", "synth.render", "--poses", "1", "--quality", "preview", "--resolution", "64",
               "--rig", "mvinput", "--out", str(folder), f"seed={seed}"]
        logging.info("rendering the sample: %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
    return folder


def overrides(args, train: str, heldout: str) -> list[str]:
    o = ["phase=mvdiffusion", f"model={args.model}", f"seed={args.seed}", f"run_root={_quoted(str(args.out))}",
         f"data.shards={_quoted(train)}", f"eval.shards={_quoted(heldout)}", f"eval.max_samples={args.eval_samples}",
         f"data.num_workers={args.workers}", f"train.steps={args.steps}", f"train.eval_every={args.eval_every}",
         "train.log_every=50", "train.image_every=0", f"train.ckpt_every={args.steps}", "train.tensorboard=false",
         f"optim.lr={args.lr}", f"optim.warmup_steps={args.warmup}", f"device={args.device}",
         f"diffusion.eval_steps={args.sample_steps}", f"diffusion.guidance_scale={args.guidance}"]
    if args.ema is None:
        o.append("train.ema_decay=null")
    else:
        o.append(f"train.ema_decay={args.ema}")
    if args.pretrained:
        o.append(f"diffusion.pretrained={_quoted(args.pretrained)}")
    if args.overfit:
        o.append("data.augment.enabled=false")
    return o + list(args.override)


def reload_check(trainer, folder: Path, seed: int) -> dict:
    """Same seed, same input: the in-memory model and two loads of the saved folder agree."""
    import torch

    from mousefacelift.diffusion.pipeline import MVDiffusionPipeline
    from train.evaluate import eval_batches

    task = trainer.task
    batch = next(eval_batches(task, trainer.eval_set, 1, trainer.device))
    inp = torch.cat([batch["input_rgb"][:, 0], batch["input_alpha"][:, 0]], dim=1).float()
    cam = task.conditioning(batch)[0].cpu()
    steps, guidance = task.diffusion.eval_steps, task.diffusion.guidance_scale

    def run(pipe):
        g = torch.Generator(device=inp.device).manual_seed(seed)
        return pipe(inp, cam[:, 0], cam[:, 1], num_inference_steps=steps, guidance_scale=guidance, generator=g,
                    progress=False).views.cpu()

    trainer.model.eval()
    with torch.no_grad(), (trainer.ema.applied(trainer.model) if trainer.ema is not None else nullcontext()):
        memory = run(task.pipeline(trainer.model))
    loaded = [run(MVDiffusionPipeline.from_pretrained(folder).to(trainer.device)) for _ in range(2)]
    return {"loads_identical": bool(torch.equal(loaded[0], loaded[1])),
            "max_abs_diff_memory_vs_loaded": float((memory - loaded[0]).abs().max())}


def table(curve: list[dict]) -> str:
    head = "| step | minutes | " + " | ".join(label for _, label in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for rec in curve:
        cells = [f"{rec.get(k, float('nan')):.3f}" if "ssim" in k or "iou" in k else f"{rec.get(k, float('nan')):.2f}"
                 for k, _ in COLUMNS]
        rows.append(f"| {rec['step']} | {rec.get('minutes', float('nan')):.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overfit", action="store_true", help="train and score on one rendered sample")
    ap.add_argument("--sample", default=None, help="--overfit: shards of the sample (default: render one pose)")
    ap.add_argument("--train", default=None, help="training shards (rig=mvinput)")
    ap.add_argument("--heldout", default=None, help="held-out shards (rig=mvinput, another seed)")
    ap.add_argument("--model", default="mvdiffusion_tiny")
    ap.add_argument("--pretrained", default=None, help="local SD-2.1 unCLIP / FaceLift folder (base)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--sample-steps", type=int, default=20, help="denoising steps of each evaluation")
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--ema", type=float, default=None, help="EMA decay (default off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--override", nargs="*", default=[], help="extra train.run overrides")
    ap.add_argument("--out", default="runs/mvdiffusion_eval")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.overfit:
        train = heldout = str(Path(args.sample) if args.sample else render_one(args.out, args.seed))
    elif args.train and args.heldout:
        train, heldout = args.train, args.heldout
    else:
        ap.error("give --overfit, or --train and --heldout")

    from omegaconf import OmegaConf
    from PIL import Image

    from mousefacelift.config import compose
    from train.trainer import Trainer

    cfg = compose("train", overrides(args, train, heldout))
    OmegaConf.resolve(cfg)
    t0 = time.time()
    trainer = Trainer(cfg)
    try:
        summary = trainer.fit()
        seconds = time.time() - t0
        curve = summary["eval_history"]
        for rec in curve:      # evaluations are spread evenly over the run: an estimate per row
            rec["minutes"] = seconds / 60 * rec["step"] / max(1, args.steps)
        check = reload_check(trainer, args.out / "mvdiffusion" / "pipeline", args.seed)
        if trainer.last_panel is not None:
            Image.fromarray((np.asarray(trainer.last_panel).clip(0, 1) * 255).round().astype(np.uint8)).save(
                args.out / "panel.png")
    finally:
        trainer.close()
    text = table(curve)
    print(text)
    print(f"training + evaluations: {seconds / 60:.1f} min; reload check: {check}")
    (args.out / "curve.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "curve": curve, "seconds": seconds, "reload": check},
                                                      indent=1))
    return 0 if check["loads_identical"] and check["max_abs_diff_memory_vs_loaded"] == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
