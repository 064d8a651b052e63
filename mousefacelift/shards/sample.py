"""MultiViewSample and its shard encoding: the mfl-sample/1 data contract (docs/architecture.md §2).

One sample = one subject seen from V views. In a WebDataset tar it is a set of members
``KEY.FIELD``: ``meta.json``, ``{vv}.rgba.png``, ``{vv}.depth.png``, optional
``{vv}.normal.png``, ``joints.npy``, ``pose.npy``. Nothing is pickled: ``.npy`` members are
read with ``allow_pickle=False`` because shards may come from untrusted places.

Depth encoding: 16-bit PNG, 0 = no surface, otherwise ``q in 1..65535`` maps linearly to
``z in [near, far]`` of that view's ``depth_range`` (planar camera z, world units).
Normal encoding: 8-bit RGB, ``(n + 1) / 2 * 255`` of the camera-space (OpenCV) unit normal.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from ..cameras import Camera

SCHEMA = "mfl-sample/1"
SOURCES = ("mouse", "object", "real")
DEPTH_LEVELS = 65535
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_VIEW_FIELD_RE = re.compile(r"^(\d{3})\.(rgba\.png|depth\.png|normal\.png)$")


class SampleError(ValueError):
    """A sample that does not match mfl-sample/1; the message names the key and field."""


@dataclass
class MultiViewSample:
    """One subject seen from ``V`` views, in memory.

    rgba [V,H,W,4] uint8 (straight alpha = coverage); depth [V,H,W] float32 planar camera z
    in world units, 0 = no surface (or None for sources without depth, e.g. real captures);
    normal [V,H,W,3] float32 camera-space unit normals or None; cameras: one per view with
    ``depth_range`` set whenever depth is present.
    """

    key: str
    meta: dict[str, Any]
    rgba: np.ndarray
    cameras: list[Camera]
    depth: np.ndarray | None = None
    normal: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)   # joints, pose, ...

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> "MultiViewSample":
        k = self.key
        if not _KEY_RE.match(k or ""):
            raise SampleError(f"sample key {k!r}: keys are letters, digits, '_' and '-' only (no dots)")
        if self.meta.get("schema") != SCHEMA:
            raise SampleError(f"{k}: meta.schema is {self.meta.get('schema')!r}, expected {SCHEMA!r}")
        if self.meta.get("source") not in SOURCES:
            raise SampleError(f"{k}: meta.source is {self.meta.get('source')!r}, expected one of {SOURCES}")
        if "mm_per_unit" not in self.meta or not float(self.meta["mm_per_unit"]) > 0:
            raise SampleError(f"{k}: meta.mm_per_unit must be a positive number, got {self.meta.get('mm_per_unit')!r}")
        V = len(self.cameras)
        if V == 0:
            raise SampleError(f"{k}: no views")
        if self.rgba.dtype != np.uint8 or self.rgba.ndim != 4 or self.rgba.shape[0] != V or self.rgba.shape[-1] != 4:
            raise SampleError(f"{k}: rgba must be uint8 [V={V},H,W,4], got {self.rgba.dtype} {self.rgba.shape}")
        H, W = self.rgba.shape[1:3]
        for i, c in enumerate(self.cameras):
            if (c.width, c.height) != (W, H):
                raise SampleError(f"{k}: view {i} camera is {c.width}x{c.height} but its image is {W}x{H}")
        if self.depth is not None:
            if self.depth.shape != (V, H, W):
                raise SampleError(f"{k}: depth must be [V,H,W]={V, H, W}, got {self.depth.shape}")
            for i, c in enumerate(self.cameras):
                if c.depth_range is None:
                    raise SampleError(f"{k}: view {i} has depth but its camera has no depth_range")
        if self.normal is not None and self.normal.shape != (V, H, W, 3):
            raise SampleError(f"{k}: normal must be [V,H,W,3]={V, H, W, 3}, got {self.normal.shape}")
        return self

    # -- encoding -------------------------------------------------------------------------
    def encode(self, png_compress_level: int = 6) -> dict[str, bytes | str]:
        """WebDataset sample dict: ``{"__key__": key, FIELD: bytes}``."""
        self.validate()
        meta = dict(self.meta)
        meta["views"] = [c.to_meta() for c in self.cameras]
        out: dict[str, bytes | str] = {"__key__": self.key,
                                       "meta.json": json.dumps(meta, sort_keys=True).encode()}
        for i, cam in enumerate(self.cameras):
            out[f"{i:03d}.rgba.png"] = _png(self.rgba[i], png_compress_level)
            if self.depth is not None:
                out[f"{i:03d}.depth.png"] = _png(encode_depth(self.depth[i], cam.depth_range), png_compress_level)
            if self.normal is not None:
                out[f"{i:03d}.normal.png"] = _png(encode_normal(self.normal[i], self.rgba[i, ..., 3]), png_compress_level)
        for name, arr in self.arrays.items():
            out[f"{name}.npy"] = _npy(arr)
        return out

    @classmethod
    def decode(cls, fields: Mapping[str, Any], where: str = "") -> "MultiViewSample":
        """Inverse of :meth:`encode`. ``fields`` maps member suffixes to raw bytes (as
        WebDataset yields them). ``where`` names the shard for error messages."""
        key = fields.get("__key__", "?")
        tag = f"{where}:{key}" if where else str(key)
        if "meta.json" not in fields:
            raise SampleError(f"{tag}: no meta.json member")
        try:
            meta = json.loads(_bytes(fields["meta.json"]))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SampleError(f"{tag}: meta.json is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
            raise SampleError(f"{tag}: meta.json schema is {meta.get('schema') if isinstance(meta, dict) else meta!r}, expected {SCHEMA!r}")
        views = meta.pop("views", None)
        if not isinstance(views, list) or not views:
            raise SampleError(f"{tag}: meta.json 'views' must be a non-empty list")
        cams = [Camera.from_meta(v, where=f"{tag} meta.views[{i}]") for i, v in enumerate(views)]
        rgba, depth, normal = [], [], []
        for i, cam in enumerate(cams):
            name = f"{i:03d}.rgba.png"
            if name not in fields:
                raise SampleError(f"{tag}: missing member {name} (meta lists {len(cams)} views)")
            img = _unpng(fields[name], tag, name)
            if img.ndim != 3 or img.shape[-1] != 4 or img.dtype != np.uint8:
                raise SampleError(f"{tag}: {name} must be 8-bit RGBA, got {img.dtype} {img.shape}")
            rgba.append(img)
            dname = f"{i:03d}.depth.png"
            if dname in fields:
                q = _unpng(fields[dname], tag, dname)
                if q.dtype != np.uint16 or q.ndim != 2:
                    raise SampleError(f"{tag}: {dname} must be 16-bit single channel, got {q.dtype} {q.shape}")
                if cam.depth_range is None:
                    raise SampleError(f"{tag}: {dname} present but meta.views[{i}] has no depth_range")
                depth.append(decode_depth(q, cam.depth_range))
            nname = f"{i:03d}.normal.png"
            if nname in fields:
                normal.append(decode_normal(_unpng(fields[nname], tag, nname), img[..., 3]))
        for kind, lst in (("depth", depth), ("normal", normal)):
            if lst and len(lst) != len(cams):
                raise SampleError(f"{tag}: {len(lst)} {kind} members for {len(cams)} views")
        arrays = {}
        for name, value in fields.items():
            if name.endswith(".npy") and "." not in name[:-4]:
                try:
                    arrays[name[:-4]] = np.load(io.BytesIO(_bytes(value)), allow_pickle=False)
                except ValueError as e:
                    raise SampleError(f"{tag}: {name} is not a plain numeric .npy ({e})") from None
        sample = cls(key=str(key), meta=meta, rgba=np.stack(rgba), cameras=cams,
                     depth=np.stack(depth) if depth else None, normal=np.stack(normal) if normal else None,
                     arrays=arrays)
        try:
            return sample.validate()
        except SampleError as e:
            raise SampleError(f"{where}: {e}" if where else str(e)) from None

    def to_tensors(self) -> dict[str, Any]:
        """The decoded-sample dict of docs/architecture.md §2 (torch tensors + meta)."""
        import torch

        from ..cameras import stack_cameras

        rgba = torch.from_numpy(self.rgba).permute(0, 3, 1, 2).float() / 255.0
        K, c2w = stack_cameras(self.cameras)
        out = {"key": self.key, "rgb": rgba[:, :3].contiguous(), "alpha": rgba[:, 3:4].contiguous(),
               "K": K, "c2w": c2w, "meta": self.meta}
        if self.depth is not None:
            out["depth"] = torch.from_numpy(self.depth).float()[:, None]
        if self.normal is not None:
            out["normal"] = torch.from_numpy(self.normal).permute(0, 3, 1, 2).float()
        for name, arr in self.arrays.items():
            out[name] = torch.from_numpy(np.asarray(arr))
        return out


# -- field codecs --------------------------------------------------------------------------
def encode_depth(depth: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    near, far = depth_range
    d = np.asarray(depth, dtype=np.float64)
    valid = d > 0
    if valid.any() and (d[valid].min() < near - 1e-6 * far or d[valid].max() > far + 1e-6 * far):
        raise ValueError(f"depth values [{d[valid].min():.5f}, {d[valid].max():.5f}] fall outside depth_range "
                         f"[{near:.5f}, {far:.5f}]")
    q = np.zeros(d.shape, dtype=np.uint16)
    q[valid] = (1 + np.rint(np.clip((d[valid] - near) / (far - near), 0, 1) * (DEPTH_LEVELS - 1))).astype(np.uint16)
    return q


def decode_depth(q: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    near, far = depth_range
    q = np.asarray(q)
    z = near + (q.astype(np.float64) - 1) / (DEPTH_LEVELS - 1) * (far - near)
    return np.where(q > 0, z, 0.0).astype(np.float32)


def encode_normal(normal: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    n = np.clip(np.rint((np.asarray(normal, dtype=np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)
    if alpha is not None:
        n[np.asarray(alpha) == 0] = 0
    return n


def decode_normal(img: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    n = img[..., :3].astype(np.float32) / 127.5 - 1
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(norm > 0.5, n / np.maximum(norm, 1e-6), 0.0)
    if alpha is not None:
        n[np.asarray(alpha) == 0] = 0
    return n.astype(np.float32)


def _png(arr: np.ndarray, level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _unpng(data: Any, tag: str, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(_bytes(data))) as im:
            im.load()
            if im.mode == "I;16":
                return np.array(im, dtype=np.uint16)
            if im.mode == "I":   # some Pillow versions open 16-bit greyscale as 32-bit
                return np.array(im).astype(np.uint16)
            return np.array(im)
    except Exception as e:
        raise SampleError(f"{tag}: {name} is not a readable PNG ({e})") from None


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, (bytes, bytearray)) else str(value).encode()


def group_members(names: Iterable[str]) -> dict[int, set[str]]:
    """View index -> member kinds present, for schema checks (``{0: {"rgba.png", ...}}``)."""
    out: dict[int, set[str]] = {}
    for n in names:
        m = _VIEW_FIELD_RE.match(n)
        if m:
            out.setdefault(int(m.group(1)), set()).add(m.group(2))
    return out
