"""Frame sources for real captures: one per camera, a video file or a folder of images.

Both give random access by frame index. Videos are read through imageio's ffmpeg reader
(the ``imageio-ffmpeg`` dependency ships the binary) one frame at a time; multi-frame
TIFF/GIF work with Pillow alone.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class FrameSource:
    """Random-access frames of one camera: ``len(src)``, ``src[i] -> uint8 [H,W,C]``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._files: list[Path] | None = None
        self._video = None
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self._files:
                raise ValueError(f"{self.path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            self._n = len(self._files)
        elif self.path.is_file():
            self._n = self._open_file()
        else:
            raise FileNotFoundError(f"frames not found: {self.path} (expected a video file or an image folder)")

    def _open_file(self) -> int:
        """Open a video (ffmpeg, random access by seeking; never decoded whole, since a capture
        is thousands of megapixel frames) or a multi-frame image stack (TIFF/GIF)."""
        import imageio.v2 as iio2

        if self.path.suffix.lower() in VIDEO_EXTENSIONS:
            try:
                self._video = iio2.get_reader(self.path, "ffmpeg")
                n = self._video.count_frames()
            except Exception as e:
                raise ValueError(f"{self.path}: cannot open as a video ({type(e).__name__}: {e}); "
                                 "video input needs the imageio-ffmpeg package") from None
        else:
            try:
                self._video = iio2.get_reader(self.path)
                n = len(self._video)
            except Exception as e:
                raise ValueError(f"{self.path}: cannot open as an image stack ({type(e).__name__}: {e})") from None
        if not n or n == float("inf"):
            raise ValueError(f"{self.path}: holds no readable frames")
        return int(n)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self._n:
            raise IndexError(f"{self.path}: frame {i} out of range [0, {self._n})")
        import imageio.v3 as iio

        if self._files is not None:
            img = iio.imread(self._files[i])
        else:
            img = self._video.get_data(i)
        img = np.asarray(img)
        if img.dtype != np.uint8:
            if img.dtype == np.bool_:
                img = img.astype(np.uint8) * 255
            elif np.issubdtype(img.dtype, np.integer):
                img = (img.astype(np.float64) * 255.0 / np.iinfo(img.dtype).max).round().astype(np.uint8)
            else:
                img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
        if img.ndim == 2:
            img = img[..., None]
        return img


def rgb(img: np.ndarray) -> np.ndarray:
    """Any frame -> uint8 RGB [H,W,3]."""
    if img.shape[-1] == 1:
        return np.repeat(img, 3, axis=-1)
    return img[..., :3]


def write_image_folder(folder: str | Path, frames, start: int = 0) -> list[Path]:
    """Write frames as ``000000.png``... (atomically each), e.g. for a fake recording."""
    from PIL import Image

    from mousefacelift.shards import atomic_write_bytes
    import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, f in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(f)).save(buf, format="PNG")
        p = folder / f"{start + k:06d}.png"
        atomic_write_bytes(p, buf.getvalue())
        out.append(p)
    return out
