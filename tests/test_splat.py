"""The pure-torch splatting reference against analytic cases, conventions and gradients."""
import math

import numpy as np
import pytest
import torch

from mousefacelift.cameras import intrinsics_from_fov, look_at
from mousefacelift.gaussians import Gaussians, rgb_to_sh0
from mousefacelift.splat import render, gsplat_available
from mousefacelift.splat_torch import RasterSettings, quat_to_rotmat

IDENT_Q = (1.0, 0.0, 0.0, 0.0)


def make(means, scales, opac, rgb, rot=None, dtype=torch.float32):
    means = torch.as_tensor(means, dtype=dtype).reshape(1, -1, 3)
    n = means.shape[1]
    scales = torch.as_tensor(scales, dtype=dtype).reshape(1, n, 3)
    rot = torch.as_tensor(rot if rot is not None else [IDENT_Q] * n, dtype=dtype).reshape(1, n, 4)
    opac = torch.as_tensor(opac, dtype=dtype).reshape(1, n, 1)
    sh = rgb_to_sh0(torch.as_tensor(rgb, dtype=dtype).reshape(1, n, 1, 3))
    return Gaussians(means, scales, rot, opac, sh)


def identity_camera(size, f, dtype=torch.float32):
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=dtype)
    return K[None, None], torch.eye(4, dtype=dtype)[None, None]


def test_single_gaussian_footprint_matches_analytic_2d_gaussian():
    size, f, z, s, o = 32, 40.0, 4.0, 0.25, 0.7
    g = make([[0.0, 0.0, z]], [[s, s, s]], [o], [[1, 1, 1]])
    K, c2w = identity_camera(size, f)
    out = render(g, K, c2w, size, size, background=(0, 0, 0))
    var = (f * s / z) ** 2 + 0.3                       # projected variance + 3DGS low-pass
    v, u = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    d2 = (u - size / 2) ** 2 + (v - size / 2) ** 2
    expected = o * np.exp(-0.5 * d2 / var)
    inside = (d2 < (3 * math.sqrt(var)) ** 2) & (expected >= 1 / 255)
    alpha = out.alpha[0, 0, 0].numpy()
    assert inside.sum() > 50
    np.testing.assert_allclose(alpha[inside], expected[inside], atol=1e-5)
    assert alpha[~inside].max() < 0.01  # only the low tails outside 3 sigma (tile granularity)
    np.testing.assert_allclose(out.depth[0, 0, 0].numpy()[inside], z, rtol=1e-5)


def test_anisotropic_rotated_gaussian_is_elongated_along_rotated_axis():
    # long axis along camera x, then rotated 90 degrees about z -> long along image v
    q = [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]
    g = make([[0, 0, 4.0]], [[0.6, 0.1, 0.1]], [0.9], [[1, 1, 1]], rot=[q])
    K, c2w = identity_camera(32, 40.0)
    a = render(g, K, c2w, 32, 32, background=(0, 0, 0)).alpha[0, 0, 0]
    assert a[:, 16].sum() > 2.5 * a[16, :].sum()


def test_compositing_is_front_to_back_by_depth_not_input_order():
    red, blue = [1, 0, 0], [0, 0, 1]
    K, c2w = identity_camera(16, 20.0)
    bg = torch.tensor([0.0, 1.0, 0.0])
    a = 0.6
    front_first = make([[0, 0, 2.0], [0, 0, 3.0]], [[0.5] * 3] * 2, [a, a], [red, blue])
    back_first = make([[0, 0, 3.0], [0, 0, 2.0]], [[0.5] * 3] * 2, [a, a], [blue, red])
    for g in (front_first, back_first):
        out = render(g, K, c2w, 16, 16, background=bg)
        # pixel centre (8.5, 8.5) is 0.5 px off the Gaussians' centre: peak alpha slightly below a
        px = out.rgb[0, 0, :, 8, 8]
        a1 = float(out.alpha[0, 0, 0, 8, 8])
        t = 1 - a1
        # recover per-Gaussian alphas: both have (nearly) the same footprint scale ratio
        assert px[0] > px[2] > 0.15, px          # red (front) dominates blue (behind)
        assert abs(float(px[1]) - t) < 1e-5      # background shows through the remainder
    r1 = render(front_first, K, c2w, 16, 16, background=bg).rgb
    r2 = render(back_first, K, c2w, 16, 16, background=bg).rgb
    torch.testing.assert_close(r1, r2)


def test_exact_two_layer_compositing_formula():
    # Very large Gaussians -> alpha is ~the opacity at the image centre.
    K, c2w = identity_camera(8, 4.0)
    g = make([[0, 0, 2.0], [0, 0, 3.0]], [[20.0] * 3] * 2, [0.5, 0.8], [[1, 0, 0], [0, 0, 1]])
    out = render(g, K, c2w, 8, 8, background=(0, 1, 0))
    px = out.rgb[0, 0, :, 4, 4]
    torch.testing.assert_close(px, torch.tensor([0.5, 0.5 * 0.2, 0.5 * 0.8]), atol=1e-3, rtol=0)
    # expected depth = (0.5*2 + 0.4*3) / 0.9
    assert abs(float(out.depth[0, 0, 0, 4, 4]) - (0.5 * 2 + 0.4 * 3) / 0.9) < 1e-3


def test_depth_of_a_plane_of_gaussians():
    xs = torch.linspace(-1.5, 1.5, 31)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    z = 3.0
    means = torch.stack([gx, gy, torch.full_like(gx, z)], -1).reshape(-1, 3)
    n = means.shape[0]
    g = make(means, [[0.08, 0.08, 0.01]] * n, [0.95] * n, [[0.3, 0.5, 0.7]] * n)
    K, c2w = identity_camera(32, 30.0)
    out = render(g, K, c2w, 32, 32)
    centre = (slice(8, 24), slice(8, 24))
    assert float(out.alpha[0, 0, 0][centre].min()) > 0.99
    torch.testing.assert_close(out.depth[0, 0, 0][centre], torch.full((16, 16), z), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.rgb[0, 0, :, 16, 16], torch.tensor([0.3, 0.5, 0.7]), atol=1e-2, rtol=0)


def test_camera_convention_world_point_lands_on_projected_pixel():
    size = 48
    Kn = intrinsics_from_fov(50, size)
    w2c = look_at([2.0, -1.5, 1.2])
    X = np.array([0.3, -0.2, 0.25])
    uvw = Kn @ (w2c[:3, :3] @ X + w2c[:3, 3])
    u, v = uvw[:2] / uvw[2]
    g = make([X.tolist()], [[0.01] * 3], [0.9], [[1, 1, 1]])
    K = torch.tensor(Kn, dtype=torch.float32)[None, None]
    c2w = torch.tensor(np.linalg.inv(w2c), dtype=torch.float32)[None, None]
    a = render(g, K, c2w, size, size).alpha[0, 0, 0]
    row, col = divmod(int(a.argmax()), size)
    assert (row, col) == (int(v), int(u)), f"peak at row {row} col {col}, K*w2c says ({v:.2f}, {u:.2f})"


def test_gaussians_behind_camera_are_culled():
    g = make([[0, 0, -2.0]], [[0.5] * 3], [0.9], [[1, 0, 0]])
    K, c2w = identity_camera(16, 20.0)
    out = render(g, K, c2w, 16, 16, background=(0.2, 0.2, 0.2))
    assert float(out.alpha.max()) == 0.0
    torch.testing.assert_close(out.rgb, torch.full_like(out.rgb, 0.2))


def test_batched_samples_and_views_match_individual_renders():
    torch.manual_seed(0)
    B, V, N, size = 2, 3, 40, 24
    g = Gaussians(means=torch.randn(B, N, 3) * 0.4, scales=torch.rand(B, N, 3) * 0.1 + 0.02,
                  rotations=torch.nn.functional.normalize(torch.randn(B, N, 4), dim=-1),
                  opacities=torch.rand(B, N, 1), sh=torch.randn(B, N, 1, 3))
    Kn = torch.tensor(intrinsics_from_fov(50, size), dtype=torch.float32)
    c2ws = [torch.tensor(np.linalg.inv(look_at(e)), dtype=torch.float32)
            for e in ([2.7, 0, 0.5], [0, 2.7, 0.3], [-1.9, -1.9, 0.2])]
    K = Kn.expand(B, V, 3, 3)
    c2w = torch.stack(c2ws)[None].expand(B, V, 4, 4)
    bg = torch.tensor([[1.0, 1, 1], [0, 0, 0]])
    full = render(g, K, c2w, size, size, background=bg)
    for b in range(B):
        for v in range(V):
            one = render(g[b], K[b:b + 1, v:v + 1], c2w[b:b + 1, v:v + 1], size, size, background=bg[b])
            torch.testing.assert_close(full.rgb[b, v], one.rgb[0, 0])
            torch.testing.assert_close(full.depth[b, v], one.depth[0, 0])


def test_small_block_budget_gives_same_image():
    torch.manual_seed(1)
    N = 200
    g = Gaussians(means=torch.randn(1, N, 3) * 0.5, scales=torch.rand(1, N, 3) * 0.1 + 0.02,
                  rotations=torch.nn.functional.normalize(torch.randn(1, N, 4), dim=-1),
                  opacities=torch.rand(1, N, 1), sh=torch.randn(1, N, 1, 3))
    K = torch.tensor(intrinsics_from_fov(50, 40), dtype=torch.float32)[None, None]
    c2w = torch.tensor(np.linalg.inv(look_at([2.7, 0.3, 0.4])), dtype=torch.float32)[None, None]
    a = render(g, K, c2w, 40, 40, settings=RasterSettings(chunk_pairs=1 << 24))
    b = render(g, K, c2w, 40, 40, settings=RasterSettings(chunk_pairs=1000, checkpoint_chunks=True))
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-6, rtol=0)
    # tiny depth slabs: finished pixels are skipped between slabs, the image must not change
    c = render(g, K, c2w, 40, 40, settings=RasterSettings(slab_pairs=50))
    torch.testing.assert_close(a.rgb, c.rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.alpha, c.alpha, atol=1e-6, rtol=0)


def test_dense_opaque_stack_stops_early_like_3dgs():
    # 40 Gaussians of opacity 0.95 stacked along the optical axis: transmittance after k of
    # them is 0.05^k, so the 4th would drop it below 1e-4 and blending stops after 3
    # (3DGS), whatever the slab size; without the stop alpha would be 1 - 0.05^40.
    n, o = 40, 0.95
    means = [[0.0, 0.0, 2.0 + 0.05 * i] for i in range(n)]
    cols = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] + [[1.0, 1.0, 1.0]] * (n - 3)
    g = make(means[::-1], [[5.0] * 3] * n, [o] * n, cols[::-1])
    K, c2w = identity_camera(8, 4.0)
    K = K.clone()
    K[..., :2, 2] = 4.5                                   # the Gaussians land on pixel (4, 4)'s centre
    for slab in (1 << 17, 7, 1):
        out = render(g, K, c2w, 8, 8, background=(0, 0, 0), settings=RasterSettings(slab_pairs=slab))
        torch.testing.assert_close(out.rgb[0, 0, :, 4, 4], torch.tensor([o, 0.05 * o, 0.05 ** 2 * o]),
                                   atol=1e-5, rtol=0)
        assert abs(float(out.alpha[0, 0, 0, 4, 4]) - (1 - 0.05 ** 3)) < 1e-6


@pytest.mark.parametrize("settings", [RasterSettings(), RasterSettings(chunk_pairs=30, slab_pairs=5,
                                                                       checkpoint_chunks=True)])
def test_gradients_match_finite_differences_float64(settings):
    dt = torch.float64
    g = make([[0.1, -0.05, 3.0], [-0.15, 0.1, 3.4], [0.05, 0.2, 2.8]],
             [[0.25, 0.18, 0.2], [0.2, 0.3, 0.2], [0.15, 0.2, 0.22]], [0.6, 0.7, 0.5],
             [[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9]],
             rot=[[0.9, 0.1, -0.2, 0.3], [1, 0, 0, 0], [0.8, -0.3, 0.1, 0.2]], dtype=dt)
    K, c2w = identity_camera(12, 12.0, dtype=dt)
    weights = torch.rand(1, 1, 3, 12, 12, dtype=dt, generator=torch.Generator().manual_seed(0))

    def loss(means, scales, rots, opac, sh):
        gg = Gaussians(means, scales, rots, opac, sh)
        out = render(gg, K, c2w, 12, 12, background=(0.3, 0.3, 0.3), settings=settings)
        return (out.rgb * weights).sum() + out.alpha.sum() + (out.depth * out.alpha).sum() * 0.1

    inputs = [t.clone().requires_grad_(True) for t in (g.means, g.scales, g.rotations, g.opacities, g.sh)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_quaternion_rotation_matrix_is_orthonormal():
    q = torch.nn.functional.normalize(torch.randn(10, 4), dim=-1)
    R = quat_to_rotmat(q)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(10, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(10), atol=1e-5, rtol=0)


def test_bad_inputs_are_refused_with_clear_messages():
    g = make([[0, 0, 3.0]], [[0.1] * 3], [0.5], [[1, 1, 1]])
    K, c2w = identity_camera(8, 8.0)
    with pytest.raises(ValueError, match="c2w must be"):
        render(g, K, c2w[:, :, :3], 8, 8)
    with pytest.raises(ValueError, match="background"):
        render(g, K, c2w, 8, 8, background=(1, 1))
    with pytest.raises(ValueError, match="backend"):
        render(g, K, c2w, 8, 8, backend="opengl")
    if not gsplat_available():
        with pytest.raises(RuntimeError, match="gsplat"):
            render(g, K, c2w, 8, 8, backend="gsplat")
