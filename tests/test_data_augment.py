"""train.augment: input augmentation never desynchronises images and cameras."""
import numpy as np
import torch

from mousefacelift.cameras import make_rig, stack_cameras
from train.augment import AugmentConfig, augment_inputs, resize_views

H = W = 64


def _dot_image(cam, point):
    """An image with one bright Gaussian blob where ``point`` projects (sub-pixel exact)."""
    uv, _ = cam.project(point[None])
    u, v = uv[0]
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    blob = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.5 ** 2))
    rgb = torch.from_numpy(np.stack([blob] * 3)).float()
    return rgb, torch.ones(1, H, W)


def _peak(img):
    """Intensity-weighted centroid (pixel-centre convention) of the blob."""
    m = img[0].numpy()
    m = np.where(m > 0.2 * m.max(), m, 0)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    return np.array([(m * xx).sum() / m.sum(), (m * yy).sum() / m.sum()])


def _project(K, c2w, p):
    w2c = np.linalg.inv(c2w.double().numpy())
    x = w2c[:3, :3] @ p + w2c[:3, 3]
    uv = K.double().numpy() @ (x / x[2])
    return uv[:2]


def test_camera_jitter_keeps_projections_on_the_same_feature():
    cams = make_rig("mv6", size=W)
    point = np.array([0.3, -0.2, 0.25])
    K, c2w = stack_cameras(cams[:4])
    rgbs, alphas = zip(*[_dot_image(c, point) for c in cams[:4]])
    cfg = AugmentConfig.from_yaml(enabled=True, probability=1.0, jitter_rotation_deg=4.0, jitter_focal=0.05,
                                  jitter_principal_px=2.0, grid_distortion_px=0.0)
    rgb, alpha, K2, c2w2, info = augment_inputs(torch.stack(rgbs), torch.stack(alphas), K, c2w, cfg,
                                                np.random.default_rng(0))
    assert bool(info["jittered"].all())
    moved = []
    for i in range(4):
        before = _project(K[i], c2w[i], point)
        after = _project(K2[i], c2w2[i], point)
        moved.append(np.linalg.norm(after - before))
        # the warped image's feature sits where the jittered camera projects the 3D point
        assert np.linalg.norm(_peak(rgb[i]) - after) < 0.25, (i, _peak(rgb[i]), after)
        # camera centre unchanged (pure rotation + intrinsics), rotation still proper
        assert torch.allclose(c2w2[i, :3, 3], c2w[i, :3, 3], atol=1e-5)
        R = c2w2[i, :3, :3].double()
        assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-5)
    assert max(moved) > 1.0   # the jitter is real, not a no-op


def test_grid_distortion_is_bounded_and_keeps_the_camera():
    cams = make_rig("mv6", size=W)
    point = np.array([0.0, 0.1, 0.0])
    K, c2w = stack_cameras(cams[:2])
    rgbs, alphas = zip(*[_dot_image(c, point) for c in cams[:2]])
    cfg = AugmentConfig.from_yaml(enabled=True, probability=1.0, jitter_rotation_deg=0.0, jitter_focal=0.0,
                                  jitter_principal_px=0.0, grid_distortion_px=1.5, grid_cells=3)
    rgb, _, K2, c2w2, info = augment_inputs(torch.stack(rgbs), torch.stack(alphas), K, c2w, cfg,
                                            np.random.default_rng(1))
    assert torch.equal(K2, K) and torch.equal(c2w2, c2w)
    assert not bool(info["jittered"].any()) and torch.allclose(info["grid_px"], torch.full((2,), 1.5))
    for i in range(2):
        shift = np.linalg.norm(_peak(rgb[i]) - _project(K[i], c2w[i], point))
        assert shift <= 1.5 + 0.25
    assert not torch.allclose(rgb, torch.stack(rgbs))


def test_disabled_augmentation_is_identity_and_resize_matches_camera_resized():
    cams = make_rig("mv6", size=W)
    K, c2w = stack_cameras(cams[:2])
    rgbs, alphas = zip(*[_dot_image(c, np.zeros(3)) for c in cams[:2]])
    rgb, alpha = torch.stack(rgbs), torch.stack(alphas)
    out = augment_inputs(rgb, alpha, K, c2w, AugmentConfig.from_yaml(enabled=False), np.random.default_rng(0))
    assert torch.equal(out[0], rgb) and torch.equal(out[2], K)
    r2, a2, _, K2 = resize_views(rgb, alpha, None, K, 32, 48)
    assert r2.shape[-2:] == (32, 48)
    assert np.allclose(K2[0].numpy(), cams[0].resized(48, 32).K, atol=1e-5)
