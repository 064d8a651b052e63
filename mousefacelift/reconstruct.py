"""``python -m mousefacelift.reconstruct PHOTO... --out DIR``: one photo -> a 3D Gaussian mouse.

The chain, each step in its own module:

1. the photo and its foreground: own alpha, ``--mask FILE`` or built-in segmentation
   (:mod:`mousefacelift.photo`, :mod:`mousefacelift.segment`);
2. the framed input view, by the framing rule of every source (:func:`mousefacelift.photo.frame_photo`);
3. stage 1, the multi-view diffusion pipeline: the target views with alpha and their cameras,
   input camera at azimuth 0 (:class:`mousefacelift.diffusion.pipeline.MVDiffusionPipeline`);
   an elevation or field of view that is not given (``--elevation``, ``--fov``) is estimated;
4. stage 2, GS-LRM: those views and cameras -> Gaussians (:mod:`mousefacelift.inference`);
5. clean-up: faint, oversized, out-of-box and floating Gaussians dropped (:func:`clean_gaussians`,
   thresholds in configs/reconstruct.yaml ``cleanup``).

Per input ``NAME`` (the photo's file stem, or the views folder's name) it writes ``DIR/NAME/``:
``input.png`` (the framed input view), ``views/`` (the generated views in the layout
``--views`` reads), ``views.png`` (input, views and the Gaussians rendered at the views'
cameras), ``gaussians.ply`` (3DGS layout), ``turntable.mp4`` and ``turntable.gif``, and
``result.json`` (cameras, settings, timings, versions, checkpoints). Everything is built in a
temporary folder next to it and moved into place at the end: an input that fails leaves nothing.

``--views DIR`` skips stage 1: DIR holds ``opencv_cameras.json`` (FaceLift's layout, as
``python -m synth.export --format facelift`` writes it: ``{"frames": [{"w", "h", "fx", "fy",
"cx", "cy", "w2c": 4x4 OpenCV world-to-camera, "file_path": "images/cam_000.png"}, ...]}``)
and the RGBA images it names, in a body-centred world (docs/architecture.md §3), or DIR is a
folder of such folders. Stage 2 can so be judged on true or user-given views alone.

Checkpoints: ``--lrm CKPT`` (a GS-LRM checkpoint of ``train.run``, or FaceLift's GS-LRM
weights) and ``--mv DIR`` (a pipeline folder of ``train.run phase=mvdiffusion``); by default
the last ones ``train.run`` wrote under ``checkpoints.run_root`` (``real``, else
``synthetic``; ``mvdiffusion/pipeline``), named in the log. Bad input (a missing file, an
image too small, no mouse found, a checkpoint of the wrong kind) is one line on stderr and
exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import facelift_views
from .facelift_views import CAMERAS_JSON
from .cameras import Camera, stack_cameras
from .checkpoint import LAST, CheckpointError, UnreadableCheckpoint
from .config import ConfigError, load_yaml, typed
from .gaussians import Gaussians
from .shards.atomic import atomic_dir
from .shards.sample import SampleError
from .photo import IMAGE_SUFFIXES, PhotoConfig, PhotoError, foreground, frame_photo, read_photo
from .segment import SegmentConfig

__all__ = ["ReconstructConfig", "ReconstructionError", "Stages", "load_config", "default_checkpoints",
           "load_lrm", "load_mv", "read_views", "write_views", "generate_views", "lift", "clean_gaussians",
           "reconstruct_input", "main"]

log = logging.getLogger("mousefacelift.reconstruct")

CONFIG = "reconstruct"
WORLD = ("body-centred, Z up, 1 unit = 1 body length without the tail (docs/architecture.md §3); "
         "the input camera at azimuth 0")


class ReconstructionError(ValueError):
    """An input that went through the chain but gave nothing usable (e.g. every Gaussian removed)."""


# -- configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointDefaults:
    run_root: str
    lrm_phases: tuple[str, ...]
    mv_phase: str


@dataclass(frozen=True)
class SamplingConfig:
    steps: int
    guidance: float
    seed: int

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"sampling.steps={self.steps}: expected at least 1 denoising step")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ConfigError(f"sampling.guidance={self.guidance}: expected a finite number >= 0 (1 = no guidance)")


@dataclass(frozen=True)
class CleanupConfig:
    min_opacity: float | None
    max_scale: float | None
    box: tuple[float, float, float, float, float, float] | None
    floater_neighbors: int
    floater_std: float | None

    def __post_init__(self):
        if self.floater_neighbors < 1:
            raise ConfigError(f"cleanup.floater_neighbors={self.floater_neighbors}: expected at least 1")


@dataclass(frozen=True)
class TurntableConfig:
    frames: int
    size: int
    elevation_deg: float
    fps: int

    def __post_init__(self):
        if self.frames < 1 or self.size < 8 or self.fps < 1:
            raise ConfigError(f"turntable: frames={self.frames}, size={self.size}, fps={self.fps}: expected "
                              "frames >= 1, size >= 8, fps >= 1")


@dataclass(frozen=True)
class ReconstructConfig:
    """configs/reconstruct.yaml (values and their meaning are there)."""

    checkpoints: CheckpointDefaults
    device: str
    precision: str
    sampling: SamplingConfig
    background: tuple[float, float, float]
    lrm_resolution: int | None
    photo: PhotoConfig
    segmentation: SegmentConfig
    cleanup: CleanupConfig
    turntable: TurntableConfig
    sheet_tile: int

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision={self.precision!r}: expected auto, fp32 or bf16")
        if not all(0.0 <= c <= 1.0 for c in self.background):
            raise ConfigError(f"background={list(self.background)}: expected an RGB colour in [0, 1]")


def load_config(overrides: Sequence[str] = ()) -> ReconstructConfig:
    """configs/reconstruct.yaml with ``key=value`` overrides."""
    mapping, where = load_yaml("", CONFIG, list(overrides))
    return typed(ReconstructConfig, mapping, where)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: expected auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: no CUDA device is available (use --device cpu)")
    return device


def _autocast(device: torch.device, precision: str):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# -- checkpoints ----------------------------------------------------------------------------------
def default_checkpoints(cfg: CheckpointDefaults) -> tuple[Path | None, Path, list[Path]]:
    """(first existing GS-LRM ``last.pt`` of ``lrm_phases`` or None, the pipeline folder, the
    ``last.pt`` paths looked at) under ``run_root``."""
    root = Path(cfg.run_root)
    tried = [root / phase / "checkpoints" / LAST for phase in cfg.lrm_phases]
    return next((p for p in tried if p.is_file()), None), root / cfg.mv_phase / "pipeline", tried


def _file_record(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size,
            "modified": datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).isoformat()}


def load_lrm(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The GS-LRM of a checkpoint, in eval mode on ``device``, and its record for result.json.
    Refuses in one line: a missing path, a folder, a file that is not a checkpoint, one of
    another model (e.g. a diffusion checkpoint)."""
    from .inference import load_model
    from .models.gslrm import GSLRM

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"--lrm {path} is a folder; expected a GS-LRM checkpoint file (train.run writes "
                              "<run_root>/synthetic/checkpoints/last.pt); a stage-1 pipeline folder goes to --mv")
    if not path.exists():
        raise CheckpointError(f"--lrm {path} does not exist; expected a GS-LRM checkpoint file")
    try:
        model = load_model(path, device=device)
    except (UnreadableCheckpoint, ConfigError) as e:
        raise ConfigError(f"--lrm: {e}") from None
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--lrm {path}: not a loadable GS-LRM checkpoint ({first})") from None
    if not isinstance(model, GSLRM):
        kind = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise ConfigError(f"--lrm {path}: holds a {type(model).__name__} ({kind}), expected a GS-LRM checkpoint "
                          "(train.run phase=synthetic|real, or FaceLift's GS-LRM weights); a multi-view diffusion "
                          "model goes to --mv as its pipeline folder")
    return model, {**_file_record(path), "model": model.config.name, "type": "gslrm"}


def load_mv(path: str | os.PathLike, device: torch.device):
    """The stage-1 pipeline of a local folder on ``device`` and its record for result.json."""
    path = Path(path)
    if path.is_file():
        raise ConfigError(f"--mv {path} is a file; expected a pipeline folder (train.run phase=mvdiffusion writes "
                          "<run_root>/mvdiffusion/pipeline); a GS-LRM checkpoint goes to --lrm")
    if not path.exists():
        raise ConfigError(f"--mv {path} does not exist; expected a pipeline folder written by train.run "
                          "phase=mvdiffusion")
    try:
        from .diffusion.pipeline import MVDiffusionPipeline
    except ImportError as e:
        raise ConfigError(f"stage 1 needs diffusers and transformers (pip install -e '.[train]'): {e}") from None
    pipe = MVDiffusionPipeline.from_pretrained(path).to(device)
    cfg = pipe.unet.config
    return pipe, {"path": str(path.resolve()), "model": cfg.name, "image_size": int(cfg.image_size),
                  "target_layout": dataclasses.asdict(pipe.target_layout),
                  "modified": _file_record(path / "model_index.json")["modified"]}


@dataclass
class Stages:
    """The loaded models: ``mv`` is None when stage 1 is skipped (``--views``)."""

    lrm: torch.nn.Module
    lrm_record: dict
    mv: Any = None
    mv_record: dict | None = None


# -- views folders (FaceLift's layout) --------------------------------------------------------------
def read_views(folder: str | os.PathLike) -> tuple[np.ndarray, list[Camera]]:
    """uint8 RGBA [V,H,W,4] and cameras of a views folder (:mod:`mousefacelift.facelift_views`:
    images without alpha count as fully covered, a path leaving the folder is refused)."""
    try:
        _, rgba, cams = facelift_views.read_views(folder)
    except SampleError as e:
        raise PhotoError(str(e)) from None
    return rgba, cams


def write_views(folder: str | os.PathLike, rgba: np.ndarray, cameras: Sequence[Camera], extra: dict | None = None) -> Path:
    """Write uint8 RGBA views [V,H,W,4] and their cameras in the layout :func:`read_views` reads."""
    return facelift_views.write_views(folder, rgba, cameras, extra)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


# -- the chain ------------------------------------------------------------------------------------
def generate_views(pipe, rgba: np.ndarray, elevation_deg: float | None, fov_deg: float | None,
                   sampling: SamplingConfig, device: torch.device, precision: str, progress: bool = True):
    """Stage 1 on one framed view (float [4,S,S]) -> (uint8 RGBA [V,S,S,4], target cameras,
    (elevation, fov) used)."""
    image = torch.from_numpy(np.ascontiguousarray(rgba))[None].float().to(device)
    generator = torch.Generator().manual_seed(int(sampling.seed))
    with torch.no_grad(), _autocast(device, precision):
        out = pipe(image, input_elevation_deg=elevation_deg, input_fov_deg=fov_deg,
                   num_inference_steps=int(sampling.steps), guidance_scale=float(sampling.guidance),
                   generator=generator, progress=progress)
    views = out.views[0].float().permute(0, 2, 3, 1).cpu().numpy()
    el, fov = (float(v) for v in out.input_camera[0].tolist())
    return _to_u8(views), list(out.cameras[0]), (el, fov)


def lift(model: torch.nn.Module, views: np.ndarray, cameras: Sequence[Camera], background: Sequence[float],
         device: torch.device, precision: str, resolution: int | None = None) -> tuple[Gaussians, list[Camera]]:
    """Stage 2: uint8 RGBA views [V,H,W,4] composited on ``background`` + their cameras ->
    Gaussians (batch of one, float32) and the cameras at the size GS-LRM saw."""
    from .inference import reconstruct
    from .viz import resize_rgba

    cams = list(cameras)
    if resolution is not None and views.shape[1:3] != (resolution, resolution):
        views = np.stack([resize_rgba(v, (resolution, resolution)) for v in views])
        cams = [c.resized(resolution, resolution) for c in cams]
    patch = int(getattr(model.config, "patch_size", 1))
    if views.shape[1] % patch or views.shape[2] % patch:
        raise ReconstructionError(f"views are {views.shape[2]}x{views.shape[1]} pixels; GS-LRM {model.config.name} needs "
                                  f"multiples of its patch size {patch} (set lrm_resolution)")
    rgba = torch.from_numpy(views).float().div(255.0).permute(0, 3, 1, 2)
    bg = torch.tensor(list(background), dtype=torch.float32).view(3, 1, 1)
    rgb = rgba[:, :3] * rgba[:, 3:] + bg * (1.0 - rgba[:, 3:])
    K, c2w = stack_cameras(cams)
    with torch.no_grad(), _autocast(device, precision):
        g = reconstruct(model, rgb[None].to(device), K[None].to(device), c2w[None].to(device))
    return g.float(), cams


def clean_gaussians(g: Gaussians, cfg: CleanupConfig) -> tuple[Gaussians, dict]:
    """Drop faint, oversized and out-of-box Gaussians (:meth:`Gaussians.keep_mask`), then
    floaters: those whose mean distance to their ``floater_neighbors`` nearest survivors lies
    more than ``floater_std`` standard deviations above the mean of all (statistical outlier
    removal). Batch of one; returns the kept Gaussians and how many each rule removed."""
    from scipy.spatial import cKDTree

    if g.batch_size != 1:
        raise ValueError(f"clean_gaussians: expected a batch of one, got {g.batch_size}")
    keep = torch.ones(g.num_gaussians, dtype=torch.bool, device=g.device)
    counts = {"raw": g.num_gaussians}
    for name, kwargs in (("opacity", {"min_opacity": cfg.min_opacity}), ("scale", {"max_scale": cfg.max_scale}),
                         ("box", {"box": cfg.box})):
        if next(iter(kwargs.values())) is None:
            counts[name] = 0
            continue
        m = g.keep_mask(**kwargs)[0]
        counts[name] = int((keep & ~m).sum())
        keep &= m
    counts["floaters"] = 0
    n = int(keep.sum())
    if cfg.floater_std is not None and n > cfg.floater_neighbors + 1:
        pts = g.means[0][keep].detach().cpu().double().numpy()
        dist, _ = cKDTree(pts).query(pts, k=cfg.floater_neighbors + 1)
        mean_d = dist[:, 1:].mean(1)
        out = mean_d > mean_d.mean() + cfg.floater_std * mean_d.std()
        idx = keep.nonzero()[:, 0]
        keep[idx[torch.from_numpy(out).to(idx.device)]] = False
        counts["floaters"] = int(out.sum())
    counts["kept"] = int(keep.sum())
    if counts["kept"] == 0:
        raise ReconstructionError(f"the clean-up removed every Gaussian ({counts}); the reconstruction is empty "
                                  "(lower cleanup.min_opacity, or check the views)")
    kept = Gaussians(**{f.name: getattr(g, f.name)[:, keep] for f in dataclasses.fields(Gaussians)})
    return kept, counts


def views_sheet(views: np.ndarray, renders: np.ndarray, tile: int, input_rgba: np.ndarray | None = None,
                title: str = "") -> np.ndarray:
    """uint8 RGB contact sheet: top row the (input and) views on a checkerboard, bottom row the
    Gaussians rendered at the views' cameras."""
    from .viz import composite_over_checkerboard, image_grid, resize_rgba

    def cell(rgba: np.ndarray) -> np.ndarray:
        return composite_over_checkerboard(resize_rgba(rgba, (tile, tile)))

    def cell_rgb(rgb: np.ndarray) -> np.ndarray:
        return cell(np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1))

    top = [cell(v) for v in views]
    bottom = [cell_rgb(r) for r in renders]
    top_labels = [f"view {i + 1}" for i in range(len(views))]
    bottom_labels = [f"render {i + 1}" for i in range(len(renders))]
    if input_rgba is not None:
        top, bottom = [cell(input_rgba)] + top, [None] + bottom
        top_labels, bottom_labels = ["input"] + top_labels, [""] + bottom_labels
    return image_grid([top, bottom], col_labels=[top_labels, bottom_labels], title=title or None)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("mouse-facelift", "torch", "numpy", "diffusers", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


@dataclass
class Job:
    """One input: a photo (with an optional mask) or a views folder, written to ``out/name``."""

    name: str
    photo: Path | None = None
    mask: Path | None = None
    views: Path | None = None


def reconstruct_input(job: Job, stages: Stages, cfg: ReconstructConfig, out_dir: Path, device: torch.device,
                      elevation_deg: float | None = None, fov_deg: float | None = None, progress: bool = True) -> dict:
    """Run the chain for one input into ``out_dir`` (a fresh folder) and return result.json's content."""
    from .inference import render_views, turntable_frames
    from .turntable import write_video
    from .viz import save_png

    times: dict[str, float] = {}
    t = time.perf_counter()
    record: dict[str, Any] = {"name": job.name, "world": WORLD}
    input_u8 = None
    if job.photo is not None:
        size = int(stages.mv.unet.config.image_size)
        photo = read_photo(job.photo, cfg.photo)
        alpha, source = foreground(photo, cfg.photo, cfg.segmentation, job.mask, device=str(device))
        framed = frame_photo(photo.rgb, alpha, size, cfg.photo, fov_deg, where=str(job.photo))
        if framed.info["body_cut_by_border"]:
            log.warning("%s: the mouse touches the photo border; the cut-off part is missing from the input", job.photo)
        times["photo_s"] = time.perf_counter() - t
        input_u8 = _to_u8(framed.rgba.transpose(1, 2, 0))
        t = time.perf_counter()
        views, cameras, (el, fov) = generate_views(stages.mv, framed.rgba, elevation_deg, framed.fov_deg, cfg.sampling,
                                                   device, cfg.precision, progress)
        times["stage1_s"] = time.perf_counter() - t
        record["input"] = {
            "photo": str(job.photo.resolve()), "foreground": source, "framing": framed.info,
            "camera": {"elevation_deg": el, "elevation_source": "given" if elevation_deg is not None else "estimated",
                       "fov_deg": fov, "fov_source": "from the photo's --fov" if framed.fov_deg is not None
                       else "estimated", "framed_K": framed.camera.K.tolist()}}
        save_png(out_dir / "input.png", input_u8)
    else:
        views, cameras = read_views(job.views)
        times["views_s"] = time.perf_counter() - t
        record["input"] = {"views": str(job.views.resolve())}
    write_views(out_dir / "views", views, cameras, extra={"world": WORLD})

    t = time.perf_counter()
    raw, lrm_cams = lift(stages.lrm, views, cameras, cfg.background, device, cfg.precision, cfg.lrm_resolution)
    times["stage2_s"] = time.perf_counter() - t
    t = time.perf_counter()
    gaussians, counts = clean_gaussians(raw, cfg.cleanup)
    times["cleanup_s"] = time.perf_counter() - t

    t = time.perf_counter()
    K, c2w = stack_cameras(lrm_cams)
    H, W = lrm_cams[0].height, lrm_cams[0].width
    with torch.no_grad():
        rendered = render_views(gaussians, K[None].to(device), c2w[None].to(device), H, W, background=cfg.background)
    renders = _to_u8(rendered.rgb[0].clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())
    save_png(out_dir / "views.png", views_sheet(views, renders, cfg.sheet_tile, input_u8, title=job.name))
    gaussians.save_ply(out_dir / "gaussians.ply")
    tt = cfg.turntable
    frames = turntable_frames(gaussians, frames=tt.frames, size=tt.size, elevation_deg=tt.elevation_deg,
                              background=cfg.background)
    write_video(frames, out_dir / "turntable.mp4", fps=tt.fps)
    write_video(frames, out_dir / "turntable.gif", fps=tt.fps)
    times["outputs_s"] = time.perf_counter() - t

    record.update({
        "views": {"folder": "views", "size": [int(views.shape[2]), int(views.shape[1])],
                  "cameras": [c.to_meta() for c in cameras]},
        "gaussians": {"file": "gaussians.ply", "counts": counts, "sh_degree": gaussians.sh_degree},
        "checkpoints": {"lrm": stages.lrm_record, "mv": stages.mv_record},
        "settings": {"device": str(device), "sampling": dataclasses.asdict(cfg.sampling) if job.photo else None,
                     "config": dataclasses.asdict(cfg)},
        "timings_s": {k: round(v, 3) for k, v in times.items()},
        "versions": _versions(),
        "files": ["input.png"] * (input_u8 is not None) + ["views/", "views.png", "gaussians.ply", "turntable.mp4",
                                                          "turntable.gif", "result.json"],
    })
    from .shards.atomic import atomic_write_json

    atomic_write_json(out_dir / "result.json", record)
    return record


# -- command line ---------------------------------------------------------------------------------
def collect_photos(inputs: Sequence[str]) -> list[Path]:
    """Photo files, and the images of folders (sorted, not recursive)."""
    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise PhotoError(f"{p}: folder holds no images ({' '.join(IMAGE_SUFFIXES)})")
            out.extend(files)
        elif not p.exists():
            raise PhotoError(f"{p}: photo does not exist")
        else:
            out.append(p)
    return out


def collect_view_folders(inputs: Sequence[str]) -> list[Path]:
    """Views folders, and the views folders inside a folder (sorted)."""
    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if (p / CAMERAS_JSON).is_file():
            out.append(p)
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / CAMERAS_JSON).is_file())
            if not subs:
                raise PhotoError(f"{p}: neither a views folder ({CAMERAS_JSON} + images) nor a folder of them")
            out.extend(subs)
        else:
            raise PhotoError(f"{p}: views folder does not exist")
    return out


def _mask_for(photo: Path, mask: str | None, n_photos: int) -> Path | None:
    if mask is None:
        return None
    m = Path(mask)
    if m.is_dir():
        found = [f for f in sorted(m.iterdir()) if f.stem == photo.stem and f.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise PhotoError(f"{photo}: no mask named {photo.stem}.* in --mask folder {m}")
        return found[0]
    if not m.exists():
        raise PhotoError(f"{m}: mask does not exist")
    if n_photos != 1:
        raise PhotoError(f"--mask {m} is one file but {n_photos} photos were given; pass a folder of masks named "
                         "like the photos")
    return m


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mousefacelift.reconstruct",
                                 description="One photo of a mouse -> 3D Gaussians (PLY), turntable, views.",
                                 epilog="Outputs per input: OUT/NAME/{input.png, views/, views.png, gaussians.ply, "
                                        "turntable.mp4, turntable.gif, result.json}. Settings: configs/reconstruct.yaml.")
    ap.add_argument("photos", nargs="*", metavar="PHOTO", help="photo files or folders of photos")
    ap.add_argument("--out", required=True, metavar="DIR", help="output folder (one subfolder per input)")
    ap.add_argument("--views", nargs="+", metavar="DIR", help="skip stage 1: views folders (opencv_cameras.json + "
                                                                "images), or folders of them")
    ap.add_argument("--mask", metavar="FILE|DIR", help="foreground mask of the photo (or a folder of masks named like "
                                                         "the photos); used when a photo has no alpha")
    ap.add_argument("--elevation", type=float, metavar="DEG", help="camera elevation above the floor (default: estimated)")
    ap.add_argument("--fov", type=float, metavar="DEG", help="the photo's horizontal field of view (default: estimated)")
    ap.add_argument("--lrm", metavar="CKPT", help="GS-LRM checkpoint (default: the last one train.run wrote)")
    ap.add_argument("--mv", metavar="DIR", help="stage-1 pipeline folder (default: <run_root>/mvdiffusion/pipeline)")
    ap.add_argument("--run-root", metavar="DIR", help="train.run's run root for the default checkpoints")
    ap.add_argument("--device", help="auto | cpu | cuda")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--steps", type=int, help="denoising steps")
    ap.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a configs/reconstruct.yaml override (repeat --set for several)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def _overrides(args) -> list[str]:
    o = list(args.set)
    for flag, key in (("device", "device"), ("seed", "sampling.seed"), ("steps", "sampling.steps"),
                      ("guidance", "sampling.guidance"), ("run_root", "checkpoints.run_root")):
        value = getattr(args, flag)
        if value is not None:
            o.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return o


def _prepare(args) -> tuple[ReconstructConfig, list[Job], torch.device, Stages]:
    """Everything that can be refused before any work: config, inputs, outputs, checkpoints."""
    if bool(args.photos) == bool(args.views):
        raise PhotoError("give photos (PHOTO...) or --views DIR..., not both and not neither")
    if args.views and (args.mask or args.elevation is not None or args.fov is not None):
        raise PhotoError("--mask, --elevation and --fov apply to photos; --views folders carry their own cameras")
    if args.elevation is not None and not -90.0 <= args.elevation <= 90.0:
        raise PhotoError(f"--elevation {args.elevation}: expected degrees in [-90, 90]")
    if args.fov is not None and not 0.0 < args.fov < 180.0:
        raise PhotoError(f"--fov {args.fov}: expected the photo's horizontal field of view in (0, 180) degrees")
    cfg = load_config(_overrides(args))
    if args.photos:
        photos = collect_photos(args.photos)
        jobs = [Job(p.stem, photo=p, mask=_mask_for(p, args.mask, len(photos))) for p in photos]
    else:
        # a folder named views (as this command writes it) is named after the folder holding it
        jobs = [Job(d.resolve().parent.name if d.resolve().name == "views" else d.name, views=d)
                for d in collect_view_folders(args.views)]
    seen: dict[str, Job] = {}
    for j in jobs:
        if j.name in seen:
            raise PhotoError(f"{j.photo or j.views} and {seen[j.name].photo or seen[j.name].views} would both write "
                             f"{Path(args.out) / j.name}; rename one")
        seen[j.name] = j
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PhotoError(f"--out {out} is a file; expected a folder")
    taken = [str(out / j.name) for j in jobs if (out / j.name).exists()]
    if taken and not args.overwrite:
        raise PhotoError(f"{taken[0]} exists{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}; pass "
                         "--overwrite to replace")
    device = resolve_device(cfg.device)
    lrm_default, mv_default, tried = default_checkpoints(cfg.checkpoints)
    lrm_path = Path(args.lrm) if args.lrm else lrm_default
    if lrm_path is None:
        raise CheckpointError(f"no GS-LRM checkpoint: none of {[str(p) for p in tried]} exists; train one "
                              "(python -m train.run phase=synthetic) or pass --lrm CKPT")
    lrm, lrm_record = load_lrm(lrm_path, device)
    log.info("stage 2 (GS-LRM): %s (%s%s)", lrm_path, lrm_record["model"],
             "" if args.lrm else f"; default: the last of {list(cfg.checkpoints.lrm_phases)} under "
                                 f"{cfg.checkpoints.run_root}")
    stages = Stages(lrm=lrm, lrm_record=lrm_record)
    if args.photos:
        mv_path = Path(args.mv) if args.mv else mv_default
        stages.mv, stages.mv_record = load_mv(mv_path, device)
        log.info("stage 1 (multi-view diffusion): %s (%s, %d px%s)", mv_path, stages.mv_record["model"],
                 stages.mv_record["image_size"], "" if args.mv else f"; default under {cfg.checkpoints.run_root}")
    log.info("device %s, %d input(s) -> %s", device, len(jobs), out)
    return cfg, jobs, device, stages


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg, jobs, device, stages = _prepare(args)
    except (ConfigError, PhotoError, CheckpointError) as e:
        print(f"reconstruct: error: {e}", file=sys.stderr)
        return 2
    from tqdm.auto import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for job in tqdm(jobs, desc="reconstruct", unit="input", disable=args.quiet or len(jobs) == 1):
        try:
            with atomic_dir(out / job.name) as tmp:
                record = reconstruct_input(job, stages, cfg, tmp, device, args.elevation, args.fov, not args.quiet)
        except (PhotoError, ReconstructionError, ConfigError) as e:
            print(f"reconstruct: error: {e}", file=sys.stderr)
            failed += 1
            continue
        c = record["gaussians"]["counts"]
        log.info("%s: %d of %d Gaussians kept -> %s (%.1f s)", job.name, c["kept"], c["raw"], out / job.name,
                 sum(record["timings_s"].values()))
    if failed:
        if len(jobs) > 1:
            print(f"reconstruct: {failed} of {len(jobs)} inputs failed; nothing was written for them", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
