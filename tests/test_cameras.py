import numpy as np
import pytest

from mousefacelift.cameras import (Camera, camera_rays, distort_normalized, intrinsics_from_fov, look_at, make_rig,
                                   stack_cameras, undistort_normalized)


def test_look_at_is_opencv_and_sees_target_at_centre():
    w2c = look_at([2.7, 0, 0])
    cam = Camera(K=intrinsics_from_fov(50, 64), w2c=w2c, width=64, height=64)
    uv, z = cam.project(np.array([[0.0, 0, 0], [0, 0, 0.5]]))
    assert np.allclose(uv[0], [32, 32]) and np.isclose(z[0], 2.7)
    # world up (+Z) appears towards the top of the image (smaller v) in OpenCV's y-down frame
    assert uv[1, 1] < 32
    # a camera in front of the mouse (+X) sees the mouse's left (+Y) on the image's right
    uv_left, _ = cam.project(np.array([[0.0, 0.5, 0]]))
    assert uv_left[0, 0] > 32
    assert np.allclose(cam.center, [2.7, 0, 0])


def test_rigs_named_and_composed():
    assert len(make_rig("sphere32", size=32)) == 32
    ring = make_rig("facelift_ring32", size=32)
    el = [np.degrees(np.arcsin(c.center[2] / np.linalg.norm(c.center))) for c in ring]
    assert np.allclose(el, 20) and np.allclose([np.linalg.norm(c.center) for c in ring], 2.7)
    mv6 = make_rig("mv6", size=32)
    az = [np.degrees(np.arctan2(c.center[1], c.center[0])) % 360 for c in mv6]
    assert np.allclose(az, [0, 45, 90, 180, 270, 315])
    combo = make_rig("sphere26+mv6", size=32, seed=3)
    assert len(combo) == 32 and combo[26].name.startswith("026_mv6")
    # the random part is reproducible from the seed and differs between seeds
    a, b, c = (make_rig("sphere8", size=8, seed=s) for s in (1, 1, 2))
    assert all(np.allclose(x.w2c, y.w2c) for x, y in zip(a, b))
    assert not all(np.allclose(x.w2c, y.w2c) for x, y in zip(a, c))


@pytest.mark.parametrize("bad,msg", [("sphere32+cube4", "unknown rig 'cube4'"), ("mv7", "exactly 6")])
def test_bad_rig_names_the_token(bad, msg):
    with pytest.raises(ValueError, match=msg):
        make_rig(bad)


def test_camera_inside_subject_is_refused():
    with pytest.raises(ValueError, match="inside the"):
        make_rig("mv6", radius=1.0)


def test_rays_hit_projected_pixel():
    cam = make_rig("sphere4", size=16, seed=0)[1]
    K, c2w = stack_cameras([cam])
    o, d = camera_rays(K, c2w, 16, 16)
    p = o[0, 5, 9] + 2.0 * d[0, 5, 9]
    uv, _ = cam.project(p[None].double().numpy())
    assert np.allclose(uv[0], [9.5, 5.5], atol=1e-4)


def test_distortion_round_trip():
    dist = np.array([-0.16, 0.94, -0.001, -0.004, -2.7])
    x = np.random.default_rng(0).uniform(-0.3, 0.3, (100, 2))
    assert np.allclose(undistort_normalized(distort_normalized(x, dist), dist), x, atol=1e-8)


def test_meta_round_trip_and_errors():
    cam = make_rig("mv6", size=24)[0]
    back = Camera.from_meta(cam.to_meta())
    assert np.allclose(back.K, cam.K) and np.allclose(back.w2c, cam.w2c)
    with pytest.raises(ValueError, match="lacks field 'fx'"):
        Camera.from_meta({"fy": 1, "cx": 1, "cy": 1, "w2c": np.eye(4).tolist(), "width": 2, "height": 2})
    with pytest.raises(ValueError, match="not a proper rotation"):
        Camera(K=np.eye(3), w2c=np.diag([1, 1, -1, 1.0]), width=4, height=4)


def test_resize_and_crop_keep_projection_in_sync():
    cam = make_rig("mv6", size=64)[2]
    p = np.array([[0.2, -0.1, 0.3]])
    uv, _ = cam.project(p)
    uv2, _ = cam.resized(32, 32).project(p)
    assert np.allclose(uv2, uv / 2)
    uv3, _ = cam.cropped(10, 5, 40, 40).project(p)
    assert np.allclose(uv3, uv - [10, 5])


def test_distortion_matches_opencv_including_the_rational_model():
    """Every supported coefficient count (4, 5, 8: anipose files carry 8) as cv2.projectPoints."""
    import cv2

    x = np.random.default_rng(3).uniform(-0.6, 0.6, (500, 2))
    for dist in ([-0.25, 0.08, 5e-4, 5e-4], [-0.3, 0.12, 1e-3, -2e-3, 0.01], [0.1, -0.05, 1e-3, 2e-3, 0.01, 0.02, 1e-3, 0.0]):
        dist = np.array(dist)
        ref, _ = cv2.projectPoints(np.concatenate([x, np.ones((len(x), 1))], 1), np.zeros(3), np.zeros(3), np.eye(3), dist)
        assert np.allclose(distort_normalized(x, dist), ref.reshape(-1, 2), atol=1e-12)
        assert np.allclose(undistort_normalized(distort_normalized(x, dist), dist), x, atol=1e-10)
