"""Does the depth loss help? phase=synthetic with vs without it, at small scale.

Same shards (train and held-out), same seed, same step budget, same init; only
``loss.depth_weight`` differs. Reports held-out novel-view masked PSNR and depth error (and
input-view figures) from the gslrm task's evaluation (train/tasks/gslrm/evaluate.py). Uses
analytic sphere shards (mousefacelift.analytic) unless ``--train-shards/--eval-shards`` point
at real mouse shards (python -m synth.render).

    python benchmarks/depth_loss_ablation.py --steps 40 --size 16
"""
from __future__ import annotations

import argparse
import logging
import tempfile

from mousefacelift.config import compose
from mousefacelift.analytic import write_sphere_shards
from train.run import run_phase


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--depth-weight", type=float, default=0.5)
    ap.add_argument("--train-shards", default=None)
    ap.add_argument("--eval-shards", default=None)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tr, ev = args.train_shards, args.eval_shards
        if tr is None:
            write_sphere_shards(f"{tmp}/train", samples=16, per_shard=8, size=args.size, seed=11)
            write_sphere_shards(f"{tmp}/eval", samples=args.eval_samples, per_shard=8, size=args.size, seed=12)
            tr, ev = f"{tmp}/train", f"{tmp}/eval"
        rows = []
        for w in (0.0, args.depth_weight):
            cfg = compose("train", [
                "phase=synthetic", "model=tiny", "init_from=null", f"seed={args.seed}", f"run_root={tmp}/runs_{w}",
                f"data.shards={tr}", f"eval.shards={ev}", f"eval.max_samples={args.eval_samples}",
                f"data.resolution={args.size}", "data.num_workers=0", "data.view_sampling.num_views=4",
                "data.view_sampling.num_input_views=2", "data.view_sampling.max_target_distance_deg=180",
                f"train.steps={args.steps}", f"train.eval_every={args.steps}", "train.log_every=1000",
                "train.image_every=0", "train.tensorboard=false", "optim.warmup_steps=5", "optim.lr=1e-3",
                f"loss.depth_weight={w}", "device=cpu"])
            s = run_phase(cfg)
            rows.append((w, s))
        keys = ["novel/psnr", "novel/ssim", "novel/mask_iou", "novel/depth_abs_err", "input/psnr",
                "input/depth_abs_err", "collapse/color_spread_ratio"]
        print(f"\n{args.steps} steps, {args.size}^2, tiny model, {args.eval_samples} held-out samples")
        print("| depth_weight | " + " | ".join(keys) + " |")
        print("| ---: |" + " ---: |" * len(keys))
        for w, s in rows:
            print(f"| {w} | " + " | ".join(f"{s.get(k, float('nan')):.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
