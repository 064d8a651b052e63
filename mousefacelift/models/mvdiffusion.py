"""Stage 1: the multi-view diffusion UNet (one input view -> ``V`` target views with alpha).

The denoiser is a stock diffusers ``UNet2DConditionModel`` held as ``self.unet`` (its
state-dict keys are stock-named under ``unet.``, so SD 2.1 unCLIP and FaceLift weights load
unchanged, see :mod:`mousefacelift.diffusion.weights`). Around it, following FaceLift's stage
1 (Era3D lineage), Zero123++ and MVDream:

- input: ``in_channels = 2C``: each view's noisy latent concatenated with the INPUT view's
  latent (the same for every view of the object);
- unCLIP conditioning: the input view's CLIP image embedding ``[B, D]`` and the embedding of
  its noise-augmentation level (sinusoidal, ``D`` wide, as in diffusers' StableUnCLIP
  pipelines) go concatenated ``[B, 2D]`` through ``class_embed_type="projection"`` into the
  timestep embedding;
- multi-view attention: every self-attention (``attn1``) gets keys/values of all views of the
  object ("dense") or of the first view + itself ("sparse"), see
  :mod:`mousefacelift.diffusion.attention`;
- camera conditioning: a mouse has no "front" a camera can be told about, so target views are
  relative to the input camera (azimuth offsets about world up) and the model is told, per
  view, the relative azimuth, the target elevation and the input camera's elevation and field
  of view (:func:`camera_features`). An MLP maps these to a vector added to every
  cross-attention token (``context_tokens`` learned tokens: the generalisation of FaceLift's
  fixed per-view prompt embeddings) and, with ``camera_to_timestep``, the features go through
  the UNet's stock ``time_embedding.cond_proj`` into the timestep embedding (MVDream);
- a small head estimates the input camera's (elevation, fov) from the input latent and image
  embedding, for photos whose camera is unknown.

One timestep per object (repeated over its views). Classifier-free "unconditional" inputs are
zeros for ``image_embed`` and/or ``cond_latent``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding

from ..diffusion.attention import install_multiview_attention

__all__ = ["MVDiffusionConfig", "MVDiffusionUNet", "CAMERA_FEATURES", "camera_features", "view_conditioning",
           "camera_angles"]

CAMERA_FEATURES = 8   # sin/cos of: relative azimuth, target elevation, input elevation, input fov


@dataclass
class MVDiffusionConfig:
    """Architecture of the multi-view UNet. The presets configs/model/mvdiffusion_*.yaml state
    (and document) every field, so the dataclass has no defaults; build one with
    :func:`mousefacelift.models.model_config`."""

    name: str
    image_size: int                          # pixels of a (square) view
    num_views: int                           # target views V generated per object
    latent: Literal["pixel", "sd_vae"]       # latent space (mousefacelift.diffusion.codec)
    latent_factor: int                       # image pixels per latent pixel (sd_vae: 8)
    alpha_channel: bool                      # alpha is generated (pixel: in the RGBA block; sd_vae: +1 channel)
    block_out_channels: tuple[int, ...]      # UNet widths per resolution
    layers_per_block: int
    attention_head_dim: tuple[int, ...]      # diffusers' name; it is the number of HEADS per block (SD 2.x)
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    norm_num_groups: int
    cross_attention_dim: int
    use_linear_projection: bool
    image_embed_dim: int                     # D of the CLIP image embedding (class embedding input = 2D)
    context_tokens: int                      # learned cross-attention tokens (camera vector added to each)
    camera_dim: int                          # hidden width of the camera MLP and the input-camera head
    camera_to_timestep: bool                 # also add the camera to the timestep embedding (MVDream)
    mv_attention: Literal["dense", "sparse"]
    prediction_type: Literal["v_prediction", "epsilon", "sample"]
    num_train_timesteps: int
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"]   # training noise schedule (diffusers)
    beta_start: float
    beta_end: float
    grad_checkpoint: bool
    input_fov_range_deg: tuple[float, float]  # range of the input-camera head's fov estimate

    def __post_init__(self):
        def bad(field, expected):
            raise ValueError(f"MVDiffusionConfig.{field} is {getattr(self, field)!r}, expected {expected}")

        for field in ("image_size", "num_views", "latent_factor", "layers_per_block", "norm_num_groups",
                      "cross_attention_dim", "image_embed_dim", "context_tokens", "camera_dim", "num_train_timesteps"):
            if int(getattr(self, field)) <= 0:
                bad(field, "a positive integer")
        if self.latent not in ("pixel", "sd_vae"):
            bad("latent", "'pixel' or 'sd_vae'")
        if self.latent == "sd_vae" and self.latent_factor != 8:
            bad("latent_factor", "8 for the sd_vae latent (the SD VAE downsamples by 8)")
        if self.latent == "pixel" and not self.alpha_channel:
            bad("alpha_channel", "true for the pixel latent (it packs RGBA)")
        if self.image_size % self.latent_factor:
            bad("image_size", f"a multiple of latent_factor {self.latent_factor}")
        n = len(self.block_out_channels)
        for field in ("attention_head_dim", "down_block_types", "up_block_types"):
            if len(getattr(self, field)) != n:
                bad(field, f"{n} entries (one per block_out_channels entry)")
        if self.sample_size % 2 ** (n - 1):
            bad("image_size", f"image_size / latent_factor divisible by {2 ** (n - 1)} ({n} resolutions)")
        for i, (c, h) in enumerate(zip(self.block_out_channels, self.attention_head_dim)):
            if c % self.norm_num_groups or c % h:
                bad("block_out_channels", f"widths divisible by norm_num_groups {self.norm_num_groups} and by "
                                          f"attention_head_dim[{i}]={h}")
        if self.mv_attention not in ("dense", "sparse"):
            bad("mv_attention", "'dense' or 'sparse'")
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            bad("beta_schedule", "'linear', 'scaled_linear' or 'squaredcos_cap_v2'")
        if not 0 < self.beta_start < self.beta_end < 1:
            bad("beta_start", f"0 < beta_start < beta_end ({self.beta_end}) < 1")
        if self.prediction_type not in ("v_prediction", "epsilon", "sample"):
            bad("prediction_type", "'v_prediction', 'epsilon' or 'sample'")
        lo, hi = self.input_fov_range_deg
        if not 0 < lo < hi < 180:
            bad("input_fov_range_deg", "[low, high] with 0 < low < high < 180")

    @property
    def latent_channels(self) -> int:
        """C: pixel = space-to-depth of RGBA (4 f^2); sd_vae = 4 VAE channels (+1 alpha)."""
        if self.latent == "pixel":
            return 4 * self.latent_factor ** 2
        return 4 + int(self.alpha_channel)

    @property
    def sample_size(self) -> int:
        """Latent side h = w."""
        return self.image_size // self.latent_factor

    def unet_config(self) -> dict:
        """The diffusers ``UNet2DConditionModel`` config (stock keys) of this architecture."""
        return dict(
            sample_size=self.sample_size,
            in_channels=2 * self.latent_channels,
            out_channels=self.latent_channels,
            down_block_types=tuple(self.down_block_types),
            up_block_types=tuple(self.up_block_types),
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            attention_head_dim=tuple(self.attention_head_dim),
            norm_num_groups=self.norm_num_groups,
            cross_attention_dim=self.cross_attention_dim,
            use_linear_projection=self.use_linear_projection,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=2 * self.image_embed_dim,
            time_cond_proj_dim=CAMERA_FEATURES if self.camera_to_timestep else None,
            flip_sin_to_cos=True,
            freq_shift=0,
        )


# -- camera conditioning --------------------------------------------------------------------
def camera_angles(K: torch.Tensor, c2w: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(azimuth_deg, elevation_deg, fov_deg) of cameras ``[..., 3, 3]``/``[..., 4, 4]``.

    From the orientation, not the position: elevation is that of the direction back towards
    the camera (``-forward``), azimuth the heading of the image's right axis (for a camera
    looking at the origin with image up along world up these equal the position's spherical
    angles, in the convention of :func:`mousefacelift.cameras.spherical_to_position`), so a
    top-down camera still has a well-defined azimuth. fov is horizontal (``size`` pixels wide).
    """
    right, forward = c2w[..., :3, 0], c2w[..., :3, 2]
    azimuth = torch.rad2deg(torch.atan2(-right[..., 0], right[..., 1]))
    elevation = torch.rad2deg(torch.asin((-forward[..., 2]).clamp(-1.0, 1.0)))
    fov = torch.rad2deg(2 * torch.atan(0.5 * size / K[..., 0, 0]))
    return azimuth, elevation, fov


def camera_features(input_elevation_deg: torch.Tensor, input_fov_deg: torch.Tensor, rel_azimuth_deg: torch.Tensor,
                    target_elevation_deg: torch.Tensor) -> torch.Tensor:
    """Per-view camera features ``[B, V, 8]``: sin/cos of the relative azimuth, the target
    elevation, the input elevation and the input fov (angles as sin/cos: continuous across
    360 deg and bounded)."""
    if rel_azimuth_deg.dim() != 2 or target_elevation_deg.shape != rel_azimuth_deg.shape:
        raise ValueError(f"camera_features: rel_azimuth_deg and target_elevation_deg must both be [B, V], got "
                         f"{list(rel_azimuth_deg.shape)} and {list(target_elevation_deg.shape)}")
    B, V = rel_azimuth_deg.shape
    if input_elevation_deg.shape != (B,) or input_fov_deg.shape != (B,):
        raise ValueError(f"camera_features: input_elevation_deg and input_fov_deg must be [B]=[{B}], got "
                         f"{list(input_elevation_deg.shape)} and {list(input_fov_deg.shape)}")
    angles = torch.stack([rel_azimuth_deg, target_elevation_deg, input_elevation_deg[:, None].expand(B, V),
                          input_fov_deg[:, None].expand(B, V)], dim=-1)
    rad = torch.deg2rad(angles.float())
    return torch.stack([rad.sin(), rad.cos()], dim=-1).flatten(-2)


def view_conditioning(input_K: torch.Tensor, input_c2w: torch.Tensor, target_c2w: torch.Tensor,
                      size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The one path from cameras to conditioning, for training and inference alike.

    Returns ``input_camera [B, 2]`` = (elevation_deg, fov_deg) of the input camera and
    ``camera [B, V, 8]`` = :func:`camera_features` with each target's azimuth relative to the
    input's (about world up, wrapped to [-180, 180)) and its world elevation.
    """
    if input_K.shape[-2:] != (3, 3) or input_c2w.shape[-2:] != (4, 4) or input_K.dim() != 3 or input_c2w.dim() != 3:
        raise ValueError(f"view_conditioning: input_K must be [B,3,3] and input_c2w [B,4,4], got "
                         f"{list(input_K.shape)} and {list(input_c2w.shape)}")
    if target_c2w.dim() != 4 or target_c2w.shape[-2:] != (4, 4) or target_c2w.shape[0] != input_c2w.shape[0]:
        raise ValueError(f"view_conditioning: target_c2w must be [B,V,4,4] with B={input_c2w.shape[0]}, got "
                         f"{list(target_c2w.shape)}")
    in_az, in_el, in_fov = camera_angles(input_K.float(), input_c2w.float(), size)
    tg_az, tg_el, _ = camera_angles(input_K.float()[:, None], target_c2w.float(), size)
    rel = torch.remainder(tg_az - in_az[:, None] + 180.0, 360.0) - 180.0
    return torch.stack([in_el, in_fov], dim=-1), camera_features(in_el, in_fov, rel, tg_el)


# -- the model ------------------------------------------------------------------------------
class InputCameraHead(nn.Module):
    """(elevation_deg, fov_deg) of the input camera from its latent and image embedding:
    strided convs + pooling on the latent, a linear on the embedding, an MLP on both. Bounded
    outputs: elevation = 90 tanh(.), fov inside ``fov_range``."""

    def __init__(self, channels: int, embed_dim: int, width: int, fov_range: tuple[float, float]):
        super().__init__()
        self.latent = nn.Sequential(nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.SiLU(),
                                    nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Linear(embed_dim, width)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, 2))
        self.fov_range = (float(fov_range[0]), float(fov_range[1]))

    def forward(self, cond_latent: torch.Tensor, image_embed: torch.Tensor) -> torch.Tensor:
        raw = self.mlp(torch.cat([self.latent(cond_latent), self.embed(image_embed)], dim=-1)).float()
        lo, hi = self.fov_range
        return torch.stack([90.0 * torch.tanh(raw[:, 0]), lo + (hi - lo) * torch.sigmoid(raw[:, 1])], dim=-1)


class MVDiffusionUNet(nn.Module):
    """Multi-view denoiser: ``forward(noisy [B,V,C,h,w], ...) -> prediction [B,V,C,h,w]``.

    Submodules: ``unet`` (stock diffusers UNet2DConditionModel), ``context`` (learned
    cross-attention tokens), ``camera_mlp``, ``camera_head``. Only ``unet.*`` has published
    counterparts; the others are this model's own (listed as new by the weight loaders).
    """

    def __init__(self, config: MVDiffusionConfig):
        super().__init__()
        self.config = config
        self.unet = UNet2DConditionModel(**config.unet_config())
        install_multiview_attention(self.unet, config.num_views, config.mv_attention)
        if config.camera_to_timestep:   # starts as a no-op, so a pretrained UNet is unchanged at step 0
            nn.init.zeros_(self.unet.time_embedding.cond_proj.weight)
        self.context = nn.Parameter(torch.randn(config.context_tokens, config.cross_attention_dim) * 0.02)
        self.camera_mlp = nn.Sequential(nn.Linear(CAMERA_FEATURES, config.camera_dim), nn.SiLU(),
                                        nn.Linear(config.camera_dim, config.cross_attention_dim))
        nn.init.zeros_(self.camera_mlp[-1].weight)
        nn.init.zeros_(self.camera_mlp[-1].bias)
        self.camera_head = InputCameraHead(config.latent_channels, config.image_embed_dim, config.camera_dim,
                                           config.input_fov_range_deg)
        self.set_grad_checkpoint(config.grad_checkpoint)

    def set_grad_checkpoint(self, enabled: bool) -> None:
        """Recompute UNet blocks in backward (saves activation memory at ~30% more compute)."""
        if enabled:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    def _check(self, name: str, x: torch.Tensor, shape: tuple) -> None:
        if x.dim() != len(shape) or any(e is not None and s != e for s, e in zip(x.shape, shape)):
            expected = "[" + ",".join("*" if e is None else str(e) for e in shape) + "]"
            raise ValueError(f"MVDiffusionUNet({self.config.name}): {name} has shape {list(x.shape)}, expected "
                             f"{expected} (latent_channels={self.config.latent_channels}, num_views="
                             f"{self.config.num_views}, image_embed_dim={self.config.image_embed_dim})")

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond_latent: torch.Tensor,
                image_embed: torch.Tensor, camera: torch.Tensor, noise_level: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        C, V = cfg.latent_channels, cfg.num_views
        self._check("noisy", noisy, (None, V, C, None, None))
        B, _, _, h, w = noisy.shape
        self._check("cond_latent", cond_latent, (B, C, h, w))
        self._check("image_embed", image_embed, (B, cfg.image_embed_dim))
        self._check("camera", camera, (B, V, CAMERA_FEATURES))
        timesteps = torch.as_tensor(timesteps, device=noisy.device)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(B)
        self._check("timesteps", timesteps, (B,))
        if noise_level is None:
            noise_level = torch.zeros(B, device=noisy.device)
        noise_level = torch.as_tensor(noise_level, device=noisy.device)
        if noise_level.dim() == 0:
            noise_level = noise_level.expand(B)
        self._check("noise_level", noise_level, (B,))

        dtype = self.unet.dtype
        x = torch.cat([noisy, cond_latent[:, None].expand(B, V, C, h, w)], dim=2).reshape(B * V, 2 * C, h, w)
        level = get_timestep_embedding(noise_level, cfg.image_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        class_labels = torch.cat([image_embed.to(level.dtype), level], dim=-1).repeat_interleave(V, dim=0)
        camera = camera.reshape(B * V, CAMERA_FEATURES).to(dtype)
        context = self.context.to(dtype)[None] + self.camera_mlp(camera)[:, None]
        out = self.unet(x.to(dtype), timesteps.repeat_interleave(V), encoder_hidden_states=context,
                        class_labels=class_labels.to(dtype), timestep_cond=camera if cfg.camera_to_timestep else None,
                        return_dict=False)[0]
        return out.reshape(B, V, C, h, w)

    def predict_input_camera(self, cond_latent: torch.Tensor, image_embed: torch.Tensor) -> torch.Tensor:
        """(elevation_deg, fov_deg) estimate ``[B, 2]`` of the input view's camera."""
        cfg = self.config
        self._check("cond_latent", cond_latent, (None, cfg.latent_channels, None, None))
        self._check("image_embed", image_embed, (cond_latent.shape[0], cfg.image_embed_dim))
        dtype = self.unet.dtype
        return self.camera_head(cond_latent.to(dtype), image_embed.to(dtype))

