"""anipose / sleap-anipose ``calibration.toml``: same cameras as the OpenCV JSON, clear errors, name matching."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mousefacelift.cameras import Camera, look_at
from synth.real.calibration import Calibration, load_calibration, save_calibration
from synth.real.ingest import main, resolve_inputs

DISTS = [[-0.21, 0.08, 1e-3, -2e-3, -0.01], [-0.1, 0.02, 0.0, 0.0], None,
         [-0.2, 0.05, 1e-3, 1e-3, 0.0, 0.01, -0.02, 0.003]]


def _cams() -> list[Camera]:
    """Four cameras in mm around an arena, off-centre principal points, 5/4/0/8 distortion coefficients."""
    cams = []
    for i, dist in enumerate(DISTS):
        az = 2 * np.pi * i / len(DISTS) + 0.3
        eye = np.array([400 * np.cos(az), 400 * np.sin(az), 250.0 + 30 * i])
        K = np.array([[1510.0 + 10 * i, 0.4, 655.5 - 3 * i], [0, 1508.0 + 9 * i, 498.25 + 2 * i], [0, 0, 1]])
        cams.append(Camera(K=K, w2c=look_at(eye, np.array([5.0, -3.0, 10.0])), width=1280, height=1024,
                           name="ABCD"[i], dist=dist))
    return cams


def _arr(a) -> str:
    """A value as the ``toml`` package (used by ``CameraGroup.dump``) writes it: ``[ 1.0, 2.0,]``."""
    if isinstance(a, (list, np.ndarray)):
        return "[ " + ", ".join(_arr(x) for x in a) + ",]"
    return repr(float(a)) if isinstance(a, (float, np.floating)) else repr(a)


def _anipose_toml(cams: list[Camera], metadata: dict | None = None, edit=None) -> str:
    """The exact layout of ``CameraGroup.dump``: [cam_N] tables, then [metadata]."""
    out = []
    for i, c in enumerate(cams):
        d = {"name": f'"{c.name}"', "size": _arr([c.width, c.height]), "matrix": _arr(c.K.tolist()),
             "distortions": _arr([0.0] * 5 if c.dist is None else c.dist.tolist()),
             "rotation": _arr(Rotation.from_matrix(c.w2c[:3, :3]).as_rotvec().tolist()),
             "translation": _arr(c.w2c[:3, 3].tolist())}
        if edit is not None:
            edit(i, d)
        out.append(f"[cam_{i}]\n" + "".join(f"{k} = {v}\n" for k, v in d.items()))
    meta = {"adjusted": "true", "error": "0.4215"} if metadata is None else metadata
    out.append("[metadata]\n" + "".join(f"{k} = {v}\n" for k, v in meta.items()))
    return "\n".join(out)


def _write(tmp_path, text: str, name="calibration.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_rotation_is_opencv_rodrigues():
    """The reader's rotation vector convention is OpenCV's Rodrigues (R = I + sin θ K + (1 - cos θ) K²)."""
    for c in _cams():
        r = Rotation.from_matrix(c.w2c[:3, :3]).as_rotvec()
        th = np.linalg.norm(r)
        k = r / th
        Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        np.testing.assert_allclose(np.eye(3) + np.sin(th) * Kx + (1 - np.cos(th)) * Kx @ Kx, c.w2c[:3, :3], atol=1e-12)


def test_toml_matches_opencv_json(tmp_path):
    cams = _cams()
    js = tmp_path / "cams.json"
    save_calibration(js, Calibration(cameras=cams, units="mm"))
    a = load_calibration(js)
    b = load_calibration(_write(tmp_path, _anipose_toml(cams)), units="mm")
    assert b.units == "mm" and [c.name for c in b.cameras] == ["A", "B", "C", "D"]
    np.testing.assert_allclose(b.up, a.up)
    pts = np.random.default_rng(0).uniform(-60, 60, size=(500, 3)) + [5.0, -3.0, 10.0]
    for ca, cb in zip(a.cameras_mm(), b.cameras_mm()):
        assert (ca.name, ca.width, ca.height) == (cb.name, cb.width, cb.height)
        np.testing.assert_allclose(cb.K, ca.K, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cb.w2c, ca.w2c, rtol=0, atol=1e-9)
        assert (ca.dist is None) == (cb.dist is None)
        if ca.dist is not None:
            np.testing.assert_array_equal(cb.dist, ca.dist)
        ua, _ = ca.project(pts)
        ub, _ = cb.project(pts)
        assert np.abs(ua - ub).max() < 1e-9


def test_sections_in_index_order(tmp_path):
    """cam_10 comes after cam_2 (not in string order), so a video list in calibration order stays aligned."""
    cams = [Camera(K=c.K, w2c=c.w2c, width=c.width, height=c.height, name=f"cam{i}", dist=c.dist)
            for i, c in enumerate(_cams() * 3)]
    cal = load_calibration(_write(tmp_path, _anipose_toml(cams)), units="mm")
    assert [c.name for c in cal.cameras] == [f"cam{i}" for i in range(12)]


@pytest.mark.parametrize("meta,units,expect", [({"units": '"cm"'}, None, 10.0), ({"units": '"m"'}, "m", 1000.0),
                                               ({}, "mm", 1.0)])
def test_units(tmp_path, meta, units, expect):
    assert load_calibration(_write(tmp_path, _anipose_toml(_cams(), meta)), units=units).mm_per_unit == expect


def test_units_from_board_section(tmp_path):
    text = _anipose_toml(_cams()) + '\n[board]\nunits = "mm"\nsquare_length = 24.0\n'
    assert load_calibration(_write(tmp_path, text)).units == "mm"
    with pytest.raises(ValueError, match="disagree"):
        load_calibration(_write(tmp_path, _anipose_toml(_cams(), {"units": '"cm"'}) + '\n[board]\nunits = "mm"\n'))


def test_units_missing_or_conflicting_is_one_line(tmp_path):
    p = _write(tmp_path, _anipose_toml(_cams()))
    with pytest.raises(ValueError) as e:
        load_calibration(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "--units" in msg and "units are not stated" in msg
    with pytest.raises(ValueError, match="'cm' but the config expects 'mm'"):
        load_calibration(_write(tmp_path, _anipose_toml(_cams(), {"units": '"cm"'})), units="mm")


def test_cli_asks_for_units(tmp_path, capsys):
    p = _write(tmp_path, _anipose_toml(_cams()))
    frames = tmp_path / "frames"
    frames.mkdir()
    assert main(["--calib", str(p), "--frames", str(frames), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "--units" in err


def _set(field, value):
    def edit(i, d):
        if i == 1:
            if value is None:
                d.pop(field)
            else:
                d[field] = value
    return edit


@pytest.mark.parametrize("edit,field", [
    (_set("matrix", None), "'matrix'"),
    (_set("rotation", "[ 0.1, 0.2, 0.3, 0.4,]"), "rotation"),
    (_set("translation", '[ 1.0, "a", 3.0,]'), "translation"),
    (_set("distortions", "[ 0.1, 0.0, 0.0, 0.0, 0.0, 0.0,]"), "'distortions'"),
    (_set("distortions", None), "'distortions'"),
    (_set("size", "[ 1280,]"), "'size'"),
    (_set("size", "[ 1280, -5,]"), "'size (height)'"),
    (_set("matrix", "[ [ nan, 0.0, 640.0,], [ 0.0, 1500.0, 512.0,], [ 0.0, 0.0, 1.0,],]"), "'matrix'"),
    (_set("matrix", "[ [ -1500.0, 0.0, 640.0,], [ 0.0, 1500.0, 512.0,], [ 0.0, 0.0, 1.0,],]"), "focal"),
    (_set("fisheye", "true"), "'fisheye'"),
])
def test_bad_field_names_file_section_and_field(tmp_path, edit, field):
    p = _write(tmp_path, _anipose_toml(_cams(), edit=edit))
    with pytest.raises(ValueError) as e:
        load_calibration(p, units="mm")
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "camera 'B', section [cam_1]" in msg and field in msg, msg


@pytest.mark.parametrize("text,expect", [
    ("[cam_0\nname = 1\n", "cannot parse TOML"),
    ("[metadata]\nadjusted = true\n", "no camera section"),
    ("speed = 3\n", "top-level key 'speed'"),
    ("[cam_0]\nsize = [ 10, 10,]\n", "section [cam_0]: missing field 'name'"),
])
def test_bad_files(tmp_path, text, expect):
    p = _write(tmp_path, text)
    with pytest.raises(ValueError) as e:
        load_calibration(p, units="mm")
    assert "\n" not in str(e.value) and str(p) in str(e.value) and expect in str(e.value), str(e.value)


def test_duplicate_names(tmp_path):
    cams = _cams()
    cams[2] = Camera(K=cams[2].K, w2c=cams[2].w2c, width=1280, height=1024, name="A")
    with pytest.raises(ValueError, match=r"repeated: \['A'\]"):
        load_calibration(_write(tmp_path, _anipose_toml(cams)), units="mm")


def test_videos_matched_by_camera_name(tmp_path):
    """anipose names videos '<session>-cam<NAME>'; exact names still win and each file serves one camera."""
    d = tmp_path / "videos"
    d.mkdir()
    for n in ("rec1-camA.mp4", "rec1-camB.mp4", "C.mp4", "rec1_D.mp4"):
        (d / n).touch()
    got = resolve_inputs([str(d)], ["B", "A", "C", "D"], "videos")
    assert [p.name for p in got] == ["rec1-camB.mp4", "rec1-camA.mp4", "C.mp4", "rec1_D.mp4"]
    with pytest.raises(ValueError, match=r"no entry for cameras \['E'\]"):
        resolve_inputs([str(d)], ["A", "E"], "videos")
    (d / "rec2-camA.mp4").touch()
    with pytest.raises(ValueError, match="matches several entries"):
        resolve_inputs([str(d)], ["A", "B"], "videos")
