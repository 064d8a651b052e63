"""The input view's CLIP image embedding (unCLIP conditioning of the multi-view UNet).

Why this wrapper: the UNet is conditioned on ``image_embeds`` of a
``CLIPVisionModelWithProjection`` (SD 2.1 unCLIP, FaceLift), and training, evaluation and the
pipeline must prepare the view identically: RGBA composited on black (the look of the rendered
shards), resized to the encoder's ``image_size``, normalised with CLIP's mean and std. The
encoder is frozen.

Where it comes from: ``FOLDER/image_encoder`` of a local diffusers folder (transformers, local
files only; nothing is downloaded), or, for presets trained from scratch (``tiny``), a small
CLIP vision model built from the model config with a fixed seed, so the same config gives the
same encoder in training, evaluation and a resumed run; a saved pipeline stores it anyway.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError
from .codec import check_rgba

__all__ = ["ImageEncoder", "build_image_encoder", "small_clip_config", "CLIP_MEAN", "CLIP_STD"]

# OpenAI CLIP's normalisation (also that of OpenCLIP ViT-H, the SD 2.1 unCLIP encoder).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The small encoder of from-scratch presets: a ViT of 8 px patches over the whole view, 2 layers,
# 4 heads, width = the model's image_embed_dim. Random weights drawn from this seed.
_SMALL_PATCH = 8
_SMALL_LAYERS = 2
_SMALL_HEADS = 4
_SMALL_SEED = 0


@contextlib.contextmanager
def _quiet_transformers():
    """No transformers progress bars while a (small) encoder is written or read."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


class ImageEncoder(nn.Module):
    """Frozen CLIP vision tower + projection: ``encode(rgba [N,4,H,W]) -> image_embeds [N,D]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        cfg = model.config
        self.embed_dim = int(cfg.projection_dim)
        self.image_size = int(cfg.image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        """Stays in eval mode: the encoder is frozen."""
        super().train(mode)
        self.model.eval()
        return self

    def preprocess(self, rgba: torch.Tensor) -> torch.Tensor:
        """RGBA in [0,1] -> CLIP pixel values [N,3,S,S] (on black, resized, normalised)."""
        rgba = check_rgba(rgba, "image encoder input")
        rgb = rgba[:, :3] * rgba[:, 3:4]
        if tuple(rgb.shape[-2:]) != (self.image_size, self.image_size):
            rgb = F.interpolate(rgb, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                                antialias=True).clamp(0.0, 1.0)
        return (rgb - self.mean.to(rgb)) / self.std.to(rgb)

    @torch.no_grad()
    def encode(self, rgba: torch.Tensor) -> torch.Tensor:
        """Image embeddings [N,D]; frozen, so no autograd graph is built."""
        pixels = self.preprocess(rgba)
        dtype = next(self.model.parameters()).dtype
        return self.model(pixel_values=pixels.to(dtype)).image_embeds.to(rgba.dtype)

    forward = encode

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The transformers folder (config.json + model.safetensors) :meth:`from_folder` reads."""
        with _quiet_transformers():
            self.model.save_pretrained(str(folder))

    @classmethod
    def from_folder(cls, path: str | os.PathLike) -> "ImageEncoder":
        """A ``CLIPVisionModelWithProjection`` folder (``config.json`` + weights), local files only."""
        from transformers import CLIPVisionModelWithProjection

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ConfigError(f"image encoder: {path}/config.json not found: expected a transformers "
                              "CLIPVisionModelWithProjection folder (image_encoder/ of a local diffusers folder); "
                              "nothing is downloaded")
        try:
            with _quiet_transformers():
                model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True,
                                                                      dtype=torch.float32)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"image encoder: {path} is not a loadable CLIPVisionModelWithProjection folder: "
                              f"{first}") from None
        return cls(model)


def small_clip_config(config: Any):
    """The CLIPVisionConfig of the small encoder of a from-scratch preset: the view itself at the
    model's ``image_size``, width and projection = ``image_embed_dim``."""
    from transformers import CLIPVisionConfig

    width = int(config.image_embed_dim)
    if width % _SMALL_HEADS or int(config.image_size) % _SMALL_PATCH:
        raise ConfigError(f"model {config.name!r}: the small image encoder needs image_embed_dim divisible by "
                          f"{_SMALL_HEADS} and image_size divisible by {_SMALL_PATCH}, got {width} and "
                          f"{config.image_size}")
    return CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, projection_dim=width,
                            num_hidden_layers=_SMALL_LAYERS, num_attention_heads=_SMALL_HEADS,
                            image_size=int(config.image_size), patch_size=_SMALL_PATCH)


def build_image_encoder(config: Any, folder: str | os.PathLike | None = None) -> ImageEncoder:
    """``FOLDER/image_encoder`` when a folder is given, else the small seeded encoder built from
    ``config``; its embedding width must be the model's ``image_embed_dim``."""
    from transformers import CLIPVisionModelWithProjection

    if folder is not None:
        encoder = ImageEncoder.from_folder(Path(folder) / "image_encoder")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SMALL_SEED)
            encoder = ImageEncoder(CLIPVisionModelWithProjection(small_clip_config(config)))
    if encoder.embed_dim != int(config.image_embed_dim):
        src = f"{Path(folder) / 'image_encoder'}" if folder is not None else "the small encoder"
        raise ConfigError(f"model {config.name!r}: image_embed_dim is {config.image_embed_dim} but {src} gives "
                          f"{encoder.embed_dim}-dim image embeddings")
    return encoder
