"""Reader for DANNCE / Label3D ``label3d_dannce.mat`` files: a calibrated camera rig and
hand-labelled 3D keypoints (22-point mouse skeleton, millimetres).

The file stores cameras in MATLAB's row-vector convention ``x = X·r + t`` with ``K``
transposed and distortion split into ``RDistort`` (k1, k2[, k3]) and ``TDistort`` (p1, p2).
This module converts them once into the project's OpenCV :class:`~mousefacelift.cameras.Camera`
(``w2c = [r^T | t^T]``, ``K = K_mat^T``, ``dist = [k1, k2, p1, p2, k3]``), in millimetres.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cameras import Camera

# The DANNCE mouse-22 skeleton, in the column order of data_3d.
KEYPOINT_NAMES = (
    "EarL", "EarR", "Snout", "SpineF", "SpineM", "Tail(base)", "Tail(mid)", "Tail(end)",
    "ForepawL", "WristL", "ElbowL", "ShoulderL", "ForepawR", "WristR", "ElbowR", "ShoulderR",
    "HindpawL", "AnkleL", "KneeL", "HindpawR", "AnkleR", "KneeR",
)
DANNCE_IMAGE_SIZE = (1152, 1024)   # width, height of the markerless_mouse_1 cameras


@dataclass
class LabelledKeypoints:
    points: np.ndarray          # [N, 22, 3] float64, millimetres, NaN where unlabelled
    names: tuple[str, ...]
    frames: np.ndarray          # [N] video frame index of each labelled pose

    def chronological(self) -> np.ndarray:
        """Pose indices in recording order (stable), for temporal train/held-out splits."""
        return np.argsort(self.frames, kind="stable")


def default_label_file() -> Path:
    """``$MOUSEFACELIFT_DANNCE_DIR/label3d_dannce.mat``, else the development checkout's
    ``../shared/assets`` copy (the file is never shipped with the project)."""
    import os

    folder = os.environ.get("MOUSEFACELIFT_DANNCE_DIR", "").strip() or "../shared/assets/dannce_markerless_mouse_1"
    return Path(folder) / "label3d_dannce.mat"


def _loadmat(path: str | Path) -> dict:
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DANNCE label file not found: {path} (expected a label3d_dannce.mat)")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several unrelated types for a bad file
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e})") from None


def _field(struct, name: str, path: Path, where: str) -> np.ndarray:
    try:
        return np.asarray(struct[0, 0][name], dtype=np.float64)
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"{path}: {where} lacks field {name!r}") from None


def load_labelled_keypoints(path: str | Path, camera: int = 0) -> LabelledKeypoints:
    """The hand-labelled 3D poses (``labelData{camera}.data_3d``, reshaped to [N, 22, 3])."""
    path = Path(path)
    m = _loadmat(path)
    if "labelData" not in m:
        raise ValueError(f"{path}: no 'labelData' variable (expected a Label3D/DANNCE label file)")
    label = m["labelData"][camera, 0]
    d3 = _field(label, "data_3d", path, f"labelData{{{camera}}}")
    if d3.ndim != 2 or d3.shape[1] % 3:
        raise ValueError(f"{path}: data_3d has shape {d3.shape}, expected [N, 3*keypoints]")
    n_kp = d3.shape[1] // 3
    if n_kp != len(KEYPOINT_NAMES):
        raise ValueError(f"{path}: data_3d holds {n_kp} keypoints, expected the {len(KEYPOINT_NAMES)}-point mouse skeleton")
    points = d3.reshape(d3.shape[0], n_kp, 3)
    frames = _field(label, "data_frame", path, f"labelData{{{camera}}}").reshape(-1).astype(np.int64)
    return LabelledKeypoints(points=points, names=KEYPOINT_NAMES, frames=frames)


def load_dannce_cameras(path: str | Path, image_size: tuple[int, int] = DANNCE_IMAGE_SIZE) -> list[Camera]:
    """The calibrated rig as project cameras (world units: millimetres, OpenCV convention)."""
    path = Path(path)
    m = _loadmat(path)
    if "params" not in m:
        raise ValueError(f"{path}: no 'params' variable (expected per-camera K, r, t, RDistort, TDistort)")
    names = [str(np.asarray(n).reshape(-1)[0]) for n in m["camnames"].reshape(-1)] if "camnames" in m else []
    cams = []
    for i, p in enumerate(m["params"].reshape(-1)):
        where = f"params{{{i + 1}}}"
        K = _field(p, "K", path, where).T
        r = _field(p, "r", path, where)
        t = _field(p, "t", path, where).reshape(3)
        rd = _field(p, "RDistort", path, where).reshape(-1)
        td = _field(p, "TDistort", path, where).reshape(-1)
        if K.shape != (3, 3) or r.shape != (3, 3):
            raise ValueError(f"{path}: {where} has K {K.shape} and r {r.shape}, expected 3x3 each")
        w2c = np.eye(4)
        w2c[:3, :3] = r.T
        w2c[:3, 3] = t
        dist = np.array([rd[0], rd[1] if rd.size > 1 else 0.0, td[0], td[1], rd[2] if rd.size > 2 else 0.0])
        name = names[i] if i < len(names) else f"Camera{i + 1}"
        cams.append(Camera(K=K, w2c=w2c, width=image_size[0], height=image_size[1], name=name, dist=dist))
    if not cams:
        raise ValueError(f"{path}: 'params' holds no cameras")
    return cams
