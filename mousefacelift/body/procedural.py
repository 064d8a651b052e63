"""The built-in mouse: an articulated adult mouse generated in code (no asset files).

Why: the project must run end to end without the MAMMAL files (no licence, user-provided).
This model offers the same structure (same semantic groups, sampler segments, regions and
DANNCE-22 landmarks), so the sampler and renderers treat both alike.

Construction, in millimetres in the project world (head +X, left +Y, Z up), then divided by
``MM_PER_UNIT``: a body-and-head shell swept along the spine (super-elliptic sections
whose width/height profile gives rump, flank, shoulders, skull and tapering snout), cupped
ears, eyes, four limbs as swept tubes with flattened paws and individual digits, and a
long tapered tail lying on the ground. Every part is a closed surface; parts overlap where
they join (the renderer sees one silhouette). Skin weights are inverse-distance weights to
each part's candidate bones (smooth across joints), regions come from construction.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.interpolate import CubicSpline, PchipInterpolator

from .model import DANNCE22_NAMES, REGION_NAMES, BodyModel

__all__ = ["build_procedural_mouse", "MM_PER_UNIT"]

MM_PER_UNIT = 100.0
R_FUR, R_EAR, R_PAW, R_TAIL, R_NOSE, R_EYE = range(6)


# -- geometry helpers ----------------------------------------------------------------------
class _Mesh:
    """Accumulates closed parts with their per-vertex bone candidates and per-face regions."""

    def __init__(self):
        self.v, self.f, self.reg, self.bones, self.power = [], [], [], [], []
        self.n = 0

    def add(self, verts, faces, regions, bones, power=4.0):
        self.v.append(np.asarray(verts, float))
        self.f.append(np.asarray(faces, np.int64) + self.n)
        self.reg.append(np.broadcast_to(np.asarray(regions, np.int32), (len(faces),)).copy())
        self.bones.append((self.n, self.n + len(verts), bones, power))
        self.n += len(verts)
        return self.n - len(verts)


def _grid_faces(rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """Quads between consecutive closed rings (cols around), split into triangles."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")
    a = offset + r * cols + c
    b = offset + r * cols + (c + 1) % cols
    cc = a + cols
    d = b + cols
    return np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, cc], -1).reshape(-1, 3)])


def _cap(ring_start: int, cols: int, pole: int, flip: bool) -> np.ndarray:
    c = np.arange(cols)
    f = np.stack([np.full(cols, pole), ring_start + (c + 1) % cols, ring_start + c], -1)
    return f[:, ::-1] if flip else f


def _closed_sweep(rings: np.ndarray, start_pole: np.ndarray, end_pole: np.ndarray):
    """Rings [S,C,3] plus two pole points -> a closed triangle mesh (outward winding)."""
    S, C, _ = rings.shape
    verts = np.concatenate([rings.reshape(-1, 3), start_pole[None], end_pole[None]])
    faces = [_grid_faces(S, C), _cap(0, C, S * C, flip=False), _cap((S - 1) * C, C, S * C + 1, flip=True)]
    faces = np.concatenate(faces)
    return verts, _orient_outward(verts, faces)


def _orient_outward(verts, faces):
    """Flip all faces if the signed volume is negative (consistent winding assumed)."""
    v = verts[faces]
    vol = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()
    return faces if vol > 0 else faces[:, ::-1].copy()


def _frames_along(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tangents and parallel-transported normals/binormals along a polyline."""
    t = np.gradient(points, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(t[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    n = np.cross(t[0], ref)
    n /= np.linalg.norm(n)
    ns = [n]
    for i in range(1, len(points)):
        n = ns[-1] - t[i] * (ns[-1] @ t[i])
        n /= np.linalg.norm(n)
        ns.append(n)
    ns = np.array(ns)
    return t, ns, np.cross(t, ns)


def _tube(ctrl: np.ndarray, radii: np.ndarray, samples: int, cols: int, flat: np.ndarray | None = None,
          up_hint=np.array([0.0, 0.0, 1.0])):
    """A closed tube through control points (Catmull-Rom-like cubic), radius per control point;
    ``flat`` (per control point) squashes the section along the world-up-ish direction (paws)."""
    ctrl = np.asarray(ctrl, float)
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))])
    spline = CubicSpline(s, ctrl, bc_type="natural")
    u = np.linspace(0, s[-1], samples)
    pts = spline(u)
    r = PchipInterpolator(s, radii)(u)
    fl = np.ones(samples) if flat is None else PchipInterpolator(s, flat)(u)
    t, n, b = _frames_along(pts)
    # rotate frames so that "n" is as close to up_hint as possible (for flattening)
    up = up_hint - t * (t @ up_hint)[:, None]
    upn = np.linalg.norm(up, axis=1, keepdims=True)
    ok = upn[:, 0] > 1e-6
    n = np.where(ok[:, None], up / np.maximum(upn, 1e-9), n)
    b = np.cross(t, n)
    ang = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    rings = (pts[:, None] + r[:, None, None] * (fl[:, None, None] * np.cos(ang)[None, :, None] * n[:, None]
                                                 + np.sin(ang)[None, :, None] * b[:, None]))
    start = pts[0] - t[0] * r[0] * 0.6
    end = pts[-1] + t[-1] * r[-1] * 0.6
    verts, faces = _closed_sweep(rings, start, end)
    return verts, faces, pts, u / s[-1]


def _ellipsoid(center, radii, axes, rows=10, cols=16):
    th = np.linspace(0, np.pi, rows + 2)[1:-1]
    ph = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    local = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], -1) * radii
    rings = center + local @ np.asarray(axes).T
    top = center + np.asarray(axes)[:, 2] * radii[2]
    bot = center - np.asarray(axes)[:, 2] * radii[2]
    verts, faces = _closed_sweep(rings, top, bot)
    return verts, faces


# -- the mouse ----------------------------------------------------------------------------
# Body-and-head profile (mm): x station, centre height, half width, upper and lower half height.
_PROFILE = np.array([
    # x     cz    w     hu    hd
    [-38.0, 18.5, 13.0, 13.5, 12.0],
    [-30.0, 19.5, 15.5, 15.0, 13.5],
    [-22.0, 19.5, 16.0, 15.5, 13.8],
    [-12.0, 18.8, 15.5, 14.5, 13.5],
    [0.0, 17.8, 14.5, 13.0, 12.5],
    [9.0, 17.0, 12.5, 11.5, 11.5],
    [16.0, 16.8, 10.5, 10.2, 10.2],
    [22.0, 17.4, 10.8, 10.8, 9.8],
    [29.0, 17.2, 10.5, 10.0, 9.0],
    [35.0, 16.2, 8.6, 8.2, 7.6],
    [41.0, 14.8, 6.2, 6.0, 5.6],
    [46.0, 13.8, 4.0, 4.0, 3.8],
])
_X_TAIL_END, _X_NOSE = -47.0, 50.5


def _body_shell(n_along=120, cols=56):
    s = np.linspace(0, 1, n_along)
    x = _X_TAIL_END + (_X_NOSE - _X_TAIL_END) * (1 - np.cos(np.pi * s)) / 2
    x = x[1:-1]
    p = PchipInterpolator(_PROFILE[:, 0], _PROFILE[:, 1:], extrapolate=True)
    prof = p(np.clip(x, _PROFILE[0, 0], _PROFILE[-1, 0]))
    cz, w, hu, hd = prof.T
    # rounded rump and nose: elliptic envelopes beyond the profile's ends
    rump = x < -38
    e = np.ones_like(x)
    e[rump] = np.sqrt(np.clip(1 - ((-38 - x[rump]) / (-38 - _X_TAIL_END)) ** 2, 0, 1))
    nose = x > 46
    e[nose] = np.clip(1 - ((x[nose] - 46) / (_X_NOSE - 46)) ** 2, 0, 1) ** 0.45
    cz = np.where(nose, 13.8 - (x - 46) * 0.25, cz)
    w, hu, hd = w * e, hu * e, hd * e
    ang = np.linspace(0, 2 * np.pi, cols, endpoint=False)       # 0 = top, pi/2 = left (+y)
    c, sn = np.cos(ang), np.sin(ang)
    expo = 2 / 2.4                                              # super-ellipse: fuller flanks
    yy = np.sign(sn) * np.abs(sn) ** expo
    zz = np.sign(c) * np.abs(c) ** expo
    h = np.where(zz[None] > 0, hu[:, None], hd[:, None])
    rings = np.stack([np.broadcast_to(x[:, None], (len(x), cols)), w[:, None] * yy[None],
                      cz[:, None] + h * zz[None]], -1)
    start = np.array([_X_TAIL_END, 0.0, 18.5])
    end = np.array([_X_NOSE, 0.0, 13.8 - (_X_NOSE - 46) * 0.25])
    verts, faces = _closed_sweep(rings, start, end)
    return verts, faces, (x, cz, w, hu, hd)


def _ear(base, outward, up, size=(10.5, 11.5), cup=2.2, thick=0.45, rings=7, cols=28):
    """A cupped, thin, closed ear shell rising from ``base`` (concave side facing ``outward``)."""
    up = np.asarray(up, float) / np.linalg.norm(up)
    nrm = np.asarray(outward, float)
    nrm = nrm - up * (nrm @ up)
    nrm /= np.linalg.norm(nrm)
    side = np.cross(up, nrm)
    a, b = size[0] / 2, size[1] / 2
    r = np.linspace(0, 1, rings + 1)[1:]
    ph = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    R, P = np.meshgrid(r, ph, indexing="ij")
    lx, ly = R * np.cos(P) * a, R * np.sin(P) * b + b * 0.92       # centred above the base
    depth = cup * (1 - R ** 2)                                       # cupped toward -nrm (concave front)
    centre = base
    surf = centre + lx[..., None] * side + ly[..., None] * up - depth[..., None] * nrm
    front = surf + thick / 2 * nrm * (1 - 0.5 * R[..., None])
    back = surf - thick / 2 * nrm * (1 - 0.5 * R[..., None])
    # front rings inward->rim then back rim->inward: one closed sweep with two poles
    rings_all = np.concatenate([front, back[::-1]], axis=0)
    p_front = centre + b * 0.92 * up - cup * nrm + thick / 2 * nrm
    p_back = centre + b * 0.92 * up - cup * nrm - thick / 2 * nrm
    verts, faces = _closed_sweep(rings_all, p_front, p_back)
    tip = centre + up * (2 * b * 0.92) - 0.3 * cup * nrm
    return verts, faces, tip


def _paw_faces(v, f, pts, joint_point):
    """Faces whose nearest centreline sample lies distal to ``joint_point`` are paw skin."""
    c = v[f].mean(axis=1)
    k0 = np.argmin(np.linalg.norm(pts - joint_point, axis=1))
    near = np.argmin(np.linalg.norm(c[:, None] - pts[None], axis=-1), axis=1)
    return np.where(near >= k0, R_PAW, R_FUR).astype(np.int32)


def _seg_dist(p, a, b):
    ab = b - a
    t = np.clip(((p[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)[None], 0, 1)
    return np.linalg.norm(p[:, None] - (a[None] + t[..., None] * ab[None]), axis=-1)


def build_procedural_mouse() -> BodyModel:
    """Generate the built-in mouse (deterministic; about 9k vertices)."""
    J: list[tuple[str, str | None, np.ndarray]] = []

    def joint(name, parent, pos):
        J.append((name, parent, np.asarray(pos, float)))

    # spine and head
    joint("pelvis", None, [-24, 0, 18])
    joint("lumbar_0", "pelvis", [-14, 0, 19])
    joint("lumbar_1", "lumbar_0", [-3, 0, 18.5])
    joint("thoracic_0", "lumbar_1", [7, 0, 18])
    joint("thoracic_1", "thoracic_0", [15, 0, 18])
    joint("neck", "thoracic_1", [21, 0, 18.5])
    joint("skull", "neck", [27, 0, 19])
    joint("snout", "skull", [39, 0, 16])
    joint("snout_end", "snout", [_X_NOSE, 0, 13.2])
    joint("jaw", "skull", [29, 0, 11.5])
    joint("jaw_end", "jaw", [45, 0, 11.5])
    # ears (positions of tips filled in after the ear geometry)
    ear_base = {"l": np.array([23.5, 6.5, 25.5]), "r": np.array([23.5, -6.5, 25.5])}
    for s in "lr":
        joint(f"ear_{s}", "skull", ear_base[s])
        joint(f"ear_{s}_end", f"ear_{s}", ear_base[s] + [0, 0, 7])
    # tail: a centreline from inside the rump, curving down to lie on the ground
    tail_ctrl = np.array([[-38, 0, 15.5], [-45, 0, 13.5], [-53, 0, 8.5], [-62, 0, 3.6], [-75, 2.5, 2.2],
                          [-92, 6.0, 1.9], [-108, 6.5, 1.7], [-122, 3.5, 1.5], [-134, 0.0, 1.3]])
    tail_r = np.array([3.2, 2.3, 2.0, 1.75, 1.5, 1.2, 0.95, 0.75, 0.6])
    tv, tf, tpts, tu = _tube(tail_ctrl, tail_r, samples=110, cols=12)
    seg_len = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(tpts, axis=0), axis=1))])
    base_s = np.interp(-45.0, tpts[::-1, 0], seg_len[::-1])
    tail_js = np.interp(np.linspace(base_s, seg_len[-1], 11), seg_len, np.arange(len(tpts)))
    tail_pos = np.array([tpts[int(np.floor(i))] + (i - np.floor(i)) * (tpts[min(int(np.floor(i)) + 1, len(tpts) - 1)]
                                                                       - tpts[int(np.floor(i))]) for i in tail_js])
    for k in range(10):
        joint(f"tail_{k}", "pelvis" if k == 0 else f"tail_{k - 1}", tail_pos[k])
    joint("tail_end", "tail_9", tail_pos[10])
    # limbs
    for s, sy in (("l", 1.0), ("r", -1.0)):
        joint(f"hip_{s}", "pelvis", [-24, 9 * sy, 13])
        joint(f"knee_{s}", f"hip_{s}", [-14, 14.5 * sy, 8.5])
        joint(f"ankle_{s}", f"knee_{s}", [-27, 13.5 * sy, 2.6])
        joint(f"toes_{s}", f"ankle_{s}", [-13.5, 14.5 * sy, 1.1])
        joint(f"toes_{s}_end", f"toes_{s}", [-9.8, 14.8 * sy, 0.7])
        joint(f"scapula_{s}", "thoracic_0", [7, 6 * sy, 21])
        joint(f"shoulder_{s}", f"scapula_{s}", [12, 8.5 * sy, 11])
        joint(f"elbow_{s}", f"shoulder_{s}", [6, 10.5 * sy, 6.5])
        joint(f"wrist_{s}", f"elbow_{s}", [13, 9.5 * sy, 2.2])
        joint(f"fingers_{s}", f"wrist_{s}", [16, 9.6 * sy, 1.1])
        joint(f"fingers_{s}_end", f"fingers_{s}", [18.6, 9.8 * sy, 0.6])

    names = [n for n, _, _ in J]
    idx = {n: i for i, n in enumerate(names)}
    pos = np.array([p for _, _, p in J])
    M = _Mesh()

    def bone(a, b=None):
        """(joint id driving it, start, end) of the bone from joint a toward b (or its child)."""
        return (idx[a], pos[idx[a]], pos[idx[b]] if b else pos[idx[a]])

    spine_bones = [bone("pelvis", "lumbar_0"), bone("lumbar_0", "lumbar_1"), bone("lumbar_1", "thoracic_0"),
                   bone("thoracic_0", "thoracic_1"), bone("thoracic_1", "neck"), bone("neck", "skull"),
                   bone("skull", "snout"), bone("snout", "snout_end")]
    # body shell ----------------------------------------------------------------------
    bv, bf, (bx, bcz, bw, bhu, bhd) = _body_shell()
    centers = bv[bf].mean(axis=1)
    breg = np.where(centers[:, 0] > 49.0, R_NOSE, R_FUR)
    body_bones = spine_bones + [bone("jaw", "jaw_end"), bone("pelvis", "tail_0")]
    for s in "lr":
        body_bones += [bone(f"hip_{s}", f"knee_{s}"), bone(f"scapula_{s}", f"shoulder_{s}"),
                       bone(f"shoulder_{s}", f"elbow_{s}")]
    body_off = M.add(bv, bf, breg, body_bones, power=4.0)

    # eyes: on the head surface, slightly sunk in
    for s, sy in (("l", 1.0), ("r", -1.0)):
        ex = 36.0
        i = np.argmin(np.abs(bx - ex))
        th = np.deg2rad(58.0)
        ys, zs = np.sin(th) ** (2 / 2.4), np.cos(th) ** (2 / 2.4)
        surf = np.array([ex, sy * bw[i] * ys, bcz[i] + bhu[i] * zs])
        nrm = np.array([0.25, sy * np.sin(th), np.cos(th)])
        nrm /= np.linalg.norm(nrm)
        rr = 2.1
        c = surf - nrm * rr * 0.45
        ax = np.stack([np.cross(nrm, [0, 0, 1]) / np.linalg.norm(np.cross(nrm, [0, 0, 1])), np.zeros(3), nrm], 1)
        ax[:, 1] = np.cross(ax[:, 2], ax[:, 0])
        v, f = _ellipsoid(c, np.array([rr, rr * 0.85, rr]), ax, rows=8, cols=14)
        M.add(v, f, R_EYE, [bone("skull")])
    # ears
    for s, sy in (("l", 1.0), ("r", -1.0)):
        outward = np.array([0.75, sy * 0.65, 0.0])
        up = np.array([-0.2, sy * 0.75, 1.0])
        v, f, tip = _ear(ear_base[s] + [0, 0, -1.5], outward, up)
        pos[idx[f"ear_{s}_end"]] = tip
        M.add(v, f, R_EAR, [bone(f"ear_{s}")])
    # tail
    treg = np.where(tv[tf].mean(axis=1)[:, 0] > -46.5, R_FUR, R_TAIL)
    tail_bones = [bone(f"tail_{k}", f"tail_{k + 1}" if k < 9 else "tail_end") for k in range(10)]
    M.add(tv, tf, treg, tail_bones + [bone("pelvis", "tail_0")], power=6.0)
    # limbs with paws and digits
    for s, sy in (("l", 1.0), ("r", -1.0)):
        P = lambda n: pos[idx[f"{n}_{s}"]]   # noqa: E731
        hind = np.array([P("hip") + [0, -2 * sy, 4], P("hip"), P("knee"), P("ankle"),
                         (P("ankle") + P("toes")) / 2 + [0, 0, -0.5], P("toes")])
        v, f, pts, u = _tube(hind, np.array([6.5, 6.2, 4.2, 1.6, 1.7, 1.6]), samples=44, cols=18,
                             flat=np.array([1, 1, 1, 0.7, 0.55, 0.55]))
        reg = _paw_faces(v, f, pts, hind[3] + (hind[2] - hind[3]) * 0.12)
        M.add(v, f, reg, [bone(f"hip_{s}", f"knee_{s}"), bone(f"knee_{s}", f"ankle_{s}"),
                          bone(f"ankle_{s}", f"toes_{s}"), bone("pelvis", "lumbar_0")], power=4.0)
        fore = np.array([P("shoulder") + [0, -1.5 * sy, 4], P("shoulder"), P("elbow"), P("wrist"), P("fingers")])
        v, f, pts, u = _tube(fore, np.array([4.5, 4.2, 2.6, 1.25, 1.3]), samples=36, cols=16,
                             flat=np.array([1, 1, 1, 0.75, 0.55]))
        reg = _paw_faces(v, f, pts, fore[3] + (fore[2] - fore[3]) * 0.1)
        M.add(v, f, reg, [bone(f"scapula_{s}", f"shoulder_{s}"), bone(f"shoulder_{s}", f"elbow_{s}"),
                          bone(f"elbow_{s}", f"wrist_{s}"), bone(f"wrist_{s}", f"fingers_{s}")], power=4.0)
        # digits: fanned out from the paw front, tiny tapered tubes, rigid with their segment
        for base, tipj, n_dig, length, rad, spread in (("toes", "toes", 5, 4.2, 0.55, 60.0),
                                                       ("fingers", "fingers", 4, 2.8, 0.42, 70.0)):
            b0 = P(base)
            fwd = P(f"{tipj}") - P("ankle" if base == "toes" else "wrist")
            fwd[2] = 0
            fwd /= np.linalg.norm(fwd)
            for k, a in enumerate(np.linspace(-spread / 2, spread / 2, n_dig)):
                a = np.deg2rad(a) * sy
                d = np.array([fwd[0] * np.cos(a) - fwd[1] * np.sin(a), fwd[0] * np.sin(a) + fwd[1] * np.cos(a), 0])
                lat = np.cross([0, 0, 1], d)
                start = b0 + lat * (k - (n_dig - 1) / 2) * 0.35 * rad
                ctrl = np.array([start - d * 0.8, start + d * length * 0.5 + [0, 0, 0.15],
                                 start + d * length + [0, 0, -0.2]])
                ln = 0.8 * length if k in (0, n_dig - 1) else length
                ctrl[2] = start + d * ln + [0, 0, -0.2]
                v, f, _, _ = _tube(ctrl, np.array([rad, rad * 0.85, rad * 0.55]), samples=7, cols=8)
                M.add(v, f, R_PAW, [bone(f"{base}_{s}")])

    verts = np.concatenate(M.v)
    faces = np.concatenate(M.f)
    regions = np.concatenate(M.reg)
    # skin weights: inverse-distance to each part's candidate bones, top 3, normalised
    rows, cols, vals = [], [], []
    for start, stop, bones, power in M.bones:
        p = verts[start:stop]
        jid = np.array([b[0] for b in bones])
        if len(bones) == 1:
            rows.append(np.arange(start, stop)); cols.append(np.full(stop - start, jid[0])); vals.append(np.ones(stop - start))
            continue
        d = _seg_dist(p, np.array([b[1] for b in bones]), np.array([b[2] for b in bones]))
        w = 1.0 / np.maximum(d, 0.3) ** power
        k = min(3, len(bones))
        top = np.argsort(-w, axis=1)[:, :k]
        wt = np.take_along_axis(w, top, axis=1)
        wt /= wt.sum(axis=1, keepdims=True)
        r = np.repeat(np.arange(start, stop), k)
        rows.append(r); cols.append(jid[top].ravel()); vals.append(wt.ravel())
    Wm = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(len(verts), len(names))).tocsr()
    Wm.sum_duplicates()
    Wm = sp.diags(1.0 / np.asarray(Wm.sum(axis=1)).ravel()) @ Wm

    # ground the model: lowest point on z = 0, centred over the origin in x/y
    shift = np.array([-(verts[:, 0].min() + verts[:, 0].max()) / 2, -(verts[:, 1].min() + verts[:, 1].max()) / 2,
                      -verts[:, 2].min()])
    verts = (verts + shift) / MM_PER_UNIT
    pos = (pos + shift) / MM_PER_UNIT
    parents = np.array([-1 if p is None else idx[p] for _, p, _ in J], np.int64)

    def js(*n):
        return np.array([idx[x] for x in n], np.int64)
    segments = {
        "spine_lumbar": js("lumbar_0", "lumbar_1"), "spine_thoracic": js("thoracic_0", "thoracic_1"),
        "neck": js("neck"), "head": js("skull"), "jaw": js("jaw"),
        "ear_l": js("ear_l"), "ear_r": js("ear_r"), "tail": js(*[f"tail_{k}" for k in range(10)]),
    }
    for s in "lr":
        segments.update({f"hip_{s}": js(f"hip_{s}"), f"knee_{s}": js(f"knee_{s}"), f"ankle_{s}": js(f"ankle_{s}"),
                         f"toes_{s}": js(f"toes_{s}"), f"scapula_{s}": js(f"scapula_{s}"),
                         f"shoulder_{s}": js(f"shoulder_{s}"), f"elbow_{s}": js(f"elbow_{s}"),
                         f"wrist_{s}": js(f"wrist_{s}"), f"fingers_{s}": js(f"fingers_{s}")})
    groups = {
        "spine": js("pelvis", "lumbar_0", "lumbar_1", "thoracic_0", "thoracic_1"),
        "neck_head": js("neck", "skull", "snout", "snout_end", "jaw", "jaw_end"),
        "tail": js(*[f"tail_{k}" for k in range(10)], "tail_end"),
        "ears": js("ear_l", "ear_l_end", "ear_r", "ear_r_end"),
        "jaw": js("jaw", "jaw_end"),
        "digits": js("toes_l", "toes_l_end", "toes_r", "toes_r_end", "fingers_l", "fingers_l_end",
                     "fingers_r", "fingers_r_end"),
    }
    for s in "lr":
        groups[f"fore_{s}"] = js(f"scapula_{s}", f"shoulder_{s}", f"elbow_{s}", f"wrist_{s}", f"fingers_{s}",
                                 f"fingers_{s}_end")
        groups[f"hind_{s}"] = js(f"hip_{s}", f"knee_{s}", f"ankle_{s}", f"toes_{s}", f"toes_{s}_end")
    bone_groups = ["spine", "neck", "head", "tail", "thigh", "shin", "foot", "upper_arm", "forearm", "hand", "ear"]
    bg = np.full(len(names), -1, np.int64)
    assign = {"lumbar_0": "spine", "lumbar_1": "spine", "thoracic_0": "spine", "thoracic_1": "spine",
              "neck": "neck", "skull": "neck", "snout": "head", "snout_end": "head", "jaw_end": "head"}
    for k in range(10):
        assign[f"tail_{k + 1}" if k < 9 else "tail_end"] = "tail"
    for s in "lr":
        assign.update({f"knee_{s}": "thigh", f"ankle_{s}": "shin", f"toes_{s}": "foot", f"toes_{s}_end": "foot",
                       f"elbow_{s}": "upper_arm", f"wrist_{s}": "forearm", f"fingers_{s}": "hand",
                       f"fingers_{s}_end": "hand", f"ear_{s}_end": "ear"})
    for n, g in assign.items():
        bg[idx[n]] = bone_groups.index(g)

    # DANNCE-22 landmarks: dorsal surface vertices for the spine points, joints elsewhere
    body_v = verts[body_off:body_off + len(bv)]

    def dorsal(x_mm):
        x = (x_mm + shift[0]) / MM_PER_UNIT
        cand = np.nonzero(np.abs(body_v[:, 0] - x) < 2.5 / MM_PER_UNIT)[0]
        return np.array([body_off + cand[np.argmax(body_v[cand, 2])]])
    kp = {
        "EarL": ("J", js("ear_l", "ear_l_end")), "EarR": ("J", js("ear_r", "ear_r_end")),
        "Snout": ("J", js("snout_end")), "SpineF": ("V", dorsal(9.0)), "SpineM": ("V", dorsal(-8.0)),
        "Tail(base)": ("J", js("tail_0")), "Tail(mid)": ("J", js("tail_4", "tail_5")), "Tail(end)": ("J", js("tail_end")),
    }
    for s, S in (("l", "L"), ("r", "R")):
        kp.update({f"Forepaw{S}": ("J", js(f"fingers_{s}")), f"Wrist{S}": ("J", js(f"wrist_{s}")),
                   f"Elbow{S}": ("J", js(f"elbow_{s}")), f"Shoulder{S}": ("J", js(f"shoulder_{s}")),
                   f"Hindpaw{S}": ("J", js(f"toes_{s}")), f"Ankle{S}": ("J", js(f"ankle_{s}")),
                   f"Knee{S}": ("J", js(f"knee_{s}"))})
    return BodyModel(
        name="procedural", rest_vertices=verts, faces=faces, joint_names=names, parents=parents,
        rest_joints=pos, skin_weights=Wm, groups=groups, segments=segments, bone_group_names=bone_groups,
        bone_group_of_joint=bg, girth_joints=js("pelvis", "lumbar_0", "lumbar_1", "thoracic_0"),
        region_names=list(REGION_NAMES), face_regions=regions, mm_per_unit=MM_PER_UNIT,
        keypoint_names=list(DANNCE22_NAMES), keypoint_spec=[kp[n] for n in DANNCE22_NAMES],
        source="built-in procedural mouse",
    )
