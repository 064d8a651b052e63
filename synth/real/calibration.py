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
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


def _check_units(stated: str | None, expected: str | None, path: Path) -> str:
    for u, who in ((stated, "file"), (expected, "config")):
        if u is not None and u not in MM_PER_UNIT:
            raise ValueError(f"{path}: units {u!r} ({who}) not understood; expected one of {sorted(MM_PER_UNIT)}")
    if stated is None and expected is None:
        raise ValueError(f"{path}: calibration units are not stated; add 'units: mm|cm|m' to the file or pass --units")
    if stated is not None and expected is not None and stated != expected:
        raise ValueError(f"{path}: calibration is in {stated!r} but the config expects {expected!r}; "
                         "fix the file or --units (a wrong unit rescales every camera)")
    return stated or expected  # type: ignore[return-value]


def load_calibration(path: str | Path, units: str | None = None,
                     image_size: tuple[int, int] | None = None) -> Calibration:
    """Read a DANNCE ``.mat`` (always millimetres) or an OpenCV ``.json``/``.yaml``/``.yml``.

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
    raise ValueError(f"{path}: unknown calibration format {ext!r}; expected .mat (DANNCE), .json or .yaml")


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
        for field_name, v in zip(("width", "height"), size):
            try:
                fv = float(v)
            except (TypeError, ValueError):
                fv = float("nan")
            if isinstance(v, bool) or not np.isfinite(fv) or fv != int(fv) or fv <= 0:
                raise ValueError(f"{where}: field {field_name!r} is {v!r}; expected a positive whole number of pixels")
        w2c = np.eye(4)
        w2c[:3, :3] = R
        w2c[:3, 3] = t
        try:
            cams.append(Camera(K=K, w2c=w2c, width=int(size[0]), height=int(size[1]),
                               name=str(entry.get("name", f"cam{i}")), dist=dist if dist.size else None))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    names = [c.name for c in cams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: camera names must be unique (frames, masks and dropped views are matched by "
                         f"name); repeated: {dup}")
    return Calibration(cameras=cams, units=u, up=up / np.linalg.norm(up), path=str(path))


def calibration_to_dict(cal: Calibration) -> dict:
    cams = []
    for c in cal.cameras:
        cams.append({"name": c.name, "width": c.width, "height": c.height, "K": c.K.tolist(),
                     "dist": [] if c.dist is None else c.dist.tolist(),
                     "R": c.w2c[:3, :3].tolist(), "t": c.w2c[:3, 3].tolist()})
    return {"units": cal.units, "up": np.asarray(cal.up).tolist(), "cameras": cams}


def save_calibration(path: str | Path, cal: Calibration) -> None:
    """Write the OpenCV JSON/YAML layout above (atomically), e.g. to convert a DANNCE file."""
    from mousefacelift.shards import atomic_write_bytes

    path = Path(path)
    d = calibration_to_dict(cal)
    if path.suffix.lower() == ".json":
        text = json.dumps(d, indent=1)
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(d, sort_keys=False)
    else:
        raise ValueError(f"{path}: expected a .json or .yaml file name")
    atomic_write_bytes(path, text.encode())
