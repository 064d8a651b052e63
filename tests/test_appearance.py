import numpy as np
import pytest

from mousefacelift.config import ConfigError
from synth.mouse.appearance import REGIONS, AppearanceError, AppearanceSampler, load_appearance_config


def test_every_region_gets_a_valid_material_and_sampling_is_deterministic():
    s = AppearanceSampler()
    for seed in range(30):
        mats, params = s.sample(np.random.default_rng(seed))
        assert set(mats) == set(REGIONS)
        for name, m in mats.items():
            m.validate(name)
        mats2, params2 = s.sample(np.random.default_rng(seed))
        assert params == params2
        assert params["materials"]["fur"]["base_color"] == list(mats["fur"].base_color) or \
            tuple(params["materials"]["fur"]["base_color"]) == mats["fur"].base_color


def test_family_traits_and_weights():
    s = AppearanceSampler()
    counts, seen = {}, {}
    for seed in range(600):
        mats, params = s.sample(np.random.default_rng(seed))
        fam = params["family"]
        counts[fam] = counts.get(fam, 0) + 1
        seen.setdefault(fam, mats)
    assert set(counts) == {"black", "albino", "agouti", "brown", "grey", "piebald"}
    assert counts["black"] > counts["grey"]                        # weights are honoured
    lum = lambda c: float(np.mean(c))                               # noqa: E731
    assert lum(seen["black"]["fur"].base_color) < 0.05 < lum(seen["albino"]["fur"].base_color)
    ear = seen["albino"]["ear_skin"].base_color
    assert ear[0] > ear[2] * 1.4                                    # pink skin
    assert seen["albino"]["eye"].base_color[0] > 3 * seen["albino"]["eye"].base_color[1]   # red eyes
    assert lum(seen["black"]["eye"].base_color) < 0.05 and seen["black"]["eye"].coat >= 0.8
    assert seen["piebald"]["fur"].pattern == "patches" and seen["agouti"]["fur"].pattern == "agouti"
    assert seen["albino"]["ear_skin"].subsurface > 0


def test_bad_config_is_named(tmp_path):
    cfg = load_appearance_config()
    cfg["weights"] = dict(cfg["weights"], purple=1.0)
    p = tmp_path / "bad.yaml"
    import yaml
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(AppearanceError, match="purple"):
        load_appearance_config(p)
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_appearance_config(tmp_path / "nope.yaml")


def test_fur_strands_are_drawn_from_the_config_and_only_for_the_coat():
    cfg = load_appearance_config()
    st = cfg["fur"]["strands"]
    s = AppearanceSampler(cfg)
    for seed in range(20):
        mats, params = s.sample(np.random.default_rng(seed))
        fur = mats["fur"]
        for key, field in (("strength", "strands"), ("width", "strand_width"), ("length", "strand_length"),
                           ("color", "strand_color"), ("anisotropy", "anisotropy")):
            lo, hi = st[key]
            assert lo <= getattr(fur, field) <= hi, (key, getattr(fur, field))
        assert params["materials"]["fur"]["strands"] == fur.strands
        assert all(mats[r].strands == 0.0 and mats[r].anisotropy == 0.0 for r in REGIONS if r != "fur")
    smooth = dict(cfg, fur={k: v for k, v in cfg["fur"].items() if k != "strands"})
    mats, _ = AppearanceSampler(smooth).sample(np.random.default_rng(0))
    assert mats["fur"].strands == 0.0 and mats["fur"].anisotropy == 0.0     # no section: the smooth coat
