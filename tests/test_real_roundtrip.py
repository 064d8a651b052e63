"""End to end: a fake recording through the real DANNCE rig, ingested and checked against its
truth; and the three sources (mouse/object/real) decode to the same tensor schema."""
from dataclasses import replace

import numpy as np
import pytest

from mousefacelift.config import load_typed
from mousefacelift.framing import box_corners
from mousefacelift.shards import MultiViewSample, iter_shard, list_shards, read_manifest
from synth.real.calibration import load_calibration
from synth.real.fake_capture import FakeCaptureConfig, check_round_trip, make_fake_capture
from synth.tools.geometry_checks import Thresholds
from synth.real.ingest import main as ingest_main


@pytest.fixture(scope="module")
def fake_capture(dannce_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fake_capture")
    cfg = replace(load_typed(FakeCaptureConfig, "real", "fake_capture"), frames=6, downscale=4,
                  renderer="raster")   # numpy renderer: fast and bpy-free
    make_fake_capture(out, load_calibration(dannce_dir / "label3d_dannce.mat"), cfg)
    return out


def _ingest(cap, out, *extra):
    rc = ingest_main(["--calib", str(cap / "calibration.json"), "--frames", str(cap / "frames"), "--out", str(out),
                      "normalize.size=96", "splits.train=[0,0.5]", "splits.val=[0.5,0.67]", "splits.test=[0.67,1.0]",
                      *extra])
    assert rc == 0
    return [out / s for s in ("train", "val", "test")]


@pytest.mark.slow
def test_fake_recording_round_trip_given_masks(fake_capture, tmp_path):
    dirs = _ingest(fake_capture, tmp_path / "ing", "--masks", str(fake_capture / "masks"))
    assert [read_manifest(d)["shards"][0]["samples"] for d in dirs] == [3, 1, 2]   # temporal split 0-2 | 3 | 4-5
    # At 288x256 a 1-2 px tail makes IoU(alpha, truth depth) edge-limited (0.93 here, 0.98 at full
    # 1152x1024, docs/benchmarks.md); every other verify limit is the default.
    rep = check_round_trip(fake_capture, dirs, thresholds=Thresholds(depth_alpha_iou_min=0.9))
    s = rep["summary"]
    assert s["samples"] == 6
    assert s["camera_reproj_px_max"] < 1e-6          # re-expression + rotation + resize are exact
    # against the truth body box without the tail (the framing rule); measured 2.3 / 1.8 mm
    assert s["origin_err_mm_max"] < 5.0 and s["origin_err_mm_mean"] < 3.0
    # the hull is conservative by about a voxel per side; measured +3.0 % mean, 6.2 % max
    assert 0.0 < s["scale_err_pct_mean"] < 5.0 and s["scale_err_pct_max_abs"] < 8.0
    assert s["alpha_iou_min"] > 0.9
    assert s["verify_failures"] == 0, [r["verify_problems"] for r in rep["samples"]]
    # the walk takes the mouse off some cameras' sensors: those views are left out and named
    dropped = {}
    for d in dirs:
        for shard in list_shards(d):
            for fields in iter_shard(shard):
                smp = MultiViewSample.decode(fields)
                nm = smp.meta["normalization"]
                gone = nm["views_dropped"]
                assert smp.num_views == 6 - len(gone) >= 4
                assert not set(gone) & {c.name for c in smp.cameras}
                dropped.update(gone)
                # framed like a render: body centre on the centred principal point, body box at view_fill
                lo, hi = np.asarray(nm["body_box"])
                assert np.isclose(np.abs(hi - lo).max(), 2 * nm["fill"]) and np.allclose(lo + hi, 0)
                for cam in smp.cameras:
                    half = cam.width / 2
                    assert np.allclose(cam.K[:2, 2], half) and np.allclose(cam.project(np.zeros((1, 3)))[0], half)
                    uv, _ = cam.project(box_corners(lo, hi))
                    assert np.isclose(np.abs(uv - half).max() / half, nm["view_fill"])
    assert dropped and all("cut off by the sensor border" in why for why in dropped.values())


@pytest.mark.slow
def test_fake_recording_round_trip_background_subtraction(fake_capture, tmp_path):
    # thin tail at 4x downscale: no opening, keep every component (see docs/benchmarks.md)
    dirs = _ingest(fake_capture, tmp_path / "ing", "masks.open_iterations=0", "masks.keep_largest=false")
    s = check_round_trip(fake_capture, dirs)["summary"]
    assert s["samples"] == 6 and s["camera_reproj_px_max"] < 1e-6
    assert s["origin_err_mm_mean"] < 8.0 and abs(s["scale_err_pct_mean"]) < 8.0


@pytest.mark.slow
def test_three_sources_share_one_schema(fake_capture, tmp_path):
    from synth.render_objects import ObjectComposer
    from mousefacelift.config import compose, to_container

    dirs = _ingest(fake_capture, tmp_path / "ing", "--masks", str(fake_capture / "masks"))
    real = MultiViewSample.decode(next(iter_shard(list_shards(dirs[0])[0]))).to_tensors()
    cfg = to_container(compose("objects/render", ["rig.name=sphere2", "resolution=16"]))
    scene = ObjectComposer(cfg).compose(3)
    V = len(scene.cameras)

    def depth(cams):       # a square at mid-range of each view's own depth_range (views sit at different distances)
        d = np.zeros((len(cams), 16, 16), np.float32)
        for i, c in enumerate(cams):
            d[i, 4:12, 4:12] = np.mean(c.depth_range)
        return d

    rgba = np.zeros((V, 16, 16, 4), np.uint8)
    rgba[:, 4:12, 4:12] = 200
    obj = MultiViewSample(key=scene.key, meta=scene.meta, rgba=rgba, cameras=scene.cameras, depth=depth(scene.cameras))
    obj = MultiViewSample.decode(obj.encode()).to_tensors()
    mcfg = to_container(compose("render", ["rig.name=sphere2", "resolution=16"]))
    from synth.mouse.dataset import render_dataset
    from synth.mouse.workers import make_composer

    mscene = make_composer(mcfg, render_dataset(mcfg)).compose(0)
    mouse = MultiViewSample(key=mscene.key, meta=mscene.meta, rgba=rgba, cameras=mscene.cameras,
                            depth=depth(mscene.cameras), arrays=mscene.arrays)
    mouse = MultiViewSample.decode(mouse.encode()).to_tensors()
    assert {real["meta"]["source"], obj["meta"]["source"], mouse["meta"]["source"]} == {"real", "object", "mouse"}
    core = ("rgb", "alpha", "K", "c2w")
    for t in (real, obj, mouse):
        assert all(t[k].dtype == mouse[k].dtype and t[k].ndim == mouse[k].ndim for k in core)
        assert t["meta"]["mm_per_unit"] > 0
    assert "depth" not in real and "depth" in obj and "depth" in mouse
    assert obj["depth"].dtype == mouse["depth"].dtype


def test_fake_capture_cli_overrides(dannce_dir, tmp_path, capsys):
    from synth.real.fake_capture import main as fake_main
    with pytest.raises(SystemExit):
        fake_main(["--calib", str(dannce_dir / "label3d_dannce.mat"), "--out", str(tmp_path / "x"), "path_radius=5"])
    assert "path_radius_mm" in capsys.readouterr().err            # the error lists the real keys
    out = tmp_path / "cap"
    assert fake_main(["--calib", str(dannce_dir / "label3d_dannce.mat"), "--out", str(out), "--renderer", "raster",
                      "--downscale", "8", "--frames", "1", "path_radius_mm=0", "arena_center_mm=[10, 20]"]) == 0
    import json
    truth = json.loads((out / "truth.json").read_text())
    assert truth["config"]["path_radius_mm"] == 0 and list(truth["config"]["arena_center_mm"]) == [10, 20]
    # no walk: the mouse's box centre is the arena centre
    verts = np.load(out / "truth_vertices.npy").astype(np.float64)[0]
    assert np.allclose((verts[:, :2].min(0) + verts[:, :2].max(0)) / 2, [10, 20], atol=15)
    # the truth centre and scale are the body's without the tail (the framing rule ingest follows)
    from mousefacelift.body import load_body_model
    from synth.mouse.compose import body_keep
    body = verts[body_keep(load_body_model("procedural"))]
    lo, hi = body.min(0), body.max(0)
    t = truth["frames"][0]
    assert np.allclose(t["center_mm"], (lo + hi) / 2, atol=1e-6)
    assert np.isclose(t["mm_per_unit"], (hi - lo).max() / 2 / t["fill"])
    assert np.linalg.norm((verts.min(0) + verts.max(0)) / 2 - (lo + hi) / 2) > 10     # the tail is left out
