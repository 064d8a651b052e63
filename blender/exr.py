"""Minimal reader for the scanline OpenEXR files Blender writes (codec NONE, ZIPS or ZIP).

The fast path renders each view to an uncompressed multilayer EXR in a RAM-backed temp
folder and reads it straight back into numpy; the benchmark's naive path writes Blender's
default codec (ZIP) to disk. This reader avoids a dependency on the OpenEXR bindings
(zlib is in the standard library). It supports single-part scanline files, HALF/FLOAT/UINT
channels, any line order, compression NONE/ZIPS/ZIP. Anything else raises a clear error.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

_MAGIC = 20000630
_PIXEL_DTYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
_LINES_PER_CHUNK = {0: 1, 2: 1, 3: 16}          # NONE, ZIPS, ZIP
_COMPRESSION_NAMES = {0: "NONE", 1: "RLE", 2: "ZIPS", 3: "ZIP", 4: "PIZ", 5: "PXR24", 6: "B44", 7: "B44A", 8: "DWAA", 9: "DWAB"}


class ExrError(ValueError):
    """An EXR file this reader cannot decode; the message names the file and the reason."""


def _cstr(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("latin-1"), end + 1


def read_exr(path: str) -> dict[str, np.ndarray]:
    """Read every channel of an uncompressed scanline EXR: ``{name: float32 [H, W]}``."""
    with open(path, "rb") as fh:
        buf = fh.read()
    if len(buf) < 8 or struct.unpack_from("<i", buf, 0)[0] != _MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file (bad magic number)")
    flags = struct.unpack_from("<I", buf, 4)[0]
    if flags & 0x200 or flags & 0x1000 or flags & 0x800:
        raise ExrError(f"{path}: tiled, deep or multi-part EXR files are not supported")
    pos = 8
    channels: list[tuple[str, int]] = []
    compression = None
    data_window = None
    while True:
        name, pos = _cstr(buf, pos)
        if not name:
            break
        atype, pos = _cstr(buf, pos)
        size = struct.unpack_from("<i", buf, pos)[0]
        pos += 4
        value = buf[pos:pos + size]
        pos += size
        if name == "channels":
            p = 0
            while value[p:p + 1] != b"\0":
                cname, p = _cstr(value, p)
                ptype = struct.unpack_from("<i", value, p)[0]
                xs, ys = struct.unpack_from("<ii", value, p + 8)
                if (xs, ys) != (1, 1):
                    raise ExrError(f"{path}: subsampled channel {cname!r} is not supported")
                channels.append((cname, ptype))
                p += 16
        elif name == "compression":
            compression = value[0]
        elif name == "dataWindow":
            data_window = struct.unpack_from("<iiii", value, 0)
    if compression not in _LINES_PER_CHUNK:
        raise ExrError(f"{path}: compression {_COMPRESSION_NAMES.get(compression, compression)} is not supported "
                       "(supported: NONE, ZIPS, ZIP)")
    if data_window is None or not channels:
        raise ExrError(f"{path}: header lacks dataWindow or channels")
    x0, y0, x1, y1 = data_window
    width, height = x1 - x0 + 1, y1 - y0 + 1
    if compression != 0:
        return _read_zip_chunks(path, buf, pos, channels, width, height, y0, _LINES_PER_CHUNK[compression])
    pos += 8 * height                                   # offset table: one chunk per scanline for NONE
    # Each chunk: int32 y, int32 byte count, then every channel's scanline in header (alphabetical) order.
    row_dtype = np.dtype([("y", "<i4"), ("n", "<i4")] +
                         [(f"c{i}", _PIXEL_DTYPES[t], (width,)) for i, (_, t) in enumerate(channels)])
    need = row_dtype.itemsize * height
    if len(buf) - pos < need:
        raise ExrError(f"{path}: truncated file ({len(buf) - pos} bytes of pixel data, expected {need})")
    rows = np.frombuffer(buf, dtype=row_dtype, count=height, offset=pos)
    order = np.argsort(rows["y"], kind="stable")
    return {cname: rows[f"c{i}"][order].astype(np.float32) for i, (cname, _) in enumerate(channels)}


def _unzip_chunk(data: bytes, raw_size: int, path: str) -> np.ndarray:
    """Undo EXR's ZIP filter: zlib, then the byte delta predictor, then the two-half interleave."""
    if len(data) == raw_size:                          # stored uncompressed when zlib would not help
        return np.frombuffer(data, np.uint8)
    try:
        t = np.frombuffer(zlib.decompress(data), np.uint8)
    except zlib.error as e:
        raise ExrError(f"{path}: corrupt ZIP chunk ({e})") from None
    if t.size != raw_size:
        raise ExrError(f"{path}: ZIP chunk holds {t.size} bytes, expected {raw_size}")
    d = t.astype(np.int64)
    d[1:] -= 128
    t = (np.cumsum(d) % 256).astype(np.uint8)          # predictor: t[i] = t[i-1] + t[i] - 128 (mod 256)
    out = np.empty_like(t)
    half = (t.size + 1) // 2
    out[0::2], out[1::2] = t[:half], t[half:]
    return out


def _read_zip_chunks(path, buf, pos, channels, width, height, y0, lines) -> dict[str, np.ndarray]:
    nchunks = (height + lines - 1) // lines
    offsets = np.frombuffer(buf, "<u8", count=nchunks, offset=pos)
    out = {c: np.empty((height, width), np.float32) for c, _ in channels}
    for off in offsets:
        y, size = struct.unpack_from("<ii", buf, int(off))
        n = min(lines, y0 + height - y)
        raw_size = n * width * sum(_PIXEL_DTYPES[t].itemsize for _, t in channels)
        data = buf[int(off) + 8:int(off) + 8 + size]
        if len(data) != size:
            raise ExrError(f"{path}: truncated file (chunk at line {y})")
        raw = _unzip_chunk(data, raw_size, path)
        p = 0
        for line in range(n):                           # per scanline: every channel in header order
            for cname, t in channels:
                dt = _PIXEL_DTYPES[t]
                out[cname][y - y0 + line] = np.frombuffer(raw, dt, count=width, offset=p)
                p += width * dt.itemsize
    return out
