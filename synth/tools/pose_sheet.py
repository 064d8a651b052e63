"""Contact sheet of sampled poses: a quick CPU render so a person can judge them at a glance.

    python -m synth.pose_sheet --model procedural --n 24 --seed 0 --out shards/pose_sheet.png

Each tile is one pose (its index and behaviour family printed on it), drawn with the
numpy rasterizer from a camera that orbits with the tile number, shaded by face normal
and coloured by material region; a faint ground line shows z = 0.
"""
from __future__ import annotations

import argparse
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mousefacelift.body import PoseSampler, load_body_model, load_pose_config
from mousefacelift.meshraster import face_normals, project_points, rasterize

REGION_COLORS = {"fur": (0.55, 0.50, 0.45), "ear_skin": (0.92, 0.62, 0.62), "paw_skin": (0.95, 0.72, 0.70),
                 "tail_skin": (0.86, 0.66, 0.62), "nose_skin": (1.0, 0.45, 0.55), "eye": (0.05, 0.05, 0.05)}


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera 4x4 (OpenCV: x right, y down, z forward) looking from eye at target."""
    f = np.asarray(target, float) - np.asarray(eye, float)
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-6:
        r = np.cross(f, (1.0, 0.0, 0.0))
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([r, d, f])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def render_tile(vertices, faces, face_regions, region_names, azimuth_deg, size=224, elevation_deg=25.0,
                light=(0.4, -0.3, 0.85)) -> np.ndarray:
    """One shaded RGB tile [size,size,3] uint8 of a posed mesh (world units, Z up)."""
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    c = (lo + hi) / 2
    radius = np.linalg.norm(hi - lo) / 2
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    eye = c + 3.0 * radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    f = size / (2 * np.tan(np.deg2rad(21)))
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    w2c = look_at(eye, c)
    depth, fid, mask = rasterize(v, faces, K, w2c, size, size)
    img = np.full((size, size, 3), 0.96)
    # ground line: project a grid of z=0 points lightly
    g = np.linspace(-radius * 1.2, radius * 1.2, 41)
    gx, gy = np.meshgrid(g + c[0], g + c[1])
    uv, z = project_points(np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1), K, w2c)
    ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < size) & (uv[:, 1] >= 0) & (uv[:, 1] < size)
    img[uv[ok, 1].astype(int), uv[ok, 0].astype(int)] = 0.82
    n = face_normals(v, faces)[fid[mask]]
    view = eye - v[faces[fid[mask], 0]]
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    n = n * np.sign((n * view).sum(1, keepdims=True))            # two-sided
    L = np.asarray(light) / np.linalg.norm(light)
    shade = 0.35 + 0.5 * np.clip(n @ L, 0, 1) + 0.15 * np.clip((n * view).sum(1), 0, 1)
    cols = np.array([REGION_COLORS[r] for r in region_names])[face_regions[fid[mask]]]
    img[mask] = np.clip(cols * shade[:, None], 0, 1)
    return (img * 255).astype(np.uint8)


def contact_sheet(model_spec: str = "procedural", n: int = 24, seed: int = 0, start: int = 0, cols: int = 6,
                  tile: int = 224, pose_cfg: str = "default") -> tuple[Image.Image, dict]:
    model = load_body_model(model_spec)
    sampler = PoseSampler(model, load_pose_config(pose_cfg))
    batch = sampler.sample(np.arange(start, start + n), seed=seed)
    out = model.pose(batch.params)
    V = out.vertices.numpy()
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        im = render_tile(V[k], model.faces, model.face_regions, model.region_names,
                         azimuth_deg=-70 + 35 * (k % 5), size=tile)
        x, y = (k % cols) * tile, (k // cols) * tile
        sheet.paste(Image.fromarray(im), (x, y))
        label = f"#{start + k} {batch.family[k]}" + (" (forced)" if batch.forced[k] else "")
        draw.text((x + 4, y + 3), label, fill=(20, 20, 20))
    return sheet, batch.stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synth.pose_sheet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="procedural", help="procedural, mammal (env var) or a MAMMAL folder")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first pose index")
    ap.add_argument("--cols", type=int, default=6)
    ap.add_argument("--tile", type=int, default=224)
    ap.add_argument("--poses-config", default="default", help="pose sampler config: a name in configs/poses/ or a YAML file")
    ap.add_argument("--out", default="shards/pose_sheet.png")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    try:
        sheet, stats = contact_sheet(a.model, a.n, a.seed, a.start, a.cols, a.tile, a.poses_config)
    except (FileNotFoundError, ValueError, KeyError, pickle.UnpicklingError) as e:
        # a missing or refused model file (the restricted unpickler) is one line, not a traceback
        print(f"synth.pose_sheet: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out)
    print(f"wrote {a.out}: {a.n} poses, rejection rate {stats['rejection_rate']:.3f}, families {stats['families']}")
    return 0
