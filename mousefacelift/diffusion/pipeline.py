"""The multi-view diffusion pipeline: one RGBA view -> the target views of its layout, with alpha.

A ``diffusers.DiffusionPipeline`` of four components, ``unet`` (MVDiffusionUNet), ``codec``
(:mod:`.codec`), ``image_encoder`` (:mod:`.image_encoder`) and ``scheduler`` (DDIM, Euler or
DDPM over the model's noise schedule, swappable: ``pipe.scheduler =
EulerDiscreteScheduler.from_config(pipe.scheduler.config)``), plus the ``target_layout`` (the
targets relative to the input camera, :class:`mousefacelift.cameras.TargetLayout`) in its
config. The target cameras come from :func:`mousefacelift.cameras.relative_targets` with input
azimuth 0, and the camera conditioning from the model's ``view_conditioning``, the functions the
render rig and training use, so inference sees the cameras training saw.

Folders are local only and never name code that runs: :meth:`MVDiffusionPipeline.from_pretrained`
checks ``model_index.json``'s component classes against an allow-list before anything is built
(diffusers' own loader imports whatever module the file names), weights are safetensors, the
image encoder and VAE come through transformers/diffusers with local files only. Layout (that of
a diffusers folder, so ``vae/`` and ``image_encoder/`` also serve as a ``pretrained`` folder):

    model_index.json        class names of the components + target_layout
    unet/config.json        the model config (``type: mvdiffusion``)
    unet/diffusion_pytorch_model.safetensors
    image_encoder/          CLIPVisionModelWithProjection (transformers)
    vae/                    AutoencoderKL (diffusers; ``sd_vae`` codec only)
    scheduler/scheduler_config.json
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..cameras import (Camera, TargetLayout, intrinsics_from_fov, orbit_w2c, relative_targets,
                       stack_cameras)
from ..config import ConfigError, typed
from .codec import LatentCodec, build_codec, check_rgba
from .image_encoder import ImageEncoder
from .schedule import SCHEDULERS, build_scheduler

__all__ = ["MVDiffusionPipeline", "MVOutput", "ALLOWED_COMPONENTS", "UNET_WEIGHTS"]

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"

# The only (module, class) pairs a model_index.json may name, per component.
ALLOWED_COMPONENTS: dict[str, frozenset[tuple[str, str]]] = {
    "unet": frozenset({("mousefacelift.models.mvdiffusion", "MVDiffusionUNet")}),
    "codec": frozenset({("mousefacelift.diffusion.codec", "PixelCodec"),
                        ("mousefacelift.diffusion.codec", "SDVAECodec")}),
    "image_encoder": frozenset({("mousefacelift.diffusion.image_encoder", "ImageEncoder")}),
    "scheduler": frozenset(("diffusers", name) for name in SCHEDULERS.values()),
}


@dataclass
class MVOutput(BaseOutput):
    """``views [B,V,4,H,W]`` straight RGBA in [0,1]; ``cameras``: per batch item the V target
    cameras (input azimuth 0); ``input_camera [B,2]``: (elevation_deg, fov_deg) used, given or
    estimated."""

    views: torch.Tensor
    cameras: list
    input_camera: torch.Tensor


def _layout_mapping(layout: TargetLayout) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(layout).items()}


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_json(path: Path, missing_hint: str = "") -> dict:
    """A JSON object file of a pipeline folder, or one ConfigError line naming it."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found" + (f": {missing_hint}" if missing_hint else "")) from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable JSON ({_one_line(e)})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


class MVDiffusionPipeline(DiffusionPipeline):
    """Input RGBA view [B,4,H,W] -> ``MVOutput`` (see module docstring)."""

    def __init__(self, unet, codec: LatentCodec, image_encoder: ImageEncoder, scheduler,
                 target_layout: TargetLayout | dict):
        super().__init__()
        layout = target_layout if isinstance(target_layout, TargetLayout) else \
            typed(TargetLayout, target_layout, "pipeline target_layout")
        cfg = unet.config
        if layout.num_views != cfg.num_views:
            raise ConfigError(f"pipeline: target_layout has {layout.num_views} targets, model {cfg.name!r} generates "
                              f"num_views={cfg.num_views}")
        if codec.latent_channels != cfg.latent_channels or codec.factor != cfg.latent_factor:
            raise ConfigError(f"pipeline: codec {codec.kind} gives {codec.latent_channels} channels at factor "
                              f"{codec.factor}, model {cfg.name!r} expects {cfg.latent_channels} at "
                              f"{cfg.latent_factor}")
        if image_encoder.embed_dim != cfg.image_embed_dim:
            raise ConfigError(f"pipeline: image encoder gives {image_encoder.embed_dim}-dim embeddings, model "
                              f"{cfg.name!r} expects image_embed_dim={cfg.image_embed_dim}")
        self._check_scheduler(scheduler, cfg)
        self.register_modules(unet=unet, codec=codec, image_encoder=image_encoder, scheduler=scheduler)
        self.register_to_config(target_layout=_layout_mapping(layout))

    @property
    def target_layout(self) -> TargetLayout:
        return typed(TargetLayout, dict(self.config.target_layout), "pipeline target_layout")

    # diffusers' device/dtype/to read ``module.device``/``module.dtype``, which only its own
    # ModelMixin has; the components here are plain torch modules.
    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.codec, self.image_encoder) if isinstance(m, torch.nn.Module)]

    @property
    def device(self) -> torch.device:
        """The device the UNet computes on (an accelerator when any component is on one)."""
        devices = [t.device for m in self._modules() for t in itertools.islice(itertools.chain(m.parameters(),
                                                                                              m.buffers()), 1)]
        fallback = devices[0] if devices else torch.device("cpu")
        return next((d for d in devices if d.type not in ("cpu", "meta")), fallback)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, *args, **kwargs) -> "MVDiffusionPipeline":
        """Move every torch component (``torch.nn.Module.to`` arguments)."""
        for module in self._modules():
            module.to(*args, **kwargs)
        return self

    @staticmethod
    def _check_scheduler(scheduler, cfg) -> None:
        sc = scheduler.config
        if sc.prediction_type != cfg.prediction_type or int(sc.num_train_timesteps) != int(cfg.num_train_timesteps):
            raise ConfigError(f"pipeline: scheduler {type(scheduler).__name__} has prediction_type="
                              f"{sc.prediction_type!r}, num_train_timesteps={sc.num_train_timesteps}; model "
                              f"{cfg.name!r} was trained with {cfg.prediction_type!r}, {cfg.num_train_timesteps}")

    @classmethod
    def build(cls, model: Any, target_layout: TargetLayout, sampler: str, folder: str | os.PathLike | None = None,
              unet=None) -> "MVDiffusionPipeline":
        """A pipeline from a model config (preset name, YAML, mapping or config): ``unet`` given or
        freshly initialised, codec and image encoder from ``folder`` (or built from the config),
        scheduler ``sampler`` over the model's noise schedule."""
        from ..models import build_model, model_config
        from .image_encoder import build_image_encoder

        config = unet.config if unet is not None else model_config(model)
        unet = unet if unet is not None else build_model(config)
        return cls(unet=unet, codec=build_codec(config, folder), image_encoder=build_image_encoder(config, folder),
                   scheduler=build_scheduler(sampler, config), target_layout=target_layout)

    # -- inference ----------------------------------------------------------------------------
    def _angles(self, value, B: int, name: str, low: float, high: float, closed: bool) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float32).reshape(-1).cpu()
        if t.numel() == 1:
            t = t.expand(B)
        if t.numel() != B:
            raise ValueError(f"{name}: expected one value or one per image ({B}), got {t.numel()}")
        inside = (t >= low) & (t <= high) if closed else (t > low) & (t < high)
        if not bool(inside.all()):
            interval = f"[{low}, {high}]" if closed else f"({low}, {high})"
            raise ValueError(f"{name}: {t.tolist()} outside {interval} degrees")
        return t.clone()

    def camera_conditioning(self, elevation_deg: torch.Tensor,
                            fov_deg: torch.Tensor) -> tuple[list[Camera], torch.Tensor]:
        """The target cameras (input azimuth 0) and the UNet's camera features ``[B,V,K]`` for
        inputs seen at ``elevation_deg``/``fov_deg`` [B], through the model's
        ``view_conditioning`` (the training path)."""
        from ..models.mvdiffusion import view_conditioning

        size, layout = int(self.unet.config.image_size), self.target_layout
        targets = relative_targets(0.0, layout, size)
        inputs = [Camera(K=intrinsics_from_fov(float(f), size), w2c=orbit_w2c(0.0, float(e), layout.radius),
                         width=size, height=size, name="input")
                  for e, f in zip(elevation_deg.tolist(), fov_deg.tolist())]
        in_K, in_c2w = stack_cameras(inputs)
        _, tg_c2w = stack_cameras(targets)
        B = len(inputs)
        _, camera = view_conditioning(in_K, in_c2w, tg_c2w[None].expand(B, -1, -1, -1), size)
        return targets, camera

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, input_elevation_deg: float | Sequence[float] | torch.Tensor | None = None,
                 input_fov_deg: float | Sequence[float] | torch.Tensor | None = None, num_inference_steps: int = 50,
                 guidance_scale: float = 3.0, generator: torch.Generator | None = None,
                 progress: bool = True) -> MVOutput:
        """Generate the layout's target views of ``image`` (straight RGBA [B,4,H,W] in [0,1] at
        the model's size). A missing input elevation/fov is estimated by the model's head.
        Classifier-free guidance against zero image embedding and zero input latent
        (``guidance_scale`` 1 = none). The same ``generator`` state gives the same views."""
        from tqdm.auto import tqdm

        cfg = self.unet.config
        image = check_rgba(image, "image", int(cfg.image_size))
        if image.numel() and (float(image.min()) < 0.0 or float(image.max()) > 1.0):
            raise ValueError(f"image: values span [{float(image.min()):.3g}, {float(image.max()):.3g}], "
                             "expected RGBA in [0, 1]")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or \
                not 1 <= num_inference_steps <= int(cfg.num_train_timesteps):
            raise ValueError(f"num_inference_steps: {num_inference_steps!r}, expected a whole number in "
                             f"[1, {cfg.num_train_timesteps}]")
        if not math.isfinite(float(guidance_scale)) or float(guidance_scale) < 0:
            raise ValueError(f"guidance_scale: {guidance_scale!r}, expected a finite number >= 0 (1 = no guidance)")
        self._check_scheduler(self.scheduler, cfg)

        device, dtype = self.device, next(self.unet.parameters()).dtype
        B, V, C, h = image.shape[0], int(cfg.num_views), int(cfg.latent_channels), int(cfg.sample_size)
        image = image.to(device=device, dtype=torch.float32)
        cond_latent = self.codec.encode(image).to(dtype)
        image_embed = self.image_encoder.encode(image).to(dtype)

        estimate = None
        if input_elevation_deg is None or input_fov_deg is None:
            estimate = self.unet.predict_input_camera(cond_latent, image_embed).float().cpu()
        elevation = estimate[:, 0] if input_elevation_deg is None else \
            self._angles(input_elevation_deg, B, "input_elevation_deg", -90.0, 90.0, closed=True)
        fov = estimate[:, 1] if input_fov_deg is None else \
            self._angles(input_fov_deg, B, "input_fov_deg", 0.0, 180.0, closed=False)
        targets, camera = self.camera_conditioning(elevation, fov)
        camera = camera.to(device=device, dtype=dtype)

        guided = float(guidance_scale) != 1.0
        if guided:   # one batch: [unconditional (zeros) | conditional]
            cond_in = torch.cat([torch.zeros_like(cond_latent), cond_latent])
            embed_in = torch.cat([torch.zeros_like(image_embed), image_embed])
            camera_in = torch.cat([camera, camera])
        else:
            cond_in, embed_in, camera_in = cond_latent, image_embed, camera

        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        latents = randn_tensor((B, V, C, h, h), generator=generator, device=device, dtype=torch.float32)
        latents = latents * scheduler.init_noise_sigma
        bar_config = dict(getattr(self, "_progress_bar_config", {}))
        if not progress:
            bar_config["disable"] = True
        for t in tqdm(scheduler.timesteps, **bar_config):
            x = torch.cat([latents, latents]) if guided else latents
            x = scheduler.scale_model_input(x, t)
            pred = self.unet(x.to(dtype), t.reshape(1).expand(x.shape[0]).to(device), cond_in, embed_in,
                             camera_in).float()
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + float(guidance_scale) * (cond - uncond)
            latents = scheduler.step(pred, t, latents, generator=generator, return_dict=False)[0]

        rgba = self.codec.decode(latents.reshape(B * V, C, h, h).to(dtype)).float()
        views = rgba.reshape(B, V, 4, *rgba.shape[-2:]).clamp(0.0, 1.0)
        return MVOutput(views=views, cameras=[list(targets) for _ in range(B)],
                        input_camera=torch.stack([elevation, fov], dim=-1))

    # -- folders ------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> Path:
        """Write the folder :meth:`from_pretrained` reads (see module docstring); local only."""
        from safetensors.torch import save_model

        if kwargs:
            raise TypeError(f"MVDiffusionPipeline.save_pretrained: unsupported options {sorted(kwargs)} "
                            "(local folders only, safetensors always)")
        folder = Path(save_directory)
        (folder / "unet").mkdir(parents=True, exist_ok=True)
        config = {"type": "mvdiffusion", **dataclasses.asdict(self.unet.config)}
        (folder / "unet" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_model(self.unet, str(folder / "unet" / UNET_WEIGHTS))
        self.image_encoder.save_pretrained(folder / "image_encoder")
        if self.codec.kind == "sd_vae":
            self.codec.vae.save_pretrained(str(folder / "vae"))
        self.scheduler.save_pretrained(str(folder / "scheduler"))
        self.save_config(str(folder))
        return folder

    @classmethod
    def read_index(cls, folder: str | os.PathLike) -> dict:
        """``model_index.json`` of a local pipeline folder, checked: the pipeline class, every
        component's (module, class) in :data:`ALLOWED_COMPONENTS`, nothing else named. Nothing is
        imported or built here."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"pipeline folder {folder} does not exist (expected a local folder written by "
                              "MVDiffusionPipeline.save_pretrained; nothing is downloaded)")
        path = folder / "model_index.json"
        index = _read_json(path, f"{folder} is not a saved MVDiffusionPipeline folder")
        if index.get("_class_name") != cls.__name__:
            raise ConfigError(f"{path}: _class_name is {index.get('_class_name')!r}, expected {cls.__name__!r}")
        for name, entry in index.items():
            if name.startswith("_") or name == "target_layout":
                continue
            shown = ".".join(str(x) for x in entry) if isinstance(entry, list) else repr(entry)
            if name not in ALLOWED_COMPONENTS:
                raise ConfigError(f"{path}: component {name!r} ({shown}) is not part of {cls.__name__} "
                                  f"(components: {sorted(ALLOWED_COMPONENTS)}); refused")
            pair = tuple(entry) if isinstance(entry, list) and len(entry) == 2 else None
            if pair not in ALLOWED_COMPONENTS[name]:
                allowed = sorted(".".join(p) for p in ALLOWED_COMPONENTS[name])
                raise ConfigError(f"{path}: component {name!r} names {shown}, which is not allowed "
                                  f"(allowed: {allowed}); nothing named by the file is imported")
        missing = sorted(set(ALLOWED_COMPONENTS) - set(index)) + ([] if "target_layout" in index else ["target_layout"])
        if missing:
            raise ConfigError(f"{path}: missing {missing}")
        return index

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike) -> "MVDiffusionPipeline":
        """Load a folder written by :meth:`save_pretrained` (local only; see :meth:`read_index`)."""
        import diffusers
        from safetensors.torch import load_model

        from ..models import MODELS, model_config

        folder = Path(pretrained_model_name_or_path)
        index = cls.read_index(folder)
        where = str(folder / "model_index.json")
        layout = typed(TargetLayout, index["target_layout"], f"{where} target_layout")

        unet_config = folder / "unet" / "config.json"
        mapping = _read_json(unet_config)
        config = model_config(mapping, str(unet_config))
        unet_cls = MODELS["mvdiffusion"][1]
        if not isinstance(config, MODELS["mvdiffusion"][0]):
            raise ConfigError(f"{unet_config}: type is {mapping.get('type')!r}, expected 'mvdiffusion'")
        unet = unet_cls(config)
        weights = folder / "unet" / UNET_WEIGHTS
        if not weights.is_file():
            raise ConfigError(f"{weights} not found")
        try:
            missing, unexpected = load_model(unet, str(weights), strict=False)
        except (OSError, RuntimeError, ValueError) as e:
            raise ConfigError(f"{weights}: not loadable into model {config.name!r}: {_one_line(e)}") from None
        if missing or unexpected:
            raise ConfigError(f"{weights}: does not match model {config.name!r}: missing {sorted(missing)[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected {sorted(unexpected)[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")
        unet.eval()

        codec = build_codec(config, folder if config.latent == "sd_vae" else None)
        if type(codec).__name__ != index["codec"][1]:
            raise ConfigError(f"{where}: codec is {index['codec'][1]} but {unet_config} states latent "
                              f"{config.latent!r} ({type(codec).__name__})")
        image_encoder = ImageEncoder.from_folder(folder / "image_encoder")

        scheduler_config = folder / "scheduler" / "scheduler_config.json"
        sched_mapping = _read_json(scheduler_config)
        scheduler = getattr(diffusers, index["scheduler"][1]).from_config(sched_mapping)
        return cls(unet=unet, codec=codec, image_encoder=image_encoder, scheduler=scheduler, target_layout=layout)
