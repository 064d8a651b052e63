"""PoseSampler: behaviour-family pose sampling with a ground-contact solve, a draped tail and rejection.

Why it is built this way:
- Determinism per (seed, index): every random number is a counter-based hash of
  (seed, index, attempt, slot), so pose i is identical however a run is split into
  index ranges or workers, and the whole batch is still drawn vectorised.
- Rotations live in each joint's anatomical frame (flex in the sagittal plane, twist, abd
  away from the midline; see BodyModel), so one config (configs/poses/default.yaml) drives
  any rig that names the same segments.
- A pose is built in four steps, all vectorised over the batch:
  1. angles: stance + family statistics (fitted to real mice) + gait; body yaw/pitch/roll;
     body size from a distribution in mm (the model's size fitted to a real adult mouse);
  2. ground contact as a constraint: per family, the weight-bearing paws (standing: all
     four, at least three must touch; rear/groom: both hind paws) are solved onto one floor
     plane: the body is levelled (pitch/roll) so the least-squares plane of the paws is
     horizontal, then each leg is flexed (hip/knee or shoulder/elbow, the foot kept at its
     angle) in closed-form Gauss-Newton steps until its paw sole reaches the floor; the
     floor is then put at z = 0;
  3. the tail is a chain set by geometry, not by angles: it leaves the body along its
     sampled exit direction, droops gently up to a lift-off length, then falls under gravity
     onto the floor and lies on it with a random curl (a chain that drapes);
  4. checks on a cheap proxy: limbs, tail and snout must not pass through trunk spheres,
     left/right paws must not cross, the back must stay above the paws, no proxy skin point
     below the floor, the weight-bearing paws on the floor, body pitch and roll within the
     family's limits. A candidate failing any is redrawn (up to max_attempts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from scipy.special import ndtri

from .model import BodyModel, PoseParams
from ..config import ConfigError, config_file, configs_dir, load_yaml

__all__ = ["PoseSampler", "PoseBatch", "load_pose_config"]

_COMP = {"flex": 0, "twist": 1, "abd": 2}
_LIMB_SEGS = ("hip", "knee", "ankle", "toes", "scapula", "shoulder", "elbow", "wrist", "fingers")


def load_pose_config(name_or_path: str | Path = "default") -> dict:
    """``configs/poses/{name}.yaml`` (or a YAML file) as a dict, its ``fitted`` file read in."""
    path = config_file("poses", name_or_path)
    cfg, where = load_yaml("poses", path)
    if "families" not in cfg:
        raise ConfigError(f"{where}: expected a mapping with 'families', 'limits', ...")
    cfg["fitted"] = load_fitted(cfg.get("fitted"), path.parent)
    return cfg


def load_fitted(spec, base: Path | None = None) -> dict | None:
    """The fitted-statistics file named by a pose config's ``fitted`` key (a path relative to
    the config's folder, default configs/poses/, or already a mapping; None/"" = none). Written
    by benchmarks/fit_dannce_poses.py: per model a base stance and per-family overrides."""
    if spec is None or spec == "" or isinstance(spec, Mapping):
        return dict(spec) if spec else None
    path = Path(spec)
    if not path.is_absolute():
        path = (base or configs_dir() / "poses") / path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fitted pose statistics named by the pose config's 'fitted' key not found "
                                f"(regenerate with benchmarks/fit_dannce_poses.py or set fitted: null)")
    fitted, where = load_yaml("poses", path)
    if not isinstance(fitted.get("models"), dict):
        raise ConfigError(f"{where}: expected a mapping with 'models: {{model name: {{stance, families}}}}'")
    return fitted


def segment_sign(seg: str) -> np.ndarray:
    """Per-component sign from segment (flex, twist, abd) to joint axis-angle (x, y, z): left
    limbs abduct about -Z, right limbs about +Z with mirrored twist, axial segments bend
    toward the right for abd > 0, so one value means the same motion on both sides."""
    if seg.endswith("_r"):
        return np.array([1.0, -1.0, 1.0])
    if seg.endswith("_l"):
        return np.array([1.0, 1.0, -1.0])
    return np.ones(3)


def segment_joint_map(model: BodyModel, seg_names: list[str] | None = None) -> np.ndarray:
    """Linear map [S*3, J*3] from segment angles (flex, twist, abd) to joint axis-angles in the
    anatomical frames: a chain shares its segment's angle equally among its joints. Used by
    the sampler and by the keypoint fit, so fitted angles are in the sampler's coordinates."""
    seg_names = list(model.segments) if seg_names is None else list(seg_names)
    J = model.num_joints
    out = np.zeros((len(seg_names), 3, J, 3))
    for i, s in enumerate(seg_names):
        js = np.asarray(model.segments[s])
        for c, sg in enumerate(segment_sign(s)):
            out[i, c, js, c] += sg / len(js)
    return out.reshape(len(seg_names) * 3, J * 3)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.cross over the last axis (size 3) without its axis shuffling: the contact solve calls it
    thousands of times per batch."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)


def _hash_uniform(seed: int, index: np.ndarray, attempt, dims: int) -> np.ndarray:
    """Counter-based uniforms in (0,1), [M, dims]: splitmix64 of (seed, index, attempt, slot);
    attempt is one int or one per index."""
    with np.errstate(over="ignore"):
        idx = np.asarray(index, np.uint64)[:, None]
        attempt = np.asarray(attempt, np.uint64).reshape(-1, 1)
        slot = np.arange(dims, dtype=np.uint64)[None, :]
        x = (np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
             ^ idx * np.uint64(0xBF58476D1CE4E5B9)
             ^ attempt * np.uint64(0x94D049BB133111EB)
             ^ slot * np.uint64(0xD6E8FEB86659FD93))
        for _ in range(2):
            x = x + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


@dataclass
class PoseBatch:
    """Sampled poses for the requested indices (params in model units, project world)."""
    indices: np.ndarray
    params: PoseParams
    family: list[str]
    attempts: np.ndarray                 # attempts used per pose (1 = first candidate accepted)
    forced: np.ndarray                   # True where no candidate passed and the least-bad was kept
    stats: dict = field(default_factory=dict)

    @property
    def rejected_attempts(self) -> int:
        return int((self.attempts - 1).sum() + self.forced.sum())


class PoseSampler:
    """Sample plausible mouse poses for a BodyModel; ``cfg`` is a dict, a YAML path or None."""

    def __init__(self, model: BodyModel, cfg: Mapping[str, Any] | str | Path | None = None):
        self.model = model
        self.cfg = dict(load_pose_config(cfg or "default") if cfg is None or isinstance(cfg, (str, Path)) else cfg)
        c = self.cfg
        fam = c.get("families") or {}
        if not fam:
            raise ValueError("pose config: 'families' is empty")
        self.family_names = list(fam)
        w = np.array([float(fam[f].get("weight", 0)) for f in self.family_names])
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"pose config: family weights must be >= 0 and not all 0, got {dict(zip(self.family_names, w))}")
        self.family_cdf = np.cumsum(w / w.sum())
        self.seg_names = list(model.segments)
        S = len(self.seg_names)
        self._limits = np.zeros((S, 3, 2))
        for i, s in enumerate(self.seg_names):
            key = s if s in c.get("limits", {}) else self.base_segment(s)
            lim = c.get("limits", {}).get(key)
            if lim is None:
                raise ValueError(f"pose config: no limits for segment {s!r} (or {self.base_segment(s)!r})")
            for comp, k in _COMP.items():
                lo, hi = lim.get(comp, [0, 0])
                self._limits[i, k] = (lo, hi)
        self._limits = np.deg2rad(self._limits)
        # data-driven statistics for this model (fitted to real poses) override the hand-set ones
        fitted = load_fitted(c.get("fitted"))
        self.fitted = ((fitted or {}).get("models") or {}).get(model.name)
        stance = (self.fitted or {}).get("stance", (c.get("stance") or {}).get(model.name, {}))
        self.common = self.dist_table(c.get("common", {}), "common")
        self.common[..., 0] += self.dist_table(stance, "stance")[..., 0]
        fit_fam = (self.fitted or {}).get("families") or {}
        self.families = []
        for f in self.family_names:
            spec = fam[f]
            over = fit_fam.get(f) or {}
            segs = {k: dict(v) for k, v in (spec.get("segments") or {}).items()}
            for k, comps in (over.get("segments") or {}).items():
                segs.setdefault(k, {}).update(comps)
            spec = {**spec, "segments": segs, **({"pitch_up": over["pitch_up"]} if "pitch_up" in over else {})}
            self.families.append({
                "table": self.dist_table(spec.get("segments", {}), f"families.{f}"),
                "pitch": np.deg2rad(spec.get("pitch_up", [0, 0])),
                "bend": np.deg2rad(spec.get("bend", [0, 0])),
                "compensate": {k: float(v) for k, v in (spec.get("compensate") or {}).items()},
                "gait": spec.get("gait"),
                "support": self._support(spec.get("support", "all"), f),
                "pitch_limit": np.deg2rad(spec.get("pitch_limit", [-30, 30])),
                "roll_limit": math.radians(float(spec.get("roll_limit", 15))),
                "tail": {**(c.get("tail") or {}), **(spec.get("tail") or {})},
            })
        # exemplars: fitted real poses per family (deviation from stance + common mean), see _candidates
        ex = c.get("exemplars") or {}
        self.exemplar_share = float(ex.get("share", 0.0))
        self.exemplar_bandwidth = float(ex.get("bandwidth", 0.5))
        self.exemplar_tail_elevation = float(ex.get("tail_elevation", 0.0))
        ex_segs = (self.fitted or {}).get("exemplar_segments") or []
        unknown = [x for x in ex_segs if x not in self.seg_names]
        if unknown:
            raise ValueError(f"fitted pose statistics for {model.name}: unknown exemplar segments {unknown}")
        self._ex_seg = np.array([self.seg_names.index(x) for x in ex_segs], np.int64)
        for f, fs in zip(self.family_names, self.families):
            rows = (fit_fam.get(f) or {}).get("exemplars") or []
            arr = np.asarray(rows, np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 3 + 3 * len(ex_segs)))
            if arr.shape[1] != 3 + 3 * len(ex_segs):
                raise ValueError(f"fitted pose statistics for {model.name}: families.{f}.exemplars rows must hold "
                                 f"1 + 3 x {len(ex_segs)} + 2 values (pitch, angles, tail heading and elevation), "
                                 f"got {arr.shape[1]}")
            fs["exemplars"] = np.deg2rad(arr)
        for f, fs in zip(self.family_names, self.families):
            for k in ("lift_off_mm", "exit_pitch_deg", "heading_deg", "curl_deg", "tip_lift_deg"):
                v = fs["tail"].get(k, [0, 0])
                if not (isinstance(v, (list, tuple)) and len(v) == 2):
                    raise ValueError(f"pose config families.{f}.tail.{k}: expected [mean, std], got {v!r}")
        self.contact = {"tolerance_mm": 2.0, "level_max_deg": 25.0, "iterations": 3, "floor_tolerance_mm": 0.3,
                        **(c.get("contact") or {})}
        self.size = self._size_spec(c.get("size", {}))
        # random slots per attempt: family, phase, yaw, pitch, roll, size, girth, bend, groups, segments,
        # then the tail (exit pitch, heading, lift-off, curl rate, tip lift, 10 curl jitters)
        self._G = model.num_bone_groups
        self._seg_map = segment_joint_map(model, self.seg_names)
        self._tail_slot = 8 + self._G + 3 * S
        self._ex_slot = self._tail_slot + 5 + 16
        self.dims = self._ex_slot + 2
        self._prepare_proxy()
        self._prepare_contact()
        self._proxy_all = np.unique(np.concatenate([self._proxy_all, self._sole_v.reshape(-1), self._head_v]))
        self._sole_pos = np.searchsorted(self._proxy_all, self._sole_v)   # [4,k] columns of the proxy skin
        self._prepare_tail()

    # -- config helpers -------------------------------------------------------------------
    _PAWS = ("hind_l", "hind_r", "fore_l", "fore_r")

    def _support(self, spec, fam: str) -> np.ndarray:
        """Weight-bearing paws of a family as a [4] bool (hind_l, hind_r, fore_l, fore_r) and the
        number that must touch: "all" (at least 3 of 4, a standing mouse) or "hind" (both)."""
        if spec == "all":
            return np.array([True, True, True, True])
        if spec == "hind":
            return np.array([True, True, False, False])
        raise ValueError(f"pose config families.{fam}.support: expected 'all' or 'hind', got {spec!r}")

    def _size_spec(self, spec) -> dict:
        """Body size: the model scaled to the size fitted to a real adult mouse (the fitted file's
        ``fit.mm_per_model_unit``; the model's own size where it has none), times a between-animal
        factor ~ N(1, cv) clipped to ``clip``."""
        if not isinstance(spec, Mapping) or not {"cv", "clip"} <= set(spec):
            raise ValueError(f"pose config size: expected {{reference: dannce_fit|model, cv, clip: [lo, hi]}}, got {spec!r}")
        ref = spec.get("reference", "dannce_fit")
        if ref not in ("dannce_fit", "model"):
            raise ValueError(f"pose config size.reference: expected 'dannce_fit' or 'model', got {ref!r}")
        mm = ((self.fitted or {}).get("fit") or {}).get("mm_per_model_unit") if ref == "dannce_fit" else None
        base = float(mm) / self.model.mm_per_unit if mm else 1.0
        lo, hi = (float(v) for v in spec["clip"])
        return {"base": base, "cv": float(spec["cv"]), "clip": (lo, hi)}

    @staticmethod
    def base_segment(seg: str) -> str:
        return seg[:-2] if seg.endswith(("_l", "_r")) and seg[:-2] in _LIMB_SEGS else seg

    def dist_table(self, spec: Mapping, where: str) -> np.ndarray:
        """[S,3,2] (mean, std) in radians from {segment or base segment: {comp: [mean, std]}} (public for
        the pose-statistics fit, which rebuilds these tables from fitted angles)."""
        S = len(self.seg_names)
        t = np.zeros((S, 3, 2))
        for key, comps in (spec or {}).items():
            targets = [i for i, s in enumerate(self.seg_names) if s == key or self.base_segment(s) == key]
            if not targets:
                raise ValueError(f"pose config {where}: unknown segment {key!r} (known: {sorted(set(map(self.base_segment, self.seg_names)))})")
            for comp, ms in comps.items():
                if comp not in _COMP:
                    raise ValueError(f"pose config {where}.{key}: unknown component {comp!r} (flex/twist/abd)")
                for i in targets:
                    t[i, _COMP[comp]] = np.deg2rad(ms)
        return t

    # -- proxy geometry for the tests ------------------------------------------------------
    def _prepare_proxy(self):
        m = self.model
        seg = m.segments
        rng = np.random.default_rng(12345)
        n = min(int(self.cfg.get("proxy_vertices", 400)), m.num_vertices)
        ids = rng.choice(m.num_vertices, n, replace=False)
        # paws touch the ground in a standing pose: sample their skin densely for ground placement
        dom_all = np.asarray(m.skin_weights.argmax(axis=1)).ravel()
        paw_j = np.concatenate([seg[f"{b}_{s}"] for b in ("ankle", "toes", "wrist", "fingers") for s in "lr"])
        paw_v = np.nonzero(np.isin(dom_all, paw_j))[0]
        k = min(int(self.cfg.get("proxy_paw_vertices", 400)), len(paw_v))
        self._proxy_ids = np.unique(np.concatenate([ids, rng.choice(paw_v, k, replace=False)]))
        # the floor check and the x/y centring skin these (tail skin densely: it lies on the floor)
        tail_v = np.nonzero(np.isin(dom_all, m.groups["tail"]))[0]
        kt = min(int(self.cfg.get("proxy_tail_vertices", 300)), len(tail_v))
        self._proxy_all = np.unique(np.concatenate([self._proxy_ids, m._keypoint_vertex_ids(),
                                                    rng.choice(tail_v, kt, replace=False)]))
        # body spheres: cross-sections of the trunk between hips and neck
        v = m.rest_vertices.astype(np.float64)
        dom = np.asarray(m.skin_weights.argmax(axis=1)).ravel()
        trunk = np.concatenate([m.groups["spine"], seg["neck"]])
        in_trunk = np.isin(dom, trunk) & (m.region_of_vertices() == 0)
        x_hip = m.rest_joints[np.concatenate([seg["hip_l"], seg["hip_r"]]), 0].mean()
        x_sh = m.rest_joints[np.concatenate([seg["shoulder_l"], seg["shoulder_r"]]), 0].mean()
        xs = np.linspace(x_hip - 0.15 * (x_sh - x_hip), x_sh + 0.1 * (x_sh - x_hip), 7)
        dx = (xs[1] - xs[0]) * 0.6
        centres, radii, owners = [], [], []
        for x in xs:
            sel = in_trunk & (np.abs(v[:, 0] - x) < dx)
            if sel.sum() < 10:
                continue
            p = v[sel]
            lo, hi = np.percentile(p, 5, axis=0), np.percentile(p, 95, axis=0)
            c = (lo + hi) / 2
            c[0] = x
            r = 0.5 * min(hi[1] - lo[1], hi[2] - lo[2])
            near = np.argmin(np.linalg.norm(v[sel] - c, axis=1))
            centres.append(c)
            radii.append(r)
            owners.append(dom[np.nonzero(sel)[0][near]])
        if len(centres) < 3:
            raise ValueError(f"{m.name}: could not build trunk spheres for the penetration test")
        self._sph_c = np.array(centres)
        self._sph_r = np.array(radii) * float(self.cfg.get("penetration_margin", 1.0))
        self._sph_j = np.array(owners)
        # test points: distal limb joints, tail from a third of its length, snout tip
        tail = seg["tail"]
        snout = [j for j in m.groups["neck_head"] if m.parents[j] >= 0]
        snout_tip = max(snout, key=lambda j: m.rest_joints[j, 0])
        pts = list(seg["ankle_l"]) + list(seg["ankle_r"]) + list(seg["toes_l"][:1]) + list(seg["toes_r"][:1]) \
            + list(seg["wrist_l"]) + list(seg["wrist_r"]) + list(seg["fingers_l"][:1]) + list(seg["fingers_r"][:1]) \
            + list(tail[len(tail) // 3:]) + [snout_tip]
        self._test_j = np.array(pts)
        d = np.linalg.norm(m.rest_joints[self._test_j][:, None].astype(np.float64) - self._sph_c[None], axis=-1)
        self._thresh = np.minimum(self._sph_r[None], 0.9 * d)        # rest pose always passes
        self._paw_pairs = [(seg["ankle_l"][0], seg["ankle_r"][0]), (seg["wrist_l"][0], seg["wrist_r"][0])]
        # reference left-right paw spacing: the model's base stance (rest + stance + common means), not
        # its rest pose (MAMMAL's rest is sprawled, so paws under the body would all read as crossing)
        base = PoseParams.rest(m)
        base.joint_rot = torch.as_tensor((self.common[..., 0].reshape(1, -1) @ self._seg_map)
                                         .reshape(1, m.num_joints, 3), dtype=torch.float32)
        with torch.no_grad():
            Pb = m.skinning_transforms(base, use_smplx=False)[0][0].double().numpy()
        self._paw_sep = np.array([Pb[a, 1] - Pb[b, 1] for a, b in self._paw_pairs])
        if np.any(self._paw_sep <= 0):
            raise ValueError(f"{m.name}: paws cross in the base stance (left-right spacing {self._paw_sep}); "
                             f"check the pose config's stance / fitted statistics")
        self._paws = np.array([seg["ankle_l"][0], seg["ankle_r"][0]])   # hind paws: below the back in any pose
        self._spine = m.groups["spine"]

    def _prepare_contact(self):
        """Legs for the contact solve: per paw (hind_l, hind_r, fore_l, fore_r) the proximal, middle
        and distal joints, and the paw's sole points: skin vertices on the convex hull of the paw
        (the lowest point of a rigidly moved paw is always a hull vertex), thinned by farthest-point
        sampling to ``contact.sole_points`` per paw."""
        from scipy.spatial import ConvexHull
        m, seg = self.model, self.model.segments
        legs, soles = [], []
        dom = np.asarray(m.skin_weights.argmax(axis=1)).ravel()
        v = m.rest_vertices.astype(np.float64)
        k = int(self.contact.get("sole_points", 24))
        for paw in self._PAWS:
            side = paw[-1]
            chain = ("hip", "knee", "ankle") if paw.startswith("hind") else ("shoulder", "elbow", "wrist")
            legs.append([int(seg[f"{b}_{side}"][0]) for b in chain])
            below = {legs[-1][2]}
            for j in range(m.num_joints):
                if m.parents[j] in below:
                    below.add(j)
            ids = np.nonzero(np.isin(dom, sorted(below)))[0]
            if len(ids) < 4:
                raise ValueError(f"{m.name}: paw {paw} has {len(ids)} skin vertices; the contact solve needs its sole")
            hull = ids[ConvexHull(v[ids]).vertices]
            pick = [int(np.argmin(v[hull, 2]))]                  # start at the lowest, then farthest points
            d = np.linalg.norm(v[hull] - v[hull[pick[0]]], axis=1)
            while len(pick) < min(k, len(hull)):
                pick.append(int(np.argmax(d)))
                d = np.minimum(d, np.linalg.norm(v[hull] - v[hull[pick[-1]]], axis=1))
            sel = hull[pick]
            soles.append(np.pad(sel, (0, k - len(sel)), mode="edge"))
        self._legs = np.array(legs)                                   # [4,3]
        self._sole_v = np.stack(soles)                                # [4,k] vertex ids
        # paw keypoint joints (a paw on tiptoe touches with its sole but holds the keypoint high)
        kp = dict(zip(m.keypoint_names, m.keypoint_spec))
        self._paw_kp = []
        for name in ("HindpawL", "HindpawR", "ForepawL", "ForepawR"):
            typ, kids = kp[name]
            self._paw_kp.append(np.asarray(kids, np.int64) if typ == "J" else np.asarray(legs[len(self._paw_kp)][2:]))
        self._paw_kp_rest = np.array([m.rest_joints[j, 2].mean() for j in self._paw_kp])   # model units
        # head: hull points of the skin the neck carries, lifted off the floor by the neck joint
        head_j = [j for j in range(m.num_joints) if j in set(m.groups["neck_head"]) | set(m.groups["ears"])]
        ids = np.nonzero(np.isin(dom, head_j))[0]
        hull = ids[ConvexHull(v[ids]).vertices]
        pick = [int(np.argmin(v[hull, 2]))]
        d = np.linalg.norm(v[hull] - v[hull[pick[0]]], axis=1)
        while len(pick) < min(2 * k, len(hull)):
            pick.append(int(np.argmax(d)))
            d = np.minimum(d, np.linalg.norm(v[hull] - v[hull[pick[-1]]], axis=1))
        self._head_v = hull[pick]
        self._neck_j = int(seg["neck"][0])
        # limb joints are single-joint segments: index of each in the segment table, for limits
        self._leg_seg = np.array([[self.seg_names.index(next(s for s in self.seg_names if len(m.segments[s]) == 1
                                                             and m.segments[s][0] == j)) for j in leg] for leg in legs])

    def _prepare_tail(self):
        """Tail chain for the drape: joints in order, each bone's child, rest directions, radii."""
        m = self.model
        tail = [int(j) for j in m.segments["tail"]]
        child = []
        for j in tail:
            kids = [c for c in range(m.num_joints) if m.parents[c] == j]
            if len(kids) != 1:
                raise ValueError(f"{m.name}: tail joint {m.joint_names[j]} must have exactly one child for the drape")
            child.append(kids[0])
        for a, b in zip(tail[:-1], tail[1:]):
            if m.parents[b] != a:
                raise ValueError(f"{m.name}: tail segment joints must form one chain")
        rj = m.rest_joints.astype(np.float64)
        b = rj[child] - rj[tail]
        self._tail = np.array(tail)
        self._tail_child = np.array(child)
        self._tail_dir = b / np.linalg.norm(b, axis=1, keepdims=True)          # [K,3] model frame
        self._tail_parent = int(m.parents[tail[0]])
        # radius at each joint and at the tip: 90th percentile distance of its skin to the bone
        dom = np.asarray(m.skin_weights.argmax(axis=1)).ravel()
        v = m.rest_vertices.astype(np.float64)
        rad = []
        for k, j in enumerate(tail):
            sel = v[dom == j]
            if len(sel) == 0:
                rad.append(rad[-1] if rad else 0.01)
                continue
            a, ab = rj[j], rj[child[k]] - rj[j]
            t = np.clip((sel - a) @ ab / (ab @ ab), 0, 1)
            rad.append(float(np.percentile(np.linalg.norm(sel - (a + t[:, None] * ab), axis=1), 90)))
        rad.append(rad[-1] * 0.8)
        self._tail_radius = np.array(rad)                                     # [K+1] model units
        self._tail_frames = m.rest_frames[tail]                               # [K,3,3]
        # body axis for the tail heading: the spine joints nearest the SpineF and SpineM landmarks
        kp = m.rest_keypoints()
        spine = np.asarray(m.groups["spine"])
        near = lambda name: int(spine[np.argmin(np.linalg.norm(rj[spine] - kp[m.keypoint_names.index(name)], axis=1))])  # noqa: E731
        self._spine_f, self._spine_m = near("SpineF"), near("SpineM")
        if self._spine_f == self._spine_m:
            raise ValueError(f"{m.name}: SpineF and SpineM map to the same spine joint; the tail heading needs a body axis")

    # -- sampling ---------------------------------------------------------------------------
    def _candidates(self, seed: int, indices: np.ndarray, attempt):
        """Step 1: angles, body orientation and size for each candidate (before contact and tail)."""
        m, c = self.model, self.cfg
        M, S = len(indices), len(self.seg_names)
        u = _hash_uniform(seed, indices, attempt, self.dims)
        z = ndtri(u)
        # the family is drawn once per index (attempt 0's slot), so rejections do not skew the mix
        u_fam = _hash_uniform(seed, indices, 0, 1)[:, 0]
        fam = np.searchsorted(self.family_cdf, u_fam, side="right").clip(0, len(self.family_names) - 1)
        phase = u[:, 1] * 2 * np.pi
        zseg = z[:, 8 + self._G:8 + self._G + 3 * S].reshape(M, S, 3)
        ang = np.zeros((M, S, 3))
        pitch = np.zeros(M)
        bend = np.zeros(M)
        mean_c, std_c = self.common[..., 0], self.common[..., 1]
        exemplar = np.zeros(M, bool)
        tail_ex = np.full((M, 2), np.nan)            # an exemplar's real tail heading and elevation (radians)
        for f, spec in enumerate(self.families):
            sel = fam == f
            if not sel.any():
                continue
            t = spec["table"]
            spread = np.sqrt(t[None, ..., 1] ** 2 + std_c[None] ** 2)
            ang[sel] = t[None, ..., 0] + mean_c[None] + spread * zseg[sel]
            pitch[sel] = spec["pitch"][0] + spec["pitch"][1] * z[sel, 3]
            bend[sel] = spec["bend"][0] + spec["bend"][1] * z[sel, 7]
            # a share of the family drawn around one of its real (fitted) poses: a kernel density
            # over real poses; the exemplar already holds its gait phase, compensation and bend
            E = spec["exemplars"]
            ex = sel & (u[:, self._ex_slot] < self.exemplar_share) if len(E) else np.zeros(M, bool)
            if ex.any():
                row = E[np.minimum((u[ex, self._ex_slot + 1] * len(E)).astype(np.int64), len(E) - 1)]
                h = self.exemplar_bandwidth
                e_ang = t[None, ..., 0] + mean_c[None] + h * spread * zseg[ex]
                e_ang[:, self._ex_seg] = mean_c[None, self._ex_seg] + row[:, 1:-2].reshape(-1, len(self._ex_seg), 3) \
                    + h * spread[:, self._ex_seg] * zseg[ex][:, self._ex_seg]
                pitch[ex] = row[:, 0] + h * spec["pitch"][1] * z[ex, 3]
                tail_ex[ex] = row[:, -2:]
            sel = sel & ~ex
            exemplar |= ex
            if ex.any():
                ang[ex] = e_ang
            for base, k in spec["compensate"].items():
                for i, s in enumerate(self.seg_names):
                    if self.base_segment(s) == base:
                        ang[sel, i, 0] += k * pitch[sel]
            g = spec["gait"]
            if g:
                amp = {k: math.radians(v) for k, v in g.get("amplitude", {}).items()}
                for limb, off in g.get("offsets", {}).items():
                    side = limb[-1]
                    ph = phase[sel] + 2 * np.pi * float(off)
                    segs = ("hip", "knee", "ankle") if limb.startswith("hind") else ("shoulder", "elbow", "wrist")
                    for k, base in enumerate(segs):
                        i = self.seg_names.index(f"{base}_{side}")
                        a = amp.get(base, 0.0)
                        # proximal joint swings; distal joints flex during the swing half
                        ang[sel, i, 0] += a * np.sin(ph) if k == 0 else a * np.maximum(0, np.cos(ph)) * (1 if k == 1 else -0.7)
                sway = math.radians(g.get("spine_sway", 0))
                i = self.seg_names.index("spine_lumbar")
                ang[sel, i, 2] += sway * np.sin(phase[sel])
        bend = np.where(exemplar, 0.0, bend)
        for name, share in (("spine_lumbar", 0.3), ("spine_thoracic", 0.3), ("neck", 0.2), ("tail", 0.6)):
            ang[:, self.seg_names.index(name), 2] += bend * share      # same sign: a C-shaped body
        ang = np.clip(ang, self._limits[None, ..., 0], self._limits[None, ..., 1])
        # segment (flex, twist, abd) -> joint axis-angle (x, y, z) in the anatomical frame; a chain
        # shares the angle. Left limbs abduct about -Z, right limbs about +Z with mirrored twist;
        # axial segments bend toward the right for abd > 0.
        jr = (ang.reshape(M, S * 3) @ self._seg_map).reshape(M, m.num_joints, 3)
        yaw = (u[:, 2] * 2 - 1) * np.pi
        roll = np.deg2rad(float(c.get("roll_std_deg", 3.0))) * z[:, 4]
        R = Rotation.from_euler("ZYX", np.stack([yaw, -pitch, roll], 1))
        sz = self.size
        lo, hi = sz["clip"]
        size = sz["base"] * np.clip(1 + sz["cv"] * z[:, 5], lo, hi)
        glo, ghi = c.get("girth", [1, 1])
        girth = glo + (ghi - glo) * u[:, 6]
        bstd = float(c.get("bone_scale_std", 0.0))
        bone = 1 + bstd * np.clip(z[:, 8:8 + self._G], -2.5, 2.5)
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))   # noqa: E731
        params = PoseParams(global_orient=f32(R.as_rotvec()), transl=torch.zeros(M, 3), scale=f32(size[:, None]),
                            girth=f32(girth[:, None]), bone_scale=f32(bone), joint_rot=f32(jr))
        return params, fam, z[:, self._tail_slot:], tail_ex

    @staticmethod
    def _polar(A3: np.ndarray) -> np.ndarray:
        """Rotation part of [...,3,3] matrices that are a rotation times a symmetric stretch (girth)."""
        U, _, Vt = np.linalg.svd(A3)
        return U @ Vt

    @staticmethod
    def _rotate_about(x: np.ndarray, centre: np.ndarray, axis: np.ndarray, ang: np.ndarray) -> np.ndarray:
        """Rodrigues rotation of points/vectors x [M,...,3] about unit axes [M,3] through centres [M,3]
        (centre None for direction vectors) by angles [M]."""
        shape = (-1,) + (1,) * (x.ndim - 2) + (3,)
        k = axis.reshape(shape)
        v = x if centre is None else x - centre.reshape(shape)
        ca, sa = np.cos(ang).reshape(shape[:-1] + (1,)), np.sin(ang).reshape(shape[:-1] + (1,))
        r = v * ca + _cross(k, v) * sa + k * (k * v).sum(-1, keepdims=True) * (1 - ca)
        return r if centre is None else r + centre.reshape(shape)

    def _solve_contact(self, params: PoseParams, fam: np.ndarray, posed: np.ndarray, A: np.ndarray):
        """Step 2: level the body on its weight-bearing paws and flex the legs onto the floor.

        posed/A: the candidates' model-frame joints [M,J,3] and transforms [M,J,3,4]. Returns the
        new global rotations [M,3,3] and joint rotations [M,J,3], and the floor height (world z of
        the weight-bearing soles before translation) [M]; the snout is lifted off the floor."""
        m = self.model
        M = params.batch_size
        Rg = Rotation.from_rotvec(params.global_orient.double().numpy()).as_matrix()
        s = params.scale.double().numpy()[:, 0]
        jr = params.joint_rot.double().numpy().copy()
        sup = np.stack([self.families[f]["support"] for f in fam])            # [M,4]
        four = sup.all(1)
        world = lambda x: s[:, None, None] * np.einsum("mab,mkb->mka", Rg, x)   # noqa: E731
        n = self._sole_v.shape[1]
        skinned = self.model.skin(torch.as_tensor(A), np.concatenate([self._sole_v.reshape(-1), self._head_v])).numpy()
        sole_model, head_model = skinned[:, :4 * n], skinned[:, 4 * n:]     # [M,4n,3], [M,h,3]

        def soles(Rg_):
            q = s[:, None, None] * np.einsum("mab,mkb->mka", Rg_, sole_model)
            return q.reshape(M, 4, n, 3)
        q = soles(Rg)
        off = np.zeros((M, 4, n))
        # level: rotate the body so the least-squares plane of the four paws' lowest soles is horizontal
        if four.any():
            lowest = np.argmin(q[..., 2] - off, axis=2)                        # [M,4]
            P = np.take_along_axis(q, lowest[..., None, None], 2)[:, :, 0][four]
            P[..., 2] -= np.take_along_axis(off, lowest[..., None], 2)[:, :, 0][four]
            X = np.concatenate([P[..., :2] - P[..., :2].mean(1, keepdims=True), np.ones(P.shape[:2] + (1,))], -1)
            XtX = np.einsum("mki,mkj->mij", X, X) + 1e-12 * np.eye(3)
            coef = np.linalg.solve(XtX, np.einsum("mki,mk->mi", X, P[..., 2]))
            nrm = np.stack([-coef[:, 0], -coef[:, 1], np.ones(len(coef))], 1)
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
            axis = np.cross(nrm, [0.0, 0.0, 1.0])
            sn = np.linalg.norm(axis, axis=1)
            ang = np.minimum(np.arcsin(np.clip(sn, 0, 1)), math.radians(float(self.contact["level_max_deg"])))
            axis = axis / np.maximum(sn, 1e-12)[:, None]
            Rl = Rotation.from_rotvec(axis * ang[:, None]).as_matrix()
            Rg[four] = Rl @ Rg[four]
            q = soles(Rg)
        # legs: per leg two modes (proximal or middle joint flexed, the distal joint counter-flexed so
        # the paw keeps its angle), damped Gauss-Newton on the sole's (x, z) toward the floor height
        legs = self._legs
        par = m.parents[legs]                                                  # [4,3]
        Rp = self._polar(A[:, par.reshape(-1), :, :3]).reshape(M, 4, 3, 3, 3)  # parents' rotations, model frame
        ax_model = np.einsum("mlkab,lkb->mlka", Rp, m.rest_frames[legs][..., 0])   # R_parent F e_x
        axes = np.einsum("mab,mlkb->mlka", Rg, ax_model)                       # [M,4,3,3] world, unit
        pts = world(posed[:, legs.reshape(-1)]).reshape(M, 4, 3, 3)            # joint positions
        lowest = np.argmin(q[..., 2] - off, axis=2)                            # each paw's contact point
        c = np.take_along_axis(q, lowest[..., None, None], 2)[:, :, 0]         # [M,4,3]
        sole = np.take_along_axis(off, lowest[..., None], 2)[:, :, 0]          # [M,4]
        sole_z = c[..., 2] - sole
        w = np.where(sup, 1.0, 0.0)
        floor = (sole_z * w).sum(1) / w.sum(1)
        if not four.all():                          # hind support: the lower hind paw sets the floor
            floor[~four] = np.min(np.where(sup[~four], sole_z[~four], np.inf), axis=1)
        delta = np.zeros((M, 4, 2))
        lim = self._limits[self._leg_seg][..., 0, :]                          # [4,3,2] flex limits
        cur = jr[:, legs, 0]                                                   # [M,4,3]
        for _ in range(int(self.contact["iterations"])):
            dz = floor[:, None] - (c[..., 2] - sole)                           # [M,4]
            dz = np.where(sup, dz, 0.0)
            Jc = []
            for k in (0, 1):
                jk = _cross(axes[:, :, k], c - pts[:, :, k]) - _cross(axes[:, :, 2], c - pts[:, :, 2])
                Jc.append(jk[..., [0, 2]])
            Jm = np.stack(Jc, -1)                                              # [M,4,2(x,z),2(modes)]
            b = np.stack([np.zeros_like(dz), dz], -1)
            JtJ = np.einsum("mlia,mlib->mlab", Jm, Jm) + 1e-4 * (s[:, None, None, None] ** 2) * np.eye(2)
            step = np.linalg.solve(JtJ, np.einsum("mlia,mli->mla", Jm, b)[..., None])[..., 0]
            step = np.clip(step, -0.35, 0.35)
            # keep each joint inside its flexion limits
            th = np.stack([step[..., 0], step[..., 1], -(step[..., 0] + step[..., 1])], -1)   # [M,4,3]
            th = np.clip(cur + th, lim[None, ..., 0], lim[None, ..., 1]) - cur
            cur = cur + th
            delta += th[..., :2]
            # move the chain analytically: rotate everything distal to joint k about its axis
            for k in range(3):
                ctr, ax, a = pts[:, :, k].reshape(-1, 3), axes[:, :, k].reshape(-1, 3), th[..., k].reshape(-1)
                c = self._rotate_about(c.reshape(-1, 1, 3), ctr, ax, a).reshape(M, 4, 3)
                q = self._rotate_about(q.reshape(M * 4, n, 3), ctr, ax, a).reshape(M, 4, n, 3)
                if k < 2:
                    pts[:, :, k + 1:] = self._rotate_about(pts[:, :, k + 1:].reshape(M * 4, -1, 3), ctr, ax, a
                                                           ).reshape(M, 4, 2 - k, 3)
                    axes[:, :, k + 1:] = self._rotate_about(axes[:, :, k + 1:].reshape(M * 4, -1, 3), None, ax, a
                                                            ).reshape(M, 4, 2 - k, 3)
        # the floor: the lowest sole of the weight-bearing paws (no paw sole ends up below it)
        low = (q[..., 2] - off).min(2)                                         # [M,4]
        floor = np.where(sup, low, np.inf).min(1)
        # head: a snout or chin below the floor is lifted by extending the neck (analytic, two steps)
        nj = self._neck_j
        Rn = self._polar(A[:, m.parents[nj], :, :3])                            # neck parent's rotation
        wn = np.einsum("mab,mbc,c->ma", Rg, Rn, m.rest_frames[nj][:, 0])
        pn = world(posed[:, [nj]])[:, 0]
        hq = world(head_model)
        clear = float(self.contact.get("head_clearance_mm", 0.5)) / m.mm_per_unit * s
        lift = np.zeros(M)
        for _ in range(2):
            i = np.argmin(hq[..., 2], axis=1)
            hc = hq[np.arange(M), i]
            need = floor + clear - hc[:, 2]
            dzdt = np.cross(wn, hc - pn)[:, 2]
            th = np.where((need > 0) & (np.abs(dzdt) > 1e-9), need / np.where(np.abs(dzdt) > 1e-9, dzdt, 1.0), 0.0)
            th = np.clip(th, -0.7, 0.7)
            lift += th
            hq = self._rotate_about(hq, pn, wn, th)
        old_n = Rotation.from_rotvec(jr[:, nj])
        jr[:, nj] = (Rotation.from_rotvec(lift[:, None] * np.array([1.0, 0.0, 0.0])) * old_n).as_rotvec()
        # compose each leg joint's new rotation: D' = Rot(theta e_x) D (the axis used above)
        total = cur - jr[:, legs, 0]
        old = Rotation.from_rotvec(jr[:, legs.reshape(-1)].reshape(-1, 3))
        new = (Rotation.from_rotvec(np.stack([total.reshape(-1), np.zeros(total.size), np.zeros(total.size)], 1)) * old)
        rv = new.as_rotvec().reshape(M, 12, 3)
        seg_lim = self._limits[self._leg_seg.reshape(-1)]                     # [12,3,2]
        sign = np.array([segment_sign(self.seg_names[i]) for i in self._leg_seg.reshape(-1)])   # [12,3]
        rv = np.clip(rv * sign, seg_lim[None, :, :, 0], seg_lim[None, :, :, 1]) * sign
        jr[:, legs.reshape(-1)] = rv
        return Rg, jr, floor

    def _drape_tail(self, Rg: np.ndarray, s: np.ndarray, t: np.ndarray, posed: np.ndarray, A: np.ndarray,
                    fam: np.ndarray, zt: np.ndarray, tail_ex: np.ndarray) -> np.ndarray:
        """Step 3: tail joint rotations [M,K,3]: the tail leaves the body heading away from the body axis
        (sampled, or a real exemplar's measured heading), runs stiff on a slope that would reach the
        floor (z = 0) at the lift-off length, then falls under gravity onto the floor and lies on it
        with a small random curl; the tip may rise a little. Rg [M,3,3], s [M], t [M,3]: the final
        global transform; posed/A: the candidates' model-frame joints and transforms."""
        M = len(s)
        K = len(self._tail)
        W = np.einsum("mab,mbc->mac", Rg, self._polar(A[:, self._tail_parent, :3, :3]))
        p = s[:, None] * np.einsum("mab,mb->ma", Rg, posed[:, self._tail[0]]) + t
        L = s[:, None] * np.linalg.norm(posed[:, self._tail_child] - posed[:, self._tail], axis=-1)   # [M,K]
        clear = float(self.contact.get("tail_clearance_mm", 0.3)) / self.model.mm_per_unit
        rad = s[:, None] * (self._tail_radius[None] + clear)                                      # [M,K+1]
        prm = {}
        for key, slot in (("exit_pitch_deg", 0), ("heading_deg", 1), ("lift_off_mm", 2), ("curl_deg", 3),
                          ("tip_lift_deg", 4)):
            mu, sd = np.zeros(M), np.zeros(M)
            for f, spec in enumerate(self.families):
                sel = fam == f
                mu[sel], sd[sel] = spec["tail"].get(key, [0, 0])
            prm[key] = mu + sd * zt[:, slot]
        # heading from the body axis (SpineF -> SpineM, as measured on the labels); a pose drawn around a
        # real exemplar takes that pose's measured tail heading
        back = np.einsum("mab,mb->ma", Rg, posed[:, self._spine_m] - posed[:, self._spine_f])
        h = self.exemplar_bandwidth
        ex = np.isfinite(tail_ex[:, 0])
        lift = np.maximum(prm["lift_off_mm"], 1.0) / self.model.mm_per_unit * s
        # the stiff run slopes down so that it would reach the floor at the lift-off length (a tail base
        # held higher than the real mouse's ~9 mm falls faster), tilted by the sampled exit pitch
        dev = np.deg2rad(prm["exit_pitch_deg"] - self._tail_mean("exit_pitch_deg", fam))
        elev = -np.arctan2(np.maximum(p[:, 2] - rad[:, 0], 0.0), lift) + np.deg2rad(self._tail_mean("exit_pitch_deg", fam)) \
            + np.where(ex, h, 1.0) * dev
        # a pose drawn around a real exemplar leans its stiff run toward that pose's measured elevation
        w = self.exemplar_tail_elevation
        if w > 0:
            elev = np.where(ex, (1 - w) * elev + w * (np.nan_to_num(tail_ex[:, 1]) + h * dev), elev)
        head = np.arctan2(back[:, 1], back[:, 0]) + np.where(
            ex, tail_ex[:, 0] + h * np.deg2rad(prm["heading_deg"] - self._tail_mean("heading_deg", fam)),
            np.deg2rad(prm["heading_deg"]))
        curl = np.deg2rad(prm["curl_deg"])
        tip = np.deg2rad(np.abs(prm["tip_lift_deg"]))
        stiff = math.radians(float(self.families[0]["tail"].get("stiff_droop_deg", 3.0)))
        droop = math.radians(float(self.families[0]["tail"].get("droop_deg", 30.0)))
        jit = np.deg2rad(float(self.families[0]["tail"].get("curl_jitter_deg", 4.0))) * zt[:, 5:5 + K]
        grounded = np.zeros(M, bool)
        run = np.zeros(M)
        out = np.zeros((M, K, 3))
        Wprev = W
        n_tip = max(1, K // 5)
        for k in range(K):
            if k > 0:
                air = ~grounded
                elev = np.where(air, np.maximum(elev - np.where(run < lift, stiff, droop), -1.4), elev)
                head = head + np.where(grounded, curl, 0.3 * curl) + jit[:, k]
            target = rad[:, k + 1]
            if k >= K - n_tip:                               # the tip bends up a little off the floor
                target = target + L[:, k] * np.sin(tip) * (k - (K - n_tip) + 1) / n_tip
            need = np.arcsin(np.clip((target - p[:, 2]) / L[:, k], -1, 1))   # elevation that reaches it
            hit = (p[:, 2] + L[:, k] * np.sin(elev) < target) | grounded
            e = np.where(hit, need, elev)
            grounded |= hit
            elev = np.where(grounded, 0.0, e)
            d = np.stack([np.cos(e) * np.cos(head), np.cos(e) * np.sin(head), np.sin(e)], 1)
            # rotation taking the rest bone direction (in the parent's frame) to d
            b = self._tail_dir[k]
            ev = np.einsum("mba,mb->ma", Wprev, d)                           # W^T d
            axis = _cross(np.broadcast_to(b, ev.shape), ev)
            sn, cs = np.linalg.norm(axis, axis=1), np.clip(ev @ b, -1, 1)
            ang = np.arctan2(sn, cs)
            r = Rotation.from_rotvec(axis / np.maximum(sn, 1e-12)[:, None] * ang[:, None]).as_matrix()
            F = self._tail_frames[k]
            out[:, k] = Rotation.from_matrix(np.einsum("ba,mbc,cd->mad", F, r, F)).as_rotvec()
            Wprev = np.einsum("mab,mbc->mac", Wprev, r)
            p = p + L[:, k, None] * d
            run = run + L[:, k]
        return out

    def _tail_mean(self, key: str, fam: np.ndarray) -> np.ndarray:
        return np.array([self.families[f]["tail"].get(key, [0, 0])[0] for f in fam], np.float64)

    def _pose(self, params: PoseParams):
        """Model-frame joints [M,J,3] and transforms [M,J,3,4] (float64 numpy) and the torch transforms."""
        posed, A = self.model.skinning_transforms(params, use_smplx=False)
        return posed.double().numpy(), A.double().numpy(), A

    @torch.no_grad()
    def _build(self, seed: int, indices: np.ndarray, attempt):
        """Steps 1-3 for one attempt (an int, or one per index): candidate params (grounded, tail
        draped) and families."""
        params, fam, zt, tail_ex = self._candidates(seed, indices, attempt)
        posed, A, _ = self._pose(params)
        Rg, jr, floor = self._solve_contact(params, fam, posed, A)
        s = params.scale.double().numpy()[:, 0]
        t = np.zeros((len(s), 3))
        t[:, 2] = -floor
        jr[:, self._tail] = self._drape_tail(Rg, s, t, posed, A, fam, zt, tail_ex)
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))   # noqa: E731
        params = PoseParams(global_orient=f32(Rotation.from_matrix(Rg).as_rotvec()), transl=f32(t), scale=params.scale,
                            girth=params.girth, bone_scale=params.bone_scale, joint_rot=f32(jr))
        return params, fam

    @torch.no_grad()
    def _evaluate(self, params: PoseParams, fam: np.ndarray | None = None):
        """Violation score per candidate (0 = plausible) with reasons, the transforms A, and the
        world proxy skin [M,P,3]. ``fam`` (family index per candidate) enables the contact and
        tilt checks and first re-grounds (params.transl z) on the lowest weight-bearing sole point;
        without it the floor check uses params.transl as given."""
        m = self.model
        M = params.batch_size
        posed, A = m.skinning_transforms(params, use_smplx=False)        # model frame, [M,J,3]
        P = posed.double().numpy()
        # trunk spheres move with their owning joint
        Aj = A[:, self._sph_j].double().numpy()                          # [M,K,3,4]
        centres = np.einsum("mkab,kb->mka", Aj[..., :3], self._sph_c) + Aj[..., 3]
        d = np.linalg.norm(P[:, self._test_j][:, :, None] - centres[:, None], axis=-1)   # [M,T,K]
        unit = self._sph_r.mean()
        pen = np.clip(self._thresh[None] - d, 0, None).max(axis=(1, 2)) / unit
        cross = np.zeros(M)
        for (a, b), rest in zip(self._paw_pairs, self._paw_sep):
            sep = P[:, a, 1] - P[:, b, 1]
            cross += np.clip(float(self.cfg.get("min_paw_separation", 0.25)) * rest - sep, 0, None) / rest
        # world orientation: the back must stay above the paws
        Rg = Rotation.from_rotvec(params.global_orient.double().numpy()).as_matrix()
        Pw = np.einsum("mab,mjb->mja", Rg, P)
        flip = np.clip(Pw[:, self._paws, 2].mean(1) - Pw[:, self._spine, 2].mean(1), 0, None) / unit
        # floor: no proxy skin point below z = 0 beyond the tolerance
        v = m.skin(A, self._proxy_all)
        vw = m.apply_global(v, params).double().numpy()
        mm = m.mm_per_unit
        if fam is not None:
            # exact grounding: the lowest weight-bearing sole point (skinned) on z = 0; the solve
            # moved the legs as rigid chains, skinning differs by a fraction of a millimetre
            sup = np.stack([self.families[f]["support"] for f in fam])
            low = np.where(sup, vw[:, self._sole_pos, 2].min(2), np.inf).min(1)
            vw[..., 2] -= low[:, None]
            params.transl[:, 2] -= torch.as_tensor(low, dtype=params.transl.dtype)
        below = np.clip(-vw[..., 2].min(1) * mm - float(self.contact["floor_tolerance_mm"]), 0, None)
        floor = below / (unit * mm)
        score = pen + cross + flip + floor
        reasons = {"penetration": pen > 0, "crossing": cross > 0, "flip": flip > 0, "floor": floor > 0}
        if fam is not None:
            pz = vw[:, self._sole_pos, 2].min(2)                                # [M,4] lowest sole per paw
            need = np.where(sup.all(1), 3, 2)
            tol = float(self.contact["tolerance_mm"]) / mm
            kz = np.stack([Pw[:, j, 2].mean(1) for j in self._paw_kp], 1) * params.scale.double().numpy() \
                + params.transl.double().numpy()[:, 2:3]
            kp_ok = kz <= (self._paw_kp_rest[None] * params.scale.double().numpy() + tol)
            on = (np.abs(pz) <= tol) & kp_ok & sup
            miss = np.clip(need - on.sum(1), 0, None).astype(float)
            # a free paw must not be below the floor either
            contact = miss + np.clip(-pz.min(1) - tol, 0, None) / unit
            # body pitch (nose up) and roll from the root frame's forward and left axes
            pitch = np.arcsin(np.clip(Rg[:, 2, 0], -1, 1))
            roll = np.arcsin(np.clip(Rg[:, 2, 1], -1, 1))
            plim = np.stack([self.families[f]["pitch_limit"] for f in fam])
            rlim = np.array([self.families[f]["roll_limit"] for f in fam])
            tilt = (np.clip(plim[:, 0] - pitch, 0, None) + np.clip(pitch - plim[:, 1], 0, None)
                    + np.clip(np.abs(roll) - rlim, 0, None))
            score = score + contact + tilt
            reasons.update({"contact": contact > 0, "tilt": tilt > 0})
        return score, reasons, A, vw

    def sample(self, indices, seed: int = 0) -> PoseBatch:
        """Poses for the given global indices; identical for an index however runs are split."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and indices.min() < 0:
            raise ValueError(f"PoseSampler.sample: indices must be >= 0, got min {indices.min()}")
        M = len(indices)
        max_att = int(self.cfg.get("max_attempts", 24))
        # each round costs a fixed overhead (kinematics levels, per-bone tail loop); once few poses
        # are pending, their next attempts are tried together in one round, results taken in
        # attempt order (a pose's result is the same as with one attempt per round)
        min_round = int(self.cfg.get("min_round_candidates", 1))
        best_score = np.full(M, np.inf)
        best_arr = np.zeros((M, PoseParams.array_size(self.model)), np.float32)
        best_fam = np.zeros(M, np.int64)
        best_box = np.zeros((M, 2, 3))
        attempts = np.zeros(M, np.int64)
        accepted = np.zeros(M, bool)
        reason_counts = {k: 0 for k in ("penetration", "crossing", "flip", "floor", "contact", "tilt")}
        pending = np.arange(M)
        a = 0
        while a < max_att and len(pending):
            k = min(max_att - a, max(1, -(-min_round // len(pending))))
            pos = np.tile(pending, k)                                        # attempt-major order
            att = np.repeat(np.arange(a, a + k), len(pending))
            params, fam = self._build(seed, indices[pos], att if k > 1 else a)
            score, reasons, _, vw = self._evaluate(params, fam)
            arr = params.to_array()
            box = np.stack([vw.min(1), vw.max(1)], 1)
            for r in range(k):
                rows = np.nonzero(~accepted[pos[r * len(pending):(r + 1) * len(pending)]])[0] + r * len(pending)
                if len(rows) == 0:
                    break
                p = pos[rows]
                for key, v in reasons.items():
                    reason_counts[key] += int(v[rows].sum())
                attempts[p] = a + r + 1
                better = score[rows] < best_score[p]
                upd, src = p[better], rows[better]
                best_score[upd] = score[src]
                best_arr[upd] = arr[src]
                best_fam[upd] = fam[src]
                best_box[upd] = box[src]
                accepted[p[score[rows] <= 0]] = True
            a += k
            pending = pending[~accepted[pending]]
        params = PoseParams.from_array(self.model, best_arr)
        # centre over the origin in x/y; a forced pose (no candidate passed) is lifted out of the floor
        t = params.transl.double().numpy()
        t[:, :2] -= (best_box[:, 0, :2] + best_box[:, 1, :2]) / 2
        forced = ~accepted
        t[:, 2] -= np.where(forced, np.minimum(best_box[:, 0, 2], 0.0), 0.0)
        params.transl = torch.as_tensor(t, dtype=torch.float32).contiguous()
        tried = int(attempts.sum())
        stats = {"poses": M, "candidates": tried, "rejected": tried - int(accepted.sum()),
                 "rejection_rate": (tried - int(accepted.sum())) / max(tried, 1), "forced": int(forced.sum()),
                 "reasons": reason_counts,
                 "families": {f: int((best_fam == i).sum()) for i, f in enumerate(self.family_names)}}
        return PoseBatch(indices=indices, params=params, family=[self.family_names[i] for i in best_fam],
                         attempts=attempts, forced=forced, stats=stats)
