"""Gaussians container: validation, pruning, SH padding and the 3DGS .ply round trip."""
import os

import numpy as np
import pytest
import torch

from mousefacelift.gaussians import Gaussians, rgb_to_sh0, sh0_to_rgb


def random_gaussians(B=2, N=50, degree=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(means=torch.randn(B, N, 3, generator=gen), scales=torch.rand(B, N, 3, generator=gen) * 0.2 + 1e-3,
                     rotations=torch.nn.functional.normalize(torch.randn(B, N, 4, generator=gen), dim=-1),
                     opacities=torch.rand(B, N, 1, generator=gen) * 0.98 + 0.01,
                     sh=torch.randn(B, N, (degree + 1) ** 2, 3, generator=gen))


@pytest.mark.parametrize("degree", [0, 2])
def test_ply_round_trip(tmp_path, degree):
    g = random_gaussians(degree=degree)
    path = g.save_ply(tmp_path / "g.ply", index=1)
    back = Gaussians.load_ply(path)
    one = g[1]
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        torch.testing.assert_close(getattr(back, name), getattr(one, name), atol=1e-5, rtol=1e-5)
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "property float f_dc_0" in header and "property float rot_3" in header
    assert ("property float f_rest_0" in header) == (degree > 0)
    # stored values are the 3DGS parameterisation: logit opacity, log scale
    table = g.to_ply_array(1)
    names = g.ply_attribute_names()
    op = one.opacities[0, :, 0].numpy()
    np.testing.assert_allclose(table[:, names.index("opacity")], np.log(op / (1 - op)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(table[:, names.index("scale_0")], np.log(one.scales[0, :, 0].numpy()), rtol=1e-5)


def test_load_ply_refuses_foreign_files(tmp_path):
    p = tmp_path / "bad.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(ValueError, match="binary_little_endian"):
        Gaussians.load_ply(p)
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n" + b"\0" * 4)
    with pytest.raises(ValueError, match="missing vertex properties"):
        Gaussians.load_ply(p)
    p.write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        Gaussians.load_ply(p)


def test_shape_validation_names_the_field():
    g = random_gaussians()
    with pytest.raises(ValueError, match="opacities"):
        Gaussians(g.means, g.scales, g.rotations, g.opacities[:, :, :, None], g.sh)
    with pytest.raises(ValueError, match=r"\(degree\+1\)\^2"):
        Gaussians(g.means, g.scales, g.rotations, g.opacities, torch.zeros(2, 50, 3, 3))


def test_prune_by_opacity_scale_and_box():
    g = random_gaussians(B=2, N=200)
    kept = g.prune(min_opacity=0.3, max_scale=0.15, box=(-1, 1, -1, 1, -1, 1))
    mask = ((g.opacities[..., 0] >= 0.3) & (g.scales.amax(-1) <= 0.15) & (g.means.abs() <= 1).all(-1))
    assert kept.num_gaussians == int(mask.sum(1).max())
    for b in range(2):
        n = int(mask[b].sum())
        torch.testing.assert_close(kept.means[b, :n], g.means[b][mask[b]])
        assert torch.all(kept.opacities[b, n:] == 0)   # padding is transparent
    with pytest.raises(ValueError, match="box"):
        g.prune(box=(0, 1))


def test_sh_padding_and_colour_conversions():
    g = random_gaussians(degree=0)
    g3 = g.with_sh_degree(3)
    assert g3.sh.shape[2] == 16 and g3.sh_degree == 3
    torch.testing.assert_close(g3.sh[:, :, 0], g.sh[:, :, 0])
    assert torch.all(g3.sh[:, :, 1:] == 0)
    assert g3.with_sh_degree(0).sh.shape[2] == 1
    rgb = torch.rand(5, 3)
    torch.testing.assert_close(sh0_to_rgb(rgb_to_sh0(rgb)), rgb)


def test_cat_detach_to_and_index():
    g = random_gaussians()
    both = Gaussians.cat([g, g], dim=1)
    assert both.num_gaussians == 100 and both.batch_size == 2
    assert g[0].batch_size == 1 and g[-1].batch_size == 1
    g.means.requires_grad_(True)
    assert not g.detach().means.requires_grad
    assert g.to(torch.float64).means.dtype == torch.float64


def test_turntable_gif_shows_the_object_from_all_sides(tmp_path):
    import imageio.v2 as imageio
    from mousefacelift.inference import save_turntable, turntable_frames
    # a red blob on +X and a blue blob on -X: the front view sees red nearest, the back view blue
    g = Gaussians(means=torch.tensor([[[0.4, 0, 0], [-0.4, 0, 0]]]), scales=torch.full((1, 2, 3), 0.25),
                  rotations=torch.tensor([[[1.0, 0, 0, 0]] * 2]), opacities=torch.full((1, 2, 1), 0.99),
                  sh=rgb_to_sh0(torch.tensor([[[[1.0, 0, 0]], [[0, 0, 1.0]]]])))
    frames = turntable_frames(g, frames=4, size=32, elevation_deg=0)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    c = frames[:, 16, 16].astype(int)
    assert c[0, 0] > c[0, 2] and c[2, 2] > c[2, 0]
    path = save_turntable(g, tmp_path / "spin.gif", frames=4, size=32)
    assert len(imageio.mimread(path)) == 4
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask      # readable like any output, not private
