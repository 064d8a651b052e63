"""WebDataset shards: atomic writer, per-shard sidecars, a lock-merged manifest, readers.

Layout of an output folder (docs/architecture.md §2)::

    {prefix}-{k:06d}.tar     plain tar, members KEY.FIELD (WebDataset layout)
    {prefix}-{k:06d}.json    sidecar: what shard k holds (samples, bytes, sha256, keys)
    manifest.json            "mfl-manifest/1": dataset header + every shard's record
    .manifest.lock           fcntl lock file serialising manifest updates

Why sidecars: a shard is the unit of work, resume and cluster partitioning. Each writer
finishes its shard alone (tar -> fsync -> rename, then its sidecar the same way) and only
then merges its record into manifest.json under an exclusive file lock, so concurrent jobs
writing into one folder never clobber each other, and the manifest can always be rebuilt
from the sidecars (:func:`rebuild_manifest`). A shard counts as done only when its tar and
sidecar both exist and agree on the byte size (:func:`complete_shards`).

Tar members are written with fixed metadata (mtime 0, uid/gid 0, no user names), so the
same samples give byte-identical shards and sha256 on any machine.
"""

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .atomic import (ShardError, fsync_dir, host_tag, os_error, tmp_name, unlink_quiet, atomic_write_json)

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = "mfl-manifest/1"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{6,})\.tar$")
_TMP_RE = re.compile(r"^(?P<target>.+)\.tmp-(?P<host>[^.]*)-(?P<pid>\d+)$")
_HEADER_KEYS = ("source", "prefix", "samples_per_shard", "seed", "config", "config_hash", "generator")


class ManifestMismatch(ShardError):
    """The folder already holds a dataset made with a different config (or prefix/source)."""


# -- names ---------------------------------------------------------------------------------
def shard_name(prefix: str, index: int) -> str:
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    if not prefix or "/" in prefix or "." in prefix:
        raise ValueError(f"shard prefix {prefix!r}: expected a non-empty name without '/' or '.'")
    return f"{prefix}-{index:06d}.tar"


def sidecar_path(shard_path: str | Path) -> Path:
    """``mouse-000003.tar`` -> ``mouse-000003.json``."""
    p = Path(shard_path)
    return p.with_name(p.name[: -len(".tar")] + ".json") if p.name.endswith(".tar") else p.with_name(p.name + ".json")

# -- writer --------------------------------------------------------------------------------
@dataclass
class ShardRecord:
    """What one finished shard holds (its sidecar and its manifest entry)."""

    name: str
    index: int
    samples: int
    bytes: int
    sha256: str
    keys: list[str]
    skipped: list[dict] = field(default_factory=list)
    config_hash: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "index": self.index, "samples": self.samples, "bytes": self.bytes,
                "sha256": self.sha256, "keys": list(self.keys), "skipped": list(self.skipped),
                "config_hash": self.config_hash, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_json(cls, d: Mapping, where: str) -> "ShardRecord":
        try:
            return cls(name=str(d["name"]), index=int(d["index"]), samples=int(d["samples"]), bytes=int(d["bytes"]),
                       sha256=str(d["sha256"]), keys=[str(k) for k in d["keys"]],
                       skipped=list(d.get("skipped", [])), config_hash=d.get("config_hash"),
                       seconds=float(d.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ShardError(f"{where}: not a shard record ({type(e).__name__}: {e})") from None


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

    def skip(self, index: int, reason: str) -> None:
        """Record a pose index that produced no sample (kept in the sidecar and the manifest)."""
        self.skipped.append({"index": int(index), "reason": str(reason)})

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
                          config_hash=self.header.get("config_hash"), seconds=time.perf_counter() - self._t0)
        actual = self.path.stat().st_size
        if actual != rec.bytes:   # pragma: no cover - would mean the file system lost data
            raise ShardError(f"{self.path}: {actual} bytes on disk but {rec.bytes} written")
        atomic_write_json(sidecar_path(self.path), rec.to_json())
        merge_into_manifest(self.out_dir, rec, self.header, force=self.force)
        return rec


# -- manifest ------------------------------------------------------------------------------
@contextmanager
def manifest_lock(out_dir: str | Path):
    """Exclusive fcntl lock on the folder's manifest (works across processes and, on file
    systems with POSIX locks, across cluster nodes)."""
    lock = Path(out_dir) / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise os_error(e, lock) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _empty_manifest(header: Mapping) -> dict:
    m = {"schema": MANIFEST_SCHEMA}
    for k in _HEADER_KEYS:
        m[k] = header.get(k)
    m["shards"], m["skipped"] = [], []
    return m


def check_header(manifest: Mapping, header: Mapping, where: str) -> None:
    """Raise ManifestMismatch when ``header`` (this run) disagrees with the folder's dataset."""
    for k in ("config_hash", "prefix", "source", "samples_per_shard", "seed"):
        have, want = manifest.get(k), header.get(k)
        if have is not None and want is not None and have != want:
            raise ManifestMismatch(
                f"{where}: the folder holds a dataset with {k}={have!r} but this run has {k}={want!r}; "
                "use another --out folder, or --force-config to re-render its shards with the new config")


def _records_to_manifest(m: dict, records: list[ShardRecord]) -> dict:
    m["shards"] = [{"name": r.name, "index": r.index, "samples": r.samples, "bytes": r.bytes,
                    "sha256": r.sha256, "keys": r.keys} for r in sorted(records, key=lambda r: r.index)]
    m["skipped"] = [s for r in sorted(records, key=lambda r: r.index) for s in r.skipped]
    return m


def merge_into_manifest(out_dir: str | Path, record: ShardRecord, header: Mapping, *, force: bool = False) -> dict:
    """Add/replace ``record`` in manifest.json under the lock (read-modify-write, atomic replace)."""
    out = Path(out_dir)
    with manifest_lock(out):
        m = _load_manifest_file(out / MANIFEST_NAME) if (out / MANIFEST_NAME).exists() else None
        if m is None or force:
            m = _empty_manifest(header) if m is None else {**m, **{k: header.get(k) for k in _HEADER_KEYS}}
        else:
            check_header(m, header, str(out / MANIFEST_NAME))
            for k in _HEADER_KEYS:
                if m.get(k) is None and header.get(k) is not None:
                    m[k] = header[k]
        records = [ShardRecord.from_json(s, f"{out / MANIFEST_NAME} shards[{i}]") for i, s in
                   enumerate(m.get("shards", [])) if int(s.get("index", -1)) != record.index]
        # keep per-shard skips: the manifest stores them flat, so re-attach by index
        by_idx = {r.index: r for r in records}
        for s in m.get("skipped", []):
            idx = s.get("shard")
            if idx in by_idx:
                by_idx[idx].skipped.append(s)
        rec = ShardRecord(**{**record.__dict__, "skipped": [{**s, "shard": record.index} for s in record.skipped]})
        m = _records_to_manifest(m, records + [rec])
        atomic_write_json(out / MANIFEST_NAME, m)
        return m


def rebuild_manifest(out_dir: str | Path, header: Mapping | None = None, *, prefix: str | None = None,
                     config_hash: str | None = None) -> dict:
    """Rebuild manifest.json from the sidecars of complete shards (under the lock).

    The header comes from ``header`` or else the existing manifest. Sidecars whose tar is
    missing or has another size are left out (those shards are not complete), and so are
    sidecars written with another config when ``config_hash`` is given.
    """
    out = Path(out_dir)
    with manifest_lock(out):
        old = _load_manifest_file(out / MANIFEST_NAME) if (out / MANIFEST_NAME).exists() else {}
        hdr = dict(header) if header is not None else {k: old.get(k) for k in _HEADER_KEYS}
        m = _empty_manifest(hdr)
        recs = complete_shards(out, prefix=prefix or hdr.get("prefix"), config_hash=config_hash)
        for r in recs.values():
            r.skipped = [{**s, "shard": r.index} for s in r.skipped]
        m = _records_to_manifest(m, list(recs.values()))
        atomic_write_json(out / MANIFEST_NAME, m)
        return m


def _load_manifest_file(path: Path) -> dict:
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardError(f"{path} is not valid JSON ({e}); delete it and run "
                         "`python -c \"from mousefacelift.shards import rebuild_manifest; rebuild_manifest('DIR')\"`") from None
    except OSError as e:
        raise ShardError(f"cannot read {path}: {e}") from None
    if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
        got = m.get("schema") if isinstance(m, dict) else type(m).__name__
        raise ShardError(f"{path}: schema is {got!r}, expected {MANIFEST_SCHEMA!r}")
    if not isinstance(m.get("shards"), list):
        raise ShardError(f"{path}: 'shards' must be a list")
    return m


def read_manifest(out_dir: str | Path) -> dict:
    """The folder's manifest.json (schema mfl-manifest/1) as a dict; ShardError naming the file if absent/bad."""
    p = Path(out_dir)
    p = p if p.name == MANIFEST_NAME else p / MANIFEST_NAME
    if not p.exists():
        raise ShardError(f"{p} not found: not a shard folder, or no shard has finished yet")
    return _load_manifest_file(p)


# -- listing / resume ----------------------------------------------------------------------
def list_shards(out_dir: str | Path, prefix: str | None = None) -> list[Path]:
    """Finished shard files ``{prefix}-NNNNNN.tar`` in the folder, sorted by index (temporary files excluded)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise ShardError(f"shard folder {out} not found")
    found = []
    for p in out.iterdir():
        m = SHARD_RE.match(p.name)
        if m and p.is_file() and (prefix is None or m.group("prefix") == prefix):
            found.append((int(m.group("index")), p.name, p))
    return [p for _, _, p in sorted(found)]


def complete_shards(out_dir: str | Path, prefix: str | None = None, config_hash: str | None = None) -> dict[int, ShardRecord]:
    """Shard index -> record for every complete shard: tar and sidecar exist, sizes agree
    (and, when ``config_hash`` is given, the sidecar was written with that config)."""
    done: dict[int, ShardRecord] = {}
    for p in list_shards(out_dir, prefix):
        side = sidecar_path(p)
        if not side.exists():
            continue
        try:
            rec = ShardRecord.from_json(json.loads(side.read_text()), str(side))
        except (json.JSONDecodeError, OSError, ShardError) as e:
            log.warning("ignoring unreadable sidecar %s (%s); shard %s will be redone", side, e, p.name)
            continue
        if rec.name != p.name or rec.bytes != p.stat().st_size:
            log.warning("shard %s: size %d differs from its sidecar (%d bytes); it will be redone",
                        p.name, p.stat().st_size, rec.bytes)
            continue
        if config_hash is not None and rec.config_hash != config_hash:
            continue
        done[rec.index] = rec
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(out_dir: str | Path, stale_after_s: float = 2 * 3600) -> list[Path]:
    """Remove temporary files of dead writers (a killed run): this host's whose process is gone,
    and other hosts' untouched for ``stale_after_s`` (a live writer appends every sample).
    Returns the removed paths."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    me = host_tag()
    removed = []
    now = time.time()
    for p in out.iterdir():
        m = _TMP_RE.match(p.name)
        if not m or not p.is_file():
            continue
        host, pid = m.group("host"), int(m.group("pid"))
        if host == me:
            dead = pid != os.getpid() and not _pid_alive(pid)
        else:
            dead = now - p.stat().st_mtime > stale_after_s
        if dead:
            unlink_quiet(p)
            removed.append(p)
            log.info("removed %s (left by a writer that did not finish)", p.name)
    return removed


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
