"""Cameras, rigs and rays: the project's one camera convention (docs/architecture.md §3).

Convention, used everywhere and converted only at the edges (Blender, calibration files,
FaceLift JSON):
- camera frame OpenCV: x right, y down, z forward; extrinsics stored as world-to-camera;
- pixel (u, v) covers [u, u+1) x [v, v+1): the ray through pixel (i, j) passes (j+0.5, i+0.5);
- world Z up, subject centred at the origin inside [-1, 1]^3; the mouse faces +X, its left +Y;
- azimuth is measured counter-clockwise about +Z from +X (azimuth 0 = the camera in front of
  the mouse, looking at its face), elevation up from the XY plane.

Rigs are named and composable: ``"sphere32"``, ``"facelift_ring32"``, ``"mv6"``,
``"zero123pp6"``, or a ``+``-joined composition such as ``"sphere26+mv6"``. A number after a
family name sets its count (``sphere26``, ``ring16``).

``"mvinput"`` (multi-view-diffusion training, configs/rig/mvinput.yaml) stands alone: view 0 is
the INPUT from a random direction (:class:`InputViews`), views 1..N the TARGETS placed relative
to the input azimuth by a :class:`TargetLayout` (:func:`relative_targets`, the same function the
diffusion pipeline uses at inference, so the target cameras are known exactly there).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

DEFAULT_RADIUS = 2.7      # FaceLift's camera distance, so its GS-LRM weights transfer
DEFAULT_FOV_DEG = 50.0    # FaceLift's field of view
DEFAULT_VIEWS = 32
WORLD_UP = np.array([0.0, 0.0, 1.0])

# The six multi-view-diffusion targets: azimuths relative to the front, elevation 0.
MV6_AZIMUTHS = (0.0, 45.0, 90.0, 180.0, 270.0, 315.0)
# Zero123++ v1.2 layout: azimuth 30 + 60k, elevations alternating +20 / -10 degrees.
ZERO123PP_AZIMUTHS = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
ZERO123PP_ELEVATIONS = (20.0, -10.0, 20.0, -10.0, 20.0, -10.0)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera (plus optional OpenCV distortion) in the project convention.

    ``K`` is 3x3, ``w2c`` 4x4 world-to-camera (OpenCV axes), ``dist`` the OpenCV
    ``[k1, k2, p1, p2(, k3(, k4, k5, k6))]`` coefficients (4, 5 or 8) or None for an ideal pinhole.
    """

    K: np.ndarray
    w2c: np.ndarray
    width: int
    height: int
    name: str = ""
    dist: np.ndarray | None = None
    depth_range: tuple[float, float] | None = None

    def __post_init__(self):
        K = np.asarray(self.K, dtype=np.float64)
        w2c = np.asarray(self.w2c, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"camera {self.name!r}: K must be 3x3, got shape {K.shape}")
        if w2c.shape != (4, 4):
            raise ValueError(f"camera {self.name!r}: w2c must be 4x4, got shape {w2c.shape}")
        if not np.allclose(w2c[3], [0, 0, 0, 1]):
            raise ValueError(f"camera {self.name!r}: w2c last row must be [0, 0, 0, 1], got {w2c[3]}")
        R = w2c[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
            raise ValueError(f"camera {self.name!r}: w2c rotation is not a proper rotation (det {np.linalg.det(R):.4f})")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera {self.name!r}: image size must be positive, got {self.width}x{self.height}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"camera {self.name!r}: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "w2c", w2c)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        if self.dist is not None:
            d = np.asarray(self.dist, dtype=np.float64).reshape(-1)
            if d.size not in (4, 5, 8):
                raise ValueError(f"camera {self.name!r}: dist must have 4, 5 or 8 OpenCV coefficients, got {d.size}")
            object.__setattr__(self, "dist", None if not np.any(d) else d)
        if self.depth_range is not None:
            near, far = (float(x) for x in self.depth_range)
            if not 0 < near < far:
                raise ValueError(f"camera {self.name!r}: depth_range must satisfy 0 < near < far, got {self.depth_range}")
            object.__setattr__(self, "depth_range", (near, far))

    # -- derived quantities -------------------------------------------------------------
    @property
    def c2w(self) -> np.ndarray:
        return np.linalg.inv(self.w2c)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        R, t = self.w2c[:3, :3], self.w2c[:3, 3]
        return -R.T @ t

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [N,3] -> pixel coordinates [N,2] (distortion applied) and camera z [N]."""
        pts = np.asarray(points_world, dtype=np.float64)
        cam = pts @ self.w2c[:3, :3].T + self.w2c[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = cam[:, :2] / z[:, None]
        if self.dist is not None:
            xn = distort_normalized(xn, self.dist)
        uv = xn @ self.K[:2, :2].T + self.K[:2, 2]
        return uv, z

    # -- edits that keep images and cameras in sync -------------------------------------
    def resized(self, width: int, height: int) -> "Camera":
        """The same camera for the image resized to ``width`` x ``height`` (pixel-area scaling)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        return replace(self, K=K, width=width, height=height)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Camera":
        """The same camera for the crop whose top-left pixel is (x0, y0)."""
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return replace(self, K=K, width=width, height=height)

    def to_meta(self) -> dict:
        """The per-view entry of ``meta.json`` (docs/architecture.md §2)."""
        d = {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "w2c": self.w2c.tolist(),
        }
        if self.dist is not None:
            d["dist"] = self.dist.tolist()
        if self.depth_range is not None:
            d["depth_range"] = list(self.depth_range)
        return d

    @classmethod
    def from_meta(cls, d: dict, where: str = "view") -> "Camera":
        """Inverse of :meth:`to_meta`; errors name the missing or malformed field."""
        try:
            K = np.array([[d["fx"], 0.0, d["cx"]], [0.0, d["fy"], d["cy"]], [0.0, 0.0, 1.0]])
            return cls(K=K, w2c=np.asarray(d["w2c"], dtype=np.float64), width=d["width"], height=d["height"],
                       name=d.get("name", ""), dist=d.get("dist"),
                       depth_range=tuple(d["depth_range"]) if d.get("depth_range") else None)
        except KeyError as e:
            raise ValueError(f"{where}: camera entry lacks field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: malformed camera entry: {e}") from None


def distort_normalized(xn: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Apply OpenCV distortion to normalised image points [N,2]: radial-tangential
    ``[k1, k2, p1, p2(, k3)]`` or the rational model ``[k1, k2, p1, p2, k3, k4, k5, k6]``
    (the radial factor divided by ``1 + k4 r² + k5 r⁴ + k6 r⁶``), as ``cv2.projectPoints``."""
    d = np.zeros(8)
    d[: len(dist)] = dist
    k1, k2, p1, p2, k3, k4, k5, k6 = d
    x, y = xn[:, 0], xn[:, 1]
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3) / (1 + k4 * r2 + k5 * r2 ** 2 + k6 * r2 ** 3)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort_normalized(xd: np.ndarray, dist: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Invert :func:`distort_normalized` (``cv2.undistortPointsIter``: OpenCV's fixed-point
    iteration, run to convergence)."""
    import cv2

    xd = np.ascontiguousarray(xd, dtype=np.float64).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(iterations), 1e-15)
    return cv2.undistortPointsIter(xd, np.eye(3), np.asarray(dist, np.float64), None, None, crit).reshape(-1, 2)


# -- construction ---------------------------------------------------------------------------
def intrinsics_from_fov(fov_deg: float, width: int, height: int | None = None) -> np.ndarray:
    """Square-pixel K whose horizontal field of view is ``fov_deg`` (principal point centred)."""
    height = width if height is None else height
    if not 0 < fov_deg < 180:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def look_at(eye: Sequence[float], target: Sequence[float] = (0, 0, 0), up: Sequence[float] = WORLD_UP) -> np.ndarray:
    """World-to-camera matrix (OpenCV axes) of a camera at ``eye`` looking at ``target``.

    Image 'up' (-y) follows the world ``up`` vector; looking straight along ``up`` falls back
    to +X as the reference so poles are well defined.
    """
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    n = np.linalg.norm(z)
    if n < 1e-9:
        raise ValueError(f"look_at: eye {eye} coincides with target {target}")
    z /= n
    if abs(np.dot(z, up / np.linalg.norm(up))) > 1 - 1e-6:
        up = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)       # right-handed with y = z × x pointing down (OpenCV)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def spherical_to_position(azimuth_deg, elevation_deg, radius: float = DEFAULT_RADIUS) -> np.ndarray:
    az, el = np.radians(np.asarray(azimuth_deg, float)), np.radians(np.asarray(elevation_deg, float))
    return radius * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def orbit_cameras(azimuths_deg: Iterable[float], elevations_deg: Iterable[float], *, size: int,
                  radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG, prefix: str = "view") -> list[Camera]:
    """Cameras on a sphere around the origin, all looking at it."""
    K = intrinsics_from_fov(fov_deg, size)
    cams = []
    for i, (az, el) in enumerate(zip(azimuths_deg, elevations_deg)):
        pos = spherical_to_position(az, el, radius)
        cams.append(Camera(K=K, w2c=look_at(pos), width=size, height=size, name=f"{prefix}_az{az:.1f}_el{el:.1f}"))
    return cams


def _sphere_directions(n: int, rng: np.random.Generator, min_elevation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified directions: a Fibonacci lattice on the allowed cap, randomly rotated about Z
    and jittered within each cell, so a rig covers the sphere evenly but differs per sample."""
    zmin = math.sin(math.radians(min_elevation_deg))
    k = np.arange(n) + rng.uniform(0.15, 0.85, size=n)
    z = zmin + (1 - zmin) * k / n
    golden = math.pi * (3 - math.sqrt(5))
    phi = golden * np.arange(n) + rng.uniform(0, 2 * math.pi) + rng.normal(0, 0.1, size=n)
    az = np.degrees(np.mod(phi, 2 * math.pi))
    el = np.degrees(np.arcsin(np.clip(z, -1, 1)))
    return az, el


# -- multi-view-diffusion rig: input view + targets relative to it ----------------------------
@dataclass(frozen=True)
class TargetLayout:
    """Where the diffusion targets sit relative to the input camera: azimuth offsets about world
    up from the input azimuth, world elevations, one fixed radius and field of view (so their
    cameras are known exactly at inference). Values come from configs/rig/mvinput.yaml ``targets``."""

    azimuth_offsets_deg: tuple[float, ...]
    elevations_deg: tuple[float, ...]
    radius: float
    fov_deg: float

    def __post_init__(self):
        az = tuple(float(a) for a in self.azimuth_offsets_deg)
        el = tuple(float(e) for e in self.elevations_deg)
        if not az:
            raise ValueError("targets.azimuth_offsets_deg: expected at least one target, got none")
        if len(el) != len(az):
            raise ValueError(f"targets.elevations_deg: expected one elevation per azimuth offset ({len(az)}), "
                             f"got {len(el)}")
        bad = [e for e in el if not -90.0 <= e <= 90.0]
        if bad:
            raise ValueError(f"targets.elevations_deg: {bad} outside [-90, 90] degrees")
        if not all(math.isfinite(a) for a in az):
            raise ValueError(f"targets.azimuth_offsets_deg: {list(az)} are not all finite")
        if not float(self.radius) > math.sqrt(3):
            raise ValueError(f"targets.radius={self.radius}: expected > sqrt(3) (cameras outside the [-1,1]^3 subject cube)")
        if not 0.0 < float(self.fov_deg) < 180.0:
            raise ValueError(f"targets.fov_deg={self.fov_deg}: expected a field of view in (0, 180) degrees")
        object.__setattr__(self, "azimuth_offsets_deg", az)
        object.__setattr__(self, "elevations_deg", el)
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "fov_deg", float(self.fov_deg))

    @property
    def num_views(self) -> int:
        return len(self.azimuth_offsets_deg)


@dataclass(frozen=True)
class InputViews:
    """The input view's random direction: azimuth uniform in [0, 360); elevation a two-part
    mixture, ``lab_share`` of draws uniform in ``lab_elevation_deg`` (lab cameras look down
    steeply) and the rest uniform over the remainder of ``elevation_deg``, so ``lab_share`` is
    exactly the share of inputs in the lab range. Uniform in angle, not area: top-down views
    are not starved by the small solid angle near the pole. Values: mvinput.yaml ``input``."""

    elevation_deg: tuple[float, float]
    lab_elevation_deg: tuple[float, float]
    lab_share: float

    def __post_init__(self):
        lo, hi = (float(x) for x in self.elevation_deg)
        llo, lhi = (float(x) for x in self.lab_elevation_deg)
        if not -90.0 <= lo <= hi <= 90.0:
            raise ValueError(f"input.elevation_deg={[lo, hi]}: expected [low, high] with -90 <= low <= high <= 90")
        if not lo <= llo <= lhi <= hi:
            raise ValueError(f"input.lab_elevation_deg={[llo, lhi]}: expected a range inside elevation_deg {[lo, hi]}")
        share = float(self.lab_share)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"input.lab_share={self.lab_share}: expected a share in [0, 1]")
        if share < 1.0 and (llo - lo) + (hi - lhi) <= 0.0:
            raise ValueError(f"input.lab_share={share}: the lab range {[llo, lhi]} covers all of elevation_deg "
                             f"{[lo, hi]}, so the share outside it must be 0 (set lab_share: 1.0)")
        object.__setattr__(self, "elevation_deg", (lo, hi))
        object.__setattr__(self, "lab_elevation_deg", (llo, lhi))
        object.__setattr__(self, "lab_share", share)

    def sample(self, rng: np.random.Generator) -> tuple[float, float]:
        """(azimuth_deg, elevation_deg) of one input view; always three draws from ``rng``."""
        lo, hi = self.elevation_deg
        llo, lhi = self.lab_elevation_deg
        az = float(rng.uniform(0.0, 360.0))
        pick, u = float(rng.uniform()), float(rng.uniform())
        if pick < self.lab_share:
            el = llo + u * (lhi - llo)
        else:   # uniform over [lo, llo) + (lhi, hi], the parts of the range outside the lab range
            below = llo - lo
            x = u * (below + (hi - lhi))
            el = lo + x if x < below else lhi + (x - below)
        return az, el


def orbit_w2c(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """World-to-camera of a camera on the sphere looking at the origin, image up along increasing
    elevation: identical to ``look_at`` with world up, and still defined by the azimuth at the
    poles (a top-down input keeps its in-plane rotation)."""
    az, el = math.radians(float(azimuth_deg)), math.radians(float(elevation_deg))
    up = (-math.sin(el) * math.cos(az), -math.sin(el) * math.sin(az), math.cos(el))
    return look_at(spherical_to_position(azimuth_deg, elevation_deg, radius), up=up)


def orbit_angles(camera: Camera) -> tuple[float, float, float]:
    """(azimuth_deg in [0, 360), elevation_deg, distance) of a camera looking at the origin. The
    azimuth is read from the image's right axis, (-sin az, cos az, 0) for :func:`orbit_w2c` and
    for ``look_at`` off the poles, so it stays exact for a top-down camera."""
    right, c = camera.w2c[0, :3], camera.center
    dist = float(np.linalg.norm(c))
    az = float(np.degrees(np.arctan2(-right[0], right[1])) % 360.0)
    el = float(np.degrees(np.arcsin(np.clip(c[2] / dist, -1.0, 1.0))))
    return az, el, dist


def relative_targets(input_azimuth_deg: float, layout: TargetLayout, size: int) -> list[Camera]:
    """The target cameras of ``layout`` for an input seen from ``input_azimuth_deg``: azimuth =
    input azimuth + offset, world elevation, fixed radius and field of view, looking at the
    origin. One function for the render rig and the diffusion pipeline (input azimuth 0)."""
    if int(size) <= 0:
        raise ValueError(f"relative_targets: image size must be positive, got {size}")
    K = intrinsics_from_fov(layout.fov_deg, int(size))
    cams = []
    for k, (off, el) in enumerate(zip(layout.azimuth_offsets_deg, layout.elevations_deg)):
        az = float(np.mod(float(input_azimuth_deg) + off, 360.0))
        cams.append(Camera(K=K, w2c=orbit_w2c(az, el, layout.radius), width=int(size), height=int(size),
                           name=f"target{k}_off{off:.1f}_az{az:.1f}_el{el:.1f}"))
    return cams


def mvinput_rig(rng: np.random.Generator, *, input_views: InputViews, layout: TargetLayout, size: int,
                radius: float, fov_deg: float) -> list[Camera]:
    """View 0: the input from a random direction at ``radius`` with ``fov_deg`` (a rig with a
    distance range re-places it by the framing rule, synth/mouse/compose.py); views 1..N: the
    layout's targets relative to the input azimuth."""
    az, el = input_views.sample(rng)
    inp = Camera(K=intrinsics_from_fov(fov_deg, size), w2c=orbit_w2c(az, el, radius), width=size, height=size,
                 name=f"input_az{az:.1f}_el{el:.1f}")
    return [inp] + relative_targets(az, layout, size)


def load_target_layout(name_or_path: str = "mvinput", overrides: Mapping | Sequence[str] | None = None) -> TargetLayout:
    """The ``targets`` section of a rig config (configs/rig/NAME.yaml or a YAML file)."""
    from mousefacelift.config import load_typed

    return load_typed(TargetLayout, "rig", name_or_path, overrides, key="targets")


def load_input_views(name_or_path: str = "mvinput", overrides: Mapping | Sequence[str] | None = None) -> InputViews:
    """The ``input`` section of a rig config (configs/rig/NAME.yaml or a YAML file)."""
    from mousefacelift.config import load_typed

    return load_typed(InputViews, "rig", name_or_path, overrides, key="input")


_RIG_TOKEN = re.compile(r"^(sphere|facelift_ring|ring|mvinput|mv|zero123pp)(\d*)$")


def make_rig(spec: str, *, size: int = 256, radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG,
             seed: int | np.random.Generator = 0, min_elevation_deg: float = -30.0,
             ring_elevation_deg: float = 20.0, input_views: InputViews | None = None,
             target_layout: TargetLayout | None = None) -> list[Camera]:
    """Build a named, possibly composed rig (see module docstring).

    ``seed`` drives the random parts (``sphere``, ``mvinput``), so a sample's rig is
    reproducible from its seed alone. ``mvinput`` needs ``input_views`` and ``target_layout``
    and is not composed with others (its view 0 is the input). Errors name the offending token.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if size <= 0:
        raise ValueError(f"rig {spec!r}: image size must be positive, got {size}")
    if radius <= math.sqrt(3):
        raise ValueError(f"rig {spec!r}: camera radius {radius} would put cameras inside the [-1,1]^3 subject cube")
    tokens = [t.strip() for t in spec.split("+") if t.strip()]
    cams: list[Camera] = []
    for token in tokens:
        m = _RIG_TOKEN.match(token)
        if not m:
            raise ValueError(f"unknown rig {token!r} in {spec!r}: expected sphereN, facelift_ring32/ringN, mv6, zero123pp6 "
                             "or a '+'-joined composition of them, or mvinput alone")
        family, count = m.group(1), m.group(2)
        if family == "mvinput":
            if count or len(tokens) > 1:
                raise ValueError(f"rig {spec!r}: mvinput stands alone (view 0 is the input) and takes no count "
                                 "(the number of targets comes from its targets layout)")
            if input_views is None or target_layout is None:
                raise ValueError(f"rig {spec!r}: mvinput needs its input distribution and targets layout "
                                 "(the `input` and `targets` sections of configs/rig/mvinput.yaml)")
            part = mvinput_rig(rng, input_views=input_views, layout=target_layout, size=size, radius=radius,
                               fov_deg=fov_deg)
        elif family == "sphere":
            n = int(count or DEFAULT_VIEWS)
            az, el = _sphere_directions(n, rng, min_elevation_deg)
            part = orbit_cameras(az, el, size=size, radius=radius, fov_deg=fov_deg, prefix="sphere")
        elif family in ("facelift_ring", "ring"):
            n = int(count or DEFAULT_VIEWS)
            az = np.arange(n) * 360.0 / n
            part = orbit_cameras(az, [ring_elevation_deg] * n, size=size, radius=radius, fov_deg=fov_deg, prefix="ring")
        elif family == "mv":
            if count not in ("", "6"):
                raise ValueError(f"rig {token!r}: the multi-view-diffusion rig has exactly 6 views (mv6)")
            part = orbit_cameras(MV6_AZIMUTHS, [0.0] * 6, size=size, radius=radius, fov_deg=fov_deg, prefix="mv6")
        else:
            if count not in ("", "6"):
                raise ValueError(f"rig {token!r}: the Zero123++ rig has exactly 6 views (zero123pp6)")
            part = orbit_cameras(ZERO123PP_AZIMUTHS, ZERO123PP_ELEVATIONS, size=size, radius=radius,
                                 fov_deg=fov_deg, prefix="z123")
        if not part:
            raise ValueError(f"rig {token!r} has no cameras")
        cams.extend(part)
    if not cams:
        raise ValueError(f"rig {spec!r} has no cameras")
    return [replace(c, name=f"{i:03d}_{c.name}") for i, c in enumerate(cams)]


# -- torch helpers: rays --------------------------------------------------------------------
def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel centres [H, W, 2] as (u, v) = (col + 0.5, row + 0.5)."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([u, v], dim=-1)


def camera_rays(K: torch.Tensor, c2w: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions in world space for every pixel centre.

    K [..., 3, 3], c2w [..., 4, 4] -> origins, directions [..., H, W, 3]. Pinhole only: images
    are undistorted at ingest, so everything downstream of the shards is distortion-free.
    """
    uv = pixel_grid(height, width, device=K.device, dtype=K.dtype)
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    x = (uv[..., 0] - cx) / fx
    y = (uv[..., 1] - cy) / fy
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    R = c2w[..., None, None, :3, :3]
    d = (R @ d_cam[..., None])[..., 0]
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., None, None, :3, 3].expand_as(d)
    return o, d


def stack_cameras(cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
    """K [V,3,3] and c2w [V,4,4] float32 tensors for a list of cameras."""
    K = torch.tensor(np.stack([c.K for c in cameras]), dtype=torch.float32)
    c2w = torch.tensor(np.stack([c.c2w for c in cameras]), dtype=torch.float32)
    return K, c2w
