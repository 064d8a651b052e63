"""Articulated mouse bodies: models, posing and the anatomical pose sampler."""
from .model import DANNCE22_NAMES, BodyModel, PoseOutput, PoseParams
