"""benchmarks/pose_realism.py: the upright/free best-match alignments and the floor figures."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def realism():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("pose_realism", BENCH / "pose_realism.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _poses(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=20.0, size=(n, 22, 3))


def test_upright_alignment_sees_yaw_and_scale_but_not_tilt(realism):
    real = _poses(3)
    yaw = Rotation.from_euler("z", [[40], [-120], [75]], degrees=True).as_matrix()
    samples = np.stack([0.8 * real[i] @ yaw[i].T + [5.0, -3.0, 2.0] for i in range(3)])
    samples = np.concatenate([samples, _poses(20, seed=1)])
    err, idx, scale = realism.upright_matches(real, samples)
    assert np.allclose(err, 0, atol=1e-9) and np.array_equal(idx, [0, 1, 2])
    assert np.allclose(scale, 1 / 0.8)
    # the same poses tipped 30 degrees off the floor: free rotation still matches them exactly
    # (and says by how much it had to tilt), the upright alignment cannot
    tilt = Rotation.from_euler("x", 30, degrees=True).as_matrix()
    tipped = samples[:3] @ tilt.T
    e_up = realism.upright_matches(real, tipped)[0]
    e_free, i_free, rot = realism.best_matches(real, tipped)
    assert np.all(e_up > 1.0) and np.allclose(e_free, 0, atol=1e-6)
    assert np.allclose(realism.tilt_deg(rot), 30, atol=1e-4)


def test_unlabelled_keypoints_are_ignored(realism):
    real = _poses(1)
    samples = real.copy()
    samples[0, 4] += 50.0
    real[0, 4] = np.nan
    assert realism.upright_matches(real, samples)[0][0] == pytest.approx(0, abs=1e-9)


def test_floor_figures(realism):
    from mousefacelift.dannce import KEYPOINT_NAMES
    names = list(KEYPOINT_NAMES)
    kp = np.full((2, 22, 3), 30.0)
    paws = [names.index(n) for n in ("ForepawL", "ForepawR", "HindpawL", "HindpawR")]
    kp[0, paws, 2] = [1.0, 4.5, 2.0, 12.0]       # three within 4 mm of the lowest, fore up 0
    kp[1, paws, 2] = [20.0, 25.0, 1.0, 2.0]      # a rear: two hind paws down, fore paws 19 mm up
    kp[:, names.index("Tail(end)"), 2] = [2.0, 40.0]
    f = realism.floor_figures(kp, names)
    assert f["paws_on_floor"].tolist() == [3, 2]
    assert np.allclose(f["fore_up_mm"], [-1.0, 19.0])
    assert f["tail_tip_mm"].tolist() == [2.0, 40.0]
    kp[1, paws[0], 2] = np.nan                   # an unlabelled paw is not on the floor
    assert realism.floor_figures(kp, names)["paws_on_floor"][1] == 2
