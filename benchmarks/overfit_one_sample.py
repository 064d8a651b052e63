"""Proof that the model + renderer + losses learn: the tiny GS-LRM overfits ONE mouse sample.

Data: by default a sample built here without Blender: the procedural mouse
(``load_body_model("procedural")`` + ``PoseSampler``) normalised into [-1,1]^3 and rasterized
with ``mousefacelift.meshraster`` into a ring of views, shaded with per-region albedo and a
headlight Lambert term (so there is texture and shading to fit), with exact planar depth.
``--shards DIR`` uses the first sample of a rendered shard instead (e.g. from
``python -m synth.render --poses 1 --quality preview --out OUT``).

Prints the curve (step, loss, masked PSNR, whole PSNR, mask IoU, seconds) and a final
table; masked PSNR is over the union of true and predicted foreground (train.metrics).

    python benchmarks/overfit_one_sample.py --minutes 5
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mousefacelift.cameras import make_rig, stack_cameras  # noqa: E402
from mousefacelift.inference import predict  # noqa: E402
from mousefacelift.models import build_model, load_preset  # noqa: E402
from train.metrics import mask_iou, masked_psnr, psnr  # noqa: E402
from train.schedule import lr_factor  # noqa: E402
from train.tasks.gslrm.losses import LossConfig, compute_losses  # noqa: E402

log = logging.getLogger("overfit")
SUPERSAMPLE = 3
REGION_ALBEDO = {"fur": (0.55, 0.42, 0.30), "ear_skin": (0.85, 0.55, 0.55), "paw_skin": (0.9, 0.65, 0.6),
                 "tail_skin": (0.8, 0.6, 0.55), "nose_skin": (0.9, 0.5, 0.55), "eye": (0.05, 0.05, 0.05)}


def procedural_sample(size: int, views: int, seed: int, fov_deg: float):
    """rgb [V,3,H,W] (straight), alpha [V,1,H,W], depth [V,1,H,W], K, c2w from meshraster."""
    from mousefacelift.body import PoseSampler, load_body_model
    from mousefacelift.meshraster import face_normals, rasterize
    model = load_body_model("procedural")
    batch = PoseSampler(model).sample(indices=np.arange(1), seed=seed)
    verts = np.asarray(model.pose(batch.params).vertices[0], dtype=np.float64)
    lo, hi = verts.min(0), verts.max(0)
    verts = (verts - (lo + hi) / 2) * (1.6 / (hi - lo).max())        # into [-0.8, 0.8]^3
    faces = np.asarray(model.faces)
    names = list(model.region_names)
    albedo = np.array([REGION_ALBEDO.get(n, (0.6, 0.6, 0.6)) for n in names])[np.asarray(model.face_regions)]
    # a little fur texture: darker dorsal stripe and lighter belly, so colour varies spatially
    centres = verts[faces].mean(1)
    albedo = albedo * (0.75 + 0.5 * np.clip(0.5 - centres[:, 2:3], 0, 1))
    normals = face_normals(verts, faces)
    cams = make_rig(f"ring{views}", size=size, fov_deg=fov_deg)
    ss = SUPERSAMPLE          # render at ss x the size, then area-average: anti-aliased like Blender's output
    rgb, alpha, depth = [], [], []
    for cam in [c.resized(size * ss, size * ss) for c in cams]:
        d, fid, mask = rasterize(verts, faces, cam.K, cam.w2c, size * ss, size * ss)
        view_dir = verts[faces[np.maximum(fid, 0)]].mean(-2) - cam.center                 # [H,W,3]
        view_dir /= np.linalg.norm(view_dir, axis=-1, keepdims=True)
        shade = 0.35 + 0.65 * np.abs((normals[np.maximum(fid, 0)] * view_dir).sum(-1, keepdims=True))
        col = np.where(mask[..., None], albedo[np.maximum(fid, 0)] * shade, 0.0)
        rgb.append(col.transpose(2, 0, 1))
        alpha.append(mask[None].astype(np.float32))
        depth.append(d[None])
    K, c2w = stack_cameras(cams)
    t = lambda a: torch.tensor(np.stack(a), dtype=torch.float32)
    pool = lambda x: torch.nn.functional.avg_pool2d(x, ss)
    a = pool(t(alpha))
    straight = pool(t(rgb)) / a.clamp_min(1e-6)                      # straight colour, like RGBA PNGs
    d = t(depth)                                                      # depth: nearest valid sample per pixel
    dmin = -torch.nn.functional.max_pool2d(-torch.where(d > 0, d, torch.full_like(d, 1e9)), ss)
    d = torch.where(dmin < 1e8, dmin, torch.zeros_like(dmin))
    return straight.clamp(0, 1), a, d, K, c2w, f"procedural mouse via mousefacelift.meshraster ({ss}x supersampled)"


def shard_sample(shard_dir: str, size: int, views: int):
    from mousefacelift.shards import MultiViewSample, iter_shard, list_shards
    shards = list_shards(shard_dir)
    if not shards:
        raise SystemExit(f"--shards {shard_dir}: no shards found")
    fields = next(iter(iter_shard(shards[0])))
    s = MultiViewSample.decode(fields, where=str(shards[0])).to_tensors()
    idx = torch.linspace(0, s["rgb"].shape[0] - 1, views).round().long()
    rgb, alpha, depth, K = s["rgb"][idx], s["alpha"][idx], s["depth"][idx], s["K"][idx].clone()
    H = rgb.shape[-1]
    if H != size:
        f = lambda x: torch.nn.functional.interpolate(x, size=(size, size), mode="area")
        rgb, alpha = f(rgb), f(alpha)
        depth = torch.nn.functional.interpolate(depth, size=(size, size), mode="nearest")
        K[:, :2] *= size / H
    return rgb, alpha, depth, K, s["c2w"][idx], f"first sample of {shards[0]}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--views", type=int, default=6, help="supervised views (ring at elevation 20)")
    ap.add_argument("--inputs", type=int, default=3, help="input views (every views/inputs-th)")
    ap.add_argument("--fov", type=float, default=30.0,
                    help="field of view of the built sample (the rig default 50 leaves the mouse ~3%% of pixels)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override fields of the model preset (e.g. patch_size=4)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=0, help="linear LR warm-up steps, then cosine decay to --steps")
    ap.add_argument("--alpha-weight", type=float, default=0.5)
    ap.add_argument("--pointmap-weight", type=float, default=0.0,
                    help="weight of the gslrm task's pointmap_depth_loss on the input views (0 = off)")
    ap.add_argument("--minutes", type=float, default=5.0, help="stop after this wall time")
    ap.add_argument("--target-psnr", type=float, default=25.0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shards", default=None)
    ap.add_argument("--save", default=None, help="write the final prediction as .ply here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.shards:
        rgb, alpha, depth, K, c2w, source = shard_sample(args.shards, args.size, args.views)
    else:
        rgb, alpha, depth, K, c2w, source = procedural_sample(args.size, args.views, args.seed, args.fov)
    bg = torch.ones(1, 3)
    target = rgb * alpha + (1 - alpha)                     # composited on white, like train.data
    inp = torch.arange(0, args.views, args.views // args.inputs)[: args.inputs]
    batch = {"rgb": target[None], "alpha": alpha[None], "depth": depth[None], "has_depth": torch.ones(1),
             "K": K[None], "c2w": c2w[None], "background": bg,
             "input_c2w": c2w[None, inp], "input_depth": depth[None, inp], "input_alpha": alpha[None, inp]}
    overrides = {key: yaml.safe_load(value) for key, _, value in (kv.partition("=") for kv in args.set)}
    model = build_model({**load_preset(args.model), **overrides}, where=f"--model {args.model} --set")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.warmup, args.steps, 0.05)) \
        if args.warmup else None
    lcfg = LossConfig.from_yaml(alpha_weight=args.alpha_weight, depth_weight=0.1, pointmap_weight=args.pointmap_weight)
    print(f"# data: {source}; {args.views} views {args.size}px, inputs {inp.tolist()}, "
          f"foreground {float(alpha.mean()):.1%} of pixels")
    print(f"# model: {args.model} {' '.join(args.set)} ({model.num_parameters():,} params), "
          f"{args.inputs * args.size ** 2:,} Gaussians, lr {args.lr}, torch threads {args.threads}")
    print(f"{'step':>5} {'loss':>8} {'psnr_mask':>9} {'psnr':>7} {'iou':>6} {'sec':>7} {'cpu_s':>7}")
    t0, c0 = time.time(), time.process_time()   # wall and this process's CPU time (the CPU is shared)
    curve, reached = [], None
    for step in range(args.steps + 1):
        pred = predict(model, target[None, inp], K[None, inp], c2w[None, inp], batch["K"], batch["c2w"], background=bg)
        g, out = pred.gaussians, pred.render
        loss, parts = compute_losses(out, batch, lcfg, step, gaussians=g)
        with torch.no_grad():
            pm = float(masked_psnr(out.rgb, batch["rgb"], batch["alpha"], out.alpha).nanmean())
            pw = float(psnr(out.rgb, batch["rgb"]).mean())
            iou = float(mask_iou(out.alpha, batch["alpha"]).mean())
        el = time.time() - t0
        curve.append((step, float(loss.detach()), pm, pw, iou, el))
        if step % args.log_every == 0 or pm >= args.target_psnr:
            print(f"{step:5d} {float(loss.detach()):8.5f} {pm:9.2f} {pw:7.2f} {iou:6.3f} {el:7.1f} "
                  f"{time.process_time() - c0:7.1f}", flush=True)
        if reached is None and pm >= args.target_psnr:
            reached = (step, el)
            break
        if el > args.minutes * 60:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()
    best = max(curve, key=lambda r: r[2])
    print(f"\n| result | value |\n| --- | --- |\n| steps run | {curve[-1][0]} |\n| wall time | {curve[-1][5]:.0f} s |"
          f"\n| process CPU time | {time.process_time() - c0:.0f} s |"
          f"\n| first masked PSNR | {curve[0][2]:.2f} dB |\n| best masked PSNR | {best[2]:.2f} dB (step {best[0]}) |"
          f"\n| whole-image PSNR at best | {best[3]:.2f} dB |\n| mask IoU at best | {best[4]:.3f} |"
          f"\n| reached {args.target_psnr:.0f} dB | {'step %d after %.0f s' % reached if reached else 'no'} |")
    if args.save:
        print("saved", g.detach().save_ply(args.save))
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
