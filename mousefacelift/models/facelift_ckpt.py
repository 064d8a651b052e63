"""Load the published FaceLift GS-LRM checkpoint into :class:`GSLRM`.

Why: with FaceLift's weights a user can skip the Objaverse pretrain phase. The layout below
was read from FaceLift's ``gslrm/model/gslrm.py`` and ``utils_transformer.py`` (all linears
and LayerNorms there are bias-free); ``d`` = width, ``p`` = patch size, ``P`` = 3 + 3(deg+1)² + 3 + 4 + 1
Gaussian parameters, ``n`` = FaceLift's ``n_gaussians``.

| FaceLift key                                   | shape        | this module                     |
| ---------------------------------------------- | ------------ | ------------------------------- |
| ``patch_embedder.1.weight``                    | [d, 9·p²]    | ``tokenizer.weight``            |
| ``view_type_embeddings`` (if add_refsrc_marker)| [2, d]       | ``view_markers``                |
| ``gaussian_position_embeddings``               | [n, d]       | ``global_tokens``               |
| ``input_layer_norm.weight``                    | [d]          | ``input_norm.weight``           |
| ``transformer_layers.{i}.norm1.weight``        | [d]          | ``blocks.{i}.norm1.weight``     |
| ``transformer_layers.{i}.attn.to_qkv.weight``  | [3d, d]      | ``blocks.{i}.attn.qkv.weight``  |
| ``transformer_layers.{i}.attn.fc.weight``      | [d, d]       | ``blocks.{i}.attn.proj.weight`` |
| ``transformer_layers.{i}.norm2.weight``        | [d]          | ``blocks.{i}.norm2.weight``     |
| ``transformer_layers.{i}.mlp.mlp.0.weight``    | [4d, d]      | ``blocks.{i}.mlp.fc1.weight``   |
| ``transformer_layers.{i}.mlp.mlp.2.weight``    | [d, 4d]      | ``blocks.{i}.mlp.fc2.weight``   |
| ``gaussian_upsampler.layernorm.weight``        | [d]          | ``global_head.norm.weight``     |
| ``gaussian_upsampler.linear.weight``           | [P, d]       | ``global_head.linear.weight``   |
| ``pixel_gaussian_decoder.0.weight``            | [d]          | ``pixel_head.norm.weight``      |
| ``pixel_gaussian_decoder.1.weight``            | [p²·P, d]    | ``pixel_head.linear.weight``    |

Keys under ``loss_calculator.`` (FaceLift keeps its frozen LPIPS/VGG loss networks inside
the model) and ``gaussian_renderer.`` are not model weights and are skipped. The
checkpoint may be the bare state dict, or wrap it under ``"model"``/``"state_dict"``/
``"model_state_dict"``; a DDP ``module.`` prefix is removed. Semantics match too: input
order (rgb·2-1, o×d, d), patch flattening (row, col, channel), the parameter split and
activations (see :mod:`mousefacelift.models.gslrm`), with the pixel head's per-token
output ordered (patch_row, patch_col, parameter) as in FaceLift.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Mapping

import torch

from .gslrm import GSLRM

__all__ = ["FACELIFT_KEY_MAP", "map_facelift_key", "load_facelift_checkpoint", "IncompatibleCheckpoint"]

log = logging.getLogger(__name__)

FACELIFT_KEY_MAP: list[tuple[str, str]] = [
    (r"patch_embedder\.1\.weight", "tokenizer.weight"),
    (r"view_type_embeddings", "view_markers"),
    (r"gaussian_position_embeddings", "global_tokens"),
    (r"input_layer_norm\.weight", "input_norm.weight"),
    (r"transformer_layers\.(\d+)\.norm1\.weight", r"blocks.\1.norm1.weight"),
    (r"transformer_layers\.(\d+)\.norm2\.weight", r"blocks.\1.norm2.weight"),
    (r"transformer_layers\.(\d+)\.attn\.to_qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    (r"transformer_layers\.(\d+)\.attn\.fc\.weight", r"blocks.\1.attn.proj.weight"),
    (r"transformer_layers\.(\d+)\.mlp\.mlp\.0\.weight", r"blocks.\1.mlp.fc1.weight"),
    (r"transformer_layers\.(\d+)\.mlp\.mlp\.2\.weight", r"blocks.\1.mlp.fc2.weight"),
    (r"gaussian_upsampler\.layernorm\.weight", "global_head.norm.weight"),
    (r"gaussian_upsampler\.linear\.weight", "global_head.linear.weight"),
    (r"pixel_gaussian_decoder\.0\.weight", "pixel_head.norm.weight"),
    (r"pixel_gaussian_decoder\.1\.weight", "pixel_head.linear.weight"),
]
SKIPPED_PREFIXES = ("loss_calculator.", "gaussian_renderer.")


class IncompatibleCheckpoint(ValueError):
    """The checkpoint does not fit the model; the message lists every offending key."""


def map_facelift_key(key: str) -> str | None:
    """FaceLift parameter name -> this module's name (None when it has no counterpart)."""
    for pattern, target in FACELIFT_KEY_MAP:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key)
    return None


def _unwrap(obj: Any, where: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, (str, os.PathLike)):
        where = str(obj)
        if not os.path.isfile(obj):
            raise FileNotFoundError(f"FaceLift checkpoint {where} does not exist")
        obj = torch.load(obj, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict", "model_state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise IncompatibleCheckpoint(f"{where}: not a state dict of tensors (got {type(obj).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_facelift_checkpoint(model: GSLRM, state_dict_or_path: Any, strict: bool = True) -> dict:
    """Copy FaceLift GS-LRM weights into ``model``; refuse anything that does not fit.

    Returns a report ``{"loaded": [...], "skipped": [...]}``. Raises
    :class:`IncompatibleCheckpoint` naming missing, unexpected and shape-mismatched keys
    (nothing is copied in that case). ``strict=False`` tolerates missing keys only.
    """
    where = str(state_dict_or_path) if isinstance(state_dict_or_path, (str, os.PathLike)) else "state dict"
    src = _unwrap(state_dict_or_path, where)
    own = model.state_dict()
    mapped, unexpected, skipped, mismatched, mismatched_targets = {}, [], [], [], set()
    for key, value in src.items():
        if key.startswith(SKIPPED_PREFIXES):
            skipped.append(key)
            continue
        target = map_facelift_key(key)
        if target is None or target not in own:
            unexpected.append(key if target is None else f"{key} (-> {target}, absent in this model config)")
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            mismatched.append(f"{key} -> {target}: checkpoint {list(value.shape)} vs model {list(own[target].shape)}")
            mismatched_targets.add(target)
            continue
        mapped[target] = value
    missing = sorted(set(own) - set(mapped) - mismatched_targets)
    problems = []
    if missing and strict:
        problems.append(f"missing ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected ({len(unexpected)}): {unexpected}")
    if mismatched:
        problems.append(f"shape mismatch ({len(mismatched)}): {mismatched}")
    if problems:
        cfg = model.config
        raise IncompatibleCheckpoint(
            f"{where} is not a FaceLift GS-LRM checkpoint for this model (width={cfg.width}, layers={cfg.layers}, "
            f"patch={cfg.patch_size}, sh_degree={cfg.sh_degree}, num_global_gaussians={cfg.num_global_gaussians}, "
            f"view_markers={cfg.view_markers}); nothing was loaded.\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for target, value in mapped.items():
            own[target].copy_(value.to(own[target].dtype))
    model.load_state_dict(own)
    log.info("loaded %d FaceLift tensors into GSLRM (%d non-model keys skipped)", len(mapped), len(skipped))
    return {"loaded": sorted(mapped), "skipped": skipped}
