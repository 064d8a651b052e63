"""PoseSampler: anatomically limited, behaviour-family pose sampling with rejection.

Why it is built this way:
- Determinism per (seed, index): every random number is a counter-based hash of
  (seed, index, attempt, slot), so pose i is identical however a run is split into
  index ranges or workers, and the whole batch is still drawn vectorised.
- Rotations live in each bone's anatomical frame (flex, twist, abd; see BodyModel), so
  one config (configs/poses/default.yaml) drives any rig that names the same segments.
- Plausibility is tested on a cheap proxy: posed joints against spheres that fill the
  trunk (limbs, tail and snout must not pass through the body), left/right paws must not
  cross, and the back must stay above the paws. Poses are then set on the ground (lowest
  proxy-skin point at z = 0) and centred over the origin.
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


def _hash_uniform(seed: int, index: np.ndarray, attempt: int, dims: int) -> np.ndarray:
    """Counter-based uniforms in (0,1), [M, dims]: splitmix64 of (seed, index, attempt, slot)."""
    with np.errstate(over="ignore"):
        idx = np.asarray(index, np.uint64)[:, None]
        slot = np.arange(dims, dtype=np.uint64)[None, :]
        x = (np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
             ^ idx * np.uint64(0xBF58476D1CE4E5B9)
             ^ np.uint64(attempt) * np.uint64(0x94D049BB133111EB)
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
            })
        # random slots per attempt: family, phase, yaw, pitch, roll, size, girth, bend, groups, segments
        self._G = model.num_bone_groups
        self._seg_map = segment_joint_map(model, self.seg_names)
        self.dims = 8 + self._G + 3 * S
        self._prepare_proxy()

    # -- config helpers -------------------------------------------------------------------
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
        self._paws = np.array([seg["ankle_l"][0], seg["ankle_r"][0], seg["wrist_l"][0], seg["wrist_r"][0]])
        self._spine = m.groups["spine"]

    # -- sampling ---------------------------------------------------------------------------
    def _candidates(self, seed: int, indices: np.ndarray, attempt: int):
        m, c = self.model, self.cfg
        M, S = len(indices), len(self.seg_names)
        u = _hash_uniform(seed, indices, attempt, self.dims)
        z = ndtri(u)
        fam = np.searchsorted(self.family_cdf, u[:, 0], side="right").clip(0, len(self.family_names) - 1)
        phase = u[:, 1] * 2 * np.pi
        zseg = z[:, 8 + self._G:].reshape(M, S, 3)
        ang = np.zeros((M, S, 3))
        pitch = np.zeros(M)
        bend = np.zeros(M)
        mean_c, std_c = self.common[..., 0], self.common[..., 1]
        for f, spec in enumerate(self.families):
            sel = fam == f
            if not sel.any():
                continue
            t = spec["table"]
            ang[sel] = t[None, ..., 0] + mean_c[None] + np.sqrt(t[None, ..., 1] ** 2 + std_c[None] ** 2) * zseg[sel]
            pitch[sel] = spec["pitch"][0] + spec["pitch"][1] * z[sel, 3]
            bend[sel] = spec["bend"][0] + spec["bend"][1] * z[sel, 7]
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
        for name, share in (("spine_lumbar", 0.3), ("spine_thoracic", 0.3), ("neck", 0.2), ("tail", 0.6)):
            ang[:, self.seg_names.index(name), 2] += bend * share      # same sign: a C-shaped body
        ang = np.clip(ang, self._limits[None, ..., 0], self._limits[None, ..., 1])
        # segment (flex, twist, abd) -> joint axis-angle (x, y, z) in the anatomical frame; a chain
        # shares the angle. Left limbs abduct about -Z, right limbs about +Z with mirrored twist;
        # axial segments bend toward the right for abd > 0.
        jr = (ang.reshape(M, S * 3) @ self._seg_map).reshape(M, m.num_joints, 3)
        yaw = (u[:, 2] * 2 - 1) * np.pi
        roll = np.deg2rad(4.0) * z[:, 4]
        R = Rotation.from_euler("ZYX", np.stack([yaw, -pitch, roll], 1))
        lo, hi = c.get("size", [1, 1])
        size = lo + (hi - lo) * u[:, 5]
        glo, ghi = c.get("girth", [1, 1])
        girth = glo + (ghi - glo) * u[:, 6]
        bstd = float(c.get("bone_scale_std", 0.0))
        bone = 1 + bstd * np.clip(z[:, 8:8 + self._G], -2.5, 2.5)
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))   # noqa: E731
        params = PoseParams(global_orient=f32(R.as_rotvec()), transl=torch.zeros(M, 3), scale=f32(size[:, None]),
                            girth=f32(girth[:, None]), bone_scale=f32(bone), joint_rot=f32(jr))
        return params, fam

    @torch.no_grad()
    def _evaluate(self, params: PoseParams):
        """Violation score per candidate (0 = plausible) with reasons, and grounding transl."""
        m = self.model
        M = params.batch_size
        posed, A = m.skinning_transforms(params, use_smplx=False)        # model frame, [M,J,3]
        P = posed.double().numpy()
        # trunk spheres move with their owning joint
        Aj = A[:, self._sph_j].double().numpy()                          # [M,K,3,4]
        centres = np.einsum("mkab,kb->mka", Aj[..., :3], self._sph_c) + Aj[..., 3]
        d = np.linalg.norm(P[:, self._test_j][:, :, None] - centres[:, None], axis=-1)   # [M,T,K]
        pen = np.clip(self._thresh[None] - d, 0, None).max(axis=(1, 2)) / self._sph_r.mean()
        cross = np.zeros(M)
        for (a, b), rest in zip(self._paw_pairs, self._paw_sep):
            sep = P[:, a, 1] - P[:, b, 1]
            cross += np.clip(float(self.cfg.get("min_paw_separation", 0.25)) * rest - sep, 0, None) / rest
        # world orientation: the back must stay above the paws
        Rg = Rotation.from_rotvec(params.global_orient.double().numpy()).as_matrix()
        Pw = np.einsum("mab,mjb->mja", Rg, P)
        flip = np.clip(Pw[:, self._paws, 2].mean(1) - Pw[:, self._spine, 2].mean(1), 0, None) / self._sph_r.mean()
        score = pen + cross + flip
        reasons = {"penetration": pen > 0, "crossing": cross > 0, "flip": flip > 0}
        return score, reasons, A

    @torch.no_grad()
    def _ground(self, params: PoseParams, A: torch.Tensor) -> torch.Tensor:
        """Translation putting the lowest proxy-skin point on z = 0, centred over the origin
        (A: the candidates' skinning transforms from the plausibility test)."""
        m = self.model
        ids = np.unique(np.concatenate([self._proxy_ids, m._keypoint_vertex_ids()]))
        v = m.skin(A, ids)
        v = m.apply_global(v, PoseParams(params.global_orient, torch.zeros_like(params.transl), params.scale,
                                          params.girth, params.bone_scale, params.joint_rot))
        lo, hi = v.min(dim=1).values, v.max(dim=1).values
        t = torch.stack([-(lo[:, 0] + hi[:, 0]) / 2, -(lo[:, 1] + hi[:, 1]) / 2, -lo[:, 2]], dim=1)
        return t

    def sample(self, indices, seed: int = 0) -> PoseBatch:
        """Poses for the given global indices; identical for an index however runs are split."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and indices.min() < 0:
            raise ValueError(f"PoseSampler.sample: indices must be >= 0, got min {indices.min()}")
        M = len(indices)
        max_att = int(self.cfg.get("max_attempts", 24))
        best_score = np.full(M, np.inf)
        best_arr = np.zeros((M, PoseParams.array_size(self.model)), np.float32)
        best_fam = np.zeros(M, np.int64)
        best_A = torch.zeros(M, self.model.num_joints, 3, 4)
        attempts = np.zeros(M, np.int64)
        accepted = np.zeros(M, bool)
        reason_counts = {"penetration": 0, "crossing": 0, "flip": 0}
        pending = np.arange(M)
        for a in range(max_att):
            if len(pending) == 0:
                break
            params, fam = self._candidates(seed, indices[pending], a)
            score, reasons, A = self._evaluate(params)
            for k, r in reasons.items():
                reason_counts[k] += int(r.sum())
            attempts[pending] = a + 1
            arr = params.to_array()
            better = score < best_score[pending]
            upd = pending[better]
            best_score[upd] = score[better]
            best_arr[upd] = arr[better]
            best_fam[upd] = fam[better]
            best_A[torch.as_tensor(upd)] = A[torch.as_tensor(np.nonzero(better)[0])]
            ok = score <= 0
            accepted[pending[ok]] = True
            pending = pending[~ok]
        params = PoseParams.from_array(self.model, best_arr)
        params.transl = self._ground(params, best_A).float().contiguous()
        forced = ~accepted
        tried = int(attempts.sum())
        stats = {"poses": M, "candidates": tried, "rejected": tried - int(accepted.sum()),
                 "rejection_rate": (tried - int(accepted.sum())) / max(tried, 1), "forced": int(forced.sum()),
                 "reasons": reason_counts,
                 "families": {f: int((best_fam == i).sum()) for i, f in enumerate(self.family_names)}}
        return PoseBatch(indices=indices, params=params, family=[self.family_names[i] for i in best_fam],
                         attempts=attempts, forced=forced, stats=stats)
