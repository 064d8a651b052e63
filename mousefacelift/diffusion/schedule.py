"""Noise-schedule helpers shared by training and the pipeline: which diffusers scheduler, the
v-prediction target and the min-SNR loss weights.

Why here: the training loss and the sampler must agree on one schedule (the model config's
``num_train_timesteps``, betas and ``prediction_type``), so both build it with
:func:`build_scheduler`, and the target the model learns (:func:`v_target`) is computed from the
same ``alphas_cumprod`` the sampler inverts. Samplers are swappable because every scheduler built
here shares that config (``EulerDiscreteScheduler.from_config(ddim.config)`` gives the same
noise levels).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..config import ConfigError

__all__ = ["SCHEDULERS", "SCHEDULE_KEYS", "build_scheduler", "alphas_cumprod_at", "v_target", "snr",
           "min_snr_weights"]

# Samplers by name (configs: ``diffusion.sampler``); all DDPM-family, discrete training timesteps.
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "ddpm": "DDPMScheduler"}

# The fields of a model config that define the training noise schedule (configs/model/mvdiffusion_*.yaml).
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                 "rescale_betas_zero_snr", "timestep_spacing")

# Sampler settings that are not properties of the trained model (a config stating a key wins):
# steps "trailing" (the first step starts at the last training timestep, the pure-noise end),
# DDIM's last step goes all the way to the clean sample (alpha 1), and no sampler clips its x0
# (latents are not bounded to [-1, 1]).
_SAMPLER_SETTINGS = {"DDIMScheduler": {"set_alpha_to_one": True, "clip_sample": False, "timestep_spacing": "trailing"},
                     "DDPMScheduler": {"clip_sample": False, "timestep_spacing": "trailing"},
                     "EulerDiscreteScheduler": {"timestep_spacing": "trailing"}}


def _schedule_of(config: Any) -> dict:
    if isinstance(config, Mapping):
        return {k: config[k] for k in SCHEDULE_KEYS if k in config}
    return {k: getattr(config, k) for k in SCHEDULE_KEYS if hasattr(config, k)}


def build_scheduler(kind: str, config: Any):
    """A diffusers scheduler ``kind`` (``ddim`` | ``euler`` | ``ddpm``) over the noise schedule of
    ``config`` (a model config or a mapping holding the :data:`SCHEDULE_KEYS` it states)."""
    import diffusers

    if kind not in SCHEDULERS:
        raise ConfigError(f"sampler {kind!r} is not one of {sorted(SCHEDULERS)}")
    schedule = _schedule_of(config)
    for key in ("num_train_timesteps", "prediction_type"):
        if key not in schedule:
            raise ConfigError(f"noise schedule for {kind}: the config states no {key!r} "
                              f"(stated: {sorted(schedule)})")
    cls_name = SCHEDULERS[kind]
    cls = getattr(diffusers, cls_name)
    try:
        return cls(**{**_SAMPLER_SETTINGS[cls_name], **schedule})
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ConfigError(f"noise schedule {schedule}: {cls_name} refused it: {e}") from None


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape + (1,) * (like.dim() - values.dim()))


def alphas_cumprod_at(scheduler, t: torch.Tensor, device=None) -> torch.Tensor:
    """The schedule's cumulative alpha at integer training timesteps ``t`` (float32, on ``device``)."""
    t = torch.as_tensor(t)
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError(f"training timesteps must be whole numbers, got {t.tolist()}")
        t = t.round()
    t = t.long()
    ac = scheduler.alphas_cumprod
    n = ac.shape[0]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise ValueError(f"timesteps {t.tolist()} outside the schedule's [0, {n - 1}]")
    return ac.to(device=t.device)[t].to(device=device if device is not None else t.device, dtype=torch.float32)


def v_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The v-prediction target ``sqrt(ac) * noise - sqrt(1 - ac) * x0`` at timesteps ``t`` [B]
    (one per object; latents [B, ...] of any rank), in the noising of ``scheduler.add_noise`` of
    the DDPM/DDIM schedulers: ``x_t = sqrt(ac) * x0 + sqrt(1 - ac) * noise``."""
    if latents.shape != noise.shape:
        raise ValueError(f"v_target: latents {tuple(latents.shape)} and noise {tuple(noise.shape)} differ in shape")
    ac = _expand(alphas_cumprod_at(scheduler, t, latents.device), latents)
    return (ac.sqrt() * noise.float() - (1.0 - ac).sqrt() * latents.float()).to(latents.dtype)


def snr(scheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``ac / (1 - ac)`` at timesteps ``t``."""
    ac = alphas_cumprod_at(scheduler, t)
    return ac / (1.0 - ac).clamp_min(1e-12)


def min_snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for a v-prediction loss: ``min(SNR, gamma) / (SNR + 1)`` [B]
    (Hang et al. 2023; the +1 because the v-MSE already weighs each step by SNR + 1 in x0 terms)."""
    if not gamma > 0:
        raise ValueError(f"min_snr_weights: gamma must be > 0, got {gamma}")
    s = snr(scheduler, t)
    return torch.clamp(s, max=float(gamma)) / (s + 1.0)
