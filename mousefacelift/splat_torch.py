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

    eps2d: float = 0.3             # low-pass filter added to the 2D covariance, px²
    chunk_pairs: int = 1 << 21     # candidate (pixel, Gaussian) pairs per chunk of rows: the memory bound
    slab_pairs: int = 1 << 17      # candidate pairs per depth slab (finished pixels are skipped between slabs)
    checkpoint_chunks: bool = False  # recompute each chunk's blend in backward instead of storing it


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


def _pixel_boxes(mean2d, conic, radius, opacities, width: int, height: int):
    """Inclusive pixel box of each Gaussian's cut-off ellipse (no gradient).

    The ellipse is where alpha can reach 1/255 (``o·exp(-e²/2) = 1/255``), capped at 3σ: its
    axis-aligned half widths are ``e·sqrt(Σxx)`` and ``e·sqrt(Σyy)`` (Σ = conic⁻¹), far
    tighter than a 3·sqrt(λmax) square on tiles. Returns x0, y0, nx, ny (long; nx = ny = 0
    for culled Gaussians)."""
    A, B, C = conic.detach().unbind(-1)
    u, v = mean2d.detach().unbind(-1)
    live = radius > 0
    det = torch.where(live, A * C - B * B, torch.ones_like(A))
    e = torch.sqrt(2 * torch.log((opacities.detach() / ALPHA_MIN).clamp_min(1.0))).clamp_max(SIGMA_EXTENT)
    hx = e * torch.sqrt((C / det).clamp_min(0))
    hy = e * torch.sqrt((A / det).clamp_min(0))
    # pixel j's centre is j + 0.5: columns with |j + 0.5 - u| <= hx
    x0 = torch.ceil(u - hx - 0.5).clamp(0, width)
    x1 = torch.floor(u + hx - 0.5).clamp(-1, width - 1)
    y0 = torch.ceil(v - hy - 0.5).clamp(0, height)
    y1 = torch.floor(v + hy - 0.5).clamp(-1, height - 1)
    live = live & (x1 >= x0) & (y1 >= y0) & torch.isfinite(hx) & torch.isfinite(hy)
    zero = torch.zeros_like(x0)
    nx = torch.where(live, x1 - x0 + 1, zero).long()
    ny = torch.where(live, y1 - y0 + 1, zero).long()
    return torch.where(live, x0, zero).long(), torch.where(live, y0, zero).long(), nx, ny


def _row_chunks(row0, ny, nx, rows: int, budget: int) -> list[tuple[int, int]]:
    """Split the global pixel rows [0, rows) into consecutive ranges holding at most
    ``budget`` candidate (pixel, Gaussian) pairs each (at least one row per range)."""
    diff = torch.zeros(rows + 1, dtype=torch.long, device=nx.device)
    live = ny > 0
    diff.index_add_(0, row0[live], nx[live])
    diff.index_add_(0, row0[live] + ny[live], -nx[live])
    per_row = torch.cumsum(diff[:-1], 0).tolist()
    chunks, r0, acc = [], 0, 0
    for r, n in enumerate(per_row):
        if acc and acc + n > budget:
            chunks.append((r0, r))
            r0, acc = r, 0
        acc += n
    chunks.append((r0, rows))
    return chunks


def _alpha(attr, px, py):
    """alpha and the Gaussian exponent of (pixel, Gaussian) pairs from gathered attributes
    ``attr`` [P, >=6] = (u, v, conic a, b, c, opacity, ...); 3DGS's 0.99 clamp."""
    u, v, ca, cb, cc, o = attr.unbind(1)[:6]   # unbind: one gradient buffer, not one per column
    dx, dy = px - u, py - v
    power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
    return (o * torch.exp(power.clamp_max(0.0))).clamp_max(ALPHA_MAX), power


def _transmittance(alpha, seg_start):
    """Exclusive front-to-back transmittance of pairs sorted by (pixel, depth): a float64
    cumulative sum of log(1-alpha), restarted at each pixel's first pair (``seg_start``:
    index of that pair). Returns (T before, T after) in alpha's dtype."""
    log1m = torch.log1p(-alpha.double())
    before = torch.cumsum(log1m, 0) - log1m
    before = before - before.index_select(0, seg_start)
    return torch.exp(before).to(alpha.dtype), torch.exp(before + log1m).to(alpha.dtype)


def _segment_starts(pix):
    """For pairs sorted by pixel id: the index of the first pair of each pair's pixel."""
    idx = torch.arange(pix.numel(), device=pix.device)
    first = torch.ones_like(pix, dtype=torch.bool)
    first[1:] = pix[1:] != pix[:-1]
    return torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values


def _pair_pixels(pix, r0: int, width: int, height: int, dtype):
    """Pixel-centre coordinates of chunk-local pixel indices (chunk starting at global row r0)."""
    return (pix % width).to(dtype) + 0.5, ((pix // width + r0) % height).to(dtype) + 0.5


def _blend_pairs(attr, gid, pix, seg_start, r0: int, width: int, height: int, n_pix: int):
    """Differentiable blend of the contributing pairs (sorted by pixel, then depth) of one
    chunk. attr [I*N, 6+C] = (u, v, conic, opacity, features) -> Σ w·features [n_pix, C],
    accumulated alpha [n_pix]."""
    a = attr.index_select(0, gid)
    px, py = _pair_pixels(pix, r0, width, height, attr.dtype)
    alpha, _ = _alpha(a[:, :6], px, py)
    t_before, _ = _transmittance(alpha, seg_start)
    w = alpha * t_before
    out = torch.zeros(n_pix, attr.shape[1] - 5, device=attr.device, dtype=attr.dtype)
    out = out.index_add(0, pix, torch.cat([w[:, None] * a[:, 6:], w[:, None]], dim=1))
    return out[:, :-1], out[:, -1]


def _composite_chunk(attr, gsel, counts, x0, y0, nx, r0: int, n_pix: int, width: int, height: int, IN: int,
                     slab_pairs: int, accumulate: bool):
    """Front-to-back compositing of one chunk of pixel rows without autograd, in depth slabs.

    ``gsel`` are the chunk's Gaussians in (image, depth) order with their pair ``counts`` and
    chunk-local boxes (x0, y0, nx). Slabs of consecutive Gaussians (about ``slab_pairs``
    candidate pairs each) are composited in order; pixels whose transmittance has hit the
    3DGS stop are finished, and a Gaussian whose whole box is finished (summed-area table)
    generates no pairs at all -- the early stop is what keeps dense clouds cheap.
    Returns the keys ``pixel * IN + gaussian`` of every contributing pair (unsorted) and, with
    ``accumulate``, the blended [n_pix, 5] (features..., alpha)."""
    dev, dt = attr.device, attr.dtype
    rows = n_pix // width
    log_t = torch.zeros(n_pix, dtype=torch.float64, device=dev)       # log transmittance so far
    done = torch.zeros(n_pix, dtype=torch.bool, device=dev)
    out = torch.zeros(n_pix, 5, device=dev, dtype=dt) if accumulate else None
    keys = []
    if gsel.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=dev), out
    bounds = torch.cumsum(counts, 0)
    cuts = torch.searchsorted(bounds, torch.arange(slab_pairs, int(bounds[-1]) + slab_pairs, slab_pairs,
                                                   device=dev), right=True).tolist()
    ny = counts // nx
    s0 = 0
    for s1 in dict.fromkeys(cuts):                                   # unique, in order
        s1 = min(max(s1, s0 + 1), gsel.numel())
        if s1 <= s0:
            continue
        g, c, bx, by, bw = gsel[s0:s1], counts[s0:s1], x0[s0:s1], y0[s0:s1], nx[s0:s1]
        s0 = s1
        if bool(done.any()):                                         # skip Gaussians over finished pixels
            sat = torch.zeros(rows + 1, width + 1, dtype=torch.long, device=dev)
            sat[1:, 1:] = (~done).reshape(rows, width).long().cumsum(0).cumsum(1)
            bh = ny[s0 - g.numel():s0]
            open_px = (sat[by + bh, bx + bw] - sat[by, bx + bw] - sat[by + bh, bx] + sat[by, bx])
            m = open_px > 0
            g, c, bx, by, bw = g[m], c[m], bx[m], by[m], bw[m]
            if g.numel() == 0:
                continue
        total = int(c.sum())
        local = torch.arange(total, device=dev) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c,
                                                                           output_size=total)
        w_g = torch.repeat_interleave(bw, c, output_size=total)
        row = local // w_g
        pix = torch.repeat_interleave(by * width + bx, c, output_size=total) + row * width + (local - row * w_g)
        del local, w_g, row
        a = torch.repeat_interleave(attr[g, :6], c, dim=0, output_size=total)
        alpha, power = _alpha(a, *_pair_pixels(pix, r0, width, height, dt))
        del a
        keep = (alpha >= ALPHA_MIN) & (power >= -0.5 * SIGMA_EXTENT ** 2) & ~done[pix]
        key = pix.mul_(IN).add_(torch.repeat_interleave(g, c, output_size=total))[keep]
        if key.numel() == 0:
            continue
        key, srt = torch.sort(key)                                   # by pixel, then depth
        alpha = alpha[keep][srt]
        pix = key // IN
        seg = _segment_starts(pix)
        log1m = torch.log1p(-alpha.double())
        before = torch.cumsum(log1m, 0) - log1m
        before = before - before.index_select(0, seg) + log_t.index_select(0, pix)
        live = (before + log1m) >= math.log(T_MIN)                   # 3DGS early stop (a prefix per pixel)
        stopped = pix[~live]
        done[stopped] = True
        key, pix, alpha, log1m, before = key[live], pix[live], alpha[live], log1m[live], before[live]
        log_t.index_add_(0, pix, log1m)
        keys.append(key)
        if accumulate:
            w = alpha * torch.exp(before).to(dt)
            feat = attr.index_select(0, key - pix * IN)[:, 6:]
            out.index_add_(0, pix, torch.cat([w[:, None] * feat, w[:, None]], dim=1))
    keys = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long, device=dev)
    return keys, out


def rasterize_projected(mean2d, conic, depth, radius, opacities, colors, width: int, height: int,
                        settings: RasterSettings = RasterSettings()):
    """Blend projected Gaussians into I images.

    mean2d [I,N,2], conic [I,N,3], depth/radius [I,N], opacities [I,N], colors [I,N,3]
    -> rgb [I,H,W,3], alpha [I,H,W], depth [I,H,W] (the un-normalised sum w·z).

    Work is done on (pixel, Gaussian) pairs, never on padded [pixels x Gaussians] blocks:
    1. every Gaussian lists the pixels of its cut-off ellipse's box (``_pixel_boxes``);
    2. without autograd: alpha per pair, pairs below 1/255 or beyond 3σ dropped, one sort by
       (pixel, depth rank), transmittance by a segmented cumulative sum, pairs after the
       3DGS early stop (T < 1e-4) dropped;
    3. only the surviving pairs are blended again with autograd (exact: the dropped pairs
       have weight 0 and do not change any transmittance, and which pairs survive is
       piecewise constant in the parameters).
    Pixel rows are processed in chunks of at most ``settings.chunk_pairs`` candidate pairs.
    """
    I, N = radius.shape
    dev = mean2d.device
    H, W = height, width
    attr = torch.cat([mean2d, conic, opacities[..., None], colors, depth[..., None]], dim=-1).reshape(I * N, 10)
    needs_grad = torch.is_grad_enabled() and attr.requires_grad

    # Gaussians re-ordered by depth within each image, once: then a pair's (pixel, Gaussian)
    # key ``pixel * I*N + index`` sorts by pixel and then by depth in a single sort.
    order = torch.argsort(depth.detach(), dim=1, stable=True)
    attr = attr.reshape(I, N, 10).gather(1, order[..., None].expand(I, N, 10)).reshape(I * N, 10)
    x0, y0, nx, ny = (t.gather(1, order).reshape(-1) for t in _pixel_boxes(mean2d, conic, radius, opacities, W, H))
    img = torch.arange(I, device=dev).repeat_interleave(N)
    row0 = img * H + y0                                               # global row = image * H + row
    attr_d = attr.detach()
    IN = I * N

    outs, accs = [], []
    for r0, r1 in _row_chunks(row0, ny, nx, I * H, settings.chunk_pairs):
        n_pix = (r1 - r0) * W
        cy0 = row0.clamp_min(r0)
        cnt = nx * ((row0 + ny).clamp_max(r1) - cy0).clamp_min(0)
        gsel = torch.nonzero(cnt)[:, 0]
        with torch.no_grad():
            live_keys, acc_out = _composite_chunk(attr_d, gsel, cnt[gsel], x0[gsel], cy0[gsel] - r0, nx[gsel],
                                                  r0, n_pix, W, H, IN, settings.slab_pairs, not needs_grad)
        if not needs_grad:
            outs.append(acc_out[:, :4])
            accs.append(acc_out[:, 4])
            continue
        with torch.no_grad():
            key = torch.sort(live_keys).values                        # by pixel, then depth
            pix = key // IN
            gid = key - pix * IN
            seg = _segment_starts(pix)

        def blend(at, gid=gid, pix=pix, seg=seg, r0=r0, n_pix=n_pix):
            return _blend_pairs(at, gid, pix, seg, r0, W, H, n_pix)

        if settings.checkpoint_chunks:
            out, acc = checkpoint(blend, attr, use_reentrant=False)
        else:
            out, acc = blend(attr)
        outs.append(out)
        accs.append(acc)
    out = torch.cat(outs, 0).reshape(I, H, W, 4)
    alpha = torch.cat(accs, 0).reshape(I, H, W)
    return out[..., :3], alpha, out[..., 3]
