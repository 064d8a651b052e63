"""One place that finds the repository's ``configs/`` folder and composes hydra configs.

Why: the data programs (``python -m synth.render``) and the training program
(``python -m train.run``, via ``@hydra.main``) read the same YAML tree, so defaults live in
exactly one place. Programs that are not ``@hydra.main`` apps compose through
:func:`compose` (hydra's compose API), which accepts the same ``key=value`` overrides.

The folder is ``$MOUSEFACELIFT_CONFIGS`` when set, else ``configs/`` at the repository root
(next to the ``mousefacelift`` package).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

CONFIGS_ENV = "MOUSEFACELIFT_CONFIGS"
T = TypeVar("T")


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
    """A DictConfig/ListConfig as a plain, fully resolved dict/list tree (JSON-serialisable);
    anything else unchanged. A mandatory value left unset (``???``) is an error naming it."""
    if not OmegaConf.is_config(cfg):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise ConfigError(f"config key {e.full_key!r} has no value (??? in the YAML): set it") from None


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal configs give equal strings."""
    return json.dumps(to_container(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(cfg: Any, length: int = 16) -> str:
    """Stable short sha256 of the canonical JSON of ``cfg`` (same config -> same hash on any machine)."""
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:length]


def config_file(group: str, name_or_path: str | os.PathLike) -> Path:
    """``configs/{group}/{name}.yaml`` for a name (group ``""`` = configs/ itself), else the YAML
    file given; a missing file is an error listing the names the group has."""
    path = Path(name_or_path)
    folder = configs_dir() / group
    if not path.suffix:
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise ConfigError(f"{group} config {str(name_or_path)!r}: no file {path} (known: {known})")
    return path


def load_yaml(group: str, name_or_path: str | os.PathLike, overrides: Mapping | Sequence[str] | None = None,
              key: str | None = None) -> tuple[dict, str]:
    """A group's YAML file (see :func:`config_file`) as a plain mapping, its section ``key``
    (dotted) if given, with ``overrides`` merged in (a mapping, or ``key=value`` strings);
    returns (mapping, where) with ``where`` naming the file and overrides for error messages."""
    path = config_file(group, name_or_path)
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - yaml and OmegaConf raise several types for a malformed file
        raise ConfigError(f"{path}: not a readable YAML mapping ({e})") from None
    where = str(path)
    if key:
        cfg = OmegaConf.select(cfg, key)
        if cfg is None:
            raise ConfigError(f"{path}: no section {key!r}")
        where = f"{path} {key}"
    if overrides:
        if isinstance(overrides, Mapping):
            extra = OmegaConf.create(dict(overrides))
        else:
            bad = [o for o in overrides if "=" not in str(o)]
            if bad:
                raise ConfigError(f"overrides of {path} must be key=value, got {bad}")
            extra = OmegaConf.from_dotlist([str(o) for o in overrides])
        cfg = OmegaConf.merge(cfg, extra)
        where = f"{where} with overrides {sorted(extra.keys()) if isinstance(overrides, Mapping) else list(overrides)}"
    out = to_container(cfg)
    if not isinstance(out, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(out).__name__}")
    return out, where


def load_typed(cls: type[T], group: str, name_or_path: str | os.PathLike,
               overrides: Mapping | Sequence[str] | None = None, key: str | None = None) -> T:
    """The dataclass ``cls`` from a group's YAML file: the file is where its values are set
    (defaults live there, not in the dataclass), ``overrides`` change single fields."""
    mapping, where = load_yaml(group, name_or_path, overrides, key)
    return typed(cls, mapping, where)


def typed(cls: type[T], cfg: Any, where: str) -> T:
    """The one way from a config mapping (dict, DictConfig or None) to the dataclass ``cls``.

    Unknown keys are an error naming ``where``, the keys and the known ones; keys left out take
    the dataclass's own defaults, and a field without a default must be given. Values are
    converted to the field's declared type (int, float, str, bool, tuples of those, optional
    variants, nested dataclasses), and a value that does not convert is an error naming the
    field, the value and the type expected. ``cfg`` may already be a ``cls``.
    """
    if isinstance(cfg, cls):
        return cfg
    cfg = to_container(cfg)
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(cfg).__name__} {cfg!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    missing = sorted(n for n, f in known.items() if n not in cfg and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing} of {cls.__name__}")
    values = {}
    for name, value in cfg.items():
        try:
            values[name] = _convert(value, hints[name], f"{where}.{name}")
        except ConfigError:
            raise
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{name}: {value!r} is not a valid {_type_name(hints[name])}") from None
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(value, a, where)
            except (TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return typed(tp, value, where)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {value!r} is not a list (expected {_type_name(tp)})")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        conv = [_convert(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {value!r} is not a mapping")
        return dict(value)
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {value!r} is not true or false")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: {value!r} is not a whole number")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {value!r} is not a string")
        return value
    return value
