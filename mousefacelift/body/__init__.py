"""Articulated mouse bodies: models, posing and the anatomical pose sampler."""
from .model import DANNCE22_NAMES, BodyModel, PoseOutput, PoseParams
from .poses import PoseBatch, PoseSampler, load_pose_config


def load_body_model(spec: str = "procedural", **kwargs) -> BodyModel:
    """"procedural" (built in), "mammal" (folder from $MOUSEFACELIFT_MAMMAL_DIR) or a MAMMAL folder path."""
    if spec == "procedural":
        from .procedural import build_procedural_mouse
        return build_procedural_mouse()
    from .mammal import load_mammal
    return load_mammal(None if spec == "mammal" else spec, **kwargs)


__all__ = ["BodyModel", "PoseParams", "PoseOutput", "PoseSampler", "PoseBatch", "DANNCE22_NAMES",
           "load_body_model", "load_pose_config"]
