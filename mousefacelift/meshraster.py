"""A small vectorised z-buffer triangle rasterizer (numpy, CPU).

Why it exists: pose contact sheets and the alpha-vs-projected-mesh check in synth.verify
need "which face is visible at each pixel, at what depth" without Blender or a GPU.

Camera convention is the project's (docs/architecture.md §3): OpenCV pinhole, x right, y down,
z forward; ``w2c`` maps world to camera; pixel (u, v) covers [u, u+1) x [v, v+1) and is
sampled at its centre (u + 0.5, v + 0.5). Depth is planar camera z (not ray length),
interpolated perspective-correctly. Triangles with any vertex at z <= ``near`` are
dropped rather than clipped (fine for objects in front of the camera, which is the use).
Both windings are drawn (no back-face culling), so open or inside-out meshes still fill.
"""
from __future__ import annotations

import numpy as np

__all__ = ["rasterize", "project_points", "face_normals"]


def project_points(points_world: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [N,3] -> (pixel coordinates [N,2] in the continuous pixel frame, camera z [N])."""
    p = np.asarray(points_world, dtype=np.float64)
    w2c = np.asarray(w2c, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    cam = p @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ K.T)[:, :2] / z[:, None]
    return uv, z


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit face normals [F,3] (right-hand winding); degenerate faces get zeros."""
    v = np.asarray(vertices, dtype=np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def _check_inputs(vertices, faces, K, w2c, width, height):
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"rasterize: vertices must be [N,3], got shape {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"rasterize: faces must be [F,3], got shape {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"rasterize: face indices must lie in [0, {len(vertices)}), got "
                         f"[{faces.min()}, {faces.max()}]")
    if np.asarray(K).shape != (3, 3):
        raise ValueError(f"rasterize: K must be 3x3, got shape {np.asarray(K).shape}")
    if np.asarray(w2c).shape not in ((4, 4), (3, 4)):
        raise ValueError(f"rasterize: w2c must be 4x4 or 3x4, got shape {np.asarray(w2c).shape}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"rasterize: width and height must be positive, got {width}x{height}")
    return vertices, faces.astype(np.int64)


def rasterize(vertices_world: np.ndarray, faces: np.ndarray, K: np.ndarray, w2c: np.ndarray,
              width: int, height: int, near: float = 1e-6,
              max_fragments: int = 4_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterize a triangle mesh; returns (depth [H,W] float32 planar z with 0 where empty,
    face_id [H,W] int64 with -1 where empty, mask [H,W] bool).

    Triangles are bucketed by the size of their pixel bounding box so that each bucket
    enumerates a fixed square of candidate pixels per triangle (vectorised, bounded waste);
    the nearest fragment per pixel wins. ``max_fragments`` bounds memory per chunk.
    """
    vertices, faces = _check_inputs(vertices_world, faces, K, w2c, width, height)
    W, H = int(width), int(height)
    depth = np.zeros((H, W), np.float32)
    face_id = np.full((H, W), -1, np.int64)
    if len(faces) == 0:
        return depth, face_id, np.zeros((H, W), bool)

    uv, z = project_points(vertices, K, np.asarray(w2c)[:3] if np.asarray(w2c).shape == (3, 4) else w2c)
    tri_uv = uv[faces]                       # [F,3,2]
    tri_z = z[faces]                         # [F,3]
    ok = np.all(tri_z > near, axis=1) & np.all(np.isfinite(tri_uv), axis=(1, 2))
    tri_uv = np.where(ok[:, None, None], tri_uv, 0.0)      # excluded faces: keep casts finite
    # pixel-centre bounding boxes: pixel u is covered when u + 0.5 in [min, max]
    lo = np.ceil(tri_uv.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(tri_uv.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi[:, 0] = np.minimum(hi[:, 0], W - 1)
    hi[:, 1] = np.minimum(hi[:, 1], H - 1)
    ok &= np.all(hi >= lo, axis=1)
    # signed doubled area; degenerate triangles cover nothing
    e1 = tri_uv[:, 1] - tri_uv[:, 0]
    e2 = tri_uv[:, 2] - tri_uv[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok &= np.abs(area) > 1e-12
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        return depth, face_id, np.zeros((H, W), bool)

    size = np.max(hi[idx] - lo[idx] + 1, axis=1)
    bucket = np.ceil(np.log2(np.maximum(size, 1))).astype(np.int64)
    best_z = np.full(H * W, np.inf)
    best_f = np.full(H * W, -1, np.int64)
    for b in np.unique(bucket):
        tris = idx[bucket == b]
        k = 1 << int(b)
        per_chunk = max(1, max_fragments // (k * k))
        offs = np.arange(k)
        for start in range(0, len(tris), per_chunk):
            t = tris[start:start + per_chunk]
            px = lo[t, 0][:, None, None] + offs[None, None, :]          # [T,1,k]
            py = lo[t, 1][:, None, None] + offs[None, :, None]          # [T,k,1]
            inside_box = (px <= hi[t, 0][:, None, None]) & (py <= hi[t, 1][:, None, None])
            sx = px + 0.5
            sy = py + 0.5
            a = tri_uv[t]                                                # [T,3,2]
            inv_area = 1.0 / area[t][:, None, None]
            # barycentric weights of vertices 0,1,2 at the sample
            w0 = ((a[:, 1, 0, None, None] - sx) * (a[:, 2, 1, None, None] - sy)
                  - (a[:, 1, 1, None, None] - sy) * (a[:, 2, 0, None, None] - sx)) * inv_area
            w1 = ((a[:, 2, 0, None, None] - sx) * (a[:, 0, 1, None, None] - sy)
                  - (a[:, 2, 1, None, None] - sy) * (a[:, 0, 0, None, None] - sx)) * inv_area
            w2 = 1.0 - w0 - w1
            eps = -1e-9
            cover = inside_box & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
            if not cover.any():
                continue
            iz = 1.0 / tri_z[t]                                          # perspective-correct depth
            inv_depth = (w0 * iz[:, 0, None, None] + w1 * iz[:, 1, None, None] + w2 * iz[:, 2, None, None])
            ti, yi, xi = np.nonzero(cover)
            pix = (py[ti, yi, 0]) * W + px[ti, 0, xi]
            dz = 1.0 / inv_depth[ti, yi, xi]
            fid = t[ti]
            # nearest fragment per pixel within the chunk, then merge with the buffer
            order = np.lexsort((dz, pix))
            pix, dz, fid = pix[order], dz[order], fid[order]
            first = np.ones(len(pix), bool)
            first[1:] = pix[1:] != pix[:-1]
            pix, dz, fid = pix[first], dz[first], fid[first]
            closer = dz < best_z[pix]
            best_z[pix[closer]] = dz[closer]
            best_f[pix[closer]] = fid[closer]
    mask = best_f >= 0
    depth.reshape(-1)[mask] = best_z[mask].astype(np.float32)
    face_id.reshape(-1)[:] = best_f
    return depth, face_id, mask.reshape(H, W)
