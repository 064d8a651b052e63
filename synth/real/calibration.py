"""Calibration readers for real multi-camera captures: DANNCE ``.mat`` or plain OpenCV JSON/YAML.

Both are converted once into project :class:`~mousefacelift.cameras.Camera` objects (OpenCV,
world-to-camera, with distortion) in the file's own length unit, which must be stated —
in the file (``units:``) or by the caller — and is asserted when both are given, because a
silent metre/millimetre mix-up scales every camera by 1000.

OpenCV JSON/YAML layout (``R``, ``t``: world-to-camera, ``x_cam = R X + t``)::

    units: mm                  # mm | cm | m
    up: [0, 0, 1]              # optional: the world's up direction (default +Z)
    cameras:
      - {name: cam0, width: 1152, height: 1024,
         K: [[fx, s, cx], [0, fy, cy], [0, 0, 1]], dist: [k1, k2, p1, p2, k3],
         R: [[...], [...], [...]], t: [tx, ty, tz]}

anipose / sleap-anipose ``calibration.toml`` (``CameraGroup.dump``): one table per camera
(``[cam_0]``, ``[cam_1]``, ... taken in index order) with ``name``, ``size = [w, h]``,
``matrix`` (3x3), ``distortions`` (OpenCV, 4/5/8), ``rotation`` (Rodrigues vector) and
``translation`` (world-to-camera), plus an optional ``[metadata]`` table. The file carries no
unit (it is that of the board's square length at calibration), so it comes from ``units`` in
``[metadata]`` or a ``[board]`` table when present, else from the caller, else an error.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from mousefacelift.cameras import Camera

MM_PER_UNIT = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


@dataclass
class Calibration:
    """A calibrated rig: cameras in ``units``, plus the world's up direction."""

    cameras: list[Camera]
    units: str
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    path: str = ""

    @property
    def mm_per_unit(self) -> float:
        return MM_PER_UNIT[self.units]

    def cameras_mm(self) -> list[Camera]:
        """The same cameras with translations in millimetres (rotation and K unchanged)."""
        s = self.mm_per_unit
        out = []
        for c in self.cameras:
            w2c = c.w2c.copy()
            w2c[:3, 3] *= s
            out.append(Camera(K=c.K, w2c=w2c, width=c.width, height=c.height, name=c.name, dist=c.dist))
        return out


def _check_units(stated: str | None, expected: str | None, path: Path,
                 hint: str = "add 'units: mm|cm|m' to the file or pass --units") -> str:
    for u, who in ((stated, "file"), (expected, "config")):
        if u is not None and u not in MM_PER_UNIT:
            raise ValueError(f"{path}: units {u!r} ({who}) not understood; expected one of {sorted(MM_PER_UNIT)}")
    if stated is None and expected is None:
        raise ValueError(f"{path}: calibration units are not stated; {hint}")
    if stated is not None and expected is not None and stated != expected:
        raise ValueError(f"{path}: calibration is in {stated!r} but the config expects {expected!r}; "
                         "fix the file or --units (a wrong unit rescales every camera)")
    return stated or expected  # type: ignore[return-value]


def load_calibration(path: str | Path, units: str | None = None,
                     image_size: tuple[int, int] | None = None) -> Calibration:
    """Read a DANNCE ``.mat`` (always millimetres), an OpenCV ``.json``/``.yaml``/``.yml`` or an
    anipose / sleap-anipose ``.toml``.

    ``units`` is what the caller expects (asserted against the file). ``image_size``
    (width, height) overrides the DANNCE default 1152x1024.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    ext = path.suffix.lower()
    if ext == ".mat":
        from mousefacelift.dannce import DANNCE_IMAGE_SIZE, load_dannce_cameras

        u = _check_units("mm", units, path)
        cams = load_dannce_cameras(path, image_size=image_size or DANNCE_IMAGE_SIZE)
        _check_cameras_finite(cams, path)
        return Calibration(cameras=cams, units=u, path=str(path))
    if ext in (".json", ".yaml", ".yml"):
        text = path.read_text()
        try:
            if ext == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:
            raise ValueError(f"{path}: cannot parse {ext[1:].upper()} ({e})") from None
        return _from_dict(data, path, units, image_size)
    if ext == ".toml":
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot parse TOML ({e})") from None
        return _from_anipose(data, path, units)
    raise ValueError(f"{path}: unknown calibration format {ext!r}; expected .mat (DANNCE), .json or .yaml (OpenCV), "
                     ".toml (anipose)")


def _matrix(entry: dict, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if name not in entry:
        raise ValueError(f"{where}: missing field {name!r}")
    try:
        a = np.asarray(entry[name], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}.{name}: not numeric ({entry[name]!r})") from None
    if a.size != int(np.prod(shape)):
        raise ValueError(f"{where}.{name}: expected {shape} values, got shape {a.shape}")
    _check_finite(a, where, name)
    return a.reshape(shape)


def _check_finite(a: np.ndarray, where: str, name: str) -> None:
    """Refuse NaN/inf: they pass every shape check, and every later computation (hull,
    crop, projection) turns them into empty masks, so frames would be dropped one by one
    as 'no mouse' instead of the calibration being named as the fault."""
    bad = ~np.isfinite(np.asarray(a, dtype=np.float64))
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{where}: field {name!r} has a non-finite value ({np.asarray(a).flat[np.flatnonzero(bad)[0]]} "
                         f"at {list(pos)}); expected finite numbers")


def _check_cameras_finite(cams: list[Camera], path: Path) -> None:
    """The same check for cameras read by another reader (DANNCE .mat), per camera and field."""
    for i, c in enumerate(cams):
        where = f"{path}: camera {c.name!r}, cameras[{i}]"
        _check_finite(c.K, where, "K")
        _check_finite(c.w2c[:3, :3], where, "R")
        _check_finite(c.w2c[:3, 3], where, "t")
        if c.dist is not None:
            _check_finite(c.dist, where, "dist")


def _from_dict(data, path: Path, units: str | None, image_size) -> Calibration:
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) or not data["cameras"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'cameras' list")
    u = _check_units(data.get("units"), units, path)
    try:
        up = np.asarray(data.get("up", [0.0, 0.0, 1.0]), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: 'up' must be a non-zero 3-vector, got {data.get('up')!r}") from None
    if up.shape != (3,) or not np.all(np.isfinite(up)) or not np.linalg.norm(up) > 0:
        raise ValueError(f"{path}: 'up' must be a non-zero 3-vector, got {data.get('up')!r}")
    cams = []
    for i, entry in enumerate(data["cameras"]):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: cameras[{i}]: expected a mapping, got {type(entry).__name__}")
        where = f"{path}: camera {str(entry.get('name', f'cam{i}'))!r}, cameras[{i}]"
        K = _matrix(entry, "K", (3, 3), where)
        R = _matrix(entry, "R", (3, 3), where)
        t = _matrix(entry, "t", (3,), where)
        try:
            dist = np.asarray(entry.get("dist") or [], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"{where}.dist: not numeric ({entry.get('dist')!r})") from None
        _check_finite(dist, where, "dist")
        size = (entry.get("width"), entry.get("height"))
        if size[0] is None or size[1] is None:
            if image_size is None:
                raise ValueError(f"{where}: missing 'width'/'height' (or pass image_size)")
            size = image_size
        w, h = (_pixels(v, where, f) for f, v in zip(("width", "height"), size))
        cams.append(_camera(where, str(entry.get("name", f"cam{i}")), K, R, t, dist, w, h))
    _check_unique(cams, path)
    return Calibration(cameras=cams, units=u, up=up / np.linalg.norm(up), path=str(path))


def _pixels(v, where: str, name: str) -> int:
    try:
        fv = float(v)
    except (TypeError, ValueError):
        fv = float("nan")
    if isinstance(v, bool) or not np.isfinite(fv) or fv != int(fv) or fv <= 0:
        raise ValueError(f"{where}: field {name!r} is {v!r}; expected a positive whole number of pixels")
    return int(fv)


def _camera(where: str, name: str, K: np.ndarray, R: np.ndarray, t: np.ndarray, dist: np.ndarray,
            width: int, height: int) -> Camera:
    """The one place a reader's checked arrays become a :class:`Camera` (errors prefixed by ``where``)."""
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = t
    try:
        return Camera(K=K, w2c=w2c, width=width, height=height, name=name, dist=dist if dist.size else None)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _check_unique(cams: list[Camera], path: Path) -> None:
    names = [c.name for c in cams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: camera names must be unique (frames, masks and dropped views are matched by "
                         f"name); repeated: {dup}")


ANIPOSE_NON_CAMERA = ("metadata", "board")
ANIPOSE_UNITS_HINT = ("anipose calibration.toml carries no length unit (it is the unit of the board's square length "
                      "at calibration); pass --units mm|cm|m, set 'units:' in the ingest config, or add "
                      "units = \"mm\" under [metadata]")


def _from_anipose(data: dict, path: Path, units: str | None) -> Calibration:
    """anipose / sleap-anipose ``CameraGroup.dump`` layout (see the module docstring)."""
    stated = None
    for sec in ANIPOSE_NON_CAMERA:
        table = data.get(sec)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{sec}] must be a table, got {type(table).__name__}")
        u = table.get("units")
        if u is not None:
            if stated is not None and u != stated:
                raise ValueError(f"{path}: [metadata] units {stated!r} and [board] units {u!r} disagree")
            stated = u
    u = _check_units(stated, units, path, ANIPOSE_UNITS_HINT)
    sections = [k for k in data if k not in ANIPOSE_NON_CAMERA]
    if not sections:
        raise ValueError(f"{path}: no camera section; expected [cam_0], [cam_1], ... (anipose calibration.toml)")

    def order(k: str):
        m = re.fullmatch(r"cam_(\d+)", k)
        return (0, int(m.group(1)), "") if m else (1, 0, k)

    cams = []
    for sec in sorted(sections, key=order):
        entry = data[sec]
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: top-level key {sec!r} is {type(entry).__name__}; expected a camera table "
                             "[cam_N] (or [metadata])")
        if "name" not in entry:
            raise ValueError(f"{path}: section [{sec}]: missing field 'name'")
        name = str(entry["name"])
        where = f"{path}: camera {name!r}, section [{sec}]"
        if entry.get("fisheye"):
            raise ValueError(f"{where}: field 'fisheye' is true; only the OpenCV pinhole model with standard "
                             "distortions is supported")
        K = _matrix(entry, "matrix", (3, 3), where)
        rvec = _matrix(entry, "rotation", (3,), where)
        t = _matrix(entry, "translation", (3,), where)
        if "distortions" not in entry:
            raise ValueError(f"{where}: missing field 'distortions'")
        try:
            dist = np.asarray(entry["distortions"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: field 'distortions' is not numeric ({entry['distortions']!r})") from None
        if dist.size not in (0, 4, 5, 8):
            raise ValueError(f"{where}: field 'distortions' has {dist.size} values; expected 4, 5 or 8 OpenCV "
                             "coefficients [k1, k2, p1, p2, k3, ...]")
        _check_finite(dist, where, "distortions")
        size = entry.get("size")
        if not isinstance(size, list) or len(size) != 2:
            raise ValueError(f"{where}: field 'size' is {size!r}; expected [width, height] in pixels")
        w, h = (_pixels(v, where, f"size ({f})") for f, v in zip(("width", "height"), size))
        cams.append(_camera(where, name, K, Rotation.from_rotvec(rvec).as_matrix(), t, dist, w, h))
    _check_unique(cams, path)
    return Calibration(cameras=cams, units=u, path=str(path))


def calibration_to_dict(cal: Calibration) -> dict:
    cams = []
    for c in cal.cameras:
        cams.append({"name": c.name, "width": c.width, "height": c.height, "K": c.K.tolist(),
                     "dist": [] if c.dist is None else c.dist.tolist(),
                     "R": c.w2c[:3, :3].tolist(), "t": c.w2c[:3, 3].tolist()})
    return {"units": cal.units, "up": np.asarray(cal.up).tolist(), "cameras": cams}


def save_calibration(path: str | Path, cal: Calibration) -> None:
    """Write the OpenCV JSON/YAML layout above, or anipose's ``calibration.toml`` for a
    ``.toml`` name (atomically), e.g. to convert a DANNCE file."""
    from mousefacelift.shards import atomic_write_bytes

    path = Path(path)
    if path.suffix.lower() == ".toml":
        atomic_write_bytes(path, anipose_toml(cal).encode())
        return
    d = calibration_to_dict(cal)
    if path.suffix.lower() == ".json":
        text = json.dumps(d, indent=1)
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(d, sort_keys=False)
    else:
        raise ValueError(f"{path}: expected a .json, .yaml or .toml file name")
    atomic_write_bytes(path, text.encode())


def anipose_toml(cal: Calibration) -> str:
    """``cal`` as anipose's ``calibration.toml`` (``CameraGroup.dump`` layout: ``[cam_N]`` with
    name, size, matrix, distortions, rotation (Rodrigues vector), translation, then
    ``[metadata]``). Like anipose, no length unit and no up direction are written: the reader
    needs ``--units``, and takes +Z as up."""
    def arr(a) -> str:
        a = np.asarray(a, np.float64)
        if a.ndim == 0:
            return repr(float(a))
        return "[ " + ", ".join(arr(x) for x in a) + ",]"

    parts = []
    for i, c in enumerate(cal.cameras):
        rvec = Rotation.from_matrix(c.w2c[:3, :3]).as_rotvec()
        dist = np.zeros(5) if c.dist is None else np.asarray(c.dist, np.float64).ravel()
        parts.append(f"[cam_{i}]\nname = {json.dumps(str(c.name))}\nsize = [ {int(c.width)}, {int(c.height)},]\n"
                     f"matrix = {arr(c.K)}\ndistortions = {arr(dist)}\nrotation = {arr(rvec)}\n"
                     f"translation = {arr(c.w2c[:3, 3])}\n")
    parts.append("[metadata]\nadjusted = false\nerror = 0.0\n")
    return "\n".join(parts)
