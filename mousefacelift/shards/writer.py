"""Writing shards: one shard at a time, atomically, with fixed tar metadata.

Members go to a temporary file while the sample stream is written and hashed on the fly;
closing fsyncs and renames it, writes the sidecar and merges the record into the manifest.
Tar members carry fixed metadata (mtime 0, uid/gid 0, no user names), so the same samples
give byte-identical shards and sha256 on any machine.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Mapping

from .atomic import ShardError, atomic_write_json, fsync_dir, os_error, tmp_name, unlink_quiet
from .layout import ShardRecord, shard_name, sidecar_path
from .manifest import merge_into_manifest, read_manifest


class _HashingFile(io.RawIOBase):
    """File wrapper that hashes and counts what tarfile writes (sha256 without re-reading)."""

    def __init__(self, f):
        self._f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = self._f.write(b)
        self.sha.update(b)
        self.size += len(b)
        return n


class ShardWriter:
    """Write one shard atomically: members go to ``{name}.tmp-<host>-<pid>``; :meth:`close`
    fsyncs and renames it to ``{prefix}-{k:06d}.tar``, writes the sidecar, and merges the
    record into manifest.json under the folder's lock. Used as a context manager, an
    exception (or a kill) leaves no ``.tar``, only a temporary file that the next run removes.

    ``header`` is the dataset header stored in manifest.json (source, prefix,
    samples_per_shard, seed, config, config_hash, generator); ``force`` lets it replace a
    different header already there (``--force-config``) instead of raising ManifestMismatch.
    """

    def __init__(self, out_dir: str | Path, index: int, *, prefix: str = "mouse", header: Mapping | None = None,
                 force: bool = False):
        self.out_dir = Path(out_dir)
        self.force = force
        self.index = int(index)
        self.prefix = prefix
        self.name = shard_name(prefix, self.index)
        self.path = self.out_dir / self.name
        self.header = dict(header or {})
        self.header.setdefault("prefix", prefix)
        self.keys: list[str] = []
        self.skipped: list[dict] = []
        self.notes: list[dict] = []
        self._t0 = time.perf_counter()
        self.tmp_path = tmp_name(self.path)
        try:
            self._file = open(self.tmp_path, "wb")
        except OSError as e:
            raise os_error(e, self.tmp_path) from None
        self._hf = _HashingFile(self._file)
        self._tar = tarfile.open(fileobj=self._hf, mode="w|", format=tarfile.GNU_FORMAT)
        self._closed = False

    # context manager: abort on error so no partial shard is ever published
    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abort()

    def write(self, sample: Mapping[str, Any]) -> None:
        """Append one sample: ``{"__key__": key, FIELD: bytes | str}`` (e.g. MultiViewSample.encode())."""
        if self._closed:
            raise ShardError(f"{self.name}: write after close")
        key = sample.get("__key__")
        if not isinstance(key, str) or not key or "." in key or "/" in key:
            raise ShardError(f"{self.name}: sample key {key!r} must be a non-empty string without '.' or '/'")
        if key in self.keys:
            raise ShardError(f"{self.name}: duplicate sample key {key!r}")
        fields = [(k, v) for k, v in sample.items() if not k.startswith("__")]
        if not fields:
            raise ShardError(f"{self.name}: sample {key!r} has no fields")
        try:
            for fname, value in fields:
                data = value if isinstance(value, (bytes, bytearray)) else str(value).encode()
                info = tarfile.TarInfo(f"{key}.{fname}")
                info.size = len(data)
                info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
                self._tar.addfile(info, io.BytesIO(data))
        except OSError as e:
            self.abort()
            raise os_error(e, self.tmp_path) from None
        self.keys.append(key)

    def skip(self, index: int, reason: str, *, retry: bool = False) -> None:
        """Record a pose index that produced no sample (kept in the sidecar and the manifest).
        ``retry``: it failed to render rather than had unusable input, so the shard is not
        complete and the next run renders it again."""
        entry = {"index": int(index), "reason": str(reason)}
        if retry:
            entry["retry"] = True
        self.skipped.append(entry)

    def note(self, index: int, kind: str, **fields: Any) -> None:
        """Record something left out of a sample that was still written (``kind`` e.g.
        ``camera_dropped`` with the camera and its score): kept in the sidecar and the manifest,
        so a recurring fault is visible from the dataset, not only from a run's log."""
        self.notes.append({"index": int(index), "kind": str(kind), **fields})

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file); nothing is published."""
        if self._closed:
            return
        self._closed = True
        for closer in (self._tar.close, self._file.close):
            try:
                closer()
            except Exception:   # the temp file is deleted below anyway
                pass
        unlink_quiet(self.tmp_path)

    def close(self) -> ShardRecord:
        """Finish: tar end blocks, fsync, rename, sidecar, manifest merge. Returns the record."""
        if self._closed:
            raise ShardError(f"{self.name}: already closed")
        try:
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
            os.replace(self.tmp_path, self.path)
        except OSError as e:
            self._closed = True
            try:
                self._file.close()
            except OSError:
                pass
            unlink_quiet(self.tmp_path)
            raise os_error(e, self.path) from None
        fsync_dir(self.out_dir)
        rec = ShardRecord(name=self.name, index=self.index, samples=len(self.keys), bytes=self._hf.size,
                          sha256=self._hf.sha.hexdigest(), keys=list(self.keys), skipped=list(self.skipped),
                          notes=list(self.notes), config_hash=self.header.get("config_hash"), seconds=time.perf_counter() - self._t0)
        actual = self.path.stat().st_size
        if actual != rec.bytes:   # pragma: no cover - would mean the file system lost data
            raise ShardError(f"{self.path}: {actual} bytes on disk but {rec.bytes} written")
        atomic_write_json(sidecar_path(self.path), rec.to_json())
        merge_into_manifest(self.out_dir, rec, self.header, force=self.force)
        return rec


def write_samples(out_dir: str | Path, samples, samples_per_shard: int = 2, prefix: str = "test",
                  source: str | None = None, generator: str = "mousefacelift.shards.write_samples") -> dict:
    """Write in-memory samples (objects with ``encode()``) as shards + manifest, ``samples_per_shard``
    per shard, through :class:`ShardWriter`; returns the manifest. For programs that make a
    whole small set at once (analytic fixtures, imports); renderers write shard by shard."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    samples = list(samples)
    source = source or (samples[0].meta.get("source") if samples else "object")
    header = {"source": source, "prefix": prefix, "samples_per_shard": samples_per_shard, "seed": 0,
              "config": {"generator": generator}, "config_hash": hashlib.sha256(generator.encode()).hexdigest()[:16],
              "generator": generator}
    for k in range(0, len(samples), samples_per_shard):
        with ShardWriter(out_dir, k // samples_per_shard, prefix=prefix, header=header) as w:
            for s in samples[k:k + samples_per_shard]:
                w.write(s.encode())
    return read_manifest(out_dir)
