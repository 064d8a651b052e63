"""The ingest's checks on a small fake recording: a camera whose calibration is another's is
named and dropped (the rest still written, still right); masks too small to be a mouse skip
the frame with the reason; nothing written exits non-zero with one line."""
import json
from dataclasses import replace

import numpy as np
import pytest

from mousefacelift.config import load_typed
from mousefacelift.shards import MultiViewSample, iter_shard, list_shards, read_manifest
from synth.real.calibration import Calibration, load_calibration, save_calibration
from synth.real.fake_capture import FakeCaptureConfig, check_round_trip, make_fake_capture
from synth.real.frames import write_image_folder
from synth.real.ingest import main as ingest_main
from synth.tools.geometry_checks import Thresholds

FRAMES = 3


@pytest.fixture(scope="module")
def capture(dannce_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fake_capture_checks")
    cfg = replace(load_typed(FakeCaptureConfig, "real", "fake_capture"), frames=FRAMES, downscale=4, renderer="raster")
    make_fake_capture(out, load_calibration(dannce_dir / "label3d_dannce.mat"), cfg)
    return out


def _run(cap, out, calib=None, masks=None):
    return ingest_main(["--calib", str(calib or cap / "calibration.json"), "--frames", str(cap / "frames"),
                        "--masks", str(masks or cap / "masks"), "--out", str(out), "normalize.size=64",
                        "splits.train=[0,1]", "splits.val=[1,1]", "splits.test=[1,1]"])


def _metas(d):
    return [MultiViewSample.decode(f) for sh in list_shards(d) for f in iter_shard(sh)]


def test_copied_calibration_is_named_and_dropped(capture, tmp_path, capsys):
    cal = load_calibration(capture / "calibration.json")
    cams = list(cal.cameras)
    bad, src = cams[2].name, cams[1]
    cams[2] = replace(src, name=bad)            # a real fixture error: one camera's calibration copied to another
    save_calibration(tmp_path / "bad.json", Calibration(cameras=cams, units=cal.units, up=cal.up))
    assert _run(capture, tmp_path / "ing", calib=tmp_path / "bad.json") == 0
    captured = capsys.readouterr()
    assert f"cameras dropped: {bad} in {FRAMES}" in captured.out           # the printed summary names it
    assert f"WARNING: camera {bad} disagrees with the other cameras in {FRAMES} of {FRAMES}" in captured.err
    samples = _metas(tmp_path / "ing" / "train")
    assert len(samples) == FRAMES
    for s in samples:
        nm = s.meta["normalization"]
        assert list(nm["cameras_dropped"]) == [bad] and nm["cameras_dropped"][bad]["score"] < 0.5
        assert bad in nm["views_dropped"] and bad not in {c.name for c in s.cameras}
        assert all(v is None or v >= 0.5 for k, v in nm["camera_consistency"].items() if k != bad)
    # what was written is right: the remaining cameras are the true ones
    rep = check_round_trip(capture, [tmp_path / "ing" / "train"], thresholds=Thresholds(depth_alpha_iou_min=0.85))
    assert rep["summary"]["verify_failures"] == 0, [r["verify_problems"] for r in rep["samples"]]
    assert rep["summary"]["origin_err_mm_max"] < 8.0 and rep["summary"]["scale_err_pct_max_abs"] < 10.0


def test_good_calibration_drops_no_camera(capture, tmp_path):
    assert _run(capture, tmp_path / "ing") == 0
    samples = _metas(tmp_path / "ing" / "train")
    assert len(samples) == FRAMES
    for s in samples:
        nm = s.meta["normalization"]
        assert nm["cameras_dropped"] == {}
        assert min(v for v in nm["camera_consistency"].values() if v is not None) > 0.7


def _dot_masks(capture, out, radius_px=3):
    """Masks of a small disc at the projection of the true body centre: consistent across the
    cameras but a few mm across, which no mouse is."""
    cal = load_calibration(capture / "calibration.json")
    truth = json.loads((capture / "truth.json").read_text())
    for cam in cal.cameras_mm():
        v, u = np.mgrid[:cam.height, :cam.width] + 0.5
        imgs = []
        for t in truth["frames"]:
            (cu, cv), = cam.project(np.asarray(t["center_mm"])[None])[0]
            imgs.append((((u - cu) ** 2 + (v - cv) ** 2 <= radius_px ** 2) * 255).astype(np.uint8))
        write_image_folder(out / cam.name, imgs)
    return out


def test_implausible_masks_skip_the_frame_with_the_reason(capture, tmp_path, capsys):
    masks = _dot_masks(capture, tmp_path / "dots")
    rc = _run(capture, tmp_path / "ing", masks=masks)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0                       # nothing written
    assert len([ln for ln in err if ln.startswith("error:")]) == 1
    assert f"all {FRAMES} selected frame sets were skipped" in err[-1] and "implausible for a mouse" in err[-1]
    skips = read_manifest(tmp_path / "ing" / "train")["skipped"]
    assert len(skips) == FRAMES
    assert all("implausible for a mouse" in s["reason"] for s in skips), skips


def test_nothing_written_exits_non_zero_with_one_line(capture, tmp_path, capfd):
    empty = tmp_path / "empty"
    for cam in load_calibration(capture / "calibration.json").cameras:
        write_image_folder(empty / cam.name, [np.zeros((cam.height, cam.width), np.uint8)] * FRAMES)
    rc = _run(capture, tmp_path / "ing", masks=empty)
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip() and " INFO " not in ln and " WARNING " not in ln]
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error: no sample written to"), err
