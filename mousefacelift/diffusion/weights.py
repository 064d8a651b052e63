"""Published UNet weights from a local folder into :class:`MVDiffusionUNet` (nothing is downloaded).

Two layouts are read, both as diffusers writes them (``unet/config.json`` plus
``unet/diffusion_pytorch_model.safetensors``, or ``.bin`` read with ``weights_only=True``, or
safetensors shards with an index); the folder may be the pipeline root or its ``unet/``:

- **SD 2.1 unCLIP** (stable-diffusion-2-1-unclip): a stock ``UNet2DConditionModel`` with 4 input
  and 4 output channels, the unCLIP ``class_embed_type="projection"`` (input 2048 = CLIP ViT-H
  image embedding + its noise-level embedding). The starting point of the ``base`` preset.
- **FaceLift's multi-view UNet** (its ``pipeckpts/unet``): ``UNetMV2DConditionModel`` from
  FaceLift's ``mvdiffusion/models``. With the published settings (``cd_attention_mid/last``
  false, ``addition_downsample`` false, ``selfattn_block: custom``) its parameter names equal the
  stock ones: the MV2D blocks rename classes, not parameters, and multi-view attention lives
  in the ``attn1`` processor. Its 8 input channels are the noisy latent and the input view's
  latent (4 + 4). Variants with those flags on carry extra modules that this model does not
  have (``attn_joint_mid``/``norm_joint_mid``, ``attn_joint_last``/``norm_joint_last``,
  ``conv_block``/``addition_conv_out``); they are refused, naming the flag and the keys.

Channel mapping (this model's latent is ``C = 4 VAE + 1 alpha``): ``conv_in`` gets the
source's noisy channels at ``[0, 4)`` and, for FaceLift, its input-view channels at
``[C, C+4)``; the alpha channels (and, for SD, all input-view channels) start at zero, so the
loaded model computes exactly what the source computed. ``conv_out`` gets the source's 4 rows;
the alpha row starts at zero. Parameters the source cannot have (``context``, ``camera_mlp``,
``camera_head``, ``unet.time_embedding.cond_proj``) are reported as new. Anything else that
does not fit is an error naming the keys (first few + count); nothing is loaded then.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers import UNet2DConditionModel

from ..models.facelift_ckpt import IncompatibleCheckpoint
from ..models.mvdiffusion import MVDiffusionUNet

__all__ = ["read_unet_folder", "load_pretrained_unet", "load_sd_unclip_unet", "load_facelift_unet",
           "load_unet_state", "SOURCES", "FACELIFT_EXTRA_MODULES"]

log = logging.getLogger(__name__)

# diffusers class name in unet/config.json -> source kind
SOURCES = {"UNet2DConditionModel": "sd_unclip", "UNetMV2DConditionModel": "facelift"}
# FaceLift flags that add modules beyond the stock names, and the names they add
FACELIFT_EXTRA_MODULES = {"cd_attention_mid": ("attn_joint_mid.", "norm_joint_mid."),
                          "cd_attention_last": ("attn_joint_last.", "norm_joint_last."),
                          "addition_downsample": ("conv_block.", "addition_conv_out.")}
# FaceLift's block classes are the stock ones with multi-view attention processors
_MV_BLOCKS = {"CrossAttnDownBlockMV2D": "CrossAttnDownBlock2D", "CrossAttnUpBlockMV2D": "CrossAttnUpBlock2D",
              "UNetMidBlockMV2DCrossAttn": "UNetMidBlock2DCrossAttn"}
# config fields that decide parameter names/shapes (besides in/out channels)
_STRUCTURE = ("down_block_types", "up_block_types", "mid_block_type", "block_out_channels", "layers_per_block",
              "attention_head_dim", "num_attention_heads", "cross_attention_dim", "transformer_layers_per_block",
              "norm_num_groups", "use_linear_projection", "class_embed_type", "projection_class_embeddings_input_dim",
              "only_cross_attention", "dual_cross_attention", "encoder_hid_dim", "addition_embed_type", "num_class_embeds",
              "time_embedding_type", "time_embedding_dim", "class_embeddings_concat", "conv_in_kernel", "conv_out_kernel",
              "resnet_time_scale_shift", "flip_sin_to_cos", "freq_shift")
_DEFAULTS = {k: p.default for k, p in inspect.signature(UNet2DConditionModel.__init__).parameters.items()}
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")


def _few(keys, n: int = 5) -> str:
    keys = list(keys)
    return f"({len(keys)}) {keys[:n]}" + (" ..." if len(keys) > n else "")


def read_unet_folder(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(config, state dict, where) of the diffusers UNet in ``folder`` or ``folder/unet``.

    Only data is read: JSON, safetensors, or a pickle through ``torch.load(weights_only=True)``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"UNet weights folder {root} does not exist (expected a diffusers pipeline folder "
                                f"with unet/config.json, or the unet folder itself)")
    unet = root / "unet" if (root / "unet" / "config.json").is_file() else root
    cfg_path = unet / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{root}: no unet/config.json (nor config.json) - not a diffusers UNet folder")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise IncompatibleCheckpoint(f"{cfg_path}: not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise IncompatibleCheckpoint(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    if config.get("_class_name") not in SOURCES:
        raise IncompatibleCheckpoint(f"{cfg_path}: _class_name {config.get('_class_name')!r} is not one of "
                                     f"{sorted(SOURCES)}")
    index = unet / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        return config, _read_shards(unet, index), str(unet)
    path = next((unet / n for n in _WEIGHTS if (unet / n).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{unet}: no weights file (looked for {list(_WEIGHTS)} and a safetensors index)")
    return config, _read_weights(path), str(unet)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - safetensors and the unpickler raise many types for a bad file
        raise IncompatibleCheckpoint(f"{path}: not a readable weights file ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IncompatibleCheckpoint(f"{path}: not a state dict of tensors")
    return dict(state)


def _read_shards(unet: Path, index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IncompatibleCheckpoint(f"{index}: not a safetensors index with a weight_map ({e})") from None
    state: dict[str, torch.Tensor] = {}
    for name in sorted(set(weight_map.values())):
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
            raise IncompatibleCheckpoint(f"{index}: shard {name!r} is not a .safetensors file name inside {unet}")
        if not (unet / name).is_file():
            raise FileNotFoundError(f"{index}: shard {unet / name} does not exist")
        state.update(_read_weights(unet / name))
    return state


def _structure(config: Mapping, n_blocks: int) -> dict:
    """The shape-deciding fields of a UNet config, normalised (defaults filled, MV2D block names
    mapped to stock ones, per-block scalars expanded)."""
    out = {}
    for key in _STRUCTURE:
        value = config.get(key, _DEFAULTS[key])
        if isinstance(value, list):
            value = tuple(value)
        if key in ("down_block_types", "up_block_types"):
            value = tuple(_MV_BLOCKS.get(v, v) for v in value)
        elif key == "mid_block_type":
            value = _MV_BLOCKS.get(value, value)
        elif key in ("attention_head_dim", "layers_per_block", "transformer_layers_per_block", "only_cross_attention",
                     "cross_attention_dim") and not isinstance(value, tuple):
            value = (value,) * n_blocks
        out[key] = value
    return out


def load_pretrained_unet(model: MVDiffusionUNet, folder: str | os.PathLike) -> dict:
    """Load whichever of the two layouts ``folder`` holds (by ``_class_name`` in its config)."""
    config, state, where = read_unet_folder(folder)
    return load_unet_state(model, config, state, SOURCES[config["_class_name"]], where)


def load_sd_unclip_unet(model: MVDiffusionUNet, folder: str | os.PathLike) -> dict:
    """SD 2.1 unCLIP weights (``base``'s starting point); see the module docstring."""
    config, state, where = read_unet_folder(folder)
    return load_unet_state(model, config, state, "sd_unclip", where)


def load_facelift_unet(model: MVDiffusionUNet, folder: str | os.PathLike) -> dict:
    """FaceLift's published multi-view UNet; see the module docstring."""
    config, state, where = read_unet_folder(folder)
    return load_unet_state(model, config, state, "facelift", where)


def load_unet_state(model: MVDiffusionUNet, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], kind: str,
                    where: str = "state dict") -> dict:
    """Copy a source UNet (its diffusers ``config`` and stock-named ``state``) into ``model``.

    Returns ``{"source", "loaded", "expanded", "new", "notes"}``. Raises
    :class:`~mousefacelift.models.facelift_ckpt.IncompatibleCheckpoint` (one line naming the
    fields or keys) when the architecture or any key/shape does not fit; nothing is copied then.
    """
    cfg = model.config
    head = f"{where} ({kind}) does not fit MVDiffusionUNet({cfg.name})"
    expected_class = {v: k for k, v in SOURCES.items()}.get(kind)
    if expected_class is None:
        raise ValueError(f"kind is {kind!r}, expected one of {sorted(SOURCES.values())}")
    if config.get("_class_name") != expected_class:
        raise IncompatibleCheckpoint(f"{head}: config _class_name is {config.get('_class_name')!r}, expected "
                                     f"{expected_class!r}")
    if kind == "facelift":
        on = [flag for flag in FACELIFT_EXTRA_MODULES if config.get(flag)]
        if on or config.get("selfattn_block", "custom") != "custom":
            extra = [k for k in state if any(f".{m}" in f".{k}" for f in on for m in FACELIFT_EXTRA_MODULES[f])]
            raise IncompatibleCheckpoint(
                f"{head}: FaceLift UNet built with {on or ['selfattn_block=' + str(config.get('selfattn_block'))]}; "
                f"its extra modules have no counterpart here: {_few(extra)}")
    own_cfg = cfg.unet_config()
    n = len(cfg.block_out_channels)
    src, dst = _structure(config, n), _structure(own_cfg, n)
    differ = [f"{k}: folder {src[k]!r} vs model {dst[k]!r}" for k in _STRUCTURE if src[k] != dst[k]]
    if differ:
        raise IncompatibleCheckpoint(f"{head}: architecture differs in {len(differ)} field(s): " + "; ".join(differ))
    c0, c_in, C = int(config.get("out_channels", 4)), int(config.get("in_channels", 4)), cfg.latent_channels
    want_in = c0 if kind == "sd_unclip" else 2 * c0
    if c_in != want_in or c0 > C:
        raise IncompatibleCheckpoint(f"{head}: in/out channels {c_in}/{c0}, expected {want_in}/{c0} with out <= this "
                                     f"model's latent channels {C} (latent {cfg.latent!r})")

    own = model.state_dict()
    new_unet = {"unet.time_embedding.cond_proj.weight"} if cfg.camera_to_timestep else set()
    mapped, unexpected, mismatched, expanded = {}, [], [], []
    for key, value in state.items():
        target = f"unet.{key}"
        if target not in own or target in new_unet:
            unexpected.append(key)
            continue
        ref = own[target]
        if key in ("conv_in.weight", "conv_out.weight", "conv_out.bias") and tuple(value.shape) != tuple(ref.shape):
            value = _expand(key, value, ref, c0, C, kind)
            if value is None:
                mismatched.append(f"{key} {list(state[key].shape)} vs {list(ref.shape)}")
                continue
            expanded.append(target)
        elif tuple(value.shape) != tuple(ref.shape):
            mismatched.append(f"{key} {list(value.shape)} vs {list(ref.shape)}")
            continue
        mapped[target] = value
    missing = sorted(k for k in own if k.startswith("unet.") and k not in mapped and k not in new_unet
                     and not any(m.startswith(f"{k[5:]} ") for m in mismatched))
    problems = [f"{name} {_few(keys)}" for name, keys in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
    if problems:
        raise IncompatibleCheckpoint(f"{head}; nothing was loaded: " + "; ".join(problems))

    full = dict(own)
    full.update({k: v.to(dtype=own[k].dtype, device=own[k].device) for k, v in mapped.items()})
    model.load_state_dict(full, strict=True)
    new = sorted(set(own) - set(mapped))
    notes = []
    if config.get("sample_size") not in (None, cfg.sample_size):
        notes.append(f"source trained at latent size {config.get('sample_size')}, this model at {cfg.sample_size}")
    if kind == "facelift":
        mode = "sparse" if config.get("sparse_mv_attention") else "dense"
        if config.get("multiview_attention", True) and mode != cfg.mv_attention:
            notes.append(f"source used {mode} multi-view attention, this model {cfg.mv_attention}")
        if config.get("num_views") not in (None, cfg.num_views):
            notes.append(f"source generated {config.get('num_views')} views, this model {cfg.num_views}")
    log.info("loaded %d tensors from %s (%s); expanded %s; %d new; %s", len(mapped), where, kind, expanded, len(new),
             notes)
    return {"source": kind, "loaded": sorted(mapped), "expanded": expanded, "new": new, "notes": notes}


def _expand(key: str, value: torch.Tensor, ref: torch.Tensor, c0: int, C: int, kind: str) -> torch.Tensor | None:
    """conv_in/conv_out of a ``c0``-channel source placed into this model's ``C``-channel layout
    (see the module docstring); None when the shapes do not allow it."""
    out = torch.zeros(ref.shape, dtype=ref.dtype, device=ref.device)
    value = value.to(dtype=ref.dtype, device=ref.device)
    if key == "conv_in.weight":
        if value.shape[0] != ref.shape[0] or value.shape[2:] != ref.shape[2:] or ref.shape[1] != 2 * C:
            return None
        out[:, :c0] = value[:, :c0]
        if kind == "facelift":
            out[:, C:C + c0] = value[:, c0:2 * c0]
        return out
    if value.shape[0] != c0 or ref.shape[0] != C or value.shape[1:] != ref.shape[1:]:
        return None
    out[:c0] = value
    return out

