"""synth.compose: pose + coat + lights + rig -> SceneSpec, deterministic per (seed, index)."""
from pathlib import Path

import numpy as np
import pytest

from mousefacelift.config import compose, to_container
from mousefacelift.shards import SCHEMA
from synth.mouse import compose as C
from synth.mouse.dataset import render_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(procedural):
    return procedural


@pytest.fixture(scope="module")
def cfg():
    return to_container(compose("render", ["rig=mv6", "resolution=32", "seed=7"]))


def _scene_arrays(s):
    return {"vertices": s.meshes[0].vertices, "joints": s.arrays["joints"], "pose": s.arrays["pose"],
            "w2c": np.stack([c.w2c for c in s.cameras]), "K": np.stack([c.K for c in s.cameras]),
            "depth_range": np.array([c.depth_range for c in s.cameras])}


def test_same_seed_and_index_give_identical_scenes_whatever_came_before(model, cfg):
    a = C.MouseComposer(model, cfg)
    first = a.compose(5)
    b = C.MouseComposer(model, cfg)
    for i in (0, 1, 2, 9):          # other indices composed first must not matter
        b.compose(i)
    second = b.compose(5)
    for name, x in _scene_arrays(first).items():
        np.testing.assert_array_equal(x, _scene_arrays(second)[name], err_msg=name)
    assert first.meta == second.meta and first.key == second.key == "mouse_000000005"
    assert first.meshes[0].materials == second.meshes[0].materials
    assert first.environment == second.environment and first.area_lights == second.area_lights
    # another seed or index gives another scene
    other = a.compose(6)
    assert not np.array_equal(other.arrays["pose"], first.arrays["pose"])
    reseeded = a.compose(5, seed=8)
    assert not np.array_equal(reseeded.arrays["pose"], first.arrays["pose"])


def test_pose_matches_the_sampler_in_any_batch(model, cfg):
    from mousefacelift.body import PoseSampler

    s = C.MouseComposer(model, cfg).compose(3)
    batch = PoseSampler(model, cfg["pose"]).sample(indices=np.arange(0, 6), seed=cfg["seed"])
    np.testing.assert_array_equal(s.arrays["pose"], batch.params.to_array()[3])
    assert s.meta["pose"]["family"] == batch.family[3]


def test_framing_rule_body_without_tail_sets_scale_centre_and_view_share(model):
    """docs/architecture.md §3: the body box (no tail) is centred with longest half-extent
    normalize.fill, and every view of the default rig, near or far, frames it to rig.view_fill."""
    from mousefacelift.framing import box_corners

    cfg = to_container(compose("render", ["resolution=32", "seed=7"]))
    comp = C.MouseComposer(model, cfg)
    fill, view_fill = cfg["normalize"]["fill"], cfg["rig"]["view_fill"]
    keep = C.body_keep(model)
    assert keep is not None and 0 < keep.sum() < len(keep)
    dists, focals = [], []
    for idx in range(4):
        s = comp.compose(idx).validate()
        v = s.meshes[0].vertices
        lo, hi = v[keep].min(0), v[keep].max(0)
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-5)
        assert abs((hi - lo).max() / 2 - fill) < 1e-5
        assert np.linalg.norm(v, axis=1).max() < 1.8          # the tail stays inside the models' ray range
        np.testing.assert_allclose(s.meta["normalization"]["body_box"], [lo, hi], atol=1e-5)
        for cam in s.cameras:
            p = box_corners(lo, hi) @ cam.w2c[:3, :3].T + cam.w2c[:3, 3]
            uv = p[:, :2] / p[:, 2:] * cam.K[0, 0] + cam.K[:2, 2]
            reach = 2 * np.abs(uv - cam.K[:2, 2]).max() / cam.width       # farthest corner from the centre
            assert abs(reach - view_fill) < 1e-6, (cam.name, reach)
            dists.append(np.linalg.norm(cam.center))
            focals.append(cam.K[0, 0])
    lo_d, hi_d = cfg["rig"]["distance"]
    assert lo_d - 1e-6 <= min(dists) and max(dists) <= hi_d + 1e-6 and max(dists) / min(dists) > 2
    assert max(focals) / min(focals) > 2                           # narrow lenses far away, wide ones near


def test_world_keeps_metric_scale(model, cfg):
    comp = C.MouseComposer(model, cfg)
    for idx in range(2):
        s = comp.compose(idx)
        v = s.meshes[0].vertices
        # world = (model - center) * scale, and mm_per_unit keeps the metric size
        from mousefacelift.body import PoseParams
        out = model.pose(PoseParams.from_array(model, s.arrays["pose"]))
        n = s.meta["normalization"]
        rebuilt = (out.vertices[0].numpy() - np.array(n["center"])) * n["scale"]
        np.testing.assert_allclose(rebuilt, v, atol=1e-5)
        assert s.meta["mm_per_unit"] == pytest.approx(model.mm_per_unit / n["scale"])
        J0, J1 = s.meta["joints_layout"]["joints"]
        K0, K1 = s.meta["joints_layout"]["keypoints"]
        assert s.arrays["joints"].dtype == np.float32 and s.arrays["joints"].shape == (K1, 3)
        assert K1 - K0 == 22 and J1 == K0
        np.testing.assert_allclose(s.arrays["joints"][K0:], (out.keypoints[0].numpy() - n["center"]) * n["scale"],
                                   atol=1e-5)


def test_meta_cameras_and_depth_ranges(model, cfg):
    s = C.MouseComposer(model, cfg).compose(2)
    m = s.meta
    assert m["schema"] == SCHEMA and m["source"] == "mouse" and m["index"] == 2 and m["seed"] == 7
    assert m["config_hash"] == render_dataset(cfg).config_hash and m["generator"]["name"] == "synth.render"
    for k in ("pose", "appearance", "lighting", "body_model", "normalization"):
        assert k in m, k
    assert len(s.cameras) == 6 and all(c.width == 32 for c in s.cameras)
    v = s.meshes[0].vertices
    for c in s.cameras:     # every surface point lies inside the view's depth range
        z = v @ c.w2c[2, :3] + c.w2c[2, 3]
        assert c.depth_range[0] < z.min() and z.max() < c.depth_range[1]
    import json
    json.dumps(m)           # meta must be JSON (it becomes meta.json)


def test_dataset_config_hash_ignores_operational_settings(cfg):
    def chash(c):
        return render_dataset(c).config_hash

    a = chash(cfg)
    assert chash({**cfg, "run": {**cfg["run"], "workers": 7, "out": "/elsewhere"}}) == a
    assert chash({**cfg, "seed": 8}) != a
    assert chash({**cfg, "preset": "final"}) != a


def test_quality_is_resolved_once_with_the_configs_overrides(cfg):
    from blender.quality import load_quality

    d = render_dataset({**cfg, "preset": "preview", "resolution": 48, "samples": 3})
    preset = load_quality("preview")
    assert d.quality == preset.with_overrides(48, 3) and d.image_size == 48
    # the dataset config records the preset as its file states it, beside the resolved size
    assert d.config["quality_preset"] == preset.settings() and d.config["image_size"] == 48
    assert "name" not in d.config["quality_preset"] and "run" not in d.config
    assert render_dataset({**cfg, "preset": "preview", "resolution": None}).image_size == preset.resolution


def test_bad_quality_presets_are_named(cfg, tmp_path):
    from blender.quality import load_quality

    with pytest.raises(ValueError, match=r"quality config 'ultra': no file .*ultra.yaml \(known: \['final', 'preview', 'train'\]\)"):
        render_dataset({**cfg, "preset": "ultra"})
    good = (REPO / "configs/quality/preview.yaml").read_text()
    (tmp_path / "odd.yaml").write_text(good.replace("denoiser: OPENIMAGEDENOISE", "denoiser: OPTIX"))
    with pytest.raises(ValueError, match=r"odd.yaml.denoiser: 'OPTIX' is not one of"):
        load_quality(tmp_path / "odd.yaml")
    (tmp_path / "extra.yaml").write_text(good + "bloom: true\n")
    with pytest.raises(ValueError, match=r"extra.yaml: unknown key\(s\) \['bloom'\]"):
        load_quality(tmp_path / "extra.yaml")
    (tmp_path / "zero.yaml").write_text(good.replace("samples: 16", "samples: 0"))
    with pytest.raises(ValueError, match="zero.yaml: samples: expected a positive count, got 0"):
        load_quality(tmp_path / "zero.yaml")
    (tmp_path / "named.yaml").write_text(good + "name: fancy\n")
    with pytest.raises(ValueError, match="named.yaml: 'name' is not a preset field"):
        load_quality(tmp_path / "named.yaml")
    (tmp_path / "custom.yaml").write_text(good)
    custom = load_quality(tmp_path / "custom.yaml")
    assert custom.name == "custom" and custom.settings() == load_quality("preview").settings()


def test_meta_readers_find_what_the_composers_write(model, cfg):
    from synth.mouse import meta as M
    from synth.mouse.appearance import FAMILIES
    from synth.objects.composer import ObjectComposer

    def with_sky(p):
        return {**cfg, "lighting": {**cfg["lighting"], "sky": {**cfg["lighting"]["sky"], "probability": p}}}

    m = C.MouseComposer(model, with_sky(0.0)).compose(1).meta
    assert M.body_model(m) == model.name and M.pose_family(m) == m["pose"]["family"]
    assert M.coat_family(m) in FAMILIES
    assert M.environment(m).startswith("builtin:") and M.light_strength(m) == m["lighting"]["strength"]
    assert M.area_light_count(m) == len(m["lighting"]["area_lights"])
    assert M.environment(C.MouseComposer(model, with_sky(1.0)).compose(1).meta) == "sky"
    objects = to_container(compose("objects/render", ["rig=mv6", "resolution=32"]))
    o = ObjectComposer(objects).compose(0).meta
    assert M.environment(o) is not None and M.pose_family(o) is M.coat_family(o) is M.body_model(o) is None
    assert M.environment({"source": "real"}) is M.light_strength({"source": "real"}) is None


def test_bad_fill_is_refused():
    from mousefacelift.framing import normalization
    with pytest.raises(ValueError, match="normalize.fill"):
        normalization(-np.ones(3), np.ones(3), 1.2)


@pytest.mark.mammal
def test_mammal_model_composes_into_the_cube(mammal, cfg):
    m = mammal
    s = C.MouseComposer(m, cfg).compose(4)
    v = s.meshes[0].vertices
    body = v[C.body_keep(m)]
    assert len(v) == m.num_vertices and np.all(np.abs(body) <= cfg["normalize"]["fill"] + 1e-5)
    assert np.linalg.norm(v, axis=1).max() < 1.8
    assert s.meshes[0].uv is not None and s.meta["body_model"] == "mammal"
    again = C.MouseComposer(m, cfg).compose(4)
    np.testing.assert_array_equal(again.arrays["pose"], s.arrays["pose"])


def test_input_look_is_drawn_for_the_mvinput_input_view_only(model):
    """The render-time lab-camera look: drawn in compose (its own seed stream, so every other draw
    is unchanged), recorded for view 0, part of the dataset's identity; refused without mvinput."""
    from synth.render import RenderError, validate_config

    plain = to_container(compose("render", ["rig=mvinput", "resolution=32", "seed=7"]))
    looked = to_container(compose("render", ["rig=mvinput", "resolution=32", "seed=7", "input_look.enabled=true"]))
    a, b = C.MouseComposer(model, plain).compose(4), C.MouseComposer(model, looked).compose(4)
    assert "lab_camera" not in a.meta and list(b.meta["lab_camera"]["views"]) == ["0"]
    for k, v in _scene_arrays(a).items():
        np.testing.assert_array_equal(v, _scene_arrays(b)[k], err_msg=k)
    assert a.meta["appearance"] == b.meta["appearance"] and a.meta["lighting"] == b.meta["lighting"]
    assert render_dataset(plain).config_hash != render_dataset(looked).config_hash
    with pytest.raises(RenderError, match="needs the mvinput rig"):
        validate_config(to_container(compose("render", ["resolution=32", "input_look.enabled=true"])))
