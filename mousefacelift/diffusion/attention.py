"""Multi-view self-attention as a diffusers attention processor.

Why a processor: the UNet stays a stock ``UNet2DConditionModel`` (parameter names and shapes
of SD 2.1 / FaceLift, so published weights load unchanged); only what the keys and values of
every self-attention (``attn1``) see changes. The batch holds ``V`` consecutive views of each
object (``[B*V, L, C]``, views of one object adjacent). Queries stay per view:

- ``dense``: every view attends to the tokens of all ``V`` views of its object (MVDream,
  Era3D/FaceLift at 256-320 px). Computed as one attention over the object's ``V*L`` tokens,
  which is the same thing without repeating keys per view.
- ``sparse``: every view attends to the first view (the target at the input's azimuth) and to
  itself (Era3D/FaceLift "front + self" at 512 px): ``2L`` keys instead of ``V*L``. The first
  view sees its own tokens twice, which equals ordinary self-attention (duplicated keys leave
  the softmax-weighted average unchanged).

Cross-attention (``attn2``) keeps diffusers' default processor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

__all__ = ["MV_ATTENTION_MODES", "MultiViewAttnProcessor", "install_multiview_attention"]

MV_ATTENTION_MODES = ("dense", "sparse")


class MultiViewAttnProcessor:
    """Self-attention whose keys/values span the views of one object (see module docstring)."""

    def __init__(self, num_views: int, mode: str):
        if mode not in MV_ATTENTION_MODES:
            raise ValueError(f"mv_attention is {mode!r}, expected one of {list(MV_ATTENTION_MODES)}")
        if int(num_views) < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.num_views = int(num_views)
        self.mode = mode

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("MultiViewAttnProcessor is for self-attention (attn1) only: got encoder_hidden_states "
                             "or an attention mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            n, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(n, channel, height * width).transpose(1, 2)
        n, length, _ = hidden_states.shape
        V = self.num_views
        if n % V:
            raise ValueError(f"multi-view attention: batch {n} is not a multiple of num_views {V}")
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        heads = attn.heads
        q, k, v = (proj(hidden_states) for proj in (attn.to_q, attn.to_k, attn.to_v))
        head_dim = k.shape[-1] // heads
        q, k, v = (x.view(n, length, heads, head_dim).transpose(1, 2) for x in (q, k, v))   # [N, H, L, d]
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)

        if self.mode == "dense":
            def objects(x):   # [B*V, H, L, d] -> [B, H, V*L, d]
                return x.view(n // V, V, heads, length, head_dim).transpose(1, 2).reshape(n // V, heads, V * length,
                                                                                        head_dim)
            out = F.scaled_dot_product_attention(objects(q), objects(k), objects(v))
            out = out.view(n // V, heads, V, length, head_dim).transpose(1, 2).reshape(n, heads, length, head_dim)
        else:
            def with_first(x):   # [B*V, H, L, d] -> [B*V, H, 2L, d]: the object's first view, then the view itself
                first = x.view(n // V, V, heads, length, head_dim)[:, :1].expand(-1, V, -1, -1, -1)
                return torch.cat([first.reshape(n, heads, length, head_dim), x], dim=2)
            out = F.scaled_dot_product_attention(q, with_first(k), with_first(v))

        out = out.transpose(1, 2).reshape(n, length, heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(n, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_multiview_attention(unet, num_views: int, mode: str) -> None:
    """Give every ``attn1`` of ``unet`` a :class:`MultiViewAttnProcessor` (one shared instance)
    and every other attention diffusers' SDPA processor."""
    mv = MultiViewAttnProcessor(num_views, mode)
    unet.set_attn_processor({name: mv if name.endswith("attn1.processor") else AttnProcessor2_0()
                             for name in unet.attn_processors})
