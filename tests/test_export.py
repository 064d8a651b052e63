"""synth.export: shards -> FaceLift layout -> shards keeps RGBA and cameras."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mousefacelift.shards import MultiViewSample, write_samples
from synth.tools import export
from synth.tools.inspect import iter_samples
from mousefacelift.analytic import critter_sample


def _decoded(folder):
    return [MultiViewSample.decode(f, where=s) for s, f in iter_samples(folder)]


def test_facelift_layout_and_exact_round_trip(tmp_path):
    samples = [critter_sample(f"obj_{i:06d}", rig="sphere4", size=48, seed=i) for i in range(3)]
    write_samples(tmp_path / "shards", samples)
    assert export.main(["--format", "facelift", str(tmp_path / "shards"), str(tmp_path / "fl"), "--size", "none",
                        "--quiet"]) == 0
    lst = (tmp_path / "fl" / "data_list.txt").read_text().split()
    assert [p.rsplit("/", 1)[-1] for p in lst] == ["obj_000000", "obj_000001", "obj_000002"]
    doc = json.loads((tmp_path / "fl" / "obj_000001" / "opencv_cameras.json").read_text())
    f0 = doc["frames"][0]
    assert set(f0) >= {"w", "h", "fx", "fy", "cx", "cy", "w2c", "file_path"}
    assert f0["file_path"] == "images/cam_000.png"
    im = Image.open(tmp_path / "fl" / "obj_000001" / f0["file_path"])
    assert im.mode == "RGBA" and im.size == (48, 48)

    assert export.main(["--import", str(tmp_path / "fl"), str(tmp_path / "back"), "--samples-per-shard", "2",
                        "--quiet"]) == 0
    back = _decoded(tmp_path / "back")
    assert [b.key for b in back] == [s.key for s in samples]
    for s, b in zip(samples, back):
        assert np.array_equal(s.rgba, b.rgba)
        for cs, cb in zip(s.cameras, b.cameras):
            assert np.allclose(cs.K, cb.K) and np.allclose(cs.w2c, cb.w2c)
        assert b.meta["source"] == "object" and b.meta["mm_per_unit"] == s.meta["mm_per_unit"]
        assert b.depth is None
        assert np.array_equal(b.arrays["joints"], s.arrays["joints"])


def test_resized_export_keeps_intrinsics_in_sync(tmp_path):
    s = critter_sample("obj_000000", rig="sphere4", size=64, seed=0)
    write_samples(tmp_path / "shards", [s])
    assert export.main([str(tmp_path / "shards"), str(tmp_path / "fl"), "--size", "32", "--quiet"]) == 0
    assert export.main(["--import", str(tmp_path / "fl"), str(tmp_path / "back"), "--source", "real", "--quiet"]) == 0
    (b,) = _decoded(tmp_path / "back")
    assert b.rgba.shape == (4, 32, 32, 4) and b.meta["source"] == "real"
    for cs, cb in zip(s.cameras, b.cameras):
        assert np.allclose(cb.K, cs.resized(32, 32).K) and np.allclose(cb.w2c, cs.w2c)
        # a world point lands on the same relative image position before and after
        uv_s, _ = cs.project(np.array([[0.55, 0.0, 0.05]]))
        uv_b, _ = cb.project(np.array([[0.55, 0.0, 0.05]]))
        assert np.allclose(uv_b, uv_s / 2)
    # resampled images agree with a 2x box-downsample of the original within a few levels
    a = s.rgba[..., 3].astype(float).reshape(4, 32, 2, 32, 2).mean(axis=(2, 4))
    assert np.abs(b.rgba[..., 3].astype(float) - a).mean() < 6


def test_import_errors_name_the_problem(tmp_path, capsys):
    d = tmp_path / "fl" / "x"
    (d / "images").mkdir(parents=True)
    (d / "opencv_cameras.json").write_text(json.dumps({"frames": [{"w": 8, "h": 8, "fx": 8, "fy": 8, "cx": 4,
                                                                    "w2c": np.eye(4).tolist(),
                                                                    "file_path": "images/cam_000.png"}]}))
    assert export.main(["--import", str(tmp_path / "fl"), str(tmp_path / "out"), "--source", "real",
                        "--mm-per-unit", "1", "--quiet"]) == 2
    assert "missing field 'cy'" in capsys.readouterr().err
    assert export.main(["--import", str(tmp_path / "nothing"), str(tmp_path / "out"), "--quiet"]) == 2
