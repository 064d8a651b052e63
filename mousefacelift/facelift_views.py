"""FaceLift's folder of posed views: ``opencv_cameras.json`` + RGBA images, read and written here only.

The layout (that of FaceLift's data and of ``python -m synth.export --format facelift``):

    opencv_cameras.json   {"frames": [{"w", "h", "fx", "fy", "cx", "cy", "w2c": 4x4 OpenCV world-to-camera,
                                       "file_path": "images/cam_000.png"}, ...], ...}
    images/cam_NNN.png    RGBA (an image without alpha counts as fully covered)

Why one module: the shard export/import (synth/tools/export.py) and the reconstruction command's
``--views`` read the same files, and a camera file comes from elsewhere, so both must refuse the
same things the same way: a ``file_path`` leaving the folder, a missing field, an image whose size
is not the frame's. Errors are :class:`mousefacelift.shards.sample.SampleError` lines naming the
file and frame.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .cameras import Camera
from .shards.sample import SampleError

__all__ = ["CAMERAS_JSON", "IMAGE_DIR", "PathOutsideFolder", "image_name", "inside_folder", "frame_record",
           "read_camera_file", "read_views", "write_views"]

log = logging.getLogger(__name__)

CAMERAS_JSON = "opencv_cameras.json"
IMAGE_DIR = "images"


class PathOutsideFolder(SampleError):
    """A camera file's ``file_path`` (or a symlink) that leads out of its folder."""


def image_name(i: int) -> str:
    return f"{IMAGE_DIR}/cam_{i:03d}.png"


def inside_folder(folder: Path, file_path, where: str, field: str = "file_path") -> Path:
    """``file_path`` resolved inside ``folder``. Camera files come from elsewhere: an absolute
    path, a ``..`` or a symlink leading out would read any image on this machine, so such a path
    is refused."""
    rel = str(file_path)
    root = Path(folder).resolve()
    target = (root / rel).resolve()
    if not rel or Path(rel).is_absolute() or not target.is_relative_to(root):
        raise PathOutsideFolder(f"{where}: {field} {rel!r} leaves the folder {folder}; expected a path "
                                f"inside it (e.g. {image_name(0)!r})")
    return target


def frame_record(cam: Camera, file_path: str) -> dict:
    """One ``frames`` entry for a camera and its image path."""
    return {"w": cam.width, "h": cam.height, "fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy,
            "w2c": cam.w2c.tolist(), "file_path": file_path}


def read_camera_file(folder: Path) -> dict:
    """The folder's camera file as a mapping with a non-empty ``frames`` list."""
    path = Path(folder) / CAMERAS_JSON
    try:
        doc = json.loads(path.read_text())
        frames = doc["frames"]
    except FileNotFoundError:
        raise SampleError(f"{path} not found: {folder} is not a folder of posed views") from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SampleError(f"{path}: not a FaceLift camera file ({type(e).__name__}: {e})") from None
    if not isinstance(frames, list) or not frames:
        raise SampleError(f"{path}: 'frames' must be a non-empty list")
    return doc


def read_views(folder: str | Path) -> tuple[dict, np.ndarray, list[Camera]]:
    """(camera file mapping, uint8 RGBA [V,H,W,4], cameras) of a folder of posed views."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    doc = read_camera_file(folder)
    path = folder / CAMERAS_JSON
    images, cams = [], []
    for i, f in enumerate(doc["frames"]):
        where = f"{path} frames[{i}]"
        try:
            K = np.array([[f["fx"], 0, f["cx"]], [0, f["fy"], f["cy"]], [0, 0, 1]], dtype=np.float64)
            cam = Camera(K=K, w2c=np.asarray(f["w2c"], dtype=np.float64), width=int(f["w"]), height=int(f["h"]),
                         name=Path(str(f["file_path"])).stem)
            img_path = inside_folder(folder, f["file_path"], where)
        except KeyError as e:
            raise SampleError(f"{where}: missing field {e.args[0]!r}") from None
        except PathOutsideFolder:
            raise
        except (TypeError, ValueError) as e:
            raise SampleError(f"{where}: {e}") from None
        try:
            with Image.open(img_path) as im:
                mode = im.mode
                img = np.asarray(im.convert("RGBA"))
        except FileNotFoundError:
            raise SampleError(f"{where}: image {img_path} does not exist") from None
        except (UnidentifiedImageError, OSError) as e:
            raise SampleError(f"{img_path}: not a readable image ({type(e).__name__}: {e})") from None
        if mode not in ("RGBA", "LA", "PA"):
            log.warning("%s is %s without alpha: coverage set to the whole frame", img_path, mode)
        if img.shape[:2] != (cam.height, cam.width):
            raise SampleError(f"{img_path}: image is {img.shape[1]}x{img.shape[0]} but {where} says "
                              f"{cam.width}x{cam.height}")
        images.append(img)
        cams.append(cam)
    sizes = {im.shape for im in images}
    if len(sizes) != 1:
        raise SampleError(f"{folder}: views have different sizes {sorted(s[:2] for s in sizes)}")
    return doc, np.stack(images), cams


def write_views(folder: str | Path, rgba: np.ndarray, cameras: Sequence[Camera], extra: dict | None = None) -> Path:
    """Write uint8 RGBA views [V,H,W,4] and their cameras in the layout :func:`read_views` reads
    (``extra`` keys go into the camera file beside ``frames``)."""
    from .shards.atomic import atomic_write_json
    from .viz import save_png

    folder = Path(folder)
    frames = []
    for i, (img, cam) in enumerate(zip(rgba, cameras)):
        save_png(folder / image_name(i), img)
        frames.append(frame_record(cam, image_name(i)))
    atomic_write_json(folder / CAMERAS_JSON, {**(extra or {}), "frames": frames})
    return folder
