"""manifest.json: the dataset header and every finished shard's record, merged under a lock.

Concurrent writers (local workers, cluster jobs on a shared file system) each merge their own
record read-modify-write under an exclusive fcntl lock, so none clobbers another; a folder
refuses a run whose header (config hash, prefix, source, shard size, seed) differs from the
dataset already there unless forced. The manifest is derived data: :func:`rebuild_manifest`
recreates it from the sidecars of complete shards.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping

from .atomic import ShardError, atomic_write_json, os_error
from .layout import ShardRecord, complete_shards

MANIFEST_SCHEMA = "mfl-manifest/1"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
_HEADER_KEYS = ("source", "prefix", "samples_per_shard", "seed", "config", "config_hash", "generator")


class ManifestMismatch(ShardError):
    """The folder already holds a dataset made with a different config (or prefix/source)."""


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
    m["shards"], m["skipped"], m["notes"] = [], [], []
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
    m["notes"] = [s for r in sorted(records, key=lambda r: r.index) for s in r.notes]
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
        # keep per-shard skips and notes: the manifest stores them flat, so re-attach by index
        by_idx = {r.index: r for r in records}
        for what in ("skipped", "notes"):
            for s in m.get(what, []):
                idx = s.get("shard")
                if idx in by_idx:
                    getattr(by_idx[idx], what).append(s)
        rec = ShardRecord(**{**record.__dict__, "skipped": [{**s, "shard": record.index} for s in record.skipped],
                             "notes": [{**s, "shard": record.index} for s in record.notes]})
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
            r.notes = [{**s, "shard": r.index} for s in r.notes]
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
