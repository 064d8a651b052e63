import numpy as np
import pytest

from synth.mouse.lighting import LightingError, LightingSampler, builtin_hdris, folder_hdris, load_lighting_config


def _cfg(**over):
    cfg = load_lighting_config()
    for k, v in over.items():
        cfg[k] = dict(cfg[k], **v)
    return cfg


def test_builtin_pool_found_without_importing_bpy():
    import sys
    pytest.importorskip("importlib.util")
    had = "bpy" in sys.modules
    maps = builtin_hdris()
    if not maps:
        pytest.skip("bpy is not installed")
    assert len(maps) == 8 and all(p.suffix == ".exr" for p in maps)
    assert ("bpy" in sys.modules) == had


def test_sampling_is_deterministic_and_in_range():
    s = LightingSampler()
    if not s.pool:
        pytest.skip("bpy is not installed")
    kinds = set()
    for seed in range(60):
        env, lights, params = s.sample(np.random.default_rng(seed))
        env2, lights2, params2 = s.sample(np.random.default_rng(seed))
        assert params == params2 and env == env2
        kinds.add("sky" if env.sky else "hdri")
        if env.hdri:
            assert env.hdri in s.pool and 0 <= env.rotation_deg <= 360 and 0.6 <= env.strength <= 1.6
        assert 0 <= len(lights) <= 2
        for l in lights:
            assert 2.5 - 1e-9 <= np.linalg.norm(l.position) <= 4.0 + 1e-9 and l.position[2] > 0
    assert kinds == {"sky", "hdri"}


def test_user_folder_and_errors(tmp_path):
    with pytest.raises(LightingError, match="nope"):
        folder_hdris(tmp_path / "nope")
    with pytest.raises(LightingError, match="no .hdr or .exr"):
        folder_hdris(tmp_path)
    (tmp_path / "bad.hdr").write_bytes(b"definitely not radiance")
    with pytest.raises(LightingError, match="bad.hdr"):
        folder_hdris(tmp_path)
    (tmp_path / "bad.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 1\n\x80\x80\x80\x80")
    cfg = _cfg(hdri={"builtin": False})
    s = LightingSampler(cfg, hdri_folder=tmp_path)
    assert s.pool == [str(tmp_path / "bad.hdr")]
    with pytest.raises(LightingError, match="empty"):
        LightingSampler(_cfg(hdri={"builtin": False}, sky={"probability": 0.0}))
    only_sky = LightingSampler(_cfg(hdri={"builtin": False}, sky={"probability": 1.0}))
    env, _, _ = only_sky.sample(np.random.default_rng(0))
    assert env.hdri is None and env.sky["type"] == "NISHITA"


def test_config_missing_section_is_named(tmp_path):
    p = tmp_path / "bare.yaml"
    p.write_text("hdri: {builtin: true}\n")
    with pytest.raises(LightingError, match=r"bare.yaml: missing section\(s\) \['sky', 'area_lights'\]"):
        load_lighting_config(p)


def test_meta_names_hdri_portably(tmp_path):
    """meta.json must not carry machine paths: the same index renders to the same bytes anywhere."""
    import shutil

    import numpy as np

    from synth.mouse.lighting import LightingSampler, builtin_hdris

    if not builtin_hdris():
        import pytest
        pytest.skip("bpy's built-in HDR maps are not installed")
    shutil.copy(builtin_hdris()[0], tmp_path / "mine.exr")
    sampler = LightingSampler(hdri_folder=tmp_path)
    names = set()
    for seed in range(40):
        env, _, params = sampler.sample(np.random.default_rng(seed))
        if env.hdri is not None:
            assert params["hdri"].split(":")[0] in ("builtin", "folder") and "/" not in params["hdri"]
            names.add(params["hdri"])
    assert "folder:mine.exr" in names and any(n.startswith("builtin:") for n in names)
