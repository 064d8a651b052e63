"""The GS-LRM task (:class:`.task.GSLRMTask`), its losses, evaluation and image panel."""
from .task import GSLRMTask

__all__ = ["GSLRMTask"]
