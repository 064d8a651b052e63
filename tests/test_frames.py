"""Frame sources of real captures: image folders, videos (random access), stacks, errors."""
import imageio.v2 as iio2
import numpy as np
import pytest

from synth.real.frames import FrameSource, write_image_folder


def _frames(n=6, h=48, w=64):
    return [np.full((h, w, 3), 30 * i, np.uint8) for i in range(n)]


def test_video_random_access_without_full_decode(tmp_path):
    path = tmp_path / "cam1.mp4"
    with iio2.get_writer(path, fps=10, codec="libx264", quality=9, macro_block_size=16) as w:
        for f in _frames():
            w.append_data(f)
    src = FrameSource(path)
    assert len(src) == 6
    for i in (4, 1, 5, 0):                 # out of order: seeking, not a sequential read
        assert abs(float(src[i].mean()) - 30 * i) < 3, i   # lossy codec: close, not exact
    with pytest.raises(IndexError, match="frame 6 out of range"):
        src[6]


def test_image_folder_exact(tmp_path):
    write_image_folder(tmp_path / "cam", _frames(3))
    src = FrameSource(tmp_path / "cam")
    assert len(src) == 3 and np.array_equal(src[2], _frames(3)[2])


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        FrameSource(tmp_path / "nope")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="broken.mp4: cannot open as a video"):
        FrameSource(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no images"):
        FrameSource(tmp_path / "empty")
