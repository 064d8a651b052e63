"""The YAML files are the one place config values are set: a dataclass read from a file has no
default for any field the file states, and every file loads through its reader."""
import dataclasses

import pytest

from blender.quality import QualityPreset, load_quality
from mousefacelift.body import load_pose_config
from mousefacelift.config import configs_dir, load_typed, load_yaml
from synth.mouse.appearance import load_appearance_config
from synth.mouse.lighting import load_lighting_config
from synth.objects.generate import ObjectConfig
from synth.real.fake_capture import FakeCaptureConfig
from synth.real.ingest import FrameRange, IngestConfig
from synth.real.masks import MaskConfig
from synth.real.normalize import NormalizeConfig
from train.augment import AugmentConfig
from train.data import DataConfig
from train.settings import EvalConfig, LoopConfig, OptimConfig
from train.tasks.gslrm.losses import LossConfig
from train.views import ViewSamplingConfig

TYPED = [(ObjectConfig, "objects", "procedural", None),
         (NormalizeConfig, "real", "ingest", "normalize"),
         (MaskConfig, "real", "ingest", "masks"),
         (IngestConfig, "real", "ingest", None),
         (FrameRange, "real", "ingest", "frames"),
         (FakeCaptureConfig, "real", "fake_capture", None)]
TYPED += [(LossConfig, "", "train", "loss"),
          (LoopConfig, "", "train", "train"),
          (EvalConfig, "", "train", "eval"),
          (OptimConfig, "optim", "adamw", None),
          (DataConfig, "data", "base", None),
          (ViewSamplingConfig, "data", "base", "view_sampling"),
          (AugmentConfig, "data", "base", "augment")]
TYPED += [(QualityPreset, "quality", p.stem, None) for p in sorted((configs_dir() / "quality").glob("*.yaml"))]


@pytest.mark.parametrize("cls, group, name, key", TYPED, ids=[f"{g}/{n}:{k or ''}" for _, g, n, k in TYPED])
def test_dataclass_has_no_default_for_what_its_yaml_states(cls, group, name, key):
    stated, where = load_yaml(group, name, key=key)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(stated) <= set(fields), f"{where}: keys that are not {cls.__name__} fields"
    defaulted = [n for n in stated if fields[n].default is not dataclasses.MISSING
                 or fields[n].default_factory is not dataclasses.MISSING]
    assert not defaulted, f"{cls.__name__} repeats the value of {where} as a default for {defaulted}"
    loaded = load_quality(name) if cls is QualityPreset else load_typed(cls, group, name, key=key)
    assert isinstance(loaded, cls)


@pytest.mark.parametrize("load", [load_appearance_config, load_lighting_config, load_pose_config],
                         ids=["appearance", "lighting", "poses"])
def test_dict_configs_load(load):
    assert isinstance(load(), dict)
