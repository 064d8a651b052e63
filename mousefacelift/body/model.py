"""BodyModel: one articulated-mesh type for every rig, posed with linear blend skinning.

Why one type: the pose sampler, synth.compose and the renderers only ever see this
structure (rest mesh, skeleton, anatomical joint frames, sparse skin weights, semantic
segments), so the MAMMAL mouse and the built-in procedural mouse are interchangeable.

Frames (asserted by the loaders and tests, never assumed): project world, Z up, the head
toward +X, the mouse's left toward +Y, feet on z = 0 in the rest pose, the body centred
over the origin in x/y. Model units times ``mm_per_unit`` give millimetres.

Joint frames: ``rest_frames[j]`` is a rotation whose columns are the joint's anatomical
axes in world coordinates at rest; pose rotations are axis-angle vectors in that frame, so
(x, y, z) components mean (flexion, twist, abduction/lateral bend) on any rig, whatever its
rest pose. X, the flexion axis, is the world +Y "left" (lateral) axis for every joint, so
flexion always moves a bone in the sagittal plane. Axial joints (spine, neck, head, tail,
digits): Y is the bone direction projected into the sagittal plane, Z = X x Y. Limb joints
(shoulder girdle to wrist, pelvis to ankle): Y is world down (a standing limb's long axis)
and Z = X x Y the world -X (anteroposterior) axis, so abduction moves the limb away from the
midline even where the rest bones are sprawled sideways or point forward (MAMMAL's femur).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues

__all__ = ["BodyModel", "PoseParams", "PoseOutput", "DANNCE22_NAMES", "anatomical_frames"]

DANNCE22_NAMES = [
    "EarL", "EarR", "Snout", "SpineF", "SpineM", "Tail(base)", "Tail(mid)", "Tail(end)",
    "ForepawL", "WristL", "ElbowL", "ShoulderL", "ForepawR", "WristR", "ElbowR", "ShoulderR",
    "HindpawL", "AnkleL", "KneeL", "HindpawR", "AnkleR", "KneeR",
]

# Coarse groups every model must provide (other parts select by these names).
REQUIRED_GROUPS = ("spine", "neck_head", "tail", "fore_l", "fore_r", "hind_l", "hind_r", "ears", "jaw", "digits")
# Fine segments the pose sampler drives (same names on every rig).
REQUIRED_SEGMENTS = (
    "spine_lumbar", "spine_thoracic", "neck", "head", "jaw", "ear_l", "ear_r", "tail",
    "hip_l", "knee_l", "ankle_l", "toes_l", "hip_r", "knee_r", "ankle_r", "toes_r",
    "scapula_l", "shoulder_l", "elbow_l", "wrist_l", "fingers_l",
    "scapula_r", "shoulder_r", "elbow_r", "wrist_r", "fingers_r",
)
REGION_NAMES = ["fur", "ear_skin", "paw_skin", "tail_skin", "nose_skin", "eye"]


def anatomical_frames(joints: np.ndarray, parents: np.ndarray, limb: np.ndarray | None = None) -> np.ndarray:
    """Per-joint rest frames [J,3,3]: columns X = world lateral axis (flexion), Y, Z = X x Y
    (module docstring). ``limb`` [J] bool marks limb joints (Y = world down); the others take
    Y = their bone direction (joint -> mean of its children; leaves inherit their parent's)
    in the sagittal plane, or world down/up where the bone is mostly lateral (ears)."""
    J = len(joints)
    limb = np.zeros(J, bool) if limb is None else np.asarray(limb, bool)
    children: list[list[int]] = [[] for _ in range(J)]
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    dirs = np.zeros((J, 3))
    for j in range(J):
        if children[j]:
            d = joints[children[j]].mean(axis=0) - joints[j]
            if np.linalg.norm(d) < 1e-9:          # zero-length deformer bones: use farthest child
                far = max(children[j], key=lambda c: np.linalg.norm(joints[c] - joints[j]))
                d = joints[far] - joints[j]
        else:
            d = np.zeros(3)
        dirs[j] = d
    for j in range(J):                            # leaves and zero bones inherit up the tree
        k = j
        while np.linalg.norm(dirs[j]) < 1e-9 and k >= 0:
            dirs[j] = dirs[k]
            k = parents[k]
        if np.linalg.norm(dirs[j]) < 1e-9:
            dirs[j] = np.array([1.0, 0.0, 0.0])
    frames = np.zeros((J, 3, 3))
    x = np.array([0.0, 1.0, 0.0])
    down = np.array([0.0, 0.0, -1.0])
    for j in range(J):
        d = dirs[j] / np.linalg.norm(dirs[j])
        y = down.copy() if limb[j] else d - x * d[1]  # sagittal projection of the bone
        if np.linalg.norm(y) < 0.3:               # bone mostly lateral: Y is world down (or up)
            y = np.array([0.0, 0.0, 1.0 if d[2] > 0 else -1.0])
        y /= np.linalg.norm(y)
        frames[j] = np.stack([x, y, np.cross(x, y)], axis=1)
    return frames


def limb_joint_mask(num_joints: int, groups: dict[str, np.ndarray]) -> np.ndarray:
    """[J] bool: joints of the fore_*/hind_* groups that are not digits (limb-frame joints)."""
    m = np.zeros(num_joints, bool)
    for g in ("fore_l", "fore_r", "hind_l", "hind_r"):
        m[np.asarray(groups.get(g, []), np.int64)] = True
    m[np.asarray(groups.get("digits", []), np.int64)] = False
    return m


def _rotate_rest(R: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-joint matrix-vector product R[b,j] @ x[j] ([B,J,3,3], [J,3] -> [B,J,3]), summed as
    ((0 + R0 x0) + R1 x1) + R2 x2 in every element whatever B is. An einsum here becomes a bmm
    over joints with 3B rows, and the CPU bmm switches from its own loop to BLAS (a different
    summation) once the batch is large enough, so a pose's result would depend on its batch.
    This order is the one the small-batch bmm loop uses, so results for small batches are unchanged."""
    return ((0.0 + R[..., 0] * x[:, 0, None]) + R[..., 1] * x[:, 1, None]) + R[..., 2] * x[:, 2, None]


@dataclass
class PoseOutput:
    """Posed geometry in model units, project world frame."""
    vertices: torch.Tensor | None   # [B,N,3] (None when only joints were asked for)
    joints: torch.Tensor            # [B,J,3]
    keypoints: torch.Tensor         # [B,22,3] DANNCE order (BodyModel.keypoint_names)


@dataclass
class PoseParams:
    """Batched, differentiable pose parameters of one BodyModel.

    global_orient [B,3] axis-angle (world), transl [B,3] (model units), scale [B,1]
    (uniform body size, about the model origin), girth [B,1] (trunk thickness across the
    spine), bone_scale [B,G] (per bone-length group, 1 = rest), joint_rot [B,J,3]
    (axis-angle in each joint's anatomical rest frame, 0 = rest).
    """
    global_orient: torch.Tensor
    transl: torch.Tensor
    scale: torch.Tensor
    girth: torch.Tensor
    bone_scale: torch.Tensor
    joint_rot: torch.Tensor

    FIELDS = ("global_orient", "transl", "scale", "girth", "bone_scale", "joint_rot")

    @classmethod
    def rest(cls, model: "BodyModel", batch: int = 1, device=None, dtype=torch.float32) -> "PoseParams":
        """Parameters that reproduce the rest mesh exactly."""
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)   # noqa: E731
        o = lambda *s: torch.ones(*s, device=device, dtype=dtype)    # noqa: E731
        return cls(z(batch, 3), z(batch, 3), o(batch, 1), o(batch, 1),
                   o(batch, model.num_bone_groups), z(batch, model.num_joints, 3))

    @property
    def batch_size(self) -> int:
        return int(self.global_orient.shape[0])

    @staticmethod
    def layout(model: "BodyModel") -> dict[str, slice]:
        """Column slices of the flat per-sample array (pose.npy)."""
        sizes = {"global_orient": 3, "transl": 3, "scale": 1, "girth": 1,
                 "bone_scale": model.num_bone_groups, "joint_rot": 3 * model.num_joints}
        out, o = {}, 0
        for k in PoseParams.FIELDS:
            out[k] = slice(o, o + sizes[k])
            o += sizes[k]
        return out

    @staticmethod
    def array_size(model: "BodyModel") -> int:
        return 8 + model.num_bone_groups + 3 * model.num_joints

    def to_array(self) -> np.ndarray:
        """Flat float32 [B, D]; float32 params round-trip bit-exactly, so the mesh is reproduced."""
        B = self.batch_size
        parts = [getattr(self, k).detach().reshape(B, -1).to("cpu", torch.float32) for k in self.FIELDS]
        return torch.cat(parts, dim=1).numpy().astype(np.float32)

    @classmethod
    def from_array(cls, model: "BodyModel", arr: np.ndarray, device=None) -> "PoseParams":
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim == 1:
            a = a[None]
        D = cls.array_size(model)
        if a.ndim != 2 or a.shape[1] != D:
            lay = ", ".join(f"{k}[{s.start}:{s.stop}]" for k, s in cls.layout(model).items())
            raise ValueError(f"PoseParams.from_array: expected [B,{D}] for model {model.name!r} "
                             f"({lay}), got shape {a.shape}")
        t = torch.from_numpy(a.copy()).to(device)
        lay = cls.layout(model)
        B = a.shape[0]
        f = {k: t[:, s] for k, s in lay.items()}
        f["joint_rot"] = f["joint_rot"].reshape(B, model.num_joints, 3)
        return cls(**{k: f[k].contiguous() for k in cls.FIELDS})

    def index(self, sel) -> "PoseParams":
        return PoseParams(**{k: getattr(self, k)[sel] for k in self.FIELDS})

    @classmethod
    def cat(cls, items: Sequence["PoseParams"]) -> "PoseParams":
        return cls(**{k: torch.cat([getattr(p, k) for p in items], dim=0) for k in cls.FIELDS})

    def to(self, *args, **kw) -> "PoseParams":
        return PoseParams(**{k: getattr(self, k).to(*args, **kw) for k in self.FIELDS})

    def clone(self) -> "PoseParams":
        return PoseParams(**{k: getattr(self, k).clone() for k in self.FIELDS})


@dataclass
class BodyModel:
    """An articulated mesh in the project world (see module docstring for frames)."""
    name: str
    rest_vertices: np.ndarray            # [N,3] float32
    faces: np.ndarray                    # [F,3] int64
    joint_names: list[str]
    parents: np.ndarray                  # [J] int64, -1 for the root, parents[j] < j
    rest_joints: np.ndarray              # [J,3] float32
    skin_weights: sp.csr_matrix          # [N,J], rows sum to 1
    groups: dict[str, np.ndarray]        # coarse semantic groups -> joint indices
    segments: dict[str, np.ndarray]      # sampler handles -> joint indices (a chain shares the angle)
    bone_group_names: list[str]          # bone-length groups
    bone_group_of_joint: np.ndarray      # [J] int64: group scaling the offset parent->joint, -1 none
    girth_joints: np.ndarray             # joints whose skin thickens with PoseParams.girth
    region_names: list[str]
    face_regions: np.ndarray             # [F] int32 index into region_names
    mm_per_unit: float
    keypoint_names: list[str]
    keypoint_spec: list[tuple[str, np.ndarray]]   # per keypoint ("V"|"J", indices averaged)
    uvs: np.ndarray | None = None        # [T,2] texture coordinates
    faces_uv: np.ndarray | None = None   # [F,3] indices into uvs
    rest_frames: np.ndarray | None = None  # [J,3,3], computed when None
    source: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.rest_vertices = np.ascontiguousarray(self.rest_vertices, np.float32)
        self.rest_joints = np.ascontiguousarray(self.rest_joints, np.float32)
        self.faces = np.ascontiguousarray(self.faces, np.int64)
        self.parents = np.asarray(self.parents, np.int64)
        self.face_regions = np.asarray(self.face_regions, np.int32)
        self.skin_weights = sp.csr_matrix(self.skin_weights, dtype=np.float32)
        if self.rest_frames is None:
            self.rest_frames = anatomical_frames(self.rest_joints.astype(np.float64), self.parents,
                                                 limb_joint_mask(len(self.parents), self.groups))
        self.validate()

    # -- structure ---------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return len(self.rest_vertices)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_bone_groups(self) -> int:
        return len(self.bone_group_names)

    def joint(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name}: no joint named {name!r}") from None

    def validate(self) -> None:
        """Structural checks with errors that name the field and what was expected."""
        N, J, F = self.num_vertices, self.num_joints, len(self.faces)
        where = f"BodyModel {self.name!r}"
        if self.rest_vertices.shape != (N, 3):
            raise ValueError(f"{where}: rest_vertices must be [N,3], got {self.rest_vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.min() < 0 or self.faces.max() >= N:
            raise ValueError(f"{where}: faces must be [F,3] indices into {N} vertices")
        if self.parents.shape != (J,) or self.rest_joints.shape != (J, 3):
            raise ValueError(f"{where}: parents [J] and rest_joints [J,3] must match {J} joint names")
        if self.parents[0] != -1 or np.any(self.parents[1:] >= np.arange(1, J)) or np.any(self.parents[1:] < 0):
            raise ValueError(f"{where}: parents must have a single root at 0 and parents[j] < j")
        if self.skin_weights.shape != (N, J):
            raise ValueError(f"{where}: skin_weights must be [{N},{J}], got {self.skin_weights.shape}")
        rs = np.asarray(self.skin_weights.sum(axis=1)).ravel()
        if np.abs(rs - 1).max() > 1e-3:
            raise ValueError(f"{where}: skin weight rows must sum to 1 (worst {rs[np.abs(rs - 1).argmax()]:.4f})")
        for g in REQUIRED_GROUPS:
            if g not in self.groups:
                raise ValueError(f"{where}: missing joint group {g!r} (have {sorted(self.groups)})")
        for s in REQUIRED_SEGMENTS:
            if s not in self.segments or len(self.segments[s]) == 0:
                raise ValueError(f"{where}: missing sampler segment {s!r}")
        if list(self.region_names) != REGION_NAMES:
            raise ValueError(f"{where}: region_names must be {REGION_NAMES}, got {self.region_names}")
        if self.face_regions.shape != (F,) or self.face_regions.min() < 0 or self.face_regions.max() >= len(REGION_NAMES):
            raise ValueError(f"{where}: face_regions must be [F] ints in [0,{len(REGION_NAMES)})")
        if self.bone_group_of_joint.shape != (J,) or self.bone_group_of_joint.max() >= self.num_bone_groups:
            raise ValueError(f"{where}: bone_group_of_joint must be [J] in [-1,{self.num_bone_groups})")
        if len(self.keypoint_names) != len(self.keypoint_spec):
            raise ValueError(f"{where}: keypoint_names and keypoint_spec differ in length")
        if not (self.mm_per_unit > 0):
            raise ValueError(f"{where}: mm_per_unit must be > 0, got {self.mm_per_unit}")
        if self.uvs is not None and (self.faces_uv is None or self.faces_uv.shape != self.faces.shape):
            raise ValueError(f"{where}: uvs need faces_uv of the same shape as faces")

    # -- torch buffers -----------------------------------------------------------------
    def _buffers(self, device, dtype) -> dict:
        key = (str(device), dtype)
        if key in self._cache:
            return self._cache[key]
        J = self.num_joints
        F = torch.as_tensor(self.rest_frames, dtype=dtype, device=device)
        anc = np.zeros((J, J), np.float32)          # anc[j, k] = 1 if k is j or an ancestor of j
        for j in range(J):
            k = j
            while k >= 0:
                anc[j, k] = 1
                k = self.parents[k]
        offsets = self.rest_joints.copy()
        offsets[1:] -= self.rest_joints[self.parents[1:]]
        girth_mask = np.zeros(J, np.float32)
        girth_mask[self.girth_joints] = 1
        perp = np.einsum("jab,b,jcb->jac", self.rest_frames, np.array([1.0, 0.0, 1.0]), self.rest_frames)
        W = self.skin_weights.tocoo()
        buf = {
            "frames": F,
            "ancestors": torch.as_tensor(anc, dtype=dtype, device=device),
            "offsets": torch.as_tensor(offsets, dtype=dtype, device=device),
            "rest_joints": torch.as_tensor(self.rest_joints, dtype=dtype, device=device),
            "rest_vertices": torch.as_tensor(self.rest_vertices, dtype=dtype, device=device),
            "parents": torch.as_tensor(self.parents, device=device),
            "bone_group": torch.as_tensor(self.bone_group_of_joint, device=device),
            "girth_mask": torch.as_tensor(girth_mask, dtype=dtype, device=device),
            "perp": torch.as_tensor(perp, dtype=dtype, device=device),
            "W": torch.sparse_coo_tensor(np.stack([W.row, W.col]), W.data, (W.shape[0], W.shape[1]),
                                         dtype=dtype, device=device, check_invariants=False).coalesce(),
        }
        self._cache[key] = buf
        return buf

    def _rigid_transform_levels(self, r: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward kinematics one tree level at a time (same result as smplx's joint-by-joint
        batch_rigid_transform, ~10x fewer kernel launches on a 140-joint rig): the sampler's path."""
        if "levels" not in self._cache:
            depth = np.zeros(self.num_joints, np.int64)
            for j in range(1, self.num_joints):
                depth[j] = depth[self.parents[j]] + 1
            self._cache["levels"] = [torch.as_tensor(np.nonzero(depth == d)[0]) for d in range(1, depth.max() + 1)]
        par = torch.as_tensor(self.parents)
        rel_t = joints.clone()
        rel_t[:, 1:] = joints[:, 1:] - joints[:, par[1:]]
        R = r.clone()
        t = rel_t
        for idx in self._cache["levels"]:
            p = par[idx]
            Rp = R[:, p]
            t[:, idx] = t[:, p] + (Rp @ rel_t[:, idx, :, None]).squeeze(-1)
            R[:, idx] = Rp @ r[:, idx]
        return t, R

    def skinning_transforms(self, params: PoseParams, use_smplx: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed joints [B,J,3] and per-joint skinning matrices [B,J,3,4] (model frame, before
        the global rotation/scale/translation), using smplx.lbs kinematics (or, for the
        sampler's no-grad batches, the equivalent level-parallel kinematics)."""
        dev, dt = params.joint_rot.device, params.joint_rot.dtype
        b = self._buffers(dev, dt)
        B, J = params.batch_size, self.num_joints
        # bone lengths: scale each parent->joint offset by its group, re-accumulate along the tree
        ones = torch.ones(B, 1, dtype=dt, device=dev)
        gs = torch.cat([params.bone_scale, ones], dim=1)                 # index -1 -> last = 1
        s = gs[:, b["bone_group"]]                                         # [B,J]
        joints_scaled = torch.einsum("jk,bkc->bjc", b["ancestors"], b["offsets"][None] * s[..., None])
        # anatomical-frame rotations -> world-aligned relative rotations r = F (D - I) F^T + I
        D = batch_rodrigues(params.joint_rot.reshape(-1, 3)).reshape(B, J, 3, 3)
        eye = torch.eye(3, dtype=dt, device=dev)
        Fm = b["frames"]
        r = eye + Fm[None] @ (D - eye) @ Fm.transpose(1, 2)[None]        # exact I at rest
        if use_smplx:
            posed, rel = batch_rigid_transform(r, joints_scaled, b["parents"], dtype=dt)
            R = rel[:, :, :3, :3]
        else:
            posed, R = self._rigid_transform_levels(r, joints_scaled)
        # vertices are bound at the unscaled rest joints: t = posed - R @ J_rest
        t = posed - _rotate_rest(R, b["rest_joints"])
        # girth: scale across the bone about the rest joint, for trunk joints only
        g = (params.girth.reshape(B, 1, 1, 1) - 1) * b["girth_mask"][None, :, None, None]
        M = eye + g * b["perp"][None]                                     # [B,J,3,3]
        RM = R @ M
        t = t + _rotate_rest(R - RM, b["rest_joints"])
        return posed, torch.cat([RM, t[..., None]], dim=-1)

    def apply_global(self, x: torch.Tensor, params: PoseParams) -> torch.Tensor:
        Rg = batch_rodrigues(params.global_orient)                         # [B,3,3]
        return params.scale[:, None, :] * (x @ Rg.transpose(1, 2)) + params.transl[:, None, :]

    def skin(self, A: torch.Tensor, vertex_ids: np.ndarray | None = None) -> torch.Tensor:
        """Linear blend skinning of all (or the given) rest vertices with transforms A [B,J,3,4]."""
        dev, dt = A.device, A.dtype
        b = self._buffers(dev, dt)
        B, J = A.shape[:2]
        if vertex_ids is None:
            W, V = b["W"], b["rest_vertices"]
        else:
            # the sampler skins the same subsets every batch: keep their sparse weights (a few kept)
            key = ("subset", dev, dt, np.asarray(vertex_ids).tobytes())
            if key not in self._cache:
                Wc = self.skin_weights[vertex_ids].tocoo()
                W = torch.sparse_coo_tensor(np.stack([Wc.row, Wc.col]), Wc.data, Wc.shape, dtype=dt, device=dev,
                                            check_invariants=False).coalesce()
                subsets = [k for k in self._cache if isinstance(k, tuple) and k[0] == "subset"]
                for old in subsets[:max(0, len(subsets) - 7)]:
                    del self._cache[old]
                self._cache[key] = (W, b["rest_vertices"][torch.as_tensor(vertex_ids, device=dev)])
            W, V = self._cache[key]
        Aflat = A.permute(1, 0, 2, 3).reshape(J, B * 12)
        T = torch.sparse.mm(W, Aflat).reshape(-1, B, 3, 4).permute(1, 0, 2, 3)   # [B,n,3,4]
        return (T[..., :3] @ V[None, :, :, None]).squeeze(-1) + T[..., 3]

    def pose(self, params: PoseParams, with_vertices: bool = True) -> PoseOutput:
        """Pose a batch: vertices (optional), joints and the 22 DANNCE keypoints, model units."""
        if params.joint_rot.shape[1:] != (self.num_joints, 3):
            raise ValueError(f"{self.name}: joint_rot must be [B,{self.num_joints},3], got "
                             f"{tuple(params.joint_rot.shape)}")
        if params.bone_scale.shape[1] != self.num_bone_groups:
            raise ValueError(f"{self.name}: bone_scale must be [B,{self.num_bone_groups}], got "
                             f"{tuple(params.bone_scale.shape)}")
        posed, A = self.skinning_transforms(params)
        verts = self.skin(A) if with_vertices else None
        kv = self._keypoint_vertex_ids()
        if verts is not None:
            kverts = verts[:, torch.as_tensor(kv, device=verts.device)] if len(kv) else None
        else:
            kverts = self.skin(A, kv) if len(kv) else None
        kps = self._keypoints(kverts, posed)
        return PoseOutput(
            vertices=None if verts is None else self.apply_global(verts, params),
            joints=self.apply_global(posed, params),
            keypoints=self.apply_global(kps, params),
        )

    def local_keypoints(self, params: PoseParams, use_smplx: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """DANNCE keypoints [B,22,3] and joints [B,J,3] in the model frame, before the global
        rotation/scale/translation (only the keypoint vertices are skinned): the fit's path."""
        posed, A = self.skinning_transforms(params, use_smplx=use_smplx)
        kv = self._keypoint_vertex_ids()
        kverts = self.skin(A, kv) if len(kv) else None
        return self._keypoints(kverts, posed), posed

    def _keypoint_vertex_ids(self) -> np.ndarray:
        if "kp_vids" not in self._cache:
            ids = [np.asarray(i) for t, i in self.keypoint_spec if t == "V"]
            self._cache["kp_vids"] = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
        return self._cache["kp_vids"]

    def _keypoints(self, kverts: torch.Tensor | None, joints: torch.Tensor) -> torch.Tensor:
        kv = self._keypoint_vertex_ids()
        pos = {int(v): i for i, v in enumerate(kv)}
        out = []
        for typ, ids in self.keypoint_spec:
            if typ == "V":
                out.append(kverts[:, [pos[int(i)] for i in ids]].mean(dim=1))
            else:
                out.append(joints[:, list(map(int, ids))].mean(dim=1))
        return torch.stack(out, dim=1)

    # -- convenience ------------------------------------------------------------------
    def rest_keypoints(self) -> np.ndarray:
        out = self.pose(PoseParams.rest(self), with_vertices=False)
        return out.keypoints[0].numpy()

    def region_of_vertices(self) -> np.ndarray:
        """Per-vertex region (the most common region among a vertex's faces)."""
        counts = np.zeros((self.num_vertices, len(self.region_names)), np.int32)
        for k in range(3):
            np.add.at(counts, (self.faces[:, k], self.face_regions), 1)
        return counts.argmax(axis=1).astype(np.int32)

    def subset_faces(self, keep: np.ndarray) -> "BodyModel":
        """A copy with only the faces where ``keep`` is true (vertices kept: indices stay valid)."""
        keep = np.asarray(keep, bool)
        return BodyModel(**{**{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "_cache"},
                            "faces": self.faces[keep], "face_regions": self.face_regions[keep],
                            "faces_uv": None if self.faces_uv is None else self.faces_uv[keep]})
