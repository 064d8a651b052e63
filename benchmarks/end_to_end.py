"""One rendered view -> a 3D mouse, scored at held-out cameras: how good is the whole chain, and
how much of its error is stage 1's?

Held-out synthetic mice (poses, coats and lighting the training never saw) rendered twice with
the same seed: ``rig=mvinput`` (view 0 = the input photo, views 1..6 = the true target views)
and ``rig=sphere32`` (32 cameras with depth, none of them the input: where everything is
scored). The two renders hold the same mice (the pose, coat and lighting draws do not depend on
the rig); every pair is checked by its pose parameters. Arms, each through the command's own
functions (:mod:`mousefacelift.reconstruct`: framing, stage 1, stage 2, clean-up):

- ``a_true_views``: stage 2 from the TRUE target views and cameras (stage 1 perfect);
- ``b_full_chain``: the input view as a photo (its alpha, no camera: elevation and field of
  view estimated) -> framing -> stage 1 -> stage 2, as ``python -m mousefacelift.reconstruct``;
- ``b_true_camera`` (``--true-camera``): the same with the input's true elevation and field of view;
- ``c_extruded``: a trivial baseline, the input silhouette extruded: each foreground pixel of
  the input view becomes a stack of Gaussians along its ray through +-``--thickness`` body
  lengths around the origin's depth, with the pixel's colour, at the TRUE input camera.

Scored at the 32 cameras (the stage-1 frame has the input camera at azimuth 0, so the truth
is turned by minus the input azimuth about world up): masked PSNR / SSIM over the union of true
and rendered foreground, mask IoU, relative depth error (an uncovered true pixel counts 1),
Chamfer distance of the opacity-filtered Gaussian centres (opacity > 0.05) to the true surface
(unprojected from the 32 depth maps) and the share of them within 0.05 body lengths of it
(``train/metrics.py``). Stage 1's own figures (the generated views against the true targets,
``train/tasks/mvdiffusion/metrics.py``) are listed beside them.

Stage 1's share of the gap, per metric with an error E (masked MSE, 1 - SSIM, 1 - IoU, depth
error, Chamfer; a perfect reconstruction has E = 0): (E_b - E_a) / E_b, the part of the full
chain's error that disappears when stage 1 is replaced by the truth.

``--real SHARDS`` scores a ``source=real`` test split the same way without depth: view 0 of
each sample is the input, the other views are scored (full chain and baseline; real captures
have no true target views).

    python -m synth.render --poses 64 --quality preview --resolution 64 --rig mvinput --model mammal \\
        --out OUT/mv/heldout seed=1
    python -m synth.render --poses 64 --quality preview --resolution 64 --rig sphere32 --model mammal \\
        --out OUT/e2e/sphere32 seed=1
    python benchmarks/end_to_end.py --mv-shards OUT/mv/heldout --eval-shards OUT/e2e/sphere32 \\
        --lrm runs/synthetic/checkpoints/last.pt --mv runs/mvdiffusion/pipeline --out runs/end_to_end

``--calibrate SHARDS`` prints the silhouette reach of rendered ``mvinput`` inputs, the median of
which is ``photo.body_reach`` in configs/reconstruct.yaml.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mousefacelift.cameras import orbit_angles, relative_targets, stack_cameras  # noqa: E402
from mousefacelift.gaussians import Gaussians, rgb_to_sh0  # noqa: E402
from mousefacelift.inference import render_views, turntable_frames  # noqa: E402
from mousefacelift.photo import frame_photo, silhouette_reach  # noqa: E402
from mousefacelift.reconstruct import (clean_gaussians, generate_views, lift, load_config, load_lrm,  # noqa: E402
                                       load_mv, views_sheet)
from mousefacelift.shards import MultiViewSample, iter_shard, resolve_shards  # noqa: E402
from mousefacelift.turntable import write_video  # noqa: E402
from train.metrics import (depth_rel_error, mask_iou, masked_psnr, masked_ssim, surface_agreement,  # noqa: E402
                           surface_points)
from train.tasks.mvdiffusion.metrics import view_metrics  # noqa: E402

log = logging.getLogger("end_to_end")

ARMS = {"a_true_views": "(a) stage 2 from the true views", "b_full_chain": "(b) full chain, camera estimated",
        "b_true_camera": "(b') full chain, true input camera", "c_extruded": "(c) extruded silhouette"}
COLUMNS = [("psnr_masked", "PSNR masked (dB)"), ("ssim_masked", "SSIM masked"), ("mask_iou", "mask IoU"),
           ("depth_rel_err", "depth rel. err"), ("chamfer", "Chamfer"), ("on_surface", "on-surface share")]
SURFACE_EPS = 0.05         # configs/train.yaml eval.surface_eps


def samples(spec) -> list[MultiViewSample]:
    return [MultiViewSample.decode(fields) for url in resolve_shards(spec) for fields in iter_shard(url)]


def pairs(mv_spec, eval_spec, n: int) -> list[tuple[MultiViewSample, MultiViewSample]]:
    """(mvinput sample, 32-view sample) of the same mice, checked by pose parameters."""
    evals = {s.key: s for s in samples(eval_spec)}
    out = []
    for s in samples(mv_spec):
        e = evals.get(s.key)
        if e is None:
            continue
        if not np.array_equal(s.arrays.get("pose"), e.arrays.get("pose")):
            raise SystemExit(f"{s.key}: the mvinput and evaluation renders hold different mice (pose differs); "
                             "render both with the same seed, body model and pose config")
        out.append((s, e))
        if len(out) == n:
            break
    if not out:
        raise SystemExit(f"no sample key of {mv_spec} is in {eval_spec}")
    return out


def turn_z(deg: float) -> torch.Tensor:
    """4x4 rotation about world up by ``deg``."""
    a = math.radians(deg)
    R = torch.eye(4)
    R[0, 0], R[0, 1], R[1, 0], R[1, 1] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    return R


def extruded(rgba: np.ndarray, K: torch.Tensor, c2w: torch.Tensor, thickness: float, layers: int) -> Gaussians:
    """The baseline: every pixel of the input (uint8 RGBA [H,W,4], camera K [3,3], c2w [4,4]) with
    alpha > 0 as ``layers`` Gaussians along its ray, planar depths spread over the origin's depth
    +- ``thickness``; each layer's opacity such that the stack covers as the pixel did."""
    from mousefacelift.cameras import camera_rays

    H, W = rgba.shape[:2]
    a = torch.from_numpy(rgba[..., 3]).float() / 255.0
    keep = a > 0.0
    o, d = camera_rays(K[None, None].float(), c2w[None, None].float(), H, W)      # [1,1,H,W,3]
    o, d = o[0, 0][keep], d[0, 0][keep]
    fwd = c2w[:3, 2].float()
    z0 = float(-(c2w[:3, 3].float() @ fwd))                                       # planar depth of the origin
    zs = torch.linspace(z0 - thickness, z0 + thickness, layers)
    dz = d @ fwd
    means = torch.cat([o + d * (z / dz)[:, None] for z in zs])
    scale = torch.cat([torch.full((len(o),), 0.6 * float(z) / float(K[0, 0])) for z in zs])
    op = (1.0 - (1.0 - a[keep].clamp(max=0.999)) ** (1.0 / layers)).repeat(layers)
    rgb = torch.from_numpy(rgba[..., :3]).float()[keep] / 255.0
    n = len(means)
    return Gaussians(means=means[None], scales=scale[:, None].expand(n, 3)[None].contiguous(),
                     rotations=torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4).contiguous(),
                     opacities=op[None, :, None], sh=rgb_to_sh0(rgb.repeat(layers, 1))[None, :, None])


def score(g: Gaussians, truth: dict, K: torch.Tensor, c2w: torch.Tensor, background) -> dict[str, float]:
    """Every figure of one reconstruction at the scoring cameras (truth: rgb on ``background``,
    alpha, optional depth and surface points)."""
    H, W = truth["alpha"].shape[-2:]
    with torch.no_grad():
        r = render_views(g, K[None], c2w[None], H, W, background=background)
    pr, pa = r.rgb[0].clamp(0, 1), r.alpha[0]
    out = {"psnr_masked": masked_psnr(pr, truth["rgb"], truth["alpha"], pa),
           "ssim_masked": masked_ssim(pr, truth["rgb"], truth["alpha"], pa),
           "mask_iou": mask_iou(pa, truth["alpha"])}
    out = {k: float(v[torch.isfinite(v)].mean()) for k, v in out.items()}
    err = ((pr - truth["rgb"]) ** 2 * ((truth["alpha"] > 0.5) | (pa > 0.5))).sum() / (
        3 * ((truth["alpha"] > 0.5) | (pa > 0.5)).sum().clamp_min(1))
    out["mse_masked"] = float(err)
    if truth.get("depth") is not None:
        out["depth_rel_err"] = float(depth_rel_error(r.depth[0], truth["depth"]).mean())
        geo = surface_agreement(g.means[0], g.opacities[0], truth["surface"], SURFACE_EPS)
        out.update({k: float(v) for k, v in geo.items()})
    return out


def truth_of(sample: MultiViewSample, turn: torch.Tensor, background, views=None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    t = sample.to_tensors()
    idx = list(range(sample.num_views)) if views is None else list(views)
    bg = torch.tensor(list(background)).view(3, 1, 1)
    rgb, alpha = t["rgb"][idx], t["alpha"][idx]
    K, c2w = t["K"][idx], turn @ t["c2w"][idx]
    truth = {"rgb": rgb * alpha + bg * (1 - alpha), "alpha": alpha}
    if "depth" in t:
        truth["depth"] = t["depth"][idx]
        truth["surface"] = surface_points(truth["depth"], K, c2w)
    return truth, K, c2w


def run(args) -> dict:
    cfg = load_config(args.set)
    device = torch.device(args.device)
    sampling = dataclasses.replace(cfg.sampling, steps=args.steps or cfg.sampling.steps,
                                   guidance=cfg.sampling.guidance if args.guidance is None else args.guidance,
                                   seed=args.seed)
    lrm, lrm_rec = load_lrm(args.lrm, device)
    pipe, mv_rec = load_mv(args.mv, device)
    size = int(pipe.unet.config.image_size)
    layout = pipe.target_layout
    target_cams = relative_targets(0.0, layout, size)
    bg = cfg.background
    arms = ["a_true_views", "b_full_chain"] + (["b_true_camera"] if args.true_camera else []) + ["c_extruded"]
    per: dict[str, list[dict]] = {a: [] for a in arms}
    stage1: list[dict] = []
    camera_err: list[tuple[float, float]] = []
    times = {"stage1_s": 0.0, "stage2_s": 0.0, "score_s": 0.0}
    figure = None
    data = pairs(args.mv_shards, args.eval_shards, args.samples)
    log.info("%d held-out mice; stage 1 %s (%d steps, guidance %.1f), stage 2 %s", len(data), mv_rec["model"],
             sampling.steps, sampling.guidance, lrm_rec["model"])
    t_all = time.time()
    for i, (mv, ev) in enumerate(data):
        in_cam = mv.cameras[0]
        az, el, _ = orbit_angles(in_cam)
        turn = turn_z(-az)
        truth, K, c2w = truth_of(ev, turn, bg)
        recon: dict[str, Gaussians] = {}
        t = time.time()
        tv = mv.rgba[1:]
        recon["a_true_views"] = clean_gaussians(lift(lrm, tv, target_cams, bg, device, cfg.precision,
                                                     cfg.lrm_resolution)[0], cfg.cleanup)[0]
        times["stage2_s"] += time.time() - t
        photo = mv.rgba[0]
        alpha = photo[..., 3].astype(np.float32) / 255.0
        fov_true = math.degrees(2 * math.atan(in_cam.width / 2 / in_cam.fx))
        variants = [("b_full_chain", None, None)] + ([("b_true_camera", el, fov_true)] if args.true_camera else [])
        for arm, elev, fov in variants:
            t = time.time()
            framed = frame_photo(photo[..., :3], alpha, size, cfg.photo, fov, where=mv.key)
            views, cams, (el_used, fov_used) = generate_views(pipe, framed.rgba, elev, framed.fov_deg, sampling,
                                                              device, cfg.precision, progress=False)
            times["stage1_s"] += time.time() - t
            t = time.time()
            g = clean_gaussians(lift(lrm, views, cams, bg, device, cfg.precision, cfg.lrm_resolution)[0],
                                cfg.cleanup)[0]
            times["stage2_s"] += time.time() - t
            recon[arm] = g
            if arm == "b_full_chain":
                true_views = torch.from_numpy(mv.rgba[1:]).permute(0, 3, 1, 2).float()[None] / 255.0
                gen = torch.from_numpy(views).permute(0, 3, 1, 2).float()[None] / 255.0
                stage1.append({k: float(v[torch.isfinite(v)].mean()) for k, v in view_metrics(gen, true_views).items()})
                # the framed input's true field of view: the input's, scaled by the framing's zoom
                fov_framed_true = math.degrees(2 * math.atan(math.tan(math.radians(fov_true) / 2)
                                                             / framed.info["scale"] * size / in_cam.width))
                camera_err.append((abs(el_used - el), abs(fov_used - fov_framed_true)))
                if figure is None:
                    figure = (mv.key, framed.rgba, views, g, recon["a_true_views"])
        K0 = torch.from_numpy(in_cam.K).float()
        c2w0 = turn @ torch.from_numpy(in_cam.c2w).float()
        recon["c_extruded"] = extruded(photo, K0, c2w0, args.thickness, args.layers)
        t = time.time()
        for arm in arms:
            per[arm].append(score(recon[arm].to(device), {k: v.to(device) for k, v in truth.items()},
                                  K.to(device), c2w.to(device), bg))
        times["score_s"] += time.time() - t
        log.info("%d/%d %s: %s", i + 1, len(data), mv.key,
                 ", ".join(f"{a} {per[a][-1]['psnr_masked']:.2f} dB" for a in arms))
    seconds = time.time() - t_all

    def mean(rows, key):
        vals = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        return float(np.mean(vals)) if vals else float("nan")

    summary = {a: {k: mean(per[a], k) for k in [c for c, _ in COLUMNS] + ["mse_masked"]} for a in arms}
    errors = {"mse_masked": lambda s: s["mse_masked"], "ssim_masked": lambda s: 1 - s["ssim_masked"],
              "mask_iou": lambda s: 1 - s["mask_iou"], "depth_rel_err": lambda s: s["depth_rel_err"],
              "chamfer": lambda s: s["chamfer"]}
    share = {k: (f(summary["b_full_chain"]) - f(summary["a_true_views"])) / f(summary["b_full_chain"])
             for k, f in errors.items()}
    result = {"samples": len(data), "seconds": seconds, "times_s": times, "arms": summary, "stage1_share": share,
              "stage1_views": {k: mean(stage1, k) for k in ("psnr_masked", "ssim_masked", "mask_iou")},
              "input_camera_err_deg": {"elevation": float(np.mean([e for e, _ in camera_err])),
                                       "fov": float(np.mean([f for _, f in camera_err]))},
              "per_sample": per, "checkpoints": {"lrm": lrm_rec, "mv": mv_rec},
              "settings": {"steps": sampling.steps, "guidance": sampling.guidance, "seed": sampling.seed,
                           "thickness": args.thickness, "layers": args.layers, "device": str(device)}}
    if args.real:
        result["real"] = run_real(args, cfg, lrm, pipe, sampling, device)
    write_figures(args, cfg, figure, target_cams)
    return result


def run_real(args, cfg, lrm, pipe, sampling, device) -> dict:
    """Full chain and baseline on a real test split: view 0 in, the other views scored (no depth)."""
    size = int(pipe.unet.config.image_size)
    per = {"b_full_chain": [], "c_extruded": []}
    for s in samples(args.real)[:args.samples]:
        if s.meta.get("source") != "real":
            raise SystemExit(f"--real {args.real}: sample {s.key} is source={s.meta.get('source')!r}, expected real")
        az, _, _ = orbit_angles(s.cameras[0])
        turn = turn_z(-az)
        truth, K, c2w = truth_of(s, turn, cfg.background, range(1, s.num_views))
        photo = s.rgba[0]
        framed = frame_photo(photo[..., :3], photo[..., 3].astype(np.float32) / 255.0, size, cfg.photo, None,
                             where=s.key)
        views, cams, _ = generate_views(pipe, framed.rgba, None, None, sampling, device, cfg.precision, False)
        g = clean_gaussians(lift(lrm, views, cams, cfg.background, device, cfg.precision, cfg.lrm_resolution)[0],
                            cfg.cleanup)[0]
        base = extruded(photo, torch.from_numpy(s.cameras[0].K).float(),
                        turn @ torch.from_numpy(s.cameras[0].c2w).float(), args.thickness, args.layers)
        for arm, rec in (("b_full_chain", g), ("c_extruded", base)):
            per[arm].append(score(rec, truth, K, c2w, cfg.background))
    return {a: {k: float(np.nanmean([r[k] for r in rows])) for k in ("psnr_masked", "ssim_masked", "mask_iou")}
            for a, rows in per.items() if rows}


def write_figures(args, cfg, figure, target_cams) -> None:
    """The first mouse's full-chain sheet, and a small turntable GIF: stage 2 from the true views
    (left) beside the full chain (right) (``--figures DIR``)."""
    if figure is None or not args.figures:
        return
    key, framed, views, g, g_true = figure
    folder = Path(args.figures)
    folder.mkdir(parents=True, exist_ok=True)
    from mousefacelift.viz import save_png

    K, c2w = stack_cameras(target_cams)
    H = target_cams[0].height
    with torch.no_grad():
        r = render_views(g.to("cpu"), K[None], c2w[None], H, H, background=cfg.background)
    renders = np.clip(np.rint(r.rgb[0].clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)
    inp = np.clip(np.rint(framed.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    save_png(folder / "end_to_end_sheet.png", views_sheet(views, renders, 64, inp, title=f"held-out {key}"))
    spin = [turntable_frames(x.to("cpu"), frames=24, size=96, elevation_deg=20.0, radius=2.7, fov_deg=45.0,
                             background=cfg.background)
            for x in (g_true, g)]
    write_video(np.concatenate(spin, axis=2), folder / "end_to_end_turntable.gif", fps=12)


def table(result: dict) -> str:
    arms = list(result["arms"])
    rows = ["| arm | " + " | ".join(label for _, label in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for a in arms:
        s = result["arms"][a]
        rows.append(f"| {ARMS[a]} | " + " | ".join(f"{s[k]:.3f}" if k != "psnr_masked" else f"{s[k]:.2f}"
                                                   for k, _ in COLUMNS) + " |")
    share = result["stage1_share"]
    lines = ["\n".join(rows), "",
             "stage 1's share of the full chain's error ((E_b - E_a) / E_b): " + ", ".join(
                 f"{k} {100 * v:.0f} %" for k, v in share.items()),
             "stage 1's views vs the true targets: PSNR masked {psnr_masked:.2f} dB, SSIM {ssim_masked:.3f}, "
             "mask IoU {mask_iou:.3f}".format(**result["stage1_views"]),
             "input camera estimate, mean abs error: elevation {elevation:.1f} deg, fov {fov:.1f} deg".format(
                 **result["input_camera_err_deg"])]
    if "real" in result:
        lines.append("real test split: " + "; ".join(f"{ARMS[a]} PSNR {s['psnr_masked']:.2f} dB, SSIM "
                                                     f"{s['ssim_masked']:.3f}, IoU {s['mask_iou']:.3f}"
                                                     for a, s in result["real"].items()))
    return "\n".join(lines)


def calibrate(spec) -> None:
    cfg = load_config().photo
    reach = np.array([silhouette_reach(s.rgba[0, ..., 3] / 255.0, cfg.body_radius_fraction) for s in samples(spec)])
    reach = reach[np.isfinite(reach)]
    print(f"{len(reach)} rendered inputs: silhouette reach median {np.median(reach):.3f}, 10-90 %: "
          f"{np.percentile(reach, 10):.3f}-{np.percentile(reach, 90):.3f} (photo.body_reach is {cfg.body_reach})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mv-shards", help="held-out rig=mvinput shards (input + true targets)")
    ap.add_argument("--eval-shards", help="the same mice rendered with rig=sphere32 (scoring cameras, depth)")
    ap.add_argument("--lrm", help="stage-2 GS-LRM checkpoint")
    ap.add_argument("--mv", help="stage-1 pipeline folder")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: configs/reconstruct.yaml)")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--true-camera", action="store_true", help="add the arm with the true input elevation and fov")
    ap.add_argument("--thickness", type=float, default=0.2, help="baseline: half depth of the extrusion (body lengths)")
    ap.add_argument("--layers", type=int, default=5, help="baseline: Gaussians per pixel along its ray")
    ap.add_argument("--real", default=None, help="a source=real test split to score as well")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a configs/reconstruct.yaml override (repeat for several)")
    ap.add_argument("--figures", default=None, help="write the first mouse's sheet and turntable GIF here")
    ap.add_argument("--calibrate", default=None, metavar="SHARDS", help="print the silhouette reach of rendered "
                                                                         "mvinput inputs and exit")
    ap.add_argument("--out", default="runs/end_to_end")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.calibrate:
        calibrate(args.calibrate)
        return 0
    if not (args.mv_shards and args.eval_shards and args.lrm and args.mv):
        ap.error("give --mv-shards, --eval-shards, --lrm and --mv (or --calibrate SHARDS)")
    torch.manual_seed(args.seed)
    result = run(args)
    text = table(result)
    print(text)
    print(f"{result['samples']} mice in {result['seconds'] / 60:.1f} min ({json.dumps(result['times_s'])})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), **result}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
