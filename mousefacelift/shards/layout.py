"""The layout of a shard folder and its bookkeeping: names, sidecars, what is complete, leftovers.

    {prefix}-{k:06d}.tar     plain tar, members KEY.FIELD (WebDataset layout)
    {prefix}-{k:06d}.json    sidecar: what shard k holds (samples, bytes, sha256, keys)
    manifest.json            "mfl-manifest/1": dataset header + every shard's record (.manifest)
    .manifest.lock           fcntl lock file serialising manifest updates

Why sidecars: a shard is the unit of work, resume and cluster partitioning. Each writer
finishes its shard alone (tar -> fsync -> rename, then its sidecar the same way) and only then
merges its record into manifest.json, so the manifest can always be rebuilt from the sidecars.
A shard counts as done only when its tar and sidecar both exist and agree on the byte size
(:func:`complete_shards`); temporary files of writers that died are removed by
:func:`clean_stale_tmp`. docs/architecture.md §2 has the schema.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .atomic import ShardError, host_tag, pid_alive, unlink_quiet

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{6,})\.tar$")
_TMP_RE = re.compile(r"^(?P<target>.+)\.tmp-(?P<host>[^.]*)-(?P<pid>\d+)$")


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
    notes: list[dict] = field(default_factory=list)   # written samples with something left out (e.g. a camera dropped)
    config_hash: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "index": self.index, "samples": self.samples, "bytes": self.bytes,
                "sha256": self.sha256, "keys": list(self.keys), "skipped": list(self.skipped),
                "notes": list(self.notes), "config_hash": self.config_hash, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_json(cls, d: Mapping, where: str) -> "ShardRecord":
        try:
            return cls(name=str(d["name"]), index=int(d["index"]), samples=int(d["samples"]), bytes=int(d["bytes"]),
                       sha256=str(d["sha256"]), keys=[str(k) for k in d["keys"]],
                       skipped=list(d.get("skipped", [])), notes=list(d.get("notes", [])), config_hash=d.get("config_hash"),
                       seconds=float(d.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ShardError(f"{where}: not a shard record ({type(e).__name__}: {e})") from None


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
            dead = pid != os.getpid() and not pid_alive(pid)
        else:
            dead = now - p.stat().st_mtime > stale_after_s
        if dead:
            unlink_quiet(p)
            removed.append(p)
            log.info("removed %s (left by a writer that did not finish)", p.name)
    return removed
