import io
import json

import numpy as np
import pytest

from mousefacelift.cameras import make_rig
from mousefacelift.shards import SCHEMA, MultiViewSample, SampleError, decode_depth, encode_depth
from mousefacelift.scene import depth_range_for


def _sample(V=3, S=16, seed=0):
    rng = np.random.default_rng(seed)
    cams = depth_range_for(make_rig(f"sphere{V}", size=S, seed=seed), np.full(3, -1.0), np.full(3, 1.0))
    rgba = rng.integers(0, 256, (V, S, S, 4), dtype=np.uint8)
    rgba[:, :4, :, 3] = 0
    depth = np.stack([rng.uniform(*c.depth_range, (S, S)) for c in cams]).astype(np.float32)
    depth[rgba[..., 3] == 0] = 0
    n = rng.normal(size=(V, S, S, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    meta = {"schema": SCHEMA, "source": "mouse", "mm_per_unit": 50.0, "seed": seed, "index": 7}
    return MultiViewSample(key="mouse_000000007", meta=meta, rgba=rgba, cameras=cams, depth=depth, normal=n,
                           arrays={"joints": rng.normal(size=(5, 3)).astype(np.float32)})


def test_round_trip_is_exact_to_quantisation():
    s = _sample()
    enc = s.encode()
    assert set(enc) >= {"__key__", "meta.json", "000.rgba.png", "002.depth.png", "001.normal.png", "joints.npy"}
    d = MultiViewSample.decode(enc)
    assert np.array_equal(d.rgba, s.rgba)
    valid = s.depth > 0
    assert np.array_equal(d.depth > 0, valid)
    step = max((c.depth_range[1] - c.depth_range[0]) / 65534 for c in s.cameras)
    assert np.abs(d.depth - s.depth)[valid].max() <= step
    fg = s.rgba[..., 3] > 0
    assert np.abs(d.normal - s.normal)[fg].max() < 0.02
    assert np.allclose(d.arrays["joints"], s.arrays["joints"])
    t = d.to_tensors()
    assert t["rgb"].shape == (3, 3, 16, 16) and t["alpha"].shape == (3, 1, 16, 16) and t["depth"].shape == (3, 1, 16, 16)
    assert t["K"].shape == (3, 3, 3) and t["c2w"].shape == (3, 4, 4)


def test_depth_codec_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside depth_range"):
        encode_depth(np.array([[5.0]]), (1.0, 2.0))
    assert decode_depth(np.array([[0, 1, 65535]], dtype=np.uint16), (1.0, 2.0)).tolist() == [[0.0, 1.0, 2.0]]


def test_decode_errors_name_the_member():
    enc = _sample().encode()
    bad = dict(enc)
    del bad["001.rgba.png"]
    with pytest.raises(SampleError, match=r"missing member 001.rgba.png"):
        MultiViewSample.decode(bad, where="shard-000000.tar")
    bad = dict(enc, **{"meta.json": b"{"})
    with pytest.raises(SampleError, match="not valid JSON"):
        MultiViewSample.decode(bad)
    meta = json.loads(enc["meta.json"])
    meta["schema"] = "mfl-sample/0"
    with pytest.raises(SampleError, match="expected 'mfl-sample/1'"):
        MultiViewSample.decode(dict(enc, **{"meta.json": json.dumps(meta).encode()}))


def test_pickled_npy_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    enc = dict(_sample().encode(), **{"joints.npy": buf.getvalue()})
    with pytest.raises(SampleError, match="joints.npy is not a plain numeric"):
        MultiViewSample.decode(enc)


def test_dotted_key_is_refused():
    s = _sample()
    s.key = "mouse.1"
    with pytest.raises(SampleError, match="no dots"):
        s.encode()
