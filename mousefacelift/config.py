"""One place that finds the repository's ``configs/`` folder and composes hydra configs.

Why: the data programs (``python -m synth.render``) and the training program
(``python -m train.run``, via ``@hydra.main``) read the same YAML tree, so defaults live in
exactly one place. Programs that are not ``@hydra.main`` apps compose through
:func:`compose` (hydra's compose API), which accepts the same ``key=value`` overrides.

The folder is ``$MOUSEFACELIFT_CONFIGS`` when set, else ``configs/`` at the repository root
(next to the ``mousefacelift`` package).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

CONFIGS_ENV = "MOUSEFACELIFT_CONFIGS"


class ConfigError(ValueError):
    """A config that cannot be found or composed; the message names the file/override."""


def configs_dir() -> Path:
    """The configs folder (absolute). Raises ConfigError naming where it looked."""
    env = os.environ.get(CONFIGS_ENV, "").strip()
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "configs"
    if not path.is_dir():
        hint = f"${CONFIGS_ENV}={env!r}" if env else "the repository's configs/ folder"
        raise ConfigError(f"config folder {path} not found (looked at {hint}); run from a source checkout "
                          f"or set {CONFIGS_ENV} to a folder holding render.yaml, train.yaml, ...")
    return path.resolve()


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``configs/{config_name}.yaml`` with hydra-style ``key=value`` overrides.

    Safe to call repeatedly and from inside a running hydra app (the global hydra state is
    saved and restored around the call).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    folder = configs_dir()
    if not (folder / f"{config_name}.yaml").is_file():
        raise ConfigError(f"no config {config_name!r}: {folder / (config_name + '.yaml')} does not exist")
    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    if saved is not None:
        gh.clear()
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"composing {config_name}.yaml with overrides {list(overrides)} failed: {e}") from None
    finally:
        if saved is not None:
            _restore(saved)
        else:
            GlobalHydra.instance().clear()


def _restore(saved) -> None:
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if gh.is_initialized():
        gh.clear()
    gh.hydra = saved


def to_container(cfg: Any) -> Any:
    """A plain, fully resolved dict/list tree (JSON-serialisable) from a DictConfig."""
    if isinstance(cfg, (DictConfig,)) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return cfg


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal configs give equal strings."""
    return json.dumps(to_container(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(cfg: Any, length: int = 16) -> str:
    """Stable short sha256 of the canonical JSON of ``cfg`` (same config -> same hash on any machine)."""
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:length]
