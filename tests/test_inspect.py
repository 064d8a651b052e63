"""synth.inspect: the contact sheet has the documented grid and shows the sample; stats add up."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mousefacelift import viz
from synth.tools import inspect as si
from mousefacelift.analytic import critter_sample
from mousefacelift.shards import write_samples


def _shards(tmp_path, n=2, views="sphere6", size=48, **kw):
    samples = [critter_sample(f"obj_{i:06d}", rig=views, size=size, seed=i, **kw) for i in range(n)]
    write_samples(tmp_path / "shards", samples)
    return samples


def test_contact_sheet_png_has_expected_grid(tmp_path):
    samples = _shards(tmp_path)
    out = tmp_path / "sheet.png"
    assert si.main([str(tmp_path / "shards"), "--key", "obj_000001", "--out", str(out), "--tile", "40",
                    "--per-row", "4", "--quiet"]) == 0
    img = np.asarray(Image.open(out))
    style = si.SheetStyle(tile=40, per_row=4)
    assert img.shape[:2] == si.sheet_size(6, 48, 48, style)
    # 6 views, 4 per line -> 2 lines x 4 rows of tiles; first rgba tile is the checkerboard + subject
    g = viz.GridStyle()
    y0 = g.title_height + g.pad + g.label_height
    x0 = style.row_label_width + g.pad
    tile = img[y0:y0 + 40, x0:x0 + 40, :3].astype(int)
    expect = viz.composite_over_checkerboard(viz.resize_rgba(samples[1].rgba[0], (40, 40)))
    assert np.abs(tile - expect).max() <= 1
    # the depth tile (next tile row) shows the subject in colour on black
    y1 = y0 + 40 + g.pad + g.label_height
    depth_tile = img[y1:y1 + 40, x0:x0 + 40, :3]
    assert (depth_tile.sum(-1) == 0).any() and (depth_tile.std(-1) > 20).any()


def test_unknown_key_and_bad_target_are_clear_errors(tmp_path, capsys):
    _shards(tmp_path, n=1)
    assert si.main([str(tmp_path / "shards"), "--key", "nope", "--quiet"]) == 2
    assert "no sample with key 'nope'" in capsys.readouterr().err
    assert si.main([str(tmp_path / "missing"), "--quiet"]) == 2


def test_stats_count_and_cover(tmp_path, capsys):
    samples = _shards(tmp_path, n=3)
    js = tmp_path / "stats.json"
    assert si.main([str(tmp_path / "shards"), "--stats", "--json", str(js), "--quiet"]) == 0
    st = json.loads(js.read_text())
    assert st["samples"] == 3 and st["sources"] == {"object": 3}
    alpha = np.concatenate([(s.rgba[..., 3] >= 128).mean(axis=(1, 2)) for s in samples])
    assert abs(st["alpha_fraction"]["median"] - float(np.median(alpha))) < 1e-9
    # depth goes through the 16-bit encoding: equal to ~1e-5 of the range
    assert abs(st["depth_near"]["min"] - float(min(s.depth[s.depth > 0].min() for s in samples))) < 1e-4
    assert 0 < st["bbox_fill"]["median"] <= 1 and st["empty_views"] == 0
    assert "alpha fraction per view" in capsys.readouterr().out


def test_viz_helpers():
    assert viz.turbo(np.array([0.0, 1.0])).shape == (2, 3)
    d = np.array([[0.0, 2.0], [3.0, 4.0]])
    rgb = viz.colorize_depth(d)
    assert (rgb[0, 0] == 0).all()
    assert rgb[0, 1, 0] > rgb[0, 1, 2] and rgb[1, 1, 2] > rgb[1, 1, 0]     # near warm, far cool
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255
    out = viz.composite_over(rgba, np.array([0, 0, 255]))
    assert (out[0, 0] == [255, 0, 0]).all() and (out[3, 0] == [0, 0, 255]).all()
