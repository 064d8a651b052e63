"""Tasks and typed configs: the registry, unknown keys named, values set in the YAML and nowhere else."""
from dataclasses import MISSING, fields

import pytest

from mousefacelift.config import ConfigError, compose, configs_dir
from mousefacelift.models import load_preset
from mousefacelift.models.gslrm import GSLRMConfig
from train.data import data_config
from train.tasks import TASKS, build_task
from train.tasks.gslrm import GSLRMTask
from train.tasks.mvdiffusion.task import MVDiffusionTask
from train.trainer import Trainer


def test_task_registry_builds_each_task_and_names_the_known_tasks():
    assert isinstance(build_task(compose("train", ["device=cpu"])), GSLRMTask)
    assert isinstance(build_task(compose("train", ["phase=mvdiffusion"])), MVDiffusionTask)
    with pytest.raises(ConfigError, match=r"task: 'nerf' is not a known task; known tasks: \['gslrm', 'mvdiffusion'\]"):
        build_task(compose("train", ["task=nerf"]))
    assert sorted(TASKS) == ["gslrm", "mvdiffusion"]


@pytest.mark.parametrize("override,message", [
    ("+loss.rgb_wieght=2", r"loss: unknown key\(s\) \['rgb_wieght'\]"),
    ("+data.resolutoin=16", r"data: unknown key\(s\) \['resolutoin'\]"),
    ("+data.view_sampling.num_view=4", r"data.view_sampling: unknown key\(s\) \['num_view'\]"),
    ("+model.depht=3", r"model: unknown key\(s\) \['depht'\]"),
    ("data.resolution=big", r"data.resolution: 'big' is not a valid"),
])
def test_trainer_refuses_a_config_with_an_unknown_key_naming_it(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(compose("train", [f"run_root={tmp_path}", "device=cpu", override]))


@pytest.mark.parametrize("phase", ["pretrain", "synthetic", "real"])
def test_every_phase_config_types_cleanly(phase):
    cfg = compose("train", [f"phase={phase}"])
    task = build_task(cfg)
    data = data_config(cfg.data)
    assert task.loss_config.depth_weight == cfg.loss.depth_weight
    assert data.view_sampling.num_views == cfg.data.view_sampling.num_views


def test_model_presets_never_restate_a_dataclass_default():
    defaults = {f.name: f.default for f in fields(GSLRMConfig) if f.default is not MISSING}
    # what checkpoints older than the field mean (the project's conventions; configs/model/facelift.yaml
    # states FaceLift's)
    assert defaults == {"head_hidden": 0, "near_far_relative": False, "ray_features": "plucker",
                        "near_far_anchor": "camera_distance"}
    for path in sorted((configs_dir() / "model").glob("*.yaml")):
        preset = load_preset(path)
        if preset["type"] != "gslrm":
            continue
        restated = {k for k, v in defaults.items() if preset.get(k, object()) == v}
        assert not restated, f"{path.name} restates dataclass defaults {restated}"
