"""Load FaceLift's GS-LRM weights into :class:`GSLRM` so that it gives FaceLift's output.

Why: with FaceLift's weights a user can skip the Objaverse pretrain phase, and its released
model is a reference this project can be compared with. Names, shapes and semantics were
read from FaceLift's ``gslrm/model/gslrm.py``, ``utils_transformer.py`` and its released
``configs/gslrm.yaml`` (all linears and LayerNorms are bias-free); ``d`` = width, ``p`` =
patch size, ``P`` = 3 + 3(deg+1)² + 3 + 4 + 1 Gaussian parameters, ``n`` = ``n_gaussians``.

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
the model) and ``gaussian_renderer.`` are not model weights and are skipped, and so are the
global-Gaussian keys of a checkpoint with ``n_gaussians: 0``. The checkpoint may be the bare
state dict, or wrap it under ``"model"`` (FaceLift's own files) / ``"state_dict"`` /
``"model_state_dict"``; a DDP ``module.`` prefix is removed.

Two things must agree before weights are copied, and each disagreement is reported by the
model option that causes it:

- the architecture, read from the tensors' shapes: width, layers, patch size, MLP ratio, SH
  degree, ``num_global_gaussians``, ``view_markers`` (and no ``head_hidden``/``pixel_skip``,
  which FaceLift lacks);
- with ``released=True``, the conventions the weights were trained under, which no tensor
  shows: those of FaceLift's released configuration, ``configs/model/facelift.yaml`` (ray
  features (d, nearest point) for its ``use_custom_plucker: true``, distance (-o.d) ± 1.8,
  head dimension 64, its scale/opacity offsets). With ``released=False`` (weights trained
  under another FaceLift configuration) the differences are only logged.

Token order, patch flattening (row, col, channel), the head's per-token output order
(patch_row, patch_col, parameter), the parameter split and activations match FaceLift's
(see :mod:`mousefacelift.models.gslrm`); only the order of the output Gaussians differs.
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Mapping

import torch

from .gslrm import GSLRM, GSLRMConfig

__all__ = ["FACELIFT_KEY_MAP", "RELEASED_PRESET", "CONVENTION_FIELDS", "map_facelift_key", "facelift_state_dict",
           "is_facelift_checkpoint", "facelift_architecture", "facelift_mismatches", "load_facelift_checkpoint",
           "IncompatibleCheckpoint"]

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
GLOBAL_KEYS = ("gaussian_position_embeddings", "gaussian_upsampler.")

RELEASED_PRESET = "facelift"   # configs/model/facelift.yaml: FaceLift's released gslrm.yaml
# Options that decide what the weights compute but that no tensor shape shows; FaceLift's name for each.
CONVENTION_FIELDS: dict[str, str] = {
    "ray_features": "use_custom_plucker (true: direction + nearest point; false: o x d, d)",
    "near_far_relative": "its ray distance branch",
    "near_far_anchor": "its ray distance branch ((-o.d) with use_custom_plucker)",
    "near": "its ray distance range (1.8 (2 sigma - 1) with use_custom_plucker)",
    "far": "its ray distance range (1.8 (2 sigma - 1) with use_custom_plucker)",
    "depth_bias": "depth_preact_bias",
    "scale_bias": "the scale offset of GaussiansUpsampler.to_gs (-2.3)",
    "scale_max_log": "the scale clamp of GaussiansUpsampler.to_gs (-1.2)",
    "opacity_bias": "the opacity offset of GaussiansUpsampler.to_gs (-2.0)",
}
FACELIFT_HEAD_DIM = 64         # FaceLift's transformer.d_head in every config it ships


class IncompatibleCheckpoint(ValueError):
    """The checkpoint does not fit the model; the message names every offending option and key."""


def map_facelift_key(key: str) -> str | None:
    """FaceLift parameter name -> this module's name (None when it has no counterpart)."""
    for pattern, target in FACELIFT_KEY_MAP:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key)
    return None


def _inner(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict", "model_state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                return obj[wrapper]
    return obj


def facelift_state_dict(obj: Any, where: str = "state dict") -> dict[str, torch.Tensor]:
    """The bare FaceLift state dict of a path (loaded weights-only), a loaded checkpoint or a
    state dict, without wrapper and ``module.`` prefix."""
    if isinstance(obj, (str, os.PathLike)):
        where = str(obj)
        if not os.path.isfile(obj):
            raise FileNotFoundError(f"FaceLift checkpoint {where} does not exist")
        obj = torch.load(obj, map_location="cpu", weights_only=True)
    obj = _inner(obj)
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise IncompatibleCheckpoint(f"{where}: not a state dict of tensors (got {type(obj).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def is_facelift_checkpoint(state: Any) -> bool:
    """True for a loaded checkpoint holding FaceLift GS-LRM weights (FaceLift's names, no
    ``config`` of this project), which :func:`load_facelift_checkpoint` reads."""
    if not isinstance(state, Mapping) or "config" in state:
        return False
    inner = _inner(state)
    return isinstance(inner, Mapping) and any(
        isinstance(k, str) and k.removeprefix("module.") == "patch_embedder.1.weight" for k in inner)


def facelift_architecture(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The model options a FaceLift state dict's shapes fix (those it lacks the tensors for are
    left out): width, patch_size, layers, mlp_ratio, sh_degree, num_global_gaussians, view_markers.
    A tokeniser input that is not 9·p² (e.g. FaceLift's 12-channel ``use_aug_plucker``) gives
    ``in_channels`` instead of ``patch_size``."""
    arch: dict[str, Any] = {"view_markers": "view_type_embeddings" in sd}
    tok = sd.get("patch_embedder.1.weight")
    if tok is not None and tok.ndim == 2:
        arch["width"] = int(tok.shape[0])
        p = math.isqrt(int(tok.shape[1]) // 9)
        if 9 * p * p == int(tok.shape[1]):
            arch["patch_size"] = p
        else:
            arch["in_channels"] = int(tok.shape[1])
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"transformer_layers\.(\d+)\.", k))}
    if layers:
        arch["layers"] = max(layers) + 1
    fc1 = sd.get("transformer_layers.0.mlp.mlp.0.weight")
    if fc1 is not None and "width" in arch and fc1.shape[0] % arch["width"] == 0:
        arch["mlp_ratio"] = int(fc1.shape[0]) // arch["width"]
    head = sd.get("pixel_gaussian_decoder.1.weight")
    if head is not None and "patch_size" in arch and head.shape[0] % arch["patch_size"] ** 2 == 0:
        P = int(head.shape[0]) // arch["patch_size"] ** 2
        k = math.isqrt(max(P - 11, 0) // 3)             # P = 3 + 3 (deg+1)^2 + 3 + 4 + 1
        if k and P == 11 + 3 * k * k:
            arch["sh_degree"] = k - 1
    glob = sd.get("gaussian_position_embeddings")
    if glob is not None:
        arch["num_global_gaussians"] = int(glob.shape[0])
    return arch


def _released_config() -> GSLRMConfig:
    from . import model_config         # the registry imports this package's modules, not the reverse
    return model_config(RELEASED_PRESET)


def _convention_differences(cfg: GSLRMConfig) -> list[str]:
    ref = _released_config()
    out = [f"model.{f} is {getattr(cfg, f)!r}, FaceLift's released configuration has {getattr(ref, f)!r} "
           f"(FaceLift: {what})" for f, what in CONVENTION_FIELDS.items() if getattr(cfg, f) != getattr(ref, f)]
    if cfg.width // cfg.heads != FACELIFT_HEAD_DIM:
        out.append(f"model.heads is {cfg.heads}: head dimension {cfg.width // cfg.heads}, FaceLift's is "
                   f"{FACELIFT_HEAD_DIM} (d_head; heads = width / {FACELIFT_HEAD_DIM})")
    return out


def facelift_mismatches(cfg: GSLRMConfig, sd: Mapping[str, torch.Tensor], released: bool = True,
                        strict: bool = True) -> list[str]:
    """Every model option of ``cfg`` that keeps the FaceLift state dict ``sd`` from giving
    FaceLift's output, one line each naming the option (empty: it fits). ``released`` also
    checks the conventions of FaceLift's released configuration; ``strict`` also names the
    options that would leave parameters without a FaceLift value (``pixel_skip``)."""
    arch, out = facelift_architecture(sd), []
    if "in_channels" in arch:
        out.append(f"the tokeniser takes {arch['in_channels']} inputs per patch, not 9·p² (FaceLift's 12-channel "
                   "use_aug_plucker input is not supported)")
    for field, theirs in arch.items():
        if field != "in_channels" and getattr(cfg, field) != theirs:
            out.append(f"model.{field} is {getattr(cfg, field)!r}, the checkpoint's is {theirs!r}")
    if cfg.head_hidden:
        out.append(f"model.head_hidden is {cfg.head_hidden}: FaceLift's head is LayerNorm + linear (head_hidden 0)")
    if strict and cfg.pixel_skip:
        out.append("model.pixel_skip is true: FaceLift has no pixel skip (pixel_skip false)")
    if released:
        out += _convention_differences(cfg)
    return out


def load_facelift_checkpoint(model: GSLRM, state_dict_or_path: Any, strict: bool = True,
                             released: bool = True, where: str | None = None) -> dict:
    """Copy FaceLift GS-LRM weights into ``model``; refuse anything that does not fit.

    ``released`` (FaceLift's published weights, trained with its released gslrm.yaml) also
    requires the model to follow that configuration's conventions (``configs/model/facelift.yaml``);
    False only logs how it differs. Returns ``{"loaded": [...], "skipped": [...]}``. Raises
    :class:`IncompatibleCheckpoint` naming the mismatched options, then the missing,
    unexpected and shape-mismatched keys (nothing is copied in that case). ``strict=False``
    tolerates missing keys (parameters FaceLift lacks keep their initial values). ``where``
    names the source in messages (default: the path, or "state dict").
    """
    if where is None:
        where = str(state_dict_or_path) if isinstance(state_dict_or_path, (str, os.PathLike)) else "state dict"
    src = facelift_state_dict(state_dict_or_path, where)
    cfg = model.config
    options = facelift_mismatches(cfg, src, released=released, strict=strict)
    no_globals = "gaussian_position_embeddings" in src and src["gaussian_position_embeddings"].shape[0] == 0
    own = model.state_dict()
    mapped, unexpected, skipped, mismatched, mismatched_targets = {}, [], [], [], set()
    for key, value in src.items():
        if key.startswith(SKIPPED_PREFIXES) or (no_globals and key.startswith(GLOBAL_KEYS)):
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
    problems = [f"{what} ({len(keys)}): {keys[:10]}" + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
                for what, keys in (("missing", missing if strict else []), ("unexpected", unexpected),
                                   ("shape mismatch", mismatched)) if keys]
    if options or problems:
        raise IncompatibleCheckpoint(
            f"{where} does not fit this GS-LRM config ({'; '.join(options) or 'see the keys below'}); nothing was "
            f"loaded (model={RELEASED_PRESET} is FaceLift's released configuration)" +
            "".join("\n  " + p for p in problems))
    differences = [] if released else _convention_differences(cfg)
    if differences:
        log.warning("FaceLift weights loaded into a GS-LRM whose conventions differ from FaceLift's released "
                    "configuration (right only for weights trained under such a configuration): %s",
                    "; ".join(differences))
    with torch.no_grad():
        for target, value in mapped.items():
            own[target].copy_(value.to(own[target].dtype))
    model.load_state_dict(own)
    log.info("loaded %d FaceLift tensors into GSLRM (%d non-model keys skipped)", len(mapped), len(skipped))
    return {"loaded": sorted(mapped), "skipped": skipped}
