"""Does depth supervision make GS-LRM learn unseen mice? Arms x seeds, held-out novel views only.

The experiment of docs/benchmarks.md ("The depth question"). Every run trains
``phase=synthetic`` from fresh weights on the same mouse shards with the same budget; only
the losses (or, for ``pretrain``, the start) differ:

- ``rgb``      RGB + alpha only (the earlier failure: 2D supervision alone)
- ``pointmap`` + each input pixel's Gaussian vs that pixel's true depth
- ``rendered`` + composited rendered depth vs the true depth wherever the truth has surface
- ``both``     both depth terms (the ``synthetic`` phase's default)
- ``pretrain`` ``phase=pretrain`` on object shards for ``--pretrain-steps``, then ``both`` on mice:
               against ``both`` (mouse only), and scored on held-out objects too, it asks
               whether the object prior survives the mouse finetune

Scored on held-out mice (never-seen poses, coats, lighting: render them with another seed) at
step 0 and every ``--eval-every`` steps: masked PSNR/SSIM, mask IoU, depth error over the true
surface, Chamfer / on-surface share of the visible Gaussians, colour-spread ratio, and the
held-out mean image as the baseline. Prints a table (mean and range over seeds), writes
``results.json``, ``table.md``, ``curves.png`` and, per run, the evaluation panel of the first
held-out sample (``ARM_seedS_mice.png``, ``..._objects.png``) to ``--out``. Runs unchanged on a GPU at full
scale (``--device cuda --model base --resolution 256 --steps ...``).

    python -m synth.render --poses 640 --quality preview --resolution 64 --rig sphere16 --out data/mouse_train
    python -m synth.render --poses 48 --quality preview --resolution 64 --rig sphere16 --out data/mouse_heldout seed=1
    python benchmarks/depth_question.py --mouse-train data/mouse_train --mouse-heldout data/mouse_heldout \\
        --arms rgb both --seeds 0 1 --steps 1500 --jobs 2
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARMS = {
    "rgb": ["loss.depth_weight=0", "loss.pointmap_weight=0"],
    "pointmap": ["loss.depth_weight=0", "loss.pointmap_weight=1.0"],
    "rendered": ["loss.depth_weight=0.5", "loss.pointmap_weight=0"],
    "both": ["loss.depth_weight=0.5", "loss.pointmap_weight=1.0"],
    "pretrain": ["loss.depth_weight=0.5", "loss.pointmap_weight=1.0"],
}
COLUMNS = [("novel/psnr", "PSNR (masked, dB)"), ("health/above_baseline_db", "vs mean image (dB)"),
           ("novel/ssim", "SSIM (masked)"), ("novel/mask_iou", "mask IoU"), ("novel/depth_rel_err", "depth rel. err"),
           ("geometry/chamfer", "Chamfer"), ("geometry/on_surface", "on-surface share"),
           ("collapse/color_spread_ratio", "colour spread")]


def _quoted(value: str) -> str:
    """A path as a hydra override value: quoted, so shard patterns like ``mouse-{000000..000007}.tar`` pass."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _overrides(args, arm: str, seed: int, run_root: str, steps: int, phase: str, shards: str, init: str | None):
    return [f"phase={phase}", f"model={args.model}", f"init_from={_quoted(init) if init else 'null'}", f"seed={seed}",
            f"run_root={_quoted(run_root)}", f"data.shards={_quoted(shards)}", f"eval.shards={_quoted(args.mouse_heldout)}",
            f"eval.max_samples={args.eval_samples}", f"data.resolution={args.resolution}",
            f"data.num_workers={args.workers}", f"data.batch_size={args.batch}",
            f"data.view_sampling.num_views={2 * args.inputs}", f"data.view_sampling.num_input_views={args.inputs}",
            f"train.steps={steps}", f"train.eval_every={args.eval_every}", "train.log_every=50",
            "train.image_every=0", f"train.ckpt_every={steps}", "train.tensorboard=false",
            f"optim.lr={args.lr}", f"optim.warmup_steps={args.warmup}", f"device={args.device}",
            *ARMS[arm], *args.override]


def run_one(args) -> dict:
    """One (arm, seed): train, score held-out mice along the way and held-out objects at the end."""
    from omegaconf import OmegaConf
    from PIL import Image

    from mousefacelift.config import compose
    from train.run import run_phase
    from train.trainer import Trainer

    arm, seed = args.one, args.seed
    root = Path(args.out) / f"{arm}_seed{seed}"
    t0 = time.time()
    init = None
    if arm == "pretrain":
        if not args.objects_train:
            raise SystemExit("error: arm 'pretrain' needs --objects-train")
        run_phase(compose("train", _overrides(args, "rgb", seed, str(root), args.pretrain_steps, "pretrain",
                                              args.objects_train, None)
                          + ["train.eval_every=0"]))
        init = str(root / "pretrain" / "checkpoints" / "last.pt")
    cfg = compose("train", _overrides(args, arm, seed, str(root), args.steps, "synthetic", args.mouse_train, init))
    summary = run_phase(cfg)
    result = {"arm": arm, "seed": seed, "curve": summary["eval_history"], "seconds": time.time() - t0}
    final = str(root / "synthetic" / "checkpoints" / "last.pt")
    for name, shards in (("mice", args.mouse_heldout), ("objects", args.objects_heldout)):
        if not shards:
            continue
        # the final weights again, for the picture (and, on held-out objects: is the 3D prior kept?)
        ecfg = compose("train", _overrides(args, arm, seed, str(root / "final"), args.steps, "synthetic",
                                           args.mouse_train, final) + [f"eval.shards={_quoted(shards)}"])
        OmegaConf.resolve(ecfg)
        tr = Trainer(ecfg)
        try:
            metrics = tr.run_eval()
            if name == "mice":
                result["coat"] = coat_luma(tr)
            if tr.last_panel is not None:
                panel = np.asarray(tr.last_panel, np.float32)        # rows: inputs, truth, render, depths
                Image.fromarray((panel.clip(0, 1) * 255).round().astype(np.uint8)).save(
                    Path(args.out) / f"{arm}_seed{seed}_{name}.png")
        finally:
            tr.close()
        if name == "objects":
            result["objects"] = metrics
    return result


def coat_luma(trainer) -> dict[str, list[float]]:
    """Mean luminance inside the true mask of each held-out sample's novel views, truth and
    prediction: does a black mouse come out dark and a white one light, or all grey?"""
    import torch

    from train.evaluate import eval_batches

    task, nin, out = trainer.task, trainer.task.num_inputs, {"true": [], "pred": []}
    w = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    trainer.model.eval()
    with torch.no_grad():
        for batch in eval_batches(task, trainer.eval_set, 1, trainer.device):
            pred = task.forward(trainer.model, batch).render.rgb[0, nin:].cpu()
            true, mask = batch["rgb"][0, nin:].cpu(), batch["alpha"][0, nin:].cpu() > 0.5
            if int(mask.sum()) == 0:
                continue
            m = mask[:, 0]
            out["true"].append(float((true * w).sum(1)[m].mean()))
            out["pred"].append(float((pred * w).sum(1)[m].mean()))
    return out


def coat_summary(coat: dict | None) -> dict[str, float]:
    """Pearson r of predicted vs true coat luminance, and the predicted luminance of the darkest
    and lightest thirds of the held-out mice (by true luminance) beside their truth."""
    if not coat or len(coat["true"]) < 3:
        return {}
    t, p = np.asarray(coat["true"]), np.asarray(coat["pred"])
    order = np.argsort(t)
    k = max(1, len(t) // 3)
    dark, light = order[:k], order[-k:]
    r = float(np.corrcoef(t, p)[0, 1]) if t.std() > 0 and p.std() > 0 else float("nan")
    return {"coat/r": r, "coat/dark_true": float(t[dark].mean()), "coat/dark_pred": float(p[dark].mean()),
            "coat/light_true": float(t[light].mean()), "coat/light_pred": float(p[light].mean())}


def _fmt(values: list[float]) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{np.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})"


def table(results: list[dict], title: str, pick) -> list[str]:
    lines = [f"**{title}**", "", "| arm | step | " + " | ".join(c for _, c in COLUMNS) + " |",
             "| --- | ---: |" + " ---: |" * len(COLUMNS)]
    arms = list(dict.fromkeys(r["arm"] for r in results))
    for arm in arms:
        runs = [r for r in results if r["arm"] == arm]
        rows = [pick(r) for r in runs]
        rows = [x for x in rows if x]
        if not rows:
            continue
        step = rows[0].get("step", "")
        lines.append(f"| {arm} | {step} | " + " | ".join(_fmt([x.get(k) for x in rows]) for k, _ in COLUMNS) + " |")
    return lines


def baseline_lines(results: list[dict]) -> list[str]:
    first = next((r["curve"][0] for r in results if r["curve"]), None)
    if not first:
        return []
    return [f"held-out mean image (baseline): masked PSNR {first.get('baseline/novel_psnr', float('nan')):.3f} dB, "
            f"SSIM {first.get('baseline/novel_ssim', float('nan')):.3f}, "
            f"mask IoU {first.get('baseline/novel_mask_iou', float('nan')):.3f}"]


def draw_curves(results: list[dict], path: Path, keys=(("novel/psnr", "novel masked PSNR (dB)"),
                                                        ("novel/mask_iou", "novel mask IoU"),
                                                        ("geometry/on_surface", "on-surface share"))) -> None:
    """Learning curves, one panel per metric, one colour per arm, one line per seed (PIL only)."""
    from PIL import Image, ImageDraw

    W, H, pad = 420, 300, 44
    img = Image.new("RGB", (W * len(keys), H + 40), "white")
    d = ImageDraw.Draw(img)
    palette = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    arms = list(dict.fromkeys(r["arm"] for r in results))
    for p, (key, label) in enumerate(keys):
        x0 = p * W
        pts = [(c["step"], c[key]) for r in results for c in r["curve"] if np.isfinite(c.get(key, np.nan))]
        if not pts:
            continue
        smax = max(s for s, _ in pts) or 1
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        if "baseline/novel_psnr" in results[0]["curve"][0] and key == "novel/psnr":
            base = results[0]["curve"][0]["baseline/novel_psnr"]
            lo, hi = min(lo, base), max(hi, base)
        else:
            base = None
        hi = hi if hi > lo else lo + 1
        sx = lambda s: x0 + pad + (W - 2 * pad) * s / smax                      # noqa: E731
        sy = lambda v: H - pad + 20 - (H - 2 * pad) * (v - lo) / (hi - lo)     # noqa: E731
        d.rectangle([x0 + pad, 20 + pad, x0 + W - pad, H - pad + 20], outline=(160, 160, 160))
        d.text((x0 + pad, 6), label, fill="black")
        d.text((x0 + 2, sy(hi) - 6), f"{hi:.2f}", fill="black")
        d.text((x0 + 2, sy(lo) - 6), f"{lo:.2f}", fill="black")
        d.text((x0 + W - pad - 30, H - pad + 24), f"{smax}", fill="black")
        if base is not None:
            d.line([sx(0), sy(base), sx(smax), sy(base)], fill=(120, 120, 120), width=1)
            d.text((sx(0) + 4, sy(base) - 12), "mean image", fill=(120, 120, 120))
        for r in results:
            col = palette[arms.index(r["arm"]) % len(palette)]
            xy = [(sx(c["step"]), sy(c[key])) for c in r["curve"] if np.isfinite(c.get(key, np.nan))]
            if len(xy) > 1:
                d.line(xy, fill=col, width=2)
    for i, arm in enumerate(arms):
        d.line([10 + 110 * i, H + 27, 30 + 110 * i, H + 27], fill=palette[i % len(palette)], width=3)
        d.text((34 + 110 * i, H + 20), arm, fill="black")
    img.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mouse-train", required=True)
    ap.add_argument("--mouse-heldout", required=True)
    ap.add_argument("--objects-train", default=None, help="object shards for the pretrain arm")
    ap.add_argument("--objects-heldout", default=None, help="held-out object shards: forgetting score")
    ap.add_argument("--arms", nargs="+", default=["rgb", "both"], choices=sorted(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--pretrain-steps", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--model", default="small")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--inputs", type=int, default=4, help="input views; as many novel views are supervised")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1, help="data loader workers per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run on CPU (default cores/jobs)")
    ap.add_argument("--override", nargs="*", default=[], help="extra train.run overrides for every run")
    ap.add_argument("--out", default="runs/depth_question")
    ap.add_argument("--table-only", action="store_true", help="only tabulate the runs already finished in --out")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.one:                                               # a child: one run
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        Path(args.json).write_text(json.dumps(run_one(args), default=float))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    jobs = [(arm, seed) for arm in args.arms for seed in args.seeds]
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs)) if args.device == "cpu" else None
    pending, running, results = list(jobs), [], []
    t0 = time.time()
    base_argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    while pending or running:
        while pending and len(running) < args.jobs:
            arm, seed = pending.pop(0)
            js = out / f"{arm}_seed{seed}.json"
            if js.exists() or args.table_only:                 # finished earlier: re-running resumes the table
                if js.exists():
                    results.append(json.loads(js.read_text()))
                continue
            env = dict(os.environ)
            if threads:
                env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            log_path = out / f"{arm}_seed{seed}.log"
            cmd = [sys.executable, __file__, *base_argv, "--one", arm, "--seed", str(seed), "--json", str(js)]
            proc = subprocess.Popen(cmd, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
            logging.info("started %s seed %d (log %s)", arm, seed, log_path)
            running.append((arm, seed, js, proc))
        time.sleep(2)
        for item in list(running):
            arm, seed, js, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0 or not js.exists():
                logging.error("%s seed %d failed (exit %s): see %s", arm, seed, proc.returncode,
                              out / f"{arm}_seed{seed}.log")
                continue
            results.append(json.loads(js.read_text()))
            logging.info("finished %s seed %d in %.0f s", arm, seed, results[-1]["seconds"])
    results.sort(key=lambda r: (args.arms.index(r["arm"]), r["seed"]))
    if not results:
        print("error: no run finished", file=sys.stderr)
        return 1
    lines = [f"{args.model} at {args.resolution}², {args.inputs} input + {args.inputs} novel views, "
             f"{args.steps} steps, lr {args.lr}, seeds {args.seeds}, {args.eval_samples} held-out samples; "
             f"{time.time() - t0:.0f} s wall", ""]
    lines += baseline_lines(results) + [""]
    lines += table(results, "held-out mice, novel views, step 0 (untrained)", lambda r: r["curve"][0] if r["curve"] else None)
    lines += [""] + table(results, "held-out mice, novel views, final", lambda r: r["curve"][-1] if r["curve"] else None)
    lines += ["", "**coat colour, held-out mice (mean luminance inside the true mask, novel views, final)**", "",
              "| arm | r (pred vs true) | darkest third: true / pred | lightest third: true / pred |",
              "| --- | ---: | ---: | ---: |"]
    for arm in dict.fromkeys(r["arm"] for r in results):
        cs = [coat_summary(r.get("coat")) for r in results if r["arm"] == arm]
        cs = [c for c in cs if c]
        if cs:
            g = lambda k: _fmt([c[k] for c in cs])      # noqa: E731
            lines.append(f"| {arm} | {g('coat/r')} | {g('coat/dark_true')} / {g('coat/dark_pred')} | "
                         f"{g('coat/light_true')} / {g('coat/light_pred')} |")
    if any("objects" in r for r in results):
        lines += [""] + table(results, "held-out objects, novel views, final weights", lambda r: r.get("objects"))
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    draw_curves(results, out / "curves.png")
    print(f"\nwrote {out / 'table.md'}, {out / 'results.json'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
