"""Blender convention conversions and the EXR reader: pure numpy, no bpy needed."""
import struct

import numpy as np
import pytest

from blender.conventions import (blender_camera_params, camera_normals, distort_views, planar_depth,
                                 straight_srgb8)
from blender.exr import ExrError, read_exr
from mousefacelift.cameras import Camera, look_at


def _blender_project(p, point):
    """Re-implement Blender's perspective projection from its camera settings (view plane math)."""
    M = np.asarray(p.matrix_world)
    cam = np.linalg.inv(M) @ np.append(point, 1.0)       # Blender camera frame: looks down -Z, +Y up
    x, y, z = cam[:3]
    W, H = p.width, p.height
    ycor = p.pixel_aspect_y / p.pixel_aspect_x
    pix = p.sensor_width_mm / (p.lens_mm * W)          # tangent per pixel (horizontal fit)
    xmin = (-0.5 * W + p.shift_x * W) * pix
    ymin = (-0.5 * ycor * H + p.shift_y * W) * pix
    tx, ty = x / -z, y / -z
    u = (tx - xmin) / pix
    v_from_bottom = (ty - ymin) / (pix * ycor)
    return np.array([u, H - v_from_bottom])


@pytest.mark.parametrize("fx,fy,cx,cy", [(60.0, 60.0, 32.0, 24.0), (55.0, 70.0, 40.5, 17.25), (80.0, 50.0, 20.0, 30.0)])
def test_camera_params_reproduce_opencv_projection(fx, fy, cx, cy):
    cam = Camera(K=np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), w2c=look_at([2.0, -1.0, 1.5]), width=64, height=48)
    p = blender_camera_params(cam)
    rng = np.random.default_rng(0)
    for pt in rng.uniform(-0.5, 0.5, (5, 3)):
        uv, _ = cam.project(pt[None])
        np.testing.assert_allclose(_blender_project(p, pt), uv[0], atol=1e-6)


def test_straight_alpha_unpremultiplies_and_encodes_srgb():
    pre = np.zeros((1, 3, 4), np.float32)
    pre[0, 0] = [0.5, 0.5, 0.5, 1.0]            # opaque mid-grey (linear)
    pre[0, 1] = [0.1, 0.1, 0.1, 0.2]            # 20% coverage of linear 0.5
    out = straight_srgb8(pre)
    assert out[0, 0, 0] == out[0, 1, 0] == 188   # sRGB(0.5) = 0.7354 -> 188
    assert out[0, 1, 3] == 51 and out[0, 2, 3] == 0 and out[0, 2, 0] == 0


def test_planar_depth_and_normals_mark_empty_pixels():
    d = planar_depth(np.array([[2.0, 1e10, np.inf]], np.float32))
    assert d.tolist() == [[2.0, 0.0, 0.0]]
    w2c = look_at([0.0, 0.0, 3.0])                # camera above, looking down -Z world
    n = camera_normals(np.array([[[0, 0, 1.0], [0, 0, 1.0]]], np.float32), w2c, np.array([[True, False]]))
    np.testing.assert_allclose(n[0, 0], [0, 0, -1], atol=1e-6)   # world up faces the camera: OpenCV -z
    assert not n[0, 1].any()


def test_distortion_warp_moves_a_point_where_the_camera_projects_it():
    K = np.array([[40.0, 0, 32], [0, 40.0, 32], [0, 0, 1]])
    cam = Camera(K=K, w2c=look_at([0, 0, 3.0]), width=64, height=64, dist=np.array([-0.3, 0.05, 0, 0, 0]))
    pin = Camera(K=K, w2c=cam.w2c, width=64, height=64)
    pt = np.array([[1.2, 1.0, 0.0]])
    (u0, v0), = pin.project(pt)[0]
    rgba = np.zeros((1, 64, 64, 4), np.uint8)
    rgba[0, int(v0), int(u0)] = 255
    depth = np.zeros((1, 64, 64), np.float32)
    depth[0, int(v0), int(u0)] = 3.0
    out, d, _ = distort_views(rgba, depth, np.zeros((1, 64, 64, 3), np.float32), [cam])
    (u1, v1), = cam.project(pt)[0]
    ys, xs = np.nonzero(d[0] > 0)
    assert len(ys) >= 1
    assert abs(xs.mean() + 0.5 - u1) <= 1.0 and abs(ys.mean() + 0.5 - v1) <= 1.0
    assert np.hypot(u1 - u0, v1 - v0) > 1.5      # the distortion really moved it


def test_exr_reader_rejects_non_exr(tmp_path):
    bad = tmp_path / "x.exr"
    bad.write_bytes(b"not an exr at all")
    with pytest.raises(ExrError, match="x.exr"):
        read_exr(str(bad))
    piz = tmp_path / "p.exr"                     # PIZ is not decoded (Blender's NONE/ZIPS/ZIP are)
    hdr = struct.pack("<iI", 20000630, 2) + b"compression\0compression\0" + struct.pack("<i", 1) + b"\x04" + b"\0"
    piz.write_bytes(hdr)
    with pytest.raises(ExrError, match="PIZ"):
        read_exr(str(piz))


def test_subject_border_bounds_the_projection_and_falls_back_to_full_frame():
    from blender.conventions import subject_border
    cam = Camera(K=np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]), w2c=look_at([3.0, 0, 0]), width=64, height=48)
    pts = np.random.default_rng(1).uniform(-0.3, 0.3, (200, 3))
    b = subject_border(cam, pts, margin_px=2.0)
    uv, _ = cam.project(pts)
    x0, x1, y0, y1 = b                                         # fractions, y from the bottom
    assert 0 < x0 < x1 < 1 and 0 < y0 < y1 < 1
    assert (uv[:, 0] >= x0 * 64 + 2 - 1e-6).all() and (uv[:, 0] <= x1 * 64 - 2 + 1e-6).all()
    assert ((48 - uv[:, 1]) >= y0 * 48 + 2 - 1e-6).all() and ((48 - uv[:, 1]) <= y1 * 48 - 2 + 1e-6).all()
    assert subject_border(cam, np.array([[4.0, 0, 0]]), 2.0) is None          # behind the camera
    assert subject_border(cam, np.array([[0, 5.0, 5.0], [0, -5.0, -5.0]]), 2.0) is None   # fills the frame
