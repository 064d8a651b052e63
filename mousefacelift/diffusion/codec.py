"""Latent codecs of the multi-view diffusion stage: RGBA views <-> the latents the UNet denoises.

Why two: ``pixel`` (exact space-to-depth of RGBA, no weights) lets the ``tiny`` preset train and
test on a CPU with nothing to load; ``sd_vae`` is the frozen Stable Diffusion autoencoder of a
local diffusers folder (``FOLDER/vae``), the latent space the ``base`` preset and published
weights live in. Both carry the alpha, because GS-LRM and the reconstruction need a silhouette:
``pixel`` as one of the four channels, ``sd_vae`` as one extra latent channel (the coverage
averaged over each latent cell, decoded by bilinear upsampling). Every codec maps straight RGBA
in [0, 1] to latents of roughly unit scale and back.

The VAE sees colour composited on black (``rgb * alpha``, the look of the rendered shards), so
the background it encodes is uniform; decoding divides by the decoded alpha again to return
straight colour.
"""
from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError

__all__ = ["LatentCodec", "PixelCodec", "SDVAECodec", "build_codec", "check_rgba", "CODECS"]

# Below this decoded coverage a pixel counts as background (its colour is set to 0): one 8-bit step.
_ALPHA_EPS = 1.0 / 255.0


def check_rgba(rgba: Any, what: str = "image", size: int | None = None) -> torch.Tensor:
    """``rgba`` as a float tensor [N,4,H,W] (square ``size`` when given); anything else is a
    ValueError naming ``what``, the shape found and the shape expected."""
    if not isinstance(rgba, torch.Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor [N,4,H,W] of RGBA in [0,1], got {type(rgba).__name__}")
    if rgba.dim() != 4 or rgba.shape[1] != 4:
        raise ValueError(f"{what}: expected RGBA [N,4,H,W] (4 channels: colour + straight alpha), "
                         f"got shape {tuple(rgba.shape)}")
    if size is not None and tuple(rgba.shape[-2:]) != (size, size):
        raise ValueError(f"{what}: image size {rgba.shape[-2]}x{rgba.shape[-1]} is not the model's "
                         f"{size}x{size} (resize or frame the view first)")
    if not rgba.is_floating_point():
        raise ValueError(f"{what}: expected float values in [0,1], got dtype {rgba.dtype}")
    return rgba


class LatentCodec(nn.Module, abc.ABC):
    """RGBA [N,4,H,W] in [0,1] <-> latents [N,latent_channels,H/factor,W/factor]."""

    kind: str

    def __init__(self, factor: int, latent_channels: int):
        super().__init__()
        self.factor = int(factor)
        self.latent_channels = int(latent_channels)

    @abc.abstractmethod
    def encode(self, rgba: torch.Tensor) -> torch.Tensor:
        """Straight RGBA [N,4,H,W] in [0,1] -> latents [N,C,H/f,W/f]."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [N,C,h,w] -> straight RGBA [N,4,h*f,w*f] in [0,1]."""

    def _check_image(self, rgba: torch.Tensor) -> torch.Tensor:
        rgba = check_rgba(rgba, f"{self.kind} codec input")
        h, w = rgba.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"{self.kind} codec input: image size {h}x{w} is not a multiple of the latent "
                             f"factor {self.factor}")
        return rgba

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"{self.kind} codec: expected latents [N,{self.latent_channels},h,w], got {got}")
        return latents

    def extra_repr(self) -> str:
        return f"kind={self.kind}, factor={self.factor}, latent_channels={self.latent_channels}"


class PixelCodec(LatentCodec):
    """Exact space-to-depth: each ``factor`` x ``factor`` block of RGBA (mapped to [-1,1]) becomes
    ``4 * factor**2`` channels of one latent pixel. No weights, lossless."""

    kind = "pixel"

    def __init__(self, factor: int):
        if int(factor) < 1:
            raise ConfigError(f"pixel codec: latent_factor must be >= 1, got {factor}")
        super().__init__(factor, 4 * int(factor) ** 2)

    def encode(self, rgba: torch.Tensor) -> torch.Tensor:
        rgba = self._check_image(rgba)
        return F.pixel_unshuffle(rgba * 2.0 - 1.0, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = self._check_latents(latents)
        return ((F.pixel_shuffle(latents, self.factor) + 1.0) * 0.5).clamp(0.0, 1.0)


class SDVAECodec(LatentCodec):
    """The frozen diffusers ``AutoencoderKL`` for colour (latents scaled by its
    ``scaling_factor``) plus the alpha, area-averaged to the latent grid and mapped to [-1,1], as
    one extra channel. ``alpha=False`` (a model that generates no alpha, e.g. FaceLift's own
    4-channel UNet) encodes colour only and decodes an opaque alpha."""

    kind = "sd_vae"

    def __init__(self, vae: nn.Module, alpha: bool = True):
        cfg = vae.config
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        super().__init__(factor, int(cfg.latent_channels) + int(bool(alpha)))
        self.alpha = bool(alpha)
        self.vae = vae.eval().requires_grad_(False)
        self.scaling_factor = float(cfg.scaling_factor)
        shift = getattr(cfg, "shift_factor", None)
        self.shift_factor = float(shift) if shift is not None else 0.0

    def train(self, mode: bool = True):
        """The VAE stays frozen in eval mode whatever the owner does."""
        super().train(mode)
        self.vae.eval()
        return self

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, alpha: bool = True) -> "SDVAECodec":
        """Read ``FOLDER/vae`` (a diffusers AutoencoderKL folder), local files only."""
        from diffusers import AutoencoderKL

        path = Path(folder) / "vae"
        if not (path / "config.json").is_file():
            raise ConfigError(f"sd_vae codec: {path}/config.json not found: expected a diffusers folder with a vae/ "
                              "subfolder (e.g. a local Stable Diffusion 2.1 copy); nothing is downloaded")
        try:
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"sd_vae codec: {path} is not a loadable AutoencoderKL folder: {first}") from None
        return cls(vae, alpha)

    @torch.no_grad()
    def encode(self, rgba: torch.Tensor) -> torch.Tensor:
        """Frozen: no autograd graph through the VAE (training encodes every step)."""
        rgba = self._check_image(rgba)
        rgb, alpha = rgba[:, :3], rgba[:, 3:4]
        x = (rgb * alpha) * 2.0 - 1.0
        dtype = next(self.vae.parameters()).dtype
        # The distribution's mode, not a sample: deterministic, so latents can be cached.
        z = self.vae.encode(x.to(dtype)).latent_dist.mode().to(rgba.dtype)
        z = (z - self.shift_factor) * self.scaling_factor
        if not self.alpha:
            return z
        a = F.avg_pool2d(alpha, self.factor) * 2.0 - 1.0
        return torch.cat([z, a], dim=1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = self._check_latents(latents)
        z = latents[:, :-1] if self.alpha else latents
        z = z / self.scaling_factor + self.shift_factor
        dtype = next(self.vae.parameters()).dtype
        rgb = (self.vae.decode(z.to(dtype)).sample.to(latents.dtype) + 1.0) * 0.5
        if not self.alpha:
            return torch.cat([rgb.clamp(0.0, 1.0), torch.ones_like(rgb[:, :1])], dim=1)
        alpha = F.interpolate(latents[:, -1:], scale_factor=self.factor, mode="bilinear", align_corners=False)
        alpha = ((alpha + 1.0) * 0.5).clamp(0.0, 1.0)
        straight = torch.where(alpha > _ALPHA_EPS, rgb.clamp(0.0, 1.0) / alpha.clamp_min(_ALPHA_EPS),
                               torch.zeros_like(rgb))
        return torch.cat([straight.clamp(0.0, 1.0), alpha], dim=1)


CODECS: dict[str, type[LatentCodec]] = {"pixel": PixelCodec, "sd_vae": SDVAECodec}


def build_codec(config: Any, folder: str | os.PathLike | None = None) -> LatentCodec:
    """The codec a model config names (``latent``, ``latent_factor``): ``pixel`` needs nothing,
    ``sd_vae`` reads ``FOLDER/vae``. The codec's channel count and factor must be the model's."""
    kind = getattr(config, "latent", None)
    where = f"model {getattr(config, 'name', '?')!r}"
    if kind == "pixel":
        codec: LatentCodec = PixelCodec(config.latent_factor)
    elif kind == "sd_vae":
        if folder is None:
            raise ConfigError(f"{where}: latent 'sd_vae' needs a local diffusers folder holding vae/ (none given); "
                              "nothing is downloaded")
        codec = SDVAECodec.from_folder(folder, alpha=bool(config.alpha_channel))
    else:
        raise ConfigError(f"{where}: latent is {kind!r}, expected one of {sorted(CODECS)}")
    if codec.factor != int(config.latent_factor):
        raise ConfigError(f"{where}: latent_factor is {config.latent_factor} but the {kind} codec"
                          f"{' in ' + str(folder) if folder is not None else ''} downsamples by {codec.factor}")
    expected = getattr(config, "latent_channels", codec.latent_channels)
    if codec.latent_channels != expected:
        raise ConfigError(f"{where}: the model expects {expected} latent channels, the {kind} codec"
                          f"{' in ' + str(folder) if folder is not None else ''} gives {codec.latent_channels}")
    return codec
