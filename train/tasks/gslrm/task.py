"""The ``gslrm`` task: posed input views -> GS-LRM -> Gaussians -> renders of every chosen view.

From the multi-view example batch of train/data.py the model sees the (augmented) input
views ``input_rgb``/``input_K``/``input_c2w``; its Gaussians are rendered into all chosen
views (``K``/``c2w``, on the example's ``background``) by :func:`mousefacelift.inference.predict`
and scored against ``rgb``/``alpha``/``depth`` by :func:`.losses.compute_losses` (``loss:``
config block). Evaluation and the image panel are :mod:`.evaluate` and :mod:`.panel`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mousefacelift.config import ConfigError, typed
from mousefacelift.inference import Prediction, predict
from mousefacelift.models import build_model, model_config
from mousefacelift.models.gslrm import GSLRMConfig

from ...settings import EvalConfig
from ..base import Task
from .evaluate import evaluate
from .losses import LossConfig, compute_losses
from .panel import image_panel


class GSLRMTask(Task):
    name = "gslrm"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.model_config = model_config(cfg.model)
        if not isinstance(self.model_config, GSLRMConfig):
            raise ConfigError(f"task gslrm trains model type gslrm, but model.type is {cfg.model.get('type')!r}")
        self.loss_config = typed(LossConfig, cfg.loss, "loss")
        self.num_inputs = int(cfg.data.view_sampling.num_input_views)

    def build_model(self) -> torch.nn.Module:
        return build_model(self.model_config)

    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Prediction:
        return predict(model, batch["input_rgb"], batch["input_K"], batch["input_c2w"], batch["K"], batch["c2w"],
                       size=batch["rgb"].shape[-2:], background=batch["background"])

    def loss(self, prediction: Prediction, batch: dict[str, Any], step: int):
        return compute_losses(prediction.render, batch, self.loss_config, step, gaussians=prediction.gaussians)

    def evaluate(self, model: torch.nn.Module, examples: list[dict], device: torch.device, autocast: bool,
                 config: EvalConfig) -> tuple[dict[str, float], np.ndarray | None]:
        return evaluate(self, model, examples, device, autocast, config)

    def image_panel(self, batch: dict[str, Any], prediction: Prediction) -> np.ndarray:
        return image_panel(batch, prediction.render, self.num_inputs)
