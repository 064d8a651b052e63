"""Shared fixtures: where the licensed assets are (never in the repo) and small helpers."""
import os
from pathlib import Path

import pytest


def _asset_dir(var: str, must_contain: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    path = Path(value)
    return path if (path / must_contain).exists() else None


@pytest.fixture(scope="session")
def mammal_dir() -> Path:
    """The user's MAMMAL mouse model folder; tests that need it skip with the reason."""
    path = _asset_dir("MOUSEFACELIFT_MAMMAL_DIR", "mouse.pkl")
    if path is None:
        pytest.skip("MAMMAL mouse model not available: set MOUSEFACELIFT_MAMMAL_DIR to a folder "
                    "holding mouse.pkl and mouse_txt/ (.ci/run points it at ../shared/assets/mammal_mouse)")
    return path


@pytest.fixture(scope="session")
def procedural():
    """The built-in procedural mouse, built once per test run."""
    from mousefacelift.body import load_body_model

    return load_body_model("procedural")


@pytest.fixture(scope="session")
def mammal(mammal_dir):
    """The MAMMAL mouse from the user's folder, loaded once per test run."""
    from mousefacelift.body import load_body_model

    return load_body_model(str(mammal_dir))


@pytest.fixture(scope="session")
def dannce_dir() -> Path:
    """The DANNCE markerless_mouse_1 folder with label3d_dannce.mat (real 6-camera rig, 81 poses)."""
    path = _asset_dir("MOUSEFACELIFT_DANNCE_DIR", "label3d_dannce.mat")
    if path is None:
        pytest.skip("DANNCE calibration not available: set MOUSEFACELIFT_DANNCE_DIR to a folder holding "
                    "label3d_dannce.mat (.ci/run points it at ../shared/assets/dannce_markerless_mouse_1)")
    return path
