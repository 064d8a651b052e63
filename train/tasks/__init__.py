"""The task registry: ``task: NAME`` in configs/train.yaml picks what the trainer trains.

A task (train/tasks/base.py) supplies the model, its batch, forward pass and loss, its
evaluation and its image panel; the loop around them is train/trainer.py. A new model family
is a new subpackage here and one entry in :data:`TASKS`.
"""
from __future__ import annotations

from mousefacelift.config import ConfigError

from .base import Task
from .gslrm import GSLRMTask
from .mvdiffusion.task import MVDiffusionTask

__all__ = ["TASKS", "Task", "build_task"]

TASKS: dict[str, type[Task]] = {
    GSLRMTask.name: GSLRMTask,
    MVDiffusionTask.name: MVDiffusionTask,
}


def build_task(cfg) -> Task:
    """The task named by ``cfg.task``, built from the whole training config."""
    name = cfg.get("task")
    if name not in TASKS:
        raise ConfigError(f"task: {name!r} is not a known task; known tasks: {sorted(TASKS)}")
    return TASKS[name](cfg)
