"""Pure-torch differentiable EWA Gaussian splatting: the CPU reference renderer.

Why it exists: gsplat needs CUDA, but the model, the losses and the tests must run (and
train a small model) on a CPU. This follows the 3DGS rasterizer step by step so that it
agrees with gsplat's ``rasterization(..., rasterize_mode="classic")``:

1. 3D covariance ``R S S^T R^T`` from scale + quaternion (wxyz).
2. Projection: camera-space mean, the perspective Jacobian (with gsplat's 1.3x frustum
   clamp on x/z, y/z), 2D covariance ``J W Σ W^T J^T + 0.3 I`` (the 0.3 px² low-pass).
3. Screen-space bounding radius ``ceil(3 sqrt(λ_max))`` -> the tiles each Gaussian touches.
4. (image, tile, depth)-sorted Gaussian/tile pairs, gathered per tile into a padded
   [tiles, M, pixels] block; alpha = min(0.99, o·exp(-½ dᵀΣ⁻¹d)), alphas below 1/255
   skipped; front-to-back transmittance as an exclusive cumulative product (a cumsum of
   log(1-α)), contributions stop once transmittance would fall below 1e-4 (3DGS early-out).

Everything is vectorised over all images (samples x views) at once; only the tile blocks
are processed in chunks (at most ``block_elements`` tile-Gaussian-pixel triples at a time) so memory stays bounded, and with
``checkpoint_chunks`` their activations are recomputed in backward instead of kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["RasterSettings", "quat_to_rotmat", "project_gaussians", "rasterize_projected", "eval_sh"]

ALPHA_MIN = 1.0 / 255.0        # 3DGS: contributions below this are skipped
ALPHA_MAX = 0.99               # 3DGS: alpha clamp, keeps 1-alpha away from 0
T_MIN = 1e-4                   # 3DGS: stop blending once transmittance would drop below this
FRUSTUM_CLAMP = 1.3            # 3DGS/gsplat: clamp x/z, y/z to 1.3x the half field of view
SIGMA_EXTENT = 3.0             # bounding radius in standard deviations


@dataclass(frozen=True)
class RasterSettings:
    """Knobs of the reference rasterizer (defaults match 3DGS / gsplat classic mode)."""

    eps2d: float = 0.3          # low-pass filter added to the 2D covariance, px²
    tile_size: int = 8          # pixels per tile side
    block_elements: int = 1 << 22  # (tiles x Gaussians x pixels) evaluated per block: the memory bound
    checkpoint_chunks: bool = True  # recompute tile blocks in backward instead of storing them


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Quaternions (w, x, y, z) [...,4] -> rotation matrices [...,3,3] (normalised first)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


# Real spherical-harmonic constants (the 3DGS ``sh_utils`` basis, degrees 0..3).
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate SH colour coefficients [...,K,3] along unit directions [...,3] -> [...,3]
    (without the +0.5 offset). Degrees 0..3."""
    K = sh.shape[-2]
    out = 0.28209479177387814 * sh[..., 0, :]
    if K == 1:
        return out
    if K not in (4, 9, 16):
        raise ValueError(f"eval_sh supports SH degrees 0..3 (K = 1, 4, 9, 16 coefficients), got K={K}")
    x, y, z = (dirs[..., i:i + 1] for i in range(3))
    out = out - _C1 * y * sh[..., 1, :] + _C1 * z * sh[..., 2, :] - _C1 * x * sh[..., 3, :]
    if K > 4:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out = (out + _C2[0] * xy * sh[..., 4, :] + _C2[1] * yz * sh[..., 5, :]
               + _C2[2] * (2 * zz - xx - yy) * sh[..., 6, :] + _C2[3] * xz * sh[..., 7, :]
               + _C2[4] * (xx - yy) * sh[..., 8, :])
        if K > 9:
            out = (out + _C3[0] * y * (3 * xx - yy) * sh[..., 9, :] + _C3[1] * xy * z * sh[..., 10, :]
                   + _C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :]
                   + _C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
                   + _C3[4] * x * (4 * zz - xx - yy) * sh[..., 13, :]
                   + _C3[5] * z * (xx - yy) * sh[..., 14, :] + _C3[6] * x * (xx - 3 * yy) * sh[..., 15, :])
    return out


def project_gaussians(means, scales, rotations, K, w2c, width: int, height: int, near: float, eps2d: float,
                      opacities=None):
    """Project B clouds into their V cameras.

    means/scales [B,N,3], rotations [B,N,4], K [B,V,3,3], w2c [B,V,4,4] ->
    mean2d [B,V,N,2] (pixel frame: pixel (i,j) centre at (j+0.5, i+0.5)), conic [B,V,N,3]
    (a, b, c of the inverse 2D covariance), depth z [B,V,N], radius [B,V,N] (0 = culled).
    With ``opacities`` [B,N] the radius shrinks to where o·exp(-r²/2σ²) reaches 1/255 (never
    beyond 3σ) and Gaussians with o < 1/255 are culled: exact, since those pixels are skipped.
    """
    R = quat_to_rotmat(rotations)                                     # [B,N,3,3]
    M = R * scales[..., None, :]                                      # R S
    cov3 = M @ M.transpose(-1, -2)                                    # [B,N,3,3]
    W, t = w2c[:, :, None, :3, :3], w2c[:, :, None, :3, 3]            # [B,V,1,3,3], [B,V,1,3]
    p = (W @ means[:, None, :, :, None])[..., 0] + t                  # [B,V,N,3]
    x, y, z = p.unbind(-1)
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]                   # [B,V,1]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    valid = z > near
    zs = torch.where(valid, z, torch.ones_like(z))                    # keep culled ones finite
    lim_xp = (width - cx) / fx + 0.3 * width / fx
    lim_xn = cx / fx + 0.3 * width / fx
    lim_yp = (height - cy) / fy + 0.3 * height / fy
    lim_yn = cy / fy + 0.3 * height / fy
    tx = zs * torch.minimum(lim_xp, torch.maximum(-lim_xn, x / zs))
    ty = zs * torch.minimum(lim_yp, torch.maximum(-lim_yn, y / zs))
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs ** 2, zero, fy / zs, -fy * ty / zs ** 2], dim=-1)
    J = J.reshape(J.shape[:-1] + (2, 3))                              # [B,V,N,2,3]
    JW = J @ W
    cov2 = JW @ cov3[:, None] @ JW.transpose(-1, -2)                  # [B,V,N,2,2]
    a = cov2[..., 0, 0] + eps2d
    b = cov2[..., 0, 1]
    c = cov2[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conic = torch.stack([c / det, -b / det, a / det], dim=-1)
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.1))
    extent = torch.full_like(lam, SIGMA_EXTENT)
    if opacities is not None:
        o = opacities.detach()[:, None, :].expand_as(lam)
        extent = torch.sqrt(2 * torch.log((o / ALPHA_MIN).clamp_min(1.0))).clamp_max(SIGMA_EXTENT)
        valid = valid & (o >= ALPHA_MIN)
    radius = torch.ceil(extent * torch.sqrt(lam)).detach()
    u = fx * x / zs + cx
    v = fy * y / zs + cy
    mean2d = torch.stack([u, v], dim=-1)
    offscreen = ((u + radius <= 0) | (u - radius >= width) | (v + radius <= 0) | (v - radius >= height)).detach()
    radius = torch.where(valid & ~offscreen, radius, torch.zeros_like(radius))
    return mean2d, conic, z, radius


def _tile_pairs(mean2d, radius, depth, tiles_x: int, tiles_y: int, tile: int):
    """All (image, tile, gaussian) overlaps, sorted by tile then depth.

    Returns flat image-major Gaussian indices ``gid`` (into the [I*N] flattening), their
    global tile ids and per-tile [start, count].
    """
    I, N = radius.shape
    u, v = mean2d[..., 0].detach(), mean2d[..., 1].detach()
    r = radius
    x0 = ((u - r) / tile).floor().clamp(0, tiles_x - 1).long()
    x1 = ((u + r) / tile).floor().clamp(0, tiles_x - 1).long()
    y0 = ((v - r) / tile).floor().clamp(0, tiles_y - 1).long()
    y1 = ((v + r) / tile).floor().clamp(0, tiles_y - 1).long()
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    counts = torch.where(r > 0, nx * ny, torch.zeros_like(nx)).reshape(-1)
    total = int(counts.sum())
    gid = torch.repeat_interleave(torch.arange(I * N, device=radius.device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=radius.device) - torch.repeat_interleave(first, counts)
    nxf = nx.reshape(-1)[gid]
    tx = x0.reshape(-1)[gid] + local % nxf
    ty = y0.reshape(-1)[gid] + local // nxf
    img = gid // N
    tile_id = img * (tiles_x * tiles_y) + ty * tiles_x + tx
    d = depth.detach().reshape(-1)[gid]
    order = torch.sort(d, stable=True).indices
    order = order[torch.sort(tile_id[order], stable=True).indices]
    gid, tile_id = gid[order], tile_id[order]
    n_tiles = I * tiles_x * tiles_y
    per_tile = torch.bincount(tile_id, minlength=n_tiles)
    start = torch.cumsum(per_tile, 0) - per_tile
    return gid, per_tile, start


def _blend_block(pix, mean2d, conic, opac, feat, valid):
    """Front-to-back alpha blending of one block of tiles.

    pix [T,P,2] pixel centres; mean2d [T,M,2], conic [T,M,3], opac [T,M], feat [T,M,C]
    (colour channels then depth), valid [T,M] -> accumulated features [T,P,C], alpha [T,P].
    """
    d = pix[:, None, :, :] - mean2d[:, :, None, :]                    # [T,M,P,2]
    dx, dy = d[..., 0], d[..., 1]
    A, Bc, C = conic[..., 0:1], conic[..., 1:2], conic[..., 2:3]
    power = -0.5 * (A * dx * dx + C * dy * dy) - Bc * dx * dy         # [T,M,P]
    alpha = (opac[..., None] * torch.exp(power.clamp_max(0.0))).clamp_max(ALPHA_MAX)
    keep = valid[..., None] & (power <= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    log_t = torch.cumsum(torch.log1p(-alpha), dim=1)                  # inclusive
    t_after = torch.exp(log_t)
    t_before = torch.exp(log_t - torch.log1p(-alpha))
    w = torch.where(t_after >= T_MIN, alpha * t_before, torch.zeros_like(alpha))
    out = torch.einsum("tmp,tmc->tpc", w, feat)
    return out, w.sum(dim=1)


def rasterize_projected(mean2d, conic, depth, radius, opacities, colors, width: int, height: int,
                        settings: RasterSettings = RasterSettings()):
    """Blend projected Gaussians into I images.

    mean2d [I,N,2], conic [I,N,3], depth/radius [I,N], opacities [I,N], colors [I,N,3]
    -> rgb [I,H,W,3], alpha [I,H,W], depth [I,H,W] (the un-normalised sum w·z).
    """
    I, N = radius.shape
    ts = settings.tile_size
    tiles_x, tiles_y = math.ceil(width / ts), math.ceil(height / ts)
    n_tiles_img = tiles_x * tiles_y
    dev, dt = mean2d.device, mean2d.dtype
    gid, per_tile, start = _tile_pairs(mean2d, radius, depth, tiles_x, tiles_y, ts)

    flat_mean = mean2d.reshape(I * N, 2)
    flat_conic = conic.reshape(I * N, 3)
    flat_op = opacities.reshape(I * N)
    flat_feat = torch.cat([colors, depth[..., None]], dim=-1).reshape(I * N, 4)

    # pixel centres of one tile, offset per tile below
    py, px = torch.meshgrid(torch.arange(ts, device=dev, dtype=dt), torch.arange(ts, device=dev, dtype=dt),
                            indexing="ij")
    tile_pix = torch.stack([px, py], dim=-1).reshape(-1, 2) + 0.5     # [P,2]
    tile_ids = torch.arange(I * n_tiles_img, device=dev)
    local = tile_ids % n_tiles_img
    origin = torch.stack([(local % tiles_x) * ts, (local // tiles_x) * ts], dim=-1).to(dt)

    # Tiles are processed busiest first, in blocks whose padded size [T, M, P] stays under
    # ``block_elements``: sorting by load keeps the padding (M = the block's busiest tile) small.
    P = ts * ts
    total = I * n_tiles_img
    order = torch.argsort(per_tile, descending=True)
    counts_sorted = per_tile[order].tolist()
    out_all = torch.zeros(total, P, 4, device=dev, dtype=dt)
    alpha_all = torch.zeros(total, P, device=dev, dtype=dt)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (flat_mean, flat_conic, flat_op, flat_feat))
    c0 = 0
    while c0 < total and counts_sorted[c0] > 0:
        M = counts_sorted[c0]
        T = max(1, settings.block_elements // (M * P))
        c1 = min(total, c0 + T)
        while counts_sorted[c1 - 1] == 0:   # trailing empty tiles need no work
            c1 -= 1
        tiles = order[c0:c1]
        cnt = per_tile[tiles]
        slot = torch.arange(M, device=dev)
        valid = slot[None, :] < cnt[:, None]                          # [T,M]
        idx = (start[tiles, None] + slot[None, :]).clamp_max(gid.numel() - 1)
        g = torch.where(valid, gid[idx], torch.zeros_like(idx))
        pix = origin[tiles, None, :] + tile_pix[None]                 # [T,P,2]

        def block(fm, fc, fo, ff, g=g, pix=pix, valid=valid):
            return _blend_block(pix, fm[g], fc[g], fo[g], ff[g], valid)

        if settings.checkpoint_chunks and needs_grad:
            out, a = checkpoint(block, flat_mean, flat_conic, flat_op, flat_feat, use_reentrant=False)
        else:
            out, a = block(flat_mean, flat_conic, flat_op, flat_feat)
        out_all = out_all.index_copy(0, tiles, out)
        alpha_all = alpha_all.index_copy(0, tiles, a)
        c0 = c1
    outs, alphas = [out_all], [alpha_all]
    out = torch.cat(outs, 0).reshape(I, tiles_y, tiles_x, ts, ts, 4)
    alpha = torch.cat(alphas, 0).reshape(I, tiles_y, tiles_x, ts, ts)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(I, tiles_y * ts, tiles_x * ts, 4)[:, :height, :width]
    alpha = alpha.permute(0, 1, 3, 2, 4).reshape(I, tiles_y * ts, tiles_x * ts)[:, :height, :width]
    return out[..., :3], alpha, out[..., 3]
