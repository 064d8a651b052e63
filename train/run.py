"""``python -m train.run phase=pretrain|synthetic|real [data.shards=...] [init_from=CKPT] [resume=true]``

The hydra entry point of one training phase (docs/architecture.md §4). The root config is
configs/train.yaml, whose ``task`` key picks what is trained (train/tasks/); each phase in
configs/phase/ picks its data, losses, schedule and where it starts (``init_default``: the
previous phase's ``last.pt``, used when it exists). Under ``torchrun`` every rank runs this.

Bad input (an unknown or malformed config value, a missing or refused checkpoint, shards that
are missing, corrupt or unreachable) ends the program with one line naming the key, file or
URL and what was expected, and exit status 2, not a traceback; ``HYDRA_FULL_ERROR=1`` shows
the traceback. SIGTERM (a cluster's pre-emption, torchrun stopping the others) unwinds
normally, so a checkpoint being written is removed rather than left half-written.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import signal
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from mousefacelift.checkpoint import CheckpointError, UnreadableCheckpoint
from mousefacelift.config import ConfigError, compose, configs_dir
from mousefacelift.shards import ShardError

log = logging.getLogger("train.run")

EXIT_BAD_INPUT = 2


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from .data import DataError

    return (ConfigError, CheckpointError, UnreadableCheckpoint, ShardError, DataError, FileNotFoundError,
            pickle.UnpicklingError, ValueError)


def run_phase(cfg: DictConfig) -> dict:
    """Train one phase from a composed config; returns the summary (counters, last eval metrics and
    ``eval_history``, every evaluation of the run)."""
    from .trainer import Trainer

    try:
        OmegaConf.resolve(cfg)
    except Exception as e:  # noqa: BLE001 - OmegaConf raises several types for a bad interpolation
        raise ConfigError(f"config does not resolve: {e}") from None
    trainer = Trainer(cfg)
    import torch.distributed as dist
    try:
        summary = trainer.fit()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()      # only on success: after a failure the other ranks may never arrive
        return summary
    finally:
        trainer.close()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def one_line(error: BaseException | str) -> str:
    """An error message as one line: the message a DataLoader worker raised (not the traceback
    text PyTorch wraps around it), hydra's multi-line reports folded, no search-path dumps."""
    text = str(error)
    if "Original Traceback" in text:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        text = re.sub(r"^[\w.]+: ", "", lines[-1]) if lines else text
    parts: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(("Config search path", "Set the environment variable", "See https://")):
            break
        line = raw.strip().rstrip(".")
        if not line:
            continue
        if raw[:1] in ("\t", " ") and parts:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        else:
            parts.append(line)
    return "; ".join(parts) or type(error).__name__


def _fail(error: BaseException | str) -> None:
    msg = one_line(error)
    try:    # a progress bar left open mid-line would swallow the start of the message
        from tqdm import tqdm
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    log.debug("train.run failed: %s", msg)
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_INPUT)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _check_overrides(argv: list[str]) -> None:
    """Compose the config once before hydra does, so that a bad override (unknown key, unknown
    group option, unparsable value) is one line and exit 2 rather than hydra's report.
    Command lines with hydra flags (``--multirun``, ``--cfg``, ...) go to hydra untouched."""
    if any(a.startswith("-") for a in argv):
        return
    try:
        compose("train", argv)
    except ConfigError as e:
        _fail(re.sub(r"^composing train\.yaml with overrides \[.*?\] failed: ", "", str(e), flags=re.S))


@hydra.main(config_path=str(configs_dir()), config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run_phase(cfg)
    except _bad_input_types() as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _fail(e)
    log.info("summary: %s", {k: v for k, v in summary.items() if k != "eval_history"})


if __name__ == "__main__":
    _check_overrides(sys.argv[1:])
    main()
