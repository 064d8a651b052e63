"""``python -m train.run phase=pretrain|synthetic|real [data.shards=...] [init_from=CKPT] [resume=true]``

The hydra entry point of one training phase (docs/architecture.md §4). The root config is
configs/train.yaml, whose ``task`` key picks what is trained (train/tasks/); each phase in
configs/phase/ picks its data, losses, schedule and ``init_from`` (the previous phase's
``last.pt``). Under ``torchrun`` every rank runs this.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from mousefacelift.config import configs_dir

log = logging.getLogger("train.run")


def run_phase(cfg: DictConfig) -> dict:
    """Train one phase from a composed config; returns the summary (counters + last eval metrics)."""
    from .trainer import Trainer

    OmegaConf.resolve(cfg)
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


@hydra.main(config_path=str(configs_dir()), config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    summary = run_phase(cfg)
    log.info("summary: %s", summary)


if __name__ == "__main__":
    main()
