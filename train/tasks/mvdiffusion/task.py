"""The ``mvdiffusion`` task: one input view -> the multi-view diffusion UNet -> its target views.

Data: shards of the ``mvinput`` rig (configs/rig/mvinput.yaml) read with view sampling fixed to
all views in order and one input (configs/data/mv.yaml): view 0 is the photo-like input, views
1..V the targets relative to it. Training follows FaceLift's stage 1 (Era3D lineage): frozen
codec latents of the targets and of the input, one timestep per object, v-prediction with
min-SNR-gamma weights, classifier-free dropout of the image embedding, the input latent or both,
and a small head that learns the input camera's elevation and field of view. Evaluation
samples with the exported pipeline's own sampler (:class:`MVDiffusionPipeline`), so what is
measured is what a user runs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mousefacelift.cameras import TargetLayout, load_target_layout
from mousefacelift.config import ConfigError, typed
from mousefacelift.diffusion.codec import build_codec
from mousefacelift.diffusion.image_encoder import build_image_encoder
from mousefacelift.diffusion.pipeline import MVDiffusionPipeline
from mousefacelift.diffusion.schedule import (SCHEDULERS, alphas_cumprod_at, build_scheduler, min_snr_weights,
                                              v_target)
from mousefacelift.diffusion.weights import load_pretrained_unet
from mousefacelift.models import build_model, model_config
from mousefacelift.models.mvdiffusion import MVDiffusionConfig, view_conditioning
from mousefacelift.shards.atomic import atomic_dir

from ...evaluate import WeightedMeans, eval_batches, mean_novel_image
from ...settings import EvalConfig
from ..base import Task
from .metrics import generation_metrics

log = logging.getLogger(__name__)

CAMERA_SCALE = (90.0, 45.0)     # degrees of (elevation, fov) that count as one unit of camera-head error


@dataclass(frozen=True)
class DiffusionConfig:
    """``diffusion:`` of configs/phase/mvdiffusion.yaml (stated and documented there)."""

    pretrained: str | None
    rig: str
    min_snr_gamma: float | None
    drop_image: float
    drop_latent: float
    drop_both: float
    camera_head_weight: float
    sampler: str
    eval_steps: int
    guidance_scale: float
    export: bool

    def __post_init__(self):
        drops = (self.drop_image, self.drop_latent, self.drop_both)
        if any(not 0.0 <= p <= 1.0 for p in drops) or sum(drops) > 1.0:
            raise ConfigError(f"diffusion.drop_image/drop_latent/drop_both are {list(drops)}: expected shares in "
                              "[0, 1] summing to at most 1")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ConfigError(f"diffusion.min_snr_gamma={self.min_snr_gamma!r}: expected a positive number or null")
        if self.sampler not in SCHEDULERS:
            raise ConfigError(f"diffusion.sampler={self.sampler!r}: expected one of {sorted(SCHEDULERS)}")
        if isinstance(self.eval_steps, bool) or not isinstance(self.eval_steps, int) or self.eval_steps < 1:
            raise ConfigError(f"diffusion.eval_steps={self.eval_steps!r}: expected a whole number >= 1")
        if not self.guidance_scale >= 0:
            raise ConfigError(f"diffusion.guidance_scale={self.guidance_scale!r}: expected a number >= 0")


@dataclass
class DiffusionPrediction:
    """One training forward pass: the model's v-prediction and what the loss and panel need."""

    pred: torch.Tensor            # [B,V,C,h,w]
    target: torch.Tensor          # v target, same shape
    noisy: torch.Tensor           # x_t
    timesteps: torch.Tensor       # [B]
    camera_pred: torch.Tensor     # [B,2] (elevation, fov) estimate of the input camera
    camera_true: torch.Tensor     # [B,2]


def _rgba(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return torch.cat([rgb, alpha], dim=-3)


class MVDiffusionTask(Task):
    name = "mvdiffusion"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.model_config = model_config(cfg.model)
        if not isinstance(self.model_config, MVDiffusionConfig):
            raise ConfigError(f"task mvdiffusion trains model type mvdiffusion, but model.type is "
                              f"{cfg.model.get('type')!r}")
        if cfg.get("diffusion") is None:
            raise ConfigError("task mvdiffusion needs the diffusion: section (configs/phase/mvdiffusion.yaml)")
        self.diffusion = typed(DiffusionConfig, cfg.diffusion, "diffusion")
        self.layout: TargetLayout = load_target_layout(self.diffusion.rig)
        mc, vs = self.model_config, cfg.data.view_sampling
        if self.layout.num_views != mc.num_views:
            raise ConfigError(f"diffusion.rig {self.diffusion.rig!r} has {self.layout.num_views} targets but model "
                              f"{mc.name!r} generates num_views={mc.num_views}")
        if int(vs.num_input_views) != 1 or int(vs.num_views) != mc.num_views + 1:
            raise ConfigError(f"data.view_sampling: task mvdiffusion reads 1 input + {mc.num_views} targets, got "
                              f"num_input_views={vs.num_input_views}, num_views={vs.num_views} (configs/data/mv.yaml)")
        res = cfg.data.resolution
        if (res if isinstance(res, int) else tuple(res)) not in (mc.image_size, (mc.image_size, mc.image_size)):
            raise ConfigError(f"data.resolution={res} but model {mc.name!r} has image_size={mc.image_size}")
        self.num_inputs = 1
        folder = self.diffusion.pretrained
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"diffusion.pretrained={folder!r}: no such folder")
        self.codec = build_codec(mc, folder).requires_grad_(False).eval()
        self.image_encoder = build_image_encoder(mc, folder).requires_grad_(False).eval()
        self.noise = build_scheduler("ddpm", mc)

    # -- model ---------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        model = build_model(self.model_config)
        if self.diffusion.pretrained is not None:
            report = load_pretrained_unet(model, self.diffusion.pretrained)
            log.info("mvdiffusion UNet initialised from %s: %s", self.diffusion.pretrained, report)
        return model

    def _frozen_to(self, device: torch.device) -> None:
        for m in (self.codec, self.image_encoder):
            if next(m.parameters(), next(m.buffers(), None)) is not None:
                m.to(device)

    @torch.no_grad()
    def _encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input RGBA [B,4,H,W], its latent, its image embedding, the targets' latents [B,V,C,h,w])."""
        self._frozen_to(batch["rgb"].device)
        inp = _rgba(batch["input_rgb"][:, 0], batch["input_alpha"][:, 0]).float()
        targets = _rgba(batch["rgb"][:, 1:], batch["alpha"][:, 1:]).float()
        B, V = targets.shape[:2]
        x0 = self.codec.encode(targets.flatten(0, 1)).unflatten(0, (B, V))
        return inp, self.codec.encode(inp), self.image_encoder.encode(inp), x0

    def conditioning(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input camera [B,2] = elevation, fov; per-view camera features [B,V,K]) of a batch."""
        return view_conditioning(batch["input_K"][:, 0], batch["input_c2w"][:, 0], batch["c2w"][:, 1:],
                                 int(batch["rgb"].shape[-1]))

    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> DiffusionPrediction:
        d = self.diffusion
        _, cond, embed, x0 = self._encode(batch)
        input_camera, camera = self.conditioning(batch)
        B, device = x0.shape[0], x0.device
        # classifier-free dropout per object: image embedding, input latent, or both
        u = torch.rand(B, device=device)
        both = (u >= d.drop_image + d.drop_latent) & (u < d.drop_image + d.drop_latent + d.drop_both)
        drop_image = (u < d.drop_image) | both
        drop_latent = ((u >= d.drop_image) & (u < d.drop_image + d.drop_latent)) | both
        keep = lambda x, drop: x * (~drop).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        t = torch.randint(0, int(self.noise.config.num_train_timesteps), (B,), device=device)
        noise = torch.randn_like(x0)
        ac = alphas_cumprod_at(self.noise, t, device).reshape(B, 1, 1, 1, 1)
        noisy = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
        pred = model(noisy, t, keep(cond, drop_latent), keep(embed, drop_image), camera)
        head = getattr(model, "module", model).predict_input_camera(cond, embed)
        return DiffusionPrediction(pred=pred, target=v_target(self.noise, x0, noise, t), noisy=noisy, timesteps=t,
                                   camera_pred=head, camera_true=input_camera)

    def loss(self, prediction: DiffusionPrediction, batch: dict[str, Any], step: int):
        p = prediction
        per_object = ((p.pred.float() - p.target.float()) ** 2).flatten(1).mean(dim=1)
        gamma = self.diffusion.min_snr_gamma
        weights = (torch.ones_like(per_object) if gamma is None else
                   min_snr_weights(self.noise, p.timesteps, gamma).to(per_object.device))
        valid = batch["valid"].float() if "valid" in batch else torch.ones_like(per_object)
        denoise = (weights * per_object * valid).sum() / valid.sum().clamp_min(1.0)
        scale = torch.tensor(CAMERA_SCALE, device=p.camera_pred.device)
        camera = F.smooth_l1_loss(p.camera_pred.float() / scale, p.camera_true.float() / scale)
        total = denoise + self.diffusion.camera_head_weight * camera
        return total, {"v_mse": per_object.mean().detach(), "denoise": denoise.detach(), "camera": camera.detach()}

    # -- sampling, evaluation, export -----------------------------------------------------
    def pipeline(self, model: torch.nn.Module, sampler: str | None = None) -> MVDiffusionPipeline:
        """The user-facing pipeline around ``model`` (its weights, this task's codec, image encoder,
        target layout and sampler)."""
        model = getattr(model, "module", model)
        return MVDiffusionPipeline(unet=model, codec=self.codec, image_encoder=self.image_encoder,
                                   scheduler=build_scheduler(sampler or self.diffusion.sampler, self.model_config),
                                   target_layout=self.layout)

    def generate(self, model: torch.nn.Module, batch: dict[str, Any], seed: int) -> torch.Tensor:
        """Generated RGBA targets [B,V,4,H,W] for a batch, from its input view and true input camera."""
        inp = _rgba(batch["input_rgb"][:, 0], batch["input_alpha"][:, 0]).float()
        input_camera, _ = self.conditioning(batch)
        self._frozen_to(inp.device)
        generator = torch.Generator(device=inp.device).manual_seed(int(seed))
        out = self.pipeline(model)(inp, input_camera[:, 0].cpu(), input_camera[:, 1].cpu(),
                                   num_inference_steps=self.diffusion.eval_steps,
                                   guidance_scale=self.diffusion.guidance_scale, generator=generator, progress=False)
        return out.views

    def evaluate(self, model: torch.nn.Module, examples: list[dict], device: torch.device, autocast: bool,
                 config: EvalConfig) -> tuple[dict[str, float], np.ndarray | None]:
        """Generated vs rendered targets (masked PSNR/SSIM, mask IoU, 3D consistency through the true
        depth), the codec's own round trip of the truth (the ceiling), the held-out mean image (the
        floor) and the input-camera head's error, in degrees."""
        means, panel = WeightedMeans(), None
        baseline = mean_novel_image(self, examples, config.batch_size, device)
        seed = int(self.cfg.seed)
        for i, batch in enumerate(eval_batches(self, examples, config.batch_size, device)):
            w = batch["valid"].float()
            true = _rgba(batch["rgb"][:, 1:], batch["alpha"][:, 1:]).float()
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                views = self.generate(model, batch, seed + i)
            depth, K, c2w = batch["depth"][:, 1:, 0], batch["K"][:, 1:], batch["c2w"][:, 1:]
            B, V = true.shape[:2]
            rounds = {"": views.float()}
            with torch.no_grad():
                rounds["ceiling/"] = self.codec.decode(self.codec.encode(true.flatten(0, 1))).unflatten(0, (B, V)).clamp(0, 1)
            if baseline is not None:
                rounds["baseline/"] = _rgba(*baseline)[None, None].expand_as(true)
            for prefix, pred in rounds.items():
                metrics = generation_metrics(pred, true, depth, K, c2w)
                for name, x in metrics.items():
                    if name in ("consistency_pairs",) or (prefix and name == "consistency_psnr_true"):
                        continue
                    means.add(f"{prefix}{name}", torch.nanmean(x.float(), dim=1), w)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                _, cond, embed, _ = self._encode(batch)
                head = getattr(model, "module", model).predict_input_camera(cond, embed).float()
            err = (head - self.conditioning(batch)[0].float()).abs()
            means.add("camera/elevation_err_deg", err[:, 0], w)
            means.add("camera/fov_err_deg", err[:, 1], w)
            if panel is None:
                panel = _panel(batch, views)
        return means.result(device), panel

    def export(self, model: torch.nn.Module, out_dir: Path, step: int) -> Path | None:
        """``{out_dir}/pipeline``: the diffusers folder users load (built beside, then swapped in,
        so a crash never leaves a half-written pipeline under that name)."""
        if not self.diffusion.export:
            return None
        final = Path(out_dir) / "pipeline"
        with atomic_dir(final) as tmp:
            self.pipeline(model).save_pretrained(tmp)
        return final

    def image_panel(self, batch: dict[str, Any], prediction: DiffusionPrediction) -> np.ndarray:
        """Training panel: the one-step x0 estimate of each target at the step's noise level."""
        p = prediction
        ac = alphas_cumprod_at(self.noise, p.timesteps, p.noisy.device).reshape(-1, 1, 1, 1, 1)
        x0 = ac.sqrt() * p.noisy.float() - (1 - ac).sqrt() * p.pred.float()
        with torch.no_grad():
            views = self.codec.decode(x0[:1].flatten(0, 1)).unflatten(0, (1, x0.shape[1])).clamp(0, 1)
        return _panel(batch, views)


def _row(rgba: torch.Tensor) -> torch.Tensor:
    """[V,4,H,W] -> [H, V*W, 3] colour row and the same for alpha."""
    return torch.cat([rgba[:, :3].permute(2, 0, 3, 1).flatten(1, 2),
                      rgba[:, 3:].expand(-1, 3, -1, -1).permute(2, 0, 3, 1).flatten(1, 2)], dim=0)


def _panel(batch: dict[str, Any], views: torch.Tensor) -> np.ndarray:
    """HWC panel of the first example: rows = input (left) | true targets, then the generated
    targets; colour above alpha."""
    true = _rgba(batch["rgb"][0, 1:], batch["alpha"][0, 1:]).detach().float().cpu()
    gen = views[0].detach().float().cpu()
    inp = _rgba(batch["input_rgb"][0, :1], batch["input_alpha"][0, :1]).detach().float().cpu()
    blank = torch.zeros_like(inp)
    top = torch.cat([_row(inp), _row(true)], dim=1)
    bottom = torch.cat([_row(blank), _row(gen)], dim=1)
    return torch.cat([top, bottom], dim=0).clamp(0, 1).numpy()
