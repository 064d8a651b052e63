"""The z-buffer rasterizer against analytic cases (coverage, planar depth, occlusion)."""
import numpy as np
import pytest

from mousefacelift.meshraster import project_points, rasterize

K = np.array([[100.0, 0, 32.0], [0, 100.0, 24.0], [0, 0, 1]])
EYE = np.eye(4)


def quad(x0, x1, y0, y1, z):
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_fronto_parallel_square_covers_exact_pixels_at_its_depth():
    # at z=2 a pixel is 0.02 wide; x in [0, 0.2] -> u in [32, 42] -> pixel centres 32.5..41.5
    v, f = quad(0.0, 0.2, -0.1, 0.1, 2.0)
    depth, fid, mask = rasterize(v, f, K, EYE, 64, 48)
    expect = np.zeros((48, 64), bool)
    expect[19:29, 32:42] = True          # v in [19, 29]
    assert np.array_equal(mask, expect)
    assert np.allclose(depth[mask], 2.0, atol=1e-6)
    assert np.all(depth[~mask] == 0) and np.all(fid[~mask] == -1)
    assert set(np.unique(fid[mask])) == {0, 1}


def test_nearer_surface_wins_and_order_does_not_matter():
    v1, f1 = quad(-0.3, 0.3, -0.2, 0.2, 3.0)
    v2, f2 = quad(-0.1, 0.1, -0.1, 0.1, 1.5)
    for verts, faces, near_ids in ((np.vstack([v1, v2]), np.vstack([f1, f2 + 4]), {2, 3}),
                                   (np.vstack([v2, v1]), np.vstack([f2, f1 + 4]), {0, 1})):
        depth, fid, mask = rasterize(verts, faces, K, EYE, 64, 48)
        assert depth[24, 32] == pytest.approx(1.5, abs=1e-6)
        assert fid[24, 32] in near_ids
        assert depth[24, 24] == pytest.approx(3.0, abs=1e-6)   # outside the near square only


def test_tilted_plane_depth_is_perspective_correct():
    # plane z = 2 + 0.5 x, rendered with a rotated/translated camera
    v, f = quad(-1.0, 1.0, -1.0, 1.0, 0.0)
    v[:, 2] = 2 + 0.5 * v[:, 0]
    ang = np.deg2rad(10)
    R = np.array([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = [0.05, -0.02, 0.3]
    depth, fid, mask = rasterize(v, f, K, w2c, 64, 48)
    assert mask.sum() > 500
    vs, us = np.nonzero(mask)
    # intersect each pixel ray with the plane analytically (camera frame)
    n_w, d_w = np.array([-0.5, 0, 1.0]), 2.0           # n . X = d in world
    n_c = R @ n_w
    d_c = d_w + n_c @ w2c[:3, 3]
    rays = np.linalg.inv(K) @ np.stack([us + 0.5, vs + 0.5, np.ones_like(us)])
    t = d_c / (n_c @ rays)
    assert np.allclose(depth[vs, us], t * rays[2], rtol=1e-5)


def test_triangles_behind_camera_and_degenerate_faces_draw_nothing():
    v, f = quad(-0.1, 0.1, -0.1, 0.1, -1.0)
    assert not rasterize(v, f, K, EYE, 64, 48)[2].any()
    v2 = np.array([[0, 0, 1.0], [0.1, 0, 1.0], [0.2, 0, 1.0]])
    assert not rasterize(v2, np.array([[0, 1, 2]]), K, EYE, 64, 48)[2].any()


def test_project_points_matches_pinhole_with_pixel_centres():
    uv, z = project_points(np.array([[0.0, 0.0, 1.0], [0.1, -0.05, 2.0]]), K, EYE)
    assert np.allclose(uv, [[32, 24], [37, 21.5]]) and np.allclose(z, [1, 2])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="faces must be"):
        rasterize(np.zeros((3, 3)), np.zeros((2, 2), int), K, EYE, 8, 8)
    with pytest.raises(ValueError, match="face indices"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 5]]), K, EYE, 8, 8)
