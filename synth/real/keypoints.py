"""3D keypoints of a real recording: readers and what the ingest can do with them.

Why: a triangulated pose of the same recording is independent evidence about the mouse, so it
can seed and check the masks, give the world's up direction when the calibration frame is
arbitrary (board on a wall), name a camera whose calibration is wrong, and carry a body-model
fit (:mod:`synth.real.body_prior`) that gives a mask prior and approximate depth.

Formats (:func:`load_keypoints` dispatches on extension and content):

- sleap-anipose ``points3d.h5``: dataset ``tracks`` [frames, tracks, nodes, 3] (optional
  dataset ``frames`` = [start, stop) of the triangulated range); node names are not stored
  (config ``node_names``); no unit (the calibration's);
- anipose ``pose-3d/*.csv``: columns ``<part>_x/_y/_z`` (+ ``_error``, ``_ncams``, ``_score``,
  ignored), ``fnum`` (frame), and ``M_ij`` / ``center_i``: when anipose aligned the axes
  (``triangulation.axes``) the points are ``X @ M.T - center``, so they are mapped back to the
  calibration's world here (identity when not aligned); no unit (the calibration's);
- DANNCE predictions ``save_data_AVG.mat``: ``pred`` [frames, 3, joints] (``sampleID`` = frame
  when present), millimetres, the mouse-22 skeleton when there are 22 joints;
- DANNCE / Label3D labels ``label3d_dannce.mat`` (:func:`mousefacelift.dannce.load_labelled_keypoints`).

Every function that meets cameras takes them in millimetres (``Calibration.cameras_mm()``,
as the ingest uses them) and converts the keypoints with the track's unit.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mousefacelift.body.model import DANNCE22_NAMES
from mousefacelift.cameras import Camera
from mousefacelift.config import load_typed
from synth.real.calibration import MM_PER_UNIT

__all__ = ["KeypointTrack", "KeypointsConfig", "UpEstimate", "load_keypoints", "load_keypoints_config",
           "project_seeds", "keypoint_mask_agreement", "estimate_up", "resolve_up", "camera_keypoint_scores"]


# -- config ---------------------------------------------------------------------------------
@dataclass
class SeedConfig:
    tolerance_px: float
    sure_joints: tuple[str, ...]


@dataclass
class UpConfig:
    use: str
    floor_joints: tuple[str, ...]
    above_joints: tuple[str, ...]
    inlier_mm: float
    iterations: int
    seed: int
    min_confidence: float

    def __post_init__(self):
        if self.use not in ("auto", "keypoints", "calibration"):
            raise ValueError(f"keypoints up.use: expected auto, keypoints or calibration, got {self.use!r}")


@dataclass
class BodyPriorConfig:
    model: str
    fit_iters: int
    batch: int
    min_keypoints: int
    max_residual_mm: float
    depth: bool
    depth_min_alpha: float


@dataclass
class KeypointsConfig:
    """configs/real/keypoints.yaml, typed (values and their meaning are documented there)."""

    units: str | None
    track: int
    node_names: tuple[str, ...] | None
    joint_map: dict[str, str]
    seeds: SeedConfig
    up: UpConfig
    body_prior: BodyPriorConfig


def load_keypoints_config(name_or_path: str = "keypoints", overrides=None) -> KeypointsConfig:
    return load_typed(KeypointsConfig, "real", name_or_path, overrides)


# -- the track ------------------------------------------------------------------------------
@dataclass
class KeypointTrack:
    """Per-frame 3D keypoints in the calibration's world: points [F,J,3] in ``unit`` (NaN where
    missing), joint ``names`` [J], video ``frames`` [F] (unique)."""

    points: np.ndarray
    names: tuple[str, ...]
    frames: np.ndarray
    unit: str
    path: str = ""
    _row: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float64)
        self.frames = np.asarray(self.frames, dtype=np.int64).reshape(-1)
        self.names = tuple(str(n) for n in self.names)
        where = self.path or "keypoints"
        if self.points.ndim != 3 or self.points.shape[2] != 3:
            raise ValueError(f"{where}: points have shape {self.points.shape}; expected [frames, joints, 3]")
        if self.points.shape[1] != len(self.names):
            raise ValueError(f"{where}: {self.points.shape[1]} joints but {len(self.names)} names")
        if len(self.frames) != len(self.points):
            raise ValueError(f"{where}: {len(self.frames)} frame indices for {len(self.points)} poses")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"{where}: joint names repeat: {sorted({n for n in self.names if self.names.count(n) > 1})}")
        if self.unit not in MM_PER_UNIT:
            raise ValueError(f"{where}: unit {self.unit!r}; expected one of {sorted(MM_PER_UNIT)}")
        self.points[~np.all(np.isfinite(self.points), axis=-1)] = np.nan
        self._row = {int(f): i for i, f in enumerate(self.frames)}
        if len(self._row) != len(self.frames):
            raise ValueError(f"{where}: frame indices repeat")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def mm_per_unit(self) -> float:
        return MM_PER_UNIT[self.unit]

    def has(self, frame: int) -> bool:
        return int(frame) in self._row

    def at(self, frame: int) -> np.ndarray:
        """[J,3] in the track's unit for video frame ``frame`` (a copy)."""
        if int(frame) not in self._row:
            raise KeyError(f"{self.path or 'keypoints'}: no pose for frame {frame} (track covers "
                           f"{len(self)} frames, {self.frames.min() if len(self) else '-'}..{self.frames.max() if len(self) else '-'})")
        return self.points[self._row[int(frame)]].copy()

    def at_mm(self, frame: int) -> np.ndarray:
        return self.at(frame) * self.mm_per_unit

    def joint(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{self.path or 'keypoints'}: no joint {name!r} (have {list(self.names)})") from None

    def in_order(self, names: Sequence[str], joint_map: Mapping[str, str] | None = None) -> "KeypointTrack":
        """The same track with joints ``names`` (e.g. the body model's keypoints), each taken from
        the joint of that name or of ``joint_map[name]``; joints the file lacks are NaN."""
        joint_map = dict(joint_map or {})
        unknown = sorted(set(joint_map) - set(names))
        if unknown:
            raise ValueError(f"joint_map: keys {unknown} are not target joints (expected some of {list(names)})")
        missing_src = sorted(v for v in joint_map.values() if v not in self.names)
        if missing_src:
            raise ValueError(f"joint_map: {missing_src} not in {self.path or 'the keypoints'} (joints there: "
                             f"{list(self.names)})")
        out = np.full((len(self), len(names), 3), np.nan)
        found = 0
        for j, n in enumerate(names):
            src = joint_map.get(n, n)
            if src in self.names:
                out[:, j] = self.points[:, self.names.index(src)]
                found += 1
        if found == 0:
            raise ValueError(f"{self.path or 'keypoints'}: none of the joints {list(self.names)} matches the target "
                             f"names {list(names)}; give keypoints.joint_map (target name -> file name)")
        return KeypointTrack(points=out, names=tuple(names), frames=self.frames.copy(), unit=self.unit, path=self.path)


# -- readers --------------------------------------------------------------------------------
def load_keypoints(path: str | Path, units: str | None = None, track: int = 0,
                   node_names: Sequence[str] | None = None) -> KeypointTrack:
    """Read a keypoint file (see the module docstring for the formats). ``units`` is the
    length unit of formats that state none (sleap-anipose, anipose: the calibration's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: keypoint file not found")
    ext = path.suffix.lower()
    if ext in (".h5", ".hdf5"):
        return _read_sleap_anipose(path, _need_units(units, path), track, node_names)
    if ext == ".csv":
        return _read_anipose_csv(path, _need_units(units, path))
    if ext == ".mat":
        return _read_dannce_mat(path, units)
    raise ValueError(f"{path}: unknown keypoint format {ext!r}; expected .h5 (sleap-anipose points3d), .csv (anipose "
                     "pose-3d) or .mat (DANNCE save_data_AVG / label3d_dannce)")


def _need_units(units: str | None, path: Path) -> str:
    if units is None:
        raise ValueError(f"{path}: the file states no length unit; pass the calibration's (mm | cm | m)")
    if units not in MM_PER_UNIT:
        raise ValueError(f"{path}: units {units!r}; expected one of {sorted(MM_PER_UNIT)}")
    return units


def _read_sleap_anipose(path: Path, units: str, track: int, node_names: Sequence[str] | None) -> KeypointTrack:
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path}: reading sleap-anipose .h5 needs h5py (pip install h5py)") from None
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        if "tracks" not in f or not isinstance(f["tracks"], h5py.Dataset):
            raise ValueError(f"{path}: no dataset 'tracks' (have {sorted(f.keys())}); expected a sleap-anipose "
                             "points3d.h5 with tracks [frames, tracks, nodes, 3]")
        ds = f["tracks"]
        if ds.ndim != 4 or ds.shape[-1] != 3:
            hint = " (a SLEAP 2D analysis file? triangulate it first)" if ds.ndim == 4 and ds.shape[1] == 2 else ""
            raise ValueError(f"{path}: field 'tracks' has shape {ds.shape}; expected [frames, tracks, nodes, 3]{hint}")
        if not 0 <= track < ds.shape[1]:
            raise ValueError(f"{path}: track {track} requested; field 'tracks' holds {ds.shape[1]} tracks")
        try:
            pts = np.asarray(ds[:, track], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: field 'tracks' has dtype {ds.dtype}; expected numbers") from None
        start = 0
        if "frames" in f:
            fr = np.asarray(f["frames"][()]).reshape(-1)
            if fr.size != 2 or not np.all(np.isfinite(fr.astype(np.float64))) or fr[0] < -1:
                raise ValueError(f"{path}: field 'frames' is {fr.tolist()}; expected [start, stop) of the "
                                 "triangulated range")
            start = max(int(fr[0]), 0)        # the CLI's (-1, -1) means the whole video
    J = pts.shape[1]
    if node_names is None:
        names = tuple(DANNCE22_NAMES) if J == len(DANNCE22_NAMES) else tuple(f"node{i}" for i in range(J))
    else:
        names = tuple(node_names)
        if len(names) != J:
            raise ValueError(f"{path}: {len(names)} node_names given for {J} nodes in field 'tracks'")
    return KeypointTrack(pts, names, np.arange(start, start + len(pts)), units, str(path))


_ANIPOSE_SUFFIXES = ("_x", "_y", "_z")
_ANIPOSE_EXTRA = ("_error", "_ncams", "_score")


def _read_anipose_csv(path: Path, units: str) -> KeypointTrack:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text CSV ({e})") from None
    if not rows:
        raise ValueError(f"{path}: empty file; expected an anipose pose-3d CSV with <part>_x,_y,_z columns")
    header = [h.strip() for h in rows[0]]
    col = {h: i for i, h in enumerate(header)}
    parts = [h[:-2] for h in header if h.endswith("_x") and h[:-2] + "_y" in col and h[:-2] + "_z" in col]
    if not parts:
        raise ValueError(f"{path}: no <part>_x,<part>_y,<part>_z column triple in the header {header[:8]}...; "
                         "expected an anipose pose-3d CSV")
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if not body:
        raise ValueError(f"{path}: header but no rows")

    def column(name: str) -> np.ndarray:
        i = col[name]
        out = np.empty(len(body))
        for k, r in enumerate(body):
            s = r[i].strip() if i < len(r) else ""
            try:
                out[k] = float(s) if s else np.nan
            except ValueError:
                raise ValueError(f"{path}: row {k + 2}, field {name!r} is {s!r}; expected a number") from None
        return out

    pts = np.stack([np.stack([column(p + s) for s in _ANIPOSE_SUFFIXES], -1) for p in parts], 1)   # [F,J,3]
    if "fnum" in col:
        fn = column("fnum")
        if not np.all(np.isfinite(fn)) or np.any(fn != np.round(fn)) or np.any(fn < 0):
            raise ValueError(f"{path}: field 'fnum' holds {fn[~np.isfinite(fn) | (fn != np.round(fn))][:3].tolist() or fn.min()}; "
                             "expected whole frame numbers >= 0")
        frames = fn.astype(np.int64)
    else:
        frames = np.arange(len(body))
    m_cols = [f"M_{i}{j}" for i in range(3) for j in range(3)]
    c_cols = [f"center_{i}" for i in range(3)]
    if all(c in col for c in m_cols + c_cols):
        M = np.stack([column(c) for c in m_cols], -1).reshape(-1, 3, 3)
        c = np.stack([column(c) for c in c_cols], -1)
        if not (np.all(np.isfinite(M)) and np.all(np.isfinite(c))):
            raise ValueError(f"{path}: fields M_ij / center_i hold non-finite values; expected anipose's axis alignment")
        if np.ptp(M, axis=0).max() > 1e-9 or np.ptp(c, axis=0).max() > 1e-9:
            raise ValueError(f"{path}: fields M_ij / center_i change between rows; expected one alignment per file")
        M, c = M[0], c[0]
        if abs(abs(np.linalg.det(M)) - 1) > 1e-3:
            raise ValueError(f"{path}: fields M_ij form a matrix with determinant {np.linalg.det(M):.4f}; expected a "
                             "rotation (anipose axis alignment)")
        # anipose wrote adj = X @ M.T - center  ->  X = (adj + center) @ M^-T
        pts = np.linalg.solve(M, (pts + c).reshape(-1, 3).T).T.reshape(pts.shape)
    return KeypointTrack(pts, tuple(parts), frames, units, str(path))


def _read_dannce_mat(path: Path, units: str | None) -> KeypointTrack:
    import scipy.io

    if units not in (None, "mm"):
        raise ValueError(f"{path}: DANNCE files are in millimetres; got units {units!r}")
    try:
        m = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several unrelated types for a bad file
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e})") from None
    if "labelData" in m:
        from mousefacelift.dannce import load_labelled_keypoints

        lab = load_labelled_keypoints(path)
        order = np.argsort(lab.frames, kind="stable")
        frames, idx = np.unique(lab.frames[order], return_index=True)   # a frame labelled twice: first label
        return KeypointTrack(lab.points[order][idx], lab.names, frames, "mm", str(path))
    if "pred" not in m:
        raise ValueError(f"{path}: no variable 'pred' or 'labelData' (have {sorted(k for k in m if not k.startswith('__'))}); "
                         "expected DANNCE save_data_AVG.mat or label3d_dannce.mat")
    try:
        pred = np.asarray(m["pred"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: field 'pred' is not numeric") from None
    if pred.ndim != 3 or pred.shape[1] != 3:
        raise ValueError(f"{path}: field 'pred' has shape {pred.shape}; expected [frames, 3, joints]")
    pts = pred.transpose(0, 2, 1)
    frames = np.arange(len(pts))
    if "sampleID" in m:
        sid = np.asarray(m["sampleID"], dtype=np.float64).reshape(-1)
        if sid.size != len(pts) or not np.all(np.isfinite(sid)) or np.any(sid != np.round(sid)):
            raise ValueError(f"{path}: field 'sampleID' has {sid.size} values (or non-integers) for {len(pts)} poses; "
                             "expected one frame number per pose")
        frames = sid.astype(np.int64)
    J = pts.shape[1]
    names = tuple(DANNCE22_NAMES) if J == len(DANNCE22_NAMES) else tuple(f"joint{i}" for i in range(J))
    return KeypointTrack(pts, names, frames, "mm", str(path))


# -- seeds and agreement ---------------------------------------------------------------------
def project_seeds(track: KeypointTrack, frame: int, camera: Camera) -> np.ndarray:
    """The keypoints of ``frame`` in the captured image of ``camera`` (millimetres, with its
    distortion): [J,2] pixel coordinates (pixel (u, v) covers [u, u+1)); NaN where the keypoint
    is missing or behind the camera. Meant as sure-foreground seeds for a mask provider."""
    uv, z = camera.project(track.at_mm(frame))
    uv[~(z > 0)] = np.nan
    return uv


def keypoint_mask_agreement(mask: np.ndarray, seeds: np.ndarray, tolerance_px: float = 0.0) -> float:
    """Share of the finite ``seeds`` [J,2] that fall on the mask (within ``tolerance_px`` of a
    mask pixel); seeds outside the image count as outside. NaN when no seed is finite."""
    mask = np.asarray(mask, dtype=bool)
    s = np.asarray(seeds, dtype=np.float64).reshape(-1, 2)
    s = s[np.all(np.isfinite(s), axis=1)]
    if len(s) == 0:
        return float("nan")
    H, W = mask.shape
    u, v = np.floor(s[:, 0]).astype(np.int64), np.floor(s[:, 1]).astype(np.int64)
    ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    hit = np.zeros(len(s), bool)
    hit[ok] = mask[v[ok], u[ok]]
    r = int(math.floor(tolerance_px))
    if r > 0:
        # a window per missed seed (not a distance transform of the whole frame: seeds are few)
        dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = dy ** 2 + dx ** 2 <= tolerance_px ** 2
        dy, dx = dy[disk], dx[disk]
        for k in np.nonzero(ok & ~hit)[0]:
            yy, xx = v[k] + dy, u[k] + dx
            inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            hit[k] = bool(mask[yy[inside], xx[inside]].any())
    return float(hit.mean())


def camera_keypoint_scores(track: KeypointTrack, masks_per_camera: Sequence[Mapping[int, np.ndarray]],
                           cameras: Sequence[Camera], tolerance_px: float = 0.0) -> dict[str, float]:
    """Per camera (by name): the mean share of keypoints that project onto its mask over the
    frames that have both a pose and a mask (:func:`keypoint_mask_agreement`). The keypoints
    are in the world (triangulated from all cameras), so a camera whose calibration is wrong
    projects them off the mouse and scores far below the others; NaN when no frame is shared."""
    if len(masks_per_camera) != len(cameras):
        raise ValueError(f"{len(masks_per_camera)} mask sets for {len(cameras)} cameras")
    out = {}
    for cam, masks in zip(cameras, masks_per_camera):
        vals = [keypoint_mask_agreement(masks[f], project_seeds(track, f, cam), tolerance_px)
                for f in sorted(masks) if track.has(f)]
        vals = [v for v in vals if np.isfinite(v)]
        out[cam.name] = float(np.mean(vals)) if vals else float("nan")
    return out


# -- the world's up direction ------------------------------------------------------------------
@dataclass
class UpEstimate:
    """World up from the keypoints: ``up`` (unit, calibration world), ``confidence`` in [0, 1]
    (= ``inlier_share`` x ``sign_share``), and what it rests on."""

    up: np.ndarray
    confidence: float
    inlier_share: float      # floor keypoints within inlier_mm of the fitted plane
    sign_share: float        # frames whose above_joints lie on the up side of the plane
    rms_mm: float            # inliers' distance to the plane
    height_mm: float         # median height of the above_joints over the plane
    points: int              # floor keypoints used

    def to_meta(self) -> dict:
        return {"up": self.up.tolist(), "confidence": round(self.confidence, 4),
                "inlier_share": round(self.inlier_share, 4), "sign_share": round(self.sign_share, 4),
                "rms_mm": round(self.rms_mm, 3), "height_mm": round(self.height_mm, 2), "points": self.points}


def _plane(p: np.ndarray) -> tuple[np.ndarray, float]:
    c = p.mean(0)
    _, _, vt = np.linalg.svd(p - c, full_matrices=False)
    n = vt[-1]
    return n, float(n @ c)


def estimate_up(track: KeypointTrack, cfg: UpConfig) -> UpEstimate:
    """Normal of the floor plane fitted to the ``floor_joints`` over every frame (RANSAC on
    3-point planes, then least squares on the inliers), signed so the ``above_joints`` (spine)
    lie above it. Paws leave the floor (grooming, rearing) but not all at once and not for
    long, so the floor is the plane most paw positions agree on."""
    mm = track.mm_per_unit
    fl = [track.joint(n) for n in cfg.floor_joints]
    ab = [track.joint(n) for n in cfg.above_joints]
    P = track.points[:, fl].reshape(-1, 3) * mm
    P = P[np.all(np.isfinite(P), axis=1)]
    if len(P) < 3 or np.linalg.matrix_rank(P - P.mean(0), tol=1e-6) < 2:
        raise ValueError(f"{track.path or 'keypoints'}: {len(P)} floor keypoints ({', '.join(cfg.floor_joints)}) "
                         "that do not span a plane; the up direction needs paws over several frames")
    rng = np.random.default_rng(cfg.seed)
    best, best_n = -1, None
    for _ in range(cfg.iterations):
        a, b, c = P[rng.choice(len(P), 3, replace=False)]
        n = np.cross(b - a, c - a)
        ln = np.linalg.norm(n)
        if ln < 1e-9:
            continue
        n /= ln
        count = int(np.count_nonzero(np.abs((P - a) @ n) <= cfg.inlier_mm))
        if count > best:
            best, best_n = count, (n, float(n @ a))
    if best_n is None:
        raise ValueError(f"{track.path or 'keypoints'}: floor keypoints are collinear; no plane to fit")
    n, d = best_n
    for _ in range(3):                               # refine: least squares on the inliers, re-select
        inl = np.abs(P @ n - d) <= cfg.inlier_mm
        if inl.sum() < 3:
            break
        n, d = _plane(P[inl])
    inl = np.abs(P @ n - d) <= cfg.inlier_mm
    A = track.points[:, ab] * mm                                  # [F,A,3]
    above = A @ n - d                                             # [F,A], NaN where missing
    seen = np.isfinite(above).sum(1)
    h = np.nansum(above, axis=1)[seen > 0] / seen[seen > 0]
    if len(h) == 0:
        raise ValueError(f"{track.path or 'keypoints'}: no frame has the above_joints ({', '.join(cfg.above_joints)}); "
                         "they give the up direction its sign")
    if np.median(h) < 0:
        n, d, h = -n, -d, -h
    sign_share = float(np.mean(h > 0))
    inlier_share = float(inl.mean())
    rms = float(np.sqrt(np.mean((P[inl] @ n - d) ** 2))) if inl.any() else math.nan
    return UpEstimate(up=n / np.linalg.norm(n), confidence=inlier_share * sign_share, inlier_share=inlier_share,
                      sign_share=sign_share, rms_mm=rms, height_mm=float(np.median(h)), points=len(P))


def resolve_up(stated_up: np.ndarray, estimate: UpEstimate | None, cfg: UpConfig) -> tuple[np.ndarray, dict]:
    """The up direction the ingest should use, and a record of the choice for the log and meta:
    the keypoints' estimate (``use: keypoints``, or ``auto`` with confidence >= min_confidence)
    or the calibration's ``stated_up`` (which defaults to +Z when a file states none)."""
    stated = np.asarray(stated_up, dtype=np.float64) / np.linalg.norm(stated_up)
    info: dict = {"source": "calibration", "calibration_up": stated.tolist()}
    if estimate is None:
        return stated, info
    info.update(keypoints=estimate.to_meta(),
                angle_to_calibration_deg=round(float(np.degrees(np.arccos(np.clip(estimate.up @ stated, -1, 1)))), 3))
    take = cfg.use == "keypoints" or (cfg.use == "auto" and estimate.confidence >= cfg.min_confidence)
    if take:
        info["source"] = "keypoints"
        return estimate.up.copy(), info
    return stated, info
