"""Cost of the lab-camera look (mousefacelift/labcamera.py) per input view, and its codec against real H.264.

Why: the look runs in the data loader, once per input view per step, so its cost is paid by
every training step; and the codec is a block-DCT model of H.264 rather than x264 itself. This
measures, on rendered input views (view 0 of ``mvinput`` shards, or analytic spheres):

- milliseconds per view for each op at the top of its configured range (each row includes the
  base every look pays: arena composite and the linear-light round trip), for the full chain,
  and for the looks configs/data/mv.yaml draws on average (views without a look included);
- the real H.264 round trip through the installed imageio-ffmpeg (libx264, one intra frame,
  constant QP, yuv420p, encode + decode as two ffmpeg processes), and the PSNR of both codecs
  against their input at the same QPs (colour and grey inputs).

torch runs on one thread, as in a DataLoader worker. ``--figure PATH`` also writes the contact
sheet: each view plain, after each op alone, after the full chain, and as the model sees it.

    python benchmarks/labcamera_cost.py --shards shards/mv --views 3 --figure docs/figures/labcamera_variants.png
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from mousefacelift import labcamera as lc
from mousefacelift.analytic import sphere_sample
from mousefacelift.shards import iter_shard, resolve_shards
from mousefacelift.shards.sample import MultiViewSample
from train.augment import composite, resize_views

ARENA = 0.35
TOP = {   # each op alone, at the top of configs/data/base.yaml's ranges
    "vignetting 0.5": lc.LabLook(ARENA, vignetting=(0.5, 0.0, 0.0)),
    "defocus r=2 px": lc.LabLook(ARENA, defocus_px=2.0),
    "motion 6 px": lc.LabLook(ARENA, motion=(6.0, 30.0)),
    "grey IR": lc.LabLook(ARENA, grey=(0.8 * 1.4, 0.1 * 1.4, 0.1 * 1.4), grey_mode="ir"),
    "noise + 8 bit": lc.LabLook(ARENA, noise=(0.01, 0.02), bits=8, noise_seed=1),
    "H.264-like QP 38 8x8": lc.LabLook(ARENA, compression=(38, 8)),
    "H.264-like QP 38 16x16": lc.LabLook(ARENA, compression=(38, 16)),
}
FULL = lc.LabLook(ARENA, vignetting=(0.5, 0.05, -0.05), defocus_px=1.5, motion=(6.0, 30.0),
                  grey=(0.8 * 1.4, 0.1 * 1.4, 0.1 * 1.4), grey_mode="ir", noise=(0.01, 0.02), bits=8,
                  compression=(34, 16), noise_seed=1)


def input_views(spec: str | None, count: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(straight rgb [3,S,S], alpha [1,S,S]) of view 0 of the first ``count`` samples."""
    if spec:
        samples = []
        for url in resolve_shards(spec):
            samples += [MultiViewSample.decode(raw, where=url) for raw in iter_shard(url)]
            if len(samples) >= count:
                break
    else:
        samples = [sphere_sample(f"sphere_{i:09d}", size=size, seed=i)
                   for i in range(count)]
    out = []
    for s in samples[:count]:
        t = s.to_tensors()
        rgb, alpha, _, _ = resize_views(t["rgb"][:1], t["alpha"][:1], None, t["K"][:1], size, size)
        out.append((rgb[0], alpha[0]))
    if not out:
        raise SystemExit(f"labcamera_cost: --shards {spec}: no samples")
    return out


def ms_per_view(fn, views, reps: int) -> float:
    """Median over ``reps`` rounds of the mean time per view of ``fn(rgb, alpha)``."""
    fn(*views[0])
    rounds = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for rgb, a in views:
            fn(rgb, a)
        rounds.append((time.perf_counter() - t0) / len(views) * 1e3)
    return statistics.median(rounds)


def x264(u8: np.ndarray, qp: int) -> np.ndarray:
    """uint8 RGB [H,W,3] through libx264 (one intra frame, constant QP, yuv420p) and back."""
    import imageio_ffmpeg
    ff = imageio_ffmpeg.get_ffmpeg_exe()
    H, W, _ = u8.shape
    enc = subprocess.run([ff, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-i", "-",
                          "-c:v", "libx264", "-preset", "veryfast", "-qp", str(qp), "-pix_fmt", "yuv420p",
                          "-f", "h264", "-"], input=u8.tobytes(), capture_output=True, check=True).stdout
    dec = subprocess.run([ff, "-loglevel", "error", "-f", "h264", "-i", "-", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         input=enc, capture_output=True, check=True).stdout
    return np.frombuffer(dec, np.uint8).reshape(H, W, 3)


def to_u8(img: torch.Tensor) -> np.ndarray:
    return np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


def contact_sheet(views, path: str, crop: int) -> None:
    """Plain vs each op vs the full chain; saved as a dithered 256-colour PNG (noise tiles make a full-colour
    sheet several times larger, and the lab look is mostly grey)."""
    from PIL import Image

    from mousefacelift.shards.atomic import atomic_file
    from mousefacelift.viz import image_grid

    black = torch.zeros(3)
    cols = ["plain (on black)", *TOP, "full chain", "model input"]
    tiles = []
    for rgb, a in views:
        row = [composite(rgb, a, black)] + [lc.apply_look(rgb, a, lk) for lk in TOP.values()]
        full = lc.apply_look(rgb, a, FULL)
        row += [full, composite(full, a, black)]
        S = rgb.shape[-1]
        o = (S - crop) // 2
        tiles.append([to_u8(t[:, o:o + crop, o:o + crop]) for t in row])
    sheet = image_grid(tiles, col_labels=cols,
                       title=f"lab-camera look, {crop}px centre crops of {views[0][0].shape[-1]}px input views "
                             f"(arena grey {ARENA}; full chain: vignetting, defocus 1.5, motion 6, IR, noise, QP 34 16x16)")
    with atomic_file(path) as f:
        img = Image.fromarray(sheet)
        palette = img.quantize(256)           # median cut; dithering applies only against a given palette
        img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(f, format="PNG", optimize=True)
    print(f"contact sheet: {path} ({sheet.shape[1]}x{sheet.shape[0]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", help="shard spec of mvinput renders (view 0 is used); default: analytic spheres")
    ap.add_argument("--views", type=int, default=3, help="input views measured")
    ap.add_argument("--size", type=int, default=256, help="view size (resized like the data loader)")
    ap.add_argument("--reps", type=int, default=15, help="timing rounds (median)")
    ap.add_argument("--x264-reps", type=int, default=3, help="timing rounds of the real H.264 round trip")
    ap.add_argument("--draws", type=int, default=200, help="looks drawn from configs/data/mv.yaml for the average")
    ap.add_argument("--figure", help="write the contact sheet PNG here")
    ap.add_argument("--crop", type=int, default=176, help="contact sheet: centre crop per tile (pixels)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    load0 = open("/proc/loadavg").read().split()[:3]
    views = input_views(a.shards, a.views, a.size)
    print(f"{len(views)} view(s) of {a.size}x{a.size}; torch {torch.__version__}, 1 thread; loadavg {' '.join(load0)}")

    rows = [("base: arena composite + sRGB/linear round trip", ms_per_view(lambda r, al: lc.apply_look(r, al, lc.LabLook(ARENA)),
                                                                          views, a.reps))]
    rows += [(name, ms_per_view(lambda r, al, lk=lk: lc.apply_look(r, al, lk), views, a.reps)) for name, lk in TOP.items()]
    rows.append(("full chain (all ops)", ms_per_view(lambda r, al: lc.apply_look(r, al, FULL), views, a.reps)))
    from mousefacelift.config import compose
    from train.data import data_config
    mv = data_config(compose("train", ["phase=mvdiffusion"]).data).augment.lab_camera
    rng = np.random.default_rng(0)
    stack_rgb = torch.stack([v[0] for v in views])
    stack_a = torch.stack([v[1] for v in views])
    t0, n = time.perf_counter(), 0
    while n < a.draws:
        lc.lab_camera_views(stack_rgb, stack_a, mv, rng)
        n += len(views)
    rows.append((f"drawn looks, data/mv.yaml (mean over {n} views)", (time.perf_counter() - t0) / n * 1e3))
    u8s = [to_u8(lc.apply_look(r, al, lc.LabLook(ARENA, noise=(0.002, 0.005), bits=8, noise_seed=2))) for r, al in views]
    t = []
    for _ in range(a.x264_reps):
        t0 = time.perf_counter()
        for u in u8s:
            x264(u, 30)
        t.append((time.perf_counter() - t0) / len(u8s) * 1e3)
    rows.append(("real H.264 (libx264 QP 30, ffmpeg encode + decode)", statistics.median(t)))
    print("\n| op (one view) | ms per view |\n| --- | ---: |")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")

    print("\n| QP | x264 PSNR colour | H.264-like 8x8 | 16x16 | x264 PSNR grey | H.264-like 8x8 | 16x16 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    greys = [to_u8(lc.apply_look(r, al, lc.LabLook(ARENA, grey=lc.LUMA, grey_mode="luma", noise=(0.002, 0.005), bits=8,
                                                   noise_seed=2))) for r, al in views]
    for qp in (18, 26, 34, 42):
        cells = []
        for imgs, mono in ((u8s, False), (greys, True)):
            x = [psnr(u, x264(u, qp)) for u in imgs]
            s8 = [psnr(u, to_u8(lc.compress(torch.from_numpy(u).permute(2, 0, 1).float() / 255, qp, 8, mono))) for u in imgs]
            s16 = [psnr(u, to_u8(lc.compress(torch.from_numpy(u).permute(2, 0, 1).float() / 255, qp, 16, mono))) for u in imgs]
            cells += [np.mean(x), np.mean(s8), np.mean(s16)]
        print(f"| {qp} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    print(f"\nloadavg before {' '.join(load0)}, after {' '.join(open('/proc/loadavg').read().split()[:3])}")
    if a.figure:
        contact_sheet(views, a.figure, min(a.crop, a.size))


if __name__ == "__main__":
    sys.exit(main())
