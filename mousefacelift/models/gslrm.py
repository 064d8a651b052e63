"""GS-LRM: posed input views -> one 3D Gaussian per input pixel (FaceLift-style).

Pipeline (Zhang et al. 2024, GS-LRM; FaceLift's ``gslrm/model/gslrm.py``):

1. per pixel: RGB mapped to [-1, 1] and 6 ray channels (``ray_features``) -> 9 channels:
   - ``plucker``: (o x d, d), the Plücker moment and direction (FaceLift with
     ``use_custom_plucker: false``);
   - ``direction_nearest``: (d, o + (-o.d) d), the direction and the ray's point nearest the
     world origin (FaceLift with ``use_custom_plucker: true``, as in every config it ships);
   the two carry the same information (the nearest point is d x (o x d)) in different encodings;
2. patchify (patch ``p``, flattened (patch_row, patch_col, channel) like FaceLift) and a
   bias-free linear tokeniser;
3. a pre-LN transformer (bias-free LayerNorms and linears, SDPA attention: flash on GPU)
   over the tokens of ALL input views jointly, after ``num_global_gaussians`` learned
   "global" Gaussian tokens (FaceLift's ``gaussian_position_embeddings``, n_gaussians);
4. per-token head (LayerNorm + linear) -> p*p Gaussians per token, parameters in FaceLift's
   order [xyz(3), sh((deg+1)^2 * 3), scale(3), rotation(4), opacity(1)] and activations:
   - distance along the pixel's unit ray = anchor + near + (far-near) * sigmoid(mean(xyz) + bias),
     position = ray origin + distance * ray direction (so Gaussians start on their pixel).
     The anchor is 0 without ``near_far_relative``; with it, ``near_far_anchor`` picks
     ``camera_distance`` |o| (the camera's distance to the origin: cameras at any distance,
     2 to 6 body lengths, docs/architecture.md §3, reach the subject alike; FaceLift's
     ``depth_reference_origin``) or ``closest_approach`` -o.d (the distance to the ray's point
     nearest the origin: FaceLift's branch for ``use_custom_plucker: true``, its released
     model's (-o.d) + 1.8 (2 sigma - 1)). FaceLift's default branch, 1.2 + 3 sigma, is the
     absolute range [1.2, 4.2];
   - global Gaussians take their xyz raw (no ray);
   - scale = exp(min(raw + scale_bias, scale_max_log)), rotation = normalise(raw) (wxyz),
     opacity = sigmoid(raw + opacity_bias), colour = raw SH coefficients.

Output order: the pixel-aligned Gaussians are in raster order per view, so
``gaussians.means.reshape(B, V, H, W, 3)`` is the predicted point map; global Gaussians (if
any) come first. FaceLift orders its pixel Gaussians by (view, patch row, patch column, row in
patch, column in patch), otherwise the output is the same. The parameter layout equals
FaceLift's, so its published checkpoint loads through
:func:`mousefacelift.models.facelift_ckpt.load_facelift_checkpoint` into the ``facelift``
preset, which follows its released configuration. A float64 model computes in float64
throughout (the parity test); otherwise rays and Gaussians are float32 even under autocast.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..cameras import camera_rays
from ..gaussians import Gaussians

__all__ = ["GSLRMConfig", "GSLRM", "RAY_FEATURES", "NEAR_FAR_ANCHORS", "ray_input_features", "approx_forward_flops"]

RAY_FEATURES = ("plucker", "direction_nearest")
NEAR_FAR_ANCHORS = ("camera_distance", "closest_approach")

log = logging.getLogger(__name__)


@dataclass
class GSLRMConfig:
    """Architecture and output parameterisation. The presets in configs/model/*.yaml state
    (and document) every field, so the dataclass has no defaults of its own except
    ``head_hidden``, which only ``small`` sets (checkpoints of the other presets lack it);
    build one from a preset with :func:`mousefacelift.models.model_config`."""

    name: str
    patch_size: int
    width: int                    # token dimension d
    layers: int
    heads: int
    mlp_ratio: int
    sh_degree: int
    num_global_gaussians: int     # FaceLift's extra learned Gaussian tokens (n_gaussians)
    view_markers: bool            # FaceLift's add_refsrc_marker: reference vs source view embedding
    near: float                   # bounded distance along the ray (FaceLift: 2.7 +- 1.5)
    far: float
    depth_bias: float
    scale_bias: float
    scale_max_log: float
    opacity_bias: float
    init_std: float
    pixel_skip: bool              # add a zero-initialised linear map of each pixel's own 9 input channels
    grad_checkpoint: bool         # recompute transformer blocks in backward (saves memory)
    checkpoint_every: int         # blocks per checkpointed segment
    head_hidden: int = 0          # 0: FaceLift's linear per-token head; >0: LN -> linear(hidden) -> GELU -> linear
    near_far_relative: bool = False  # near/far are offsets from an anchor distance along each ray
    # Checkpoints written before these two options existed used the project's conventions:
    ray_features: str = "plucker"             # the 6 ray input channels (RAY_FEATURES, module docstring)
    near_far_anchor: str = "camera_distance"  # the anchor of near_far_relative (NEAR_FAR_ANCHORS)

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"GSLRMConfig: width {self.width} is not divisible by heads {self.heads}")
        if not (self.near < self.far if self.near_far_relative else 0 < self.near < self.far):
            raise ValueError(f"GSLRMConfig: need {'' if self.near_far_relative else '0 < '}near < far, got "
                             f"near={self.near}, far={self.far}")
        for name in ("patch_size", "width", "layers", "heads", "mlp_ratio", "checkpoint_every"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"GSLRMConfig: {name} must be positive, got {getattr(self, name)}")
        if self.ray_features not in RAY_FEATURES:
            raise ValueError(f"GSLRMConfig: ray_features is {self.ray_features!r}, expected one of "
                             f"{list(RAY_FEATURES)}")
        if self.near_far_anchor not in NEAR_FAR_ANCHORS:
            raise ValueError(f"GSLRMConfig: near_far_anchor is {self.near_far_anchor!r}, expected one of "
                             f"{list(NEAR_FAR_ANCHORS)}")
        if self.sh_degree < 0 or self.num_global_gaussians < 0 or self.head_hidden < 0:
            raise ValueError("GSLRMConfig: sh_degree, num_global_gaussians and head_hidden must be >= 0")

    @property
    def in_channels(self) -> int:
        return 3 + 6

    @property
    def gaussian_dim(self) -> int:
        return 3 + (self.sh_degree + 1) ** 2 * 3 + 3 + 4 + 1


def ray_input_features(o: torch.Tensor, d: torch.Tensor, kind: str) -> torch.Tensor:
    """The 6 ray channels of the model input from origins and unit directions [..., 3]."""
    if kind == "plucker":
        return torch.cat([torch.cross(o, d, dim=-1), d], dim=-1)
    if kind == "direction_nearest":
        return torch.cat([d, o - (o * d).sum(-1, keepdim=True) * d], dim=-1)
    raise ValueError(f"ray_input_features: kind is {kind!r}, expected one of {list(RAY_FEATURES)}")


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    def __init__(self, d: int, ratio: int):
        super().__init__()
        self.fc1 = nn.Linear(d, d * ratio, bias=False)
        self.fc2 = nn.Linear(d * ratio, d, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block (bias-free, like FaceLift's)."""

    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, bias=False)
        self.attn = SelfAttention(d, heads)
        self.norm2 = nn.LayerNorm(d, bias=False)
        self.mlp = MLP(d, mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GaussianHead(nn.Module):
    """LayerNorm + linear (FaceLift's head, ``hidden=0``). With ``hidden > 0`` a GELU layer of
    that width comes first: a small token can then emit its p*p pixels' Gaussians without the
    output being confined to a width-dimensional linear subspace (the tiny model's limit)."""

    def __init__(self, d: int, out: int, hidden: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(d, bias=False)
        self.hidden = nn.Linear(d, hidden, bias=False) if hidden else None
        self.linear = nn.Linear(hidden or d, out, bias=False)

    def forward(self, x):
        x = self.norm(x)
        if self.hidden is not None:
            x = F.gelu(self.hidden(x))
        return self.linear(x)


class GSLRM(nn.Module):
    """Posed images -> Gaussians. See the module docstring for the parameterisation."""

    def __init__(self, config: GSLRMConfig):
        super().__init__()
        self.config = cfg = config
        d, p = cfg.width, cfg.patch_size
        self.tokenizer = nn.Linear(cfg.in_channels * p * p, d, bias=False)
        self.view_markers = nn.Parameter(torch.zeros(2, d)) if cfg.view_markers else None
        self.global_tokens = nn.Parameter(torch.zeros(cfg.num_global_gaussians, d)) if cfg.num_global_gaussians else None
        self.input_norm = nn.LayerNorm(d, bias=False)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.global_head = GaussianHead(d, cfg.gaussian_dim) if cfg.num_global_gaussians else None
        self.pixel_head = GaussianHead(d, p * p * cfg.gaussian_dim, cfg.head_hidden)
        # Not in FaceLift: a token's head emits p*p pixels' parameters from one d-wide vector,
        # so pixel-level detail (a pixel's own colour, the silhouette edge inside a patch) must
        # squeeze through it; this skip hands each Gaussian its pixel's inputs directly.
        self.pixel_skip = nn.Linear(cfg.in_channels, cfg.gaussian_dim, bias=False) if cfg.pixel_skip else None
        self.reset_parameters()

    def reset_parameters(self):
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
        for prm in (self.view_markers, self.global_tokens):
            if prm is not None:
                nn.init.trunc_normal_(prm, std=std)
        if self.pixel_skip is not None:        # zero: the untrained model equals FaceLift's head
            nn.init.zeros_(self.pixel_skip.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward ------------------------------------------------------------------------
    def _compute_dtype(self) -> torch.dtype:
        """float64 for a float64 model, else float32 (rays and Gaussians stay out of bf16)."""
        return torch.float64 if self.tokenizer.weight.dtype == torch.float64 else torch.float32

    def _tokens(self, images, K, c2w):
        B, V, _, H, W = images.shape
        p, ft = self.config.patch_size, self._compute_dtype()
        with torch.autocast(device_type=images.device.type, enabled=False):   # rays in full precision
            o, d = camera_rays(K.to(ft), c2w.to(ft), H, W)                # [B,V,H,W,3]
        rays = ray_input_features(o, d, self.config.ray_features).permute(0, 1, 4, 2, 3)
        pix = torch.cat([images.to(ft) * 2 - 1, rays], dim=2)            # [B,V,9,H,W]
        x = pix.reshape(B, V, 9, H // p, p, W // p, p).permute(0, 1, 3, 5, 4, 6, 2)
        x = x.reshape(B, V * (H // p) * (W // p), p * p * 9)
        tok = self.tokenizer(x)
        if self.view_markers is not None:
            marker = torch.cat([self.view_markers[:1], self.view_markers[1:].expand(V - 1, -1)])
            tok = (tok.view(B, V, -1, tok.shape[-1]) + marker[None, :, None]).view(B, -1, tok.shape[-1])
        return tok, pix, o, d

    def _run_blocks(self, x):
        every = self.config.checkpoint_every
        use_ckpt = self.config.grad_checkpoint and self.training and torch.is_grad_enabled()
        for s in range(0, len(self.blocks), every):
            seg = self.blocks[s:s + every]

            def run(t, seg=seg):
                for blk in seg:
                    t = blk(t)
                return t

            x = checkpoint(run, x, use_reentrant=False) if use_ckpt else run(x)
        return x

    def _activate(self, raw: torch.Tensor, xyz: torch.Tensor):
        """raw [B,N,P] (float32) -> (means, scales, rotations, opacities, sh) with given xyz."""
        cfg = self.config
        k = (cfg.sh_degree + 1) ** 2
        _, feat, scale, rot, opac = raw.split([3, k * 3, 3, 4, 1], dim=-1)
        sh = feat.reshape(raw.shape[0], raw.shape[1], k, 3)
        scales = torch.exp((scale + cfg.scale_bias).clamp(max=cfg.scale_max_log))
        rotations = rot / rot.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        opacities = torch.sigmoid(opac + cfg.opacity_bias)
        return Gaussians(xyz, scales, rotations, opacities, sh)

    def forward(self, images: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> Gaussians:
        """images [B,V,3,H,W] in [0,1], K [B,V,3,3], c2w [B,V,4,4] -> Gaussians with
        ``num_global_gaussians + V*H*W`` per sample (float32 even under autocast; float64 for a
        float64 model)."""
        cfg = self.config
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"GSLRM: images must be [B,V,3,H,W], got {tuple(images.shape)}")
        B, V, _, H, W = images.shape
        p = cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"GSLRM: image size {H}x{W} must be a multiple of the patch size {p}")
        if K.shape != (B, V, 3, 3) or c2w.shape != (B, V, 4, 4):
            raise ValueError(f"GSLRM: K must be [{B},{V},3,3] and c2w [{B},{V},4,4], got {tuple(K.shape)} "
                             f"and {tuple(c2w.shape)}")
        tok, pix, o, d = self._tokens(images, K, c2w)
        n_glob = cfg.num_global_gaussians
        if n_glob:
            tok = torch.cat([self.global_tokens[None].expand(B, -1, -1).to(tok.dtype), tok], dim=1)
        x = self._run_blocks(self.input_norm(tok))
        glob_tok, pix_tok = x[:, :n_glob], x[:, n_glob:]

        raw = self.pixel_head(pix_tok).to(self._compute_dtype())        # [B, V*h*w, p*p*P]
        with torch.autocast(device_type=raw.device.type, enabled=False):
            return self._gaussians(raw, glob_tok, pix, o, d, B, V, H, W)

    def _gaussians(self, raw, glob_tok, pix, o, d, B, V, H, W) -> Gaussians:
        cfg = self.config
        p, n_glob = cfg.patch_size, cfg.num_global_gaussians
        P = cfg.gaussian_dim
        raw = raw.reshape(B, V, H // p, W // p, p, p, P).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, V * H * W, P)
        if self.pixel_skip is not None:                                   # pixels in the same raster order
            raw = raw + self.pixel_skip(pix.permute(0, 1, 3, 4, 2).reshape(B, V * H * W, cfg.in_channels))
        o, d = o.reshape(B, V * H * W, 3), d.reshape(B, V * H * W, 3)
        t = torch.sigmoid(raw[..., :3].mean(dim=-1, keepdim=True) + cfg.depth_bias)
        dist = cfg.near + (cfg.far - cfg.near) * t
        if cfg.near_far_relative:                    # the subject sits around the origin at any camera distance
            dist = dist + (o.norm(dim=-1, keepdim=True) if cfg.near_far_anchor == "camera_distance"
                           else -(o * d).sum(dim=-1, keepdim=True))
        g = self._activate(raw, o + dist * d)
        if n_glob:
            ft = raw.dtype
            graw = self.global_head(glob_tok.to(ft)).to(ft)
            g = Gaussians.cat([self._activate(graw, graw[..., :3]), g], dim=1)
        return g

    def ray_distance_map(self, gaussians: Gaussians, K: torch.Tensor, c2w: torch.Tensor, height: int,
                         width: int) -> torch.Tensor:
        """Distance of each pixel-aligned Gaussian from its ray origin, [B,V,1,H,W]."""
        B, V = K.shape[:2]
        n = self.config.num_global_gaussians
        pts = gaussians.means[:, n:].reshape(B, V, height, width, 3)
        o, _ = camera_rays(K.to(pts.dtype), c2w.to(pts.dtype), height, width)
        return (pts - o).norm(dim=-1)[:, :, None]

    def summary(self) -> dict:
        return {**asdict(self.config), "parameters": self.num_parameters()}


def approx_forward_flops(cfg: GSLRMConfig, views: int, height: int, width: int) -> float:
    """Matmul FLOPs of one forward (2 per MAC): tokeniser, blocks (projections + attention), head."""
    L = views * (height // cfg.patch_size) * (width // cfg.patch_size) + cfg.num_global_gaussians
    d = cfg.width
    per_block = 2 * L * (4 * d * d + 2 * cfg.mlp_ratio * d * d) + 2 * 2 * L * L * d
    out = cfg.gaussian_dim * cfg.patch_size ** 2
    head = 2 * L * (d * cfg.head_hidden + cfg.head_hidden * out) if cfg.head_hidden else 2 * L * d * out
    io = 2 * L * d * cfg.in_channels * cfg.patch_size ** 2 + head
    return cfg.layers * per_block + io

