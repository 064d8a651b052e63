"""Reading shards: one tar reader for local files and remote streams, and shard-spec expansion.

A shard spec is a folder (its ``manifest.json`` shard list, else ``*.tar``), a glob, a brace
pattern (``shards/mouse-{000000..000099}.tar``), a single tar, an ``http(s)://`` URL or a
``pipe:`` command (``pipe:aws s3 cp s3://bucket/x.tar -``), or a list of those. Remote URLs
are opened with ``webdataset.gopen`` and read member by member (no temporary copies); local
files are opened directly.

:func:`iter_shard` is the only reader of the tar layout: members ``KEY.FIELD`` are grouped
by key (the base name up to its first dot), a sample's members must be consecutive, and a
truncated or corrupt tar raises :class:`ShardError` naming the shard and the member where
reading stopped; samples already yielded stay valid.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Iterator

import braceexpand

from .atomic import ShardError
from .manifest import MANIFEST_NAME

REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "ais://")


def _open(url: str):
    if url.startswith(REMOTE_PREFIXES):
        import webdataset as wds

        try:
            return wds.gopen(url, "rb")
        except Exception as e:   # noqa: BLE001 - any opener failure is a read failure of this shard
            raise ShardError(f"{url}: cannot open shard ({type(e).__name__}: {e})") from None
    if not os.path.isfile(url):
        raise ShardError(f"shard {url} not found")
    try:
        return open(url, "rb")
    except OSError as e:
        raise ShardError(f"{url}: cannot open shard ({e.strerror})") from None


def iter_shard(url: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the samples of one shard as ``{"__key__": key, "__url__": url, FIELD: bytes}``."""
    url = str(url)
    stream = _open(url)
    current: dict[str, Any] | None = None
    seen: set[str] = set()
    last_member = "(start of file)"
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                last_member = info.name
                if not info.isfile():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                if "." not in base:
                    raise ShardError(f"shard {url}: member {info.name!r} has no KEY.FIELD name")
                prefix = info.name[: len(info.name) - len(base)]
                key, fname = base.split(".", 1)
                key = prefix + key
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise ShardError(f"shard {url}: member {info.name!r} is truncated "
                                     f"({len(data)} of {info.size} bytes)")
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    if key in seen:
                        raise ShardError(f"shard {url}: members of sample {key!r} are not consecutive "
                                         f"(member {info.name!r})")
                    seen.add(key)
                    current = {"__key__": key, "__url__": url}
                if fname in current:
                    raise ShardError(f"shard {url}: duplicate member {info.name!r}")
                current[fname] = data
    except ShardError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise ShardError(f"shard {url} is truncated or corrupt: reading stopped at/after member "
                         f"{last_member!r} ({type(e).__name__}: {e}); delete it and re-run the "
                         "generator to re-render it") from None
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - closing a broken pipe must not mask the real error
            pass
    if current is not None:
        yield current


def shard_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


# -- shard specs ---------------------------------------------------------------------------
def resolve_shards(spec) -> list[str]:
    """Expand a shard spec (see module docstring) to an ordered list of URLs/paths."""
    if spec is None:
        raise ValueError("no shards given: set data.shards or data.sets[*].shards")
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[str] = []
    for item in items:
        item = str(item)
        if item.startswith(REMOTE_PREFIXES):
            out.extend(braceexpand.braceexpand(item))
            continue
        path = os.path.expanduser(item)
        if os.path.isdir(path):
            man = os.path.join(path, MANIFEST_NAME)
            if os.path.exists(man):
                names = [s["name"] for s in _read_json(man).get("shards", [])]
                found = [os.path.join(path, n) for n in names]
            else:
                found = sorted(glob.glob(os.path.join(path, "*.tar")))
            if not found:
                raise FileNotFoundError(f"shard folder {path} holds no shards (no manifest entries, no *.tar)")
            out.extend(found)
        elif "{" in path:
            out.extend(braceexpand.braceexpand(path))
        elif any(c in path for c in "*?["):
            found = sorted(glob.glob(path))
            if not found:
                raise FileNotFoundError(f"shard pattern {path} matches no file")
            out.extend(found)
        elif os.path.isfile(path):
            out.append(path)
        else:
            raise FileNotFoundError(f"shard spec {item!r}: no such folder or file")
    if not out:
        raise ValueError(f"shard spec {spec!r} expands to no shards")
    return out


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read manifest ({e})") from None


def manifest_record(spec) -> list[dict]:
    """Provenance of a shard spec: per local folder its manifest's sha256 and config hash, else
    the hash of the URL list (what a checkpoint records about the data it was trained on)."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec or [])
    recs = []
    for item in items:
        item = str(item)
        man = os.path.join(os.path.expanduser(item), MANIFEST_NAME)
        if not item.startswith(REMOTE_PREFIXES) and os.path.isfile(man):
            raw = open(man, "rb").read()
            m = json.loads(raw)
            recs.append({"spec": item, "manifest_sha256": hashlib.sha256(raw).hexdigest(),
                         "config_hash": m.get("config_hash"), "shards": len(m.get("shards", []))})
        else:
            urls = resolve_shards(item)
            recs.append({"spec": item, "urls_sha256": hashlib.sha256("\n".join(urls).encode()).hexdigest(),
                         "shards": len(urls)})
    return recs
