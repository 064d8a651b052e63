"""Loader for the MAMMAL mouse model (a user-provided folder; never shipped or fetched).

Source frame (checked on load, see ``_to_project_frame``): Z up, the head toward -Y, the
mouse's left toward +X. The project frame wants the head toward +X and the left toward +Y,
which is a +90 degree rotation about Z (a proper rotation, no mirroring). The model is then
shifted so the lowest vertex lies on z = 0 and the bounding box is centred in x/y (in
MAMMAL's rest pose the tail is the lowest part; the paws sit 1.8 mm above the ground).

Units: MAMMAL's vertices are in arbitrary units. ``DEFAULT_MM_PER_UNIT`` = 107.7 is the scale
the project's keypoint fit finds for the hand-labelled DANNCE adult mouse
(benchmarks/fit_dannce_poses.py, configs/poses/fitted_dannce.yaml: fit.mm_per_model_unit;
upstream fits the same animal with a global scale near 115), so the model is the size of a
real mouse. (It was 150, which made the mouse ~1.4x the DANNCE animal.) The pose sampler draws
body sizes around this reference (configs/poses/default.yaml: size). Override with the
``mm_per_unit`` argument (configs/body/mammal.yaml).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .model import DANNCE22_NAMES, REGION_NAMES, BodyModel
from .safe_pickle import safe_load_pickle

__all__ = ["load_mammal", "DEFAULT_MM_PER_UNIT", "ENV_VAR"]

ENV_VAR = "MOUSEFACELIFT_MAMMAL_DIR"
DEFAULT_MM_PER_UNIT = 107.7
NUM_VERTICES, NUM_JOINTS = 14522, 140
# source (head -Y, left +X, up Z) -> project (head +X, left +Y, up Z): rotate +90 deg about Z
SOURCE_TO_PROJECT = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
INTERNAL_JOINTS = ("tongue_target", "tongue_target_end", "tongue_base", "tongue_tip", "tongue_tip_end")


def _fail(path: Path, what: str) -> None:
    raise ValueError(f"{path}: {what}")


def _array(path: Path, d: dict, key: str, shape: tuple, kind: str) -> np.ndarray:
    if key not in d:
        _fail(path, f"missing field {key!r} (have {sorted(d)})")
    a = np.asarray(d[key])
    if a.ndim != len(shape) or any(s is not None and a.shape[i] != s for i, s in enumerate(shape)):
        _fail(path, f"field {key!r} has shape {a.shape}, expected {tuple('*' if s is None else s for s in shape)}")
    if kind == "f" and a.dtype.kind not in "fi":
        _fail(path, f"field {key!r} has dtype {a.dtype}, expected floats")
    if kind == "i" and a.dtype.kind not in "iu":
        _fail(path, f"field {key!r} has dtype {a.dtype}, expected integers")
    if kind == "f" and not np.all(np.isfinite(a)):
        _fail(path, f"field {key!r} contains non-finite values")
    return a


def resolve_mammal_dir(folder: str | os.PathLike | None) -> Path:
    """The MAMMAL folder from the argument, else $MOUSEFACELIFT_MAMMAL_DIR; errors say which."""
    if folder is None or str(folder) in ("", "mammal"):
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            raise FileNotFoundError(
                f"MAMMAL mouse model folder not given: pass its path or set {ENV_VAR} to the folder "
                f"holding mouse.pkl and mouse_txt/ (the project never ships these files)")
        folder = env
    path = Path(folder).expanduser()
    if (path / "mouse_model" / "mouse.pkl").exists() and not (path / "mouse.pkl").exists():
        path = path / "mouse_model"          # accept the upstream repository root too
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: MAMMAL model folder does not exist")
    if not (path / "mouse.pkl").exists():
        raise FileNotFoundError(f"{path / 'mouse.pkl'}: not found (expected the MAMMAL mouse_model/ folder)")
    return path


def _read_bone_groups(folder: Path) -> tuple[list[str], np.ndarray]:
    mapper_path = folder / "mouse_txt" / "bone_length_mapper.txt"
    try:
        mapper = np.loadtxt(mapper_path, dtype=np.int64).reshape(-1)
    except (OSError, ValueError) as e:
        raise ValueError(f"{mapper_path}: expected {NUM_JOINTS} integers (bone-length group per joint, "
                         f"1-based, -1/0 = none): {e}") from e
    if mapper.shape != (NUM_JOINTS,) or mapper.min() < -1:
        _fail(mapper_path, f"expected {NUM_JOINTS} integers >= -1 (1-based group, -1/0 = none), "
                           f"got shape {mapper.shape} min {mapper.min() if mapper.size else None}")
    G = int(mapper.max())
    names = [f"group_{i + 1}" for i in range(G)]
    name_path = folder / "bone_length_name.txt"
    if name_path.exists():   # optional, informative: "1: perlvis", "scapula", ... after a title line
        lines = [ln.strip() for ln in name_path.read_text().splitlines()[1:] if ln.strip()]
        if len(lines) == G:
            names = [ln.split(":", 1)[-1].strip() for ln in lines]
    return names, np.maximum(mapper - 1, -1)


def _read_keypoints(folder: Path, num_vertices: int) -> list[tuple[str, np.ndarray]]:
    path = folder / "keypoint22_mapper.json"
    try:
        entries = json.loads(path.read_text())["mapper"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found (DANNCE-22 keypoint mapper expected)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected JSON {{'mapper': [{{keypoint, type: V|J, ids}}, ...]}}: {e}") from e
    spec: dict[int, tuple[str, np.ndarray]] = {}
    for e in entries:
        try:
            k, typ, ids = int(e["keypoint"]), str(e["type"]), np.asarray(e["ids"], np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: malformed entry {e!r}: {err}") from err
        if typ not in ("V", "J") or ids.size == 0:
            _fail(path, f"entry for keypoint {k}: type must be V or J with ids, got {typ!r} {ids.tolist()}")
        limit = num_vertices if typ == "V" else NUM_JOINTS
        if ids.min() < 0 or ids.max() >= limit:
            _fail(path, f"entry for keypoint {k}: ids out of range [0,{limit})")
        spec[k] = (typ, ids)
    missing = [k for k in range(22) if k not in spec]
    if missing:
        _fail(path, f"keypoints {missing} of the 22 DANNCE keypoints are missing")
    return [spec[k] for k in range(22)]


def _extra_points(folder: Path, vertices: np.ndarray) -> dict[int, np.ndarray]:
    """Vertex-average landmarks beyond the 22 (22/23 are the eyes in the upstream mapper)."""
    entries = json.loads((folder / "keypoint22_mapper.json").read_text())["mapper"]
    return {int(e["keypoint"]): vertices[np.asarray(e["ids"])].mean(axis=0)
            for e in entries if e["type"] == "V" and int(e["keypoint"]) >= 22
            and max(e["ids"]) < len(vertices)}


def _check_skeleton_chain(folder: Path, joints: np.ndarray, parents: np.ndarray) -> None:
    """The upstream rest frames (init_joint_rot_mat/trans) must chain to t_pose_joints."""
    rot_p = folder / "mouse_txt" / "init_joint_rot_mat.pkl"
    tr_p = folder / "mouse_txt" / "init_joint_trans.pkl"
    if not (rot_p.exists() and tr_p.exists()):
        return
    R = np.asarray(safe_load_pickle(rot_p), dtype=np.float64)
    T = np.asarray(safe_load_pickle(tr_p), dtype=np.float64)
    if R.shape != (NUM_JOINTS, 3, 3):
        _fail(rot_p, f"expected {NUM_JOINTS} rotation matrices [140,3,3], got {R.shape}")
    if T.shape != (NUM_JOINTS, 3):
        _fail(tr_p, f"expected {NUM_JOINTS} translations [140,3], got {T.shape}")
    G = [None] * NUM_JOINTS
    for j in range(NUM_JOINTS):
        S = np.eye(4)
        S[:3, :3], S[:3, 3] = R[j], T[j]
        G[j] = S if parents[j] < 0 else G[parents[j]] @ S
    chained = np.array([g[:3, 3] for g in G])
    err = np.abs(chained - joints).max()
    if err > 1e-4:
        _fail(rot_p, f"rest frames do not chain to t_pose_joints (max error {err:.3g}); files from different models?")


def _joint_sets(names: list[str]) -> tuple[dict, dict]:
    idx = {n: i for i, n in enumerate(names)}
    pick = lambda pred: np.array([i for i, n in enumerate(names) if pred(n)], np.int64)   # noqa: E731
    not_end = lambda n: not n.endswith("_end")                                           # noqa: E731

    def side(s):
        return {
            f"hip_{s}": [idx[f"femur_{s}"]], f"knee_{s}": [idx[f"tibia_{s}"]], f"ankle_{s}": [idx[f"hind_paw_{s}"]],
            f"toes_{s}": pick(lambda n: n.startswith("hind_paw_digit") and n.endswith(f"_{s}")),
            f"scapula_{s}": [idx[f"scapula_{s}"]], f"shoulder_{s}": [idx[f"humerus_{s}"]],
            f"elbow_{s}": [idx[f"ulna_{s}"]], f"wrist_{s}": [idx[f"fore_paw_{s}"]],
            f"fingers_{s}": pick(lambda n: n.startswith("fore_paw_digit") and n.endswith(f"_{s}")),
        }
    seg = {
        "spine_lumbar": [idx["lumbar_vertebrae_2"], idx["lumbar_vertebrae_3"]],
        "spine_thoracic": [idx["thoracic_vertebrae_0"], idx["thoracic_vertebrae_1"], idx["thoracic_vertebrae_2"]],
        "neck": [idx["cervical_vertebrae_0"], idx["cervical_vertebrae_1"]],
        "head": [idx["skull"]],
        "jaw": [idx["mandible"]],
        "ear_l": [idx["ear_l"], idx["ear_tip_l"]], "ear_r": [idx["ear_r"], idx["ear_tip_r"]],
        "tail": [idx[f"tail_{k}"] for k in range(10)],
        **side("l"), **side("r"),
    }
    seg = {k: np.asarray(v, np.int64) for k, v in seg.items()}
    # digit segments: only real bones (an _end joint carries no skin and has no children)
    for k in ("toes_l", "toes_r", "fingers_l", "fingers_r"):
        seg[k] = np.array([i for i in seg[k] if not_end(names[i])], np.int64)

    def limb(prefixes, s):
        return pick(lambda n: any(n.startswith(p) for p in prefixes) and n.endswith(f"_{s}"))
    groups = {
        "spine": pick(lambda n: n.startswith(("root", "lumbar", "thoracic", "belly", "chest", "neck_stretch"))
                      and not n.startswith(("neck_stretch_l", "neck_stretch_r"))),
        "neck_head": pick(lambda n: n.startswith(("cervical", "skull", "snout", "cheeks", "mandible", "tongue"))),
        "tail": pick(lambda n: n.startswith("tail")),
        "ears": pick(lambda n: n.startswith("ear")),
        "jaw": pick(lambda n: n.startswith(("mandible", "tongue"))),
        "digits": pick(lambda n: "digit" in n),
        **{f"fore_{s}": limb(("scapula", "humerus", "ulna", "fore_paw", "neck_stretch"), s) for s in "lr"},
        **{f"hind_{s}": limb(("perlvis", "femur", "tibia", "hind_paw"), s) for s in "lr"},
    }
    return groups, seg


def _regions(faces, W, names, vertices, kp_snout, eyes, mm_per_unit) -> np.ndarray:
    """Face materials from dominant skin-weight joints plus distance to landmarks."""
    J = len(names)
    dom = np.asarray(W.argmax(axis=1)).ravel()
    # per face: the joint with the largest summed weight over its three vertices
    Wf = (W[faces[:, 0]] + W[faces[:, 1]] + W[faces[:, 2]]).tocsr()
    fdom = np.asarray(Wf.argmax(axis=1)).ravel()
    jregion = np.zeros(J, np.int32)
    for j, n in enumerate(names):
        if n.startswith("ear"):
            jregion[j] = REGION_NAMES.index("ear_skin")
        elif n.startswith(("hind_paw", "fore_paw")):
            jregion[j] = REGION_NAMES.index("paw_skin")
        elif n.startswith("tail_") and n != "tail_0":
            jregion[j] = REGION_NAMES.index("tail_skin")
    reg = jregion[fdom]
    centers = vertices[faces].mean(axis=1)
    nose_r = 2.5 / mm_per_unit
    reg[(np.linalg.norm(centers - kp_snout, axis=1) < nose_r)] = REGION_NAMES.index("nose_skin")
    eye_r = 1.6 / mm_per_unit
    for e in eyes:
        reg[np.linalg.norm(centers - e, axis=1) < eye_r] = REGION_NAMES.index("eye")
    del dom
    return reg


def load_mammal(folder: str | os.PathLike | None = None, mm_per_unit: float = DEFAULT_MM_PER_UNIT,
                drop_internal: bool = True) -> BodyModel:
    """Read a MAMMAL ``mouse_model/`` folder into a BodyModel in the project world.

    ``drop_internal`` removes faces dominated by the tongue joints (never visible from
    outside); vertex indices are unchanged so keypoint ids stay valid.
    """
    folder = resolve_mammal_dir(folder)
    pkl = folder / "mouse.pkl"
    d = safe_load_pickle(pkl)
    if not isinstance(d, dict):
        _fail(pkl, f"expected a dict of arrays, got {type(d).__name__}")
    verts = _array(pkl, d, "vertices", (None, 3), "f").astype(np.float64)
    N = len(verts)
    faces = _array(pkl, d, "faces_vert", (None, 3), "i").astype(np.int64)
    faces_tex = _array(pkl, d, "faces_tex", (len(faces), 3), "i").astype(np.int64)
    uvs = _array(pkl, d, "textures", (None, 2), "f").astype(np.float32)
    parents = _array(pkl, d, "parents", (None,), "i").astype(np.int64)
    J = len(parents)
    joints = _array(pkl, d, "t_pose_joints", (J, 3), "f").astype(np.float64)
    if faces.min() < 0 or faces.max() >= N:
        _fail(pkl, f"faces_vert indices outside [0,{N})")
    if faces_tex.min() < 0 or faces_tex.max() >= len(uvs):
        _fail(pkl, f"faces_tex indices outside [0,{len(uvs)})")
    if "skinning_weights" not in d or not sp.issparse(d["skinning_weights"]):
        _fail(pkl, "field 'skinning_weights' missing or not a scipy sparse matrix [J,N]")
    W = sp.csr_matrix(d["skinning_weights"], dtype=np.float64)
    if W.shape == (J, N):
        W = W.T.tocsr()
    if W.shape != (N, J):
        _fail(pkl, f"skinning_weights has shape {W.shape}, expected ({J},{N})")
    rs = np.asarray(W.sum(axis=1)).ravel()
    if np.any(rs <= 0):
        _fail(pkl, f"{int((rs <= 0).sum())} vertices have no skin weight")
    W = sp.diags(1.0 / rs) @ W
    if J != NUM_JOINTS:
        _fail(pkl, f"expected {NUM_JOINTS} joints, got {J}")
    if parents[0] != -1 or np.any(parents[1:] >= np.arange(1, J)):
        _fail(pkl, "parents must be a tree rooted at joint 0 with parents[j] < j")

    names_path = folder / "mouse_txt" / "joint_names.txt"
    try:
        names = names_path.read_text().split()
    except FileNotFoundError:
        raise FileNotFoundError(f"{names_path}: not found (140 joint names expected)") from None
    if len(names) != J:
        _fail(names_path, f"expected {J} joint names, got {len(names)}")
    _check_skeleton_chain(folder, joints, parents)
    bone_names, bone_of_joint = _read_bone_groups(folder)
    kp_spec = _read_keypoints(folder, N)
    extra = _extra_points(folder, verts)

    # -- frame conversion, asserted -----------------------------------------------------
    R = SOURCE_TO_PROJECT
    verts_p = verts @ R.T
    joints_p = joints @ R.T
    shift = np.array([-(verts_p[:, 0].min() + verts_p[:, 0].max()) / 2,
                      -(verts_p[:, 1].min() + verts_p[:, 1].max()) / 2,
                      -verts_p[:, 2].min()])
    verts_p += shift
    joints_p += shift
    eyes = [extra[k] @ R.T + shift for k in (22, 23) if k in extra]

    def kp(k):
        typ, ids = kp_spec[k]
        return (verts_p if typ == "V" else joints_p)[ids].mean(axis=0)
    snout, tail_base, ear_l, ear_r = kp(2), kp(5), kp(0), kp(1)
    if not (snout[0] > tail_base[0] and ear_l[1] > ear_r[1]):
        _fail(pkl, "after conversion the snout is not toward +X or the left ear not toward +Y: the "
                   "source frame differs from MAMMAL's (head -Y, left +X, up Z)")

    groups, seg = _joint_sets(names)
    regions = _regions(faces, W, names, verts_p, snout, eyes, mm_per_unit)
    keep = np.ones(len(faces), bool)
    if drop_internal:
        internal = [names.index(n) for n in INTERNAL_JOINTS if n in names]
        Wf = (W[faces[:, 0]] + W[faces[:, 1]] + W[faces[:, 2]])
        keep = ~np.isin(np.asarray(Wf.argmax(axis=1)).ravel(), internal)
    girth = np.array([names.index(n) for n in ("lumbar_vertebrae_1", "lumbar_vertebrae_2", "lumbar_vertebrae_3",
                                                "thoracic_vertebrae_0", "thoracic_vertebrae_1", "belly_stretch",
                                                "lumbar_vertebrae_0")], np.int64)
    return BodyModel(
        name="mammal", rest_vertices=verts_p, faces=faces[keep], joint_names=names, parents=parents,
        rest_joints=joints_p, skin_weights=W, groups=groups, segments=seg,
        bone_group_names=bone_names, bone_group_of_joint=bone_of_joint, girth_joints=girth,
        region_names=list(REGION_NAMES), face_regions=regions[keep], mm_per_unit=float(mm_per_unit),
        keypoint_names=list(DANNCE22_NAMES), keypoint_spec=kp_spec, uvs=uvs, faces_uv=faces_tex[keep],
        source=str(folder),
    )
