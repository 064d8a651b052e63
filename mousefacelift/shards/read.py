"""Reading shards: one tar reader for local files and remote streams, and shard-spec expansion.

A shard spec is a folder (its ``manifest.json`` shard list, else ``*.tar``), a glob, a brace
pattern (``shards/mouse-{000000..000099}.tar``), a single tar, an ``http(s)://`` URL or a
``pipe:`` command (``pipe:aws s3 cp s3://bucket/x.tar -``), or a list of those. ``http(s)://``
shards are streamed by :class:`HttpStream`, which rides out a server restart (retries with
exponential backoff for ``retry_s`` seconds, resuming at the byte reached); other remote URLs
are opened with ``webdataset.gopen``; local files are opened directly. Nothing is copied to a
temporary file.

Bit rot: :func:`verify_shard` compares a local shard with the sha256 its folder's
``manifest.json`` records, hashing each file once per process (keyed by size and mtime).

:func:`iter_shard` is the only reader of the tar layout: members ``KEY.FIELD`` are grouped
by key (the base name up to its first dot), a sample's members must be consecutive, and a
truncated or corrupt tar raises :class:`ShardError` naming the shard and the member where
reading stopped; samples already yielded stay valid.
"""
from __future__ import annotations

import glob
import hashlib
import http.client
import io
import json
import logging
import os
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import braceexpand

from .atomic import ShardError
from .layout import SHARD_RE, list_shards
from .manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "ais://")
HTTP_PREFIXES = ("http://", "https://")
# What a caller that states nothing gets: a short outage of a shard server is ridden out.
DEFAULT_RETRY_S = 60.0
DEFAULT_TIMEOUT_S = 30.0
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class ShardRejected(ShardError):
    """A shard that can never be read as it is (HTTP 4xx, sha256 differs from the manifest, file
    gone): a stream skips it for the rest of the run instead of drawing it again."""


class ShardUnavailable(ShardError):
    """A shard server that stayed unreachable for the whole retry window: the data source is
    gone, not one shard, so a training stream stops on it."""


class HttpStream(io.RawIOBase):
    """An ``http(s)://`` shard as a read-only byte stream that outlives a server restart.

    A failed connection, a 5xx/408/429 answer or a transfer broken mid-shard is retried with
    exponential backoff (``backoff_s`` doubling, at most 8 s between tries) until ``retry_s``
    seconds pass without a byte of progress; a broken transfer resumes at the byte reached
    (HTTP Range; a server without Range support is re-read and the bytes already delivered are
    skipped), so the tar reader never sees a gap. Any other 4xx fails at once as
    :class:`ShardRejected` naming the URL and status; an exhausted window is
    :class:`ShardUnavailable`.
    """

    def __init__(self, url: str, retry_s: float = DEFAULT_RETRY_S, timeout_s: float = DEFAULT_TIMEOUT_S,
                 backoff_s: float = 0.5):
        super().__init__()
        self.url, self.retry_s, self.timeout_s, self.backoff_s = url, float(retry_s), float(timeout_s), backoff_s
        self.pos = 0
        self.total: int | None = None
        self._resp = None
        self._connect()

    def _connect(self) -> None:
        deadline = time.monotonic() + self.retry_s
        delay = self.backoff_s
        tries = 0
        while True:
            tries += 1
            headers = {"Range": f"bytes={self.pos}-"} if self.pos else {}
            try:
                resp = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.timeout_s)
                skip = self.pos if (self.pos and resp.status != 206) else 0
                length = resp.headers.get("Content-Length")
                if self.total is None and length is not None and resp.status == 200:
                    self.total = int(length)
                while skip:     # the server ignored Range: drop what was already delivered
                    chunk = resp.read(min(skip, 1 << 20))
                    if not chunk:
                        raise http.client.IncompleteRead(b"")
                    skip -= len(chunk)
                self._resp = resp
                if tries > 1:
                    log.info("%s: reconnected after %d tries, reading on at byte %d", self.url, tries, self.pos)
                return
            except urllib.error.HTTPError as e:
                e.close()
                if e.code == 416 and self.pos and self.total is not None and self.pos >= self.total:
                    self._resp = io.BytesIO(b"")    # everything was read already
                    return
                if e.code not in _RETRY_STATUS:
                    raise ShardRejected(f"{self.url}: HTTP {e.code} {e.reason}") from None
                reason = f"HTTP {e.code} {e.reason}"
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or e
                reason = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
            now = time.monotonic()
            if now >= deadline:
                raise ShardUnavailable(f"{self.url}: shard server unreachable for {self.retry_s:g} s "
                                       f"({tries} tries, last: {reason})")
            log.warning("%s: %s; retrying in %.1f s", self.url, reason, min(delay, deadline - now))
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 8.0)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if not len(b):
            return 0
        while True:
            try:
                n = self._resp.readinto(b)
                if n == 0 and self.total is not None and self.pos < self.total:
                    raise http.client.IncompleteRead(b"", self.total - self.pos)
                self.pos += n
                return n
            except (OSError, http.client.HTTPException) as e:
                log.warning("%s: transfer broke at byte %d (%s: %s); reconnecting", self.url, self.pos,
                            type(e).__name__, e)
                self._close_resp()
                self._connect()

    def _close_resp(self) -> None:
        try:
            if self._resp is not None:
                self._resp.close()
        except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is dropped either way
            pass
        self._resp = None

    def close(self) -> None:
        self._close_resp()
        super().close()


def _open(url: str, retry_s: float, timeout_s: float):
    if url.startswith(HTTP_PREFIXES):
        return io.BufferedReader(HttpStream(url, retry_s=retry_s, timeout_s=timeout_s), buffer_size=1 << 16)
    if url.startswith(REMOTE_PREFIXES):
        import webdataset as wds

        try:
            return wds.gopen(url, "rb")
        except Exception as e:   # noqa: BLE001 - any opener failure is a read failure of this shard
            raise ShardError(f"{url}: cannot open shard ({type(e).__name__}: {e})") from None
    if not os.path.isfile(url):
        raise ShardRejected(f"shard {url} not found")
    try:
        return open(url, "rb")
    except OSError as e:
        raise ShardError(f"{url}: cannot open shard ({e.strerror})") from None


def iter_shard(url: str | os.PathLike, retry_s: float = DEFAULT_RETRY_S,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[dict[str, Any]]:
    """Yield the samples of one shard as ``{"__key__": key, "__url__": url, FIELD: bytes}``.

    ``retry_s`` / ``timeout_s``: how long an ``http(s)://`` shard's server may be unreachable
    in a row, and the socket timeout of one attempt (:class:`HttpStream`)."""
    url = str(url)
    stream = _open(url, retry_s, timeout_s)
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


# -- bit rot: shard bytes against the manifest -----------------------------------------------
_MANIFESTS: dict[str, tuple[tuple[int, int], dict[str, dict]]] = {}
_VERIFIED: dict[tuple[str, int, int], str | None] = {}


def manifest_entry(path: str | os.PathLike) -> dict | None:
    """The record the ``manifest.json`` next to a local shard holds for it (name, sha256, keys,
    ...), or None (no manifest, unreadable, or the shard not listed). Cached per folder until
    the manifest changes."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    man = os.path.join(folder, MANIFEST_NAME)
    try:
        st = os.stat(man)
    except OSError:
        return None
    stamp = (st.st_size, st.st_mtime_ns)
    cached = _MANIFESTS.get(folder)
    if cached is None or cached[0] != stamp:
        try:
            with open(man) as f:
                records = {str(r.get("name")): r for r in json.load(f).get("shards", []) if isinstance(r, dict)}
        except (OSError, ValueError, AttributeError) as e:
            log.warning("%s: unreadable (%s); shards in %s are read without checksum", man, e, folder)
            records = {}
        cached = _MANIFESTS[folder] = (stamp, records)
    return cached[1].get(os.path.basename(path))


def verify_shard(url: str | os.PathLike) -> bool:
    """Compare a local shard's sha256 with the one its folder's manifest records.

    Returns True when checked and equal, False when there is nothing to check against (remote
    URL, no manifest, no sha256 in it). A mismatch raises :class:`ShardRejected` naming the file
    and both digests. Each file is hashed once per process (again only if its size or mtime
    changes), so a training stream pays one extra read per shard per run.
    """
    url = os.fspath(url)
    if url.startswith(REMOTE_PREFIXES):
        return False
    entry = manifest_entry(url)
    want = entry.get("sha256") if entry else None
    if not want:
        return False
    try:
        st = os.stat(url)
    except OSError:
        raise ShardRejected(f"shard {url} not found") from None
    key = (os.path.abspath(url), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        got = shard_sha256(url)
        _VERIFIED[key] = None if got == want else got
    got = _VERIFIED[key]
    if got is not None:
        raise ShardRejected(f"shard {url}: sha256 {got[:16]}... differs from {want[:16]}... recorded in "
                            f"{os.path.join(os.path.dirname(url), MANIFEST_NAME)} (bit rot or a partial copy); "
                            "re-copy or re-render it")
    return True


def sibling_shards(path: str | os.PathLike) -> list[str]:
    """The shards ``{name}-NNNNNN.tar`` next to a folder ``.../{name}`` that does not exist.

    A render writes ``shards/mouse-000000.tar ...`` into its output folder itself, while data
    configs name a set's folder (``shards/mouse``): this finds the one from the other. The
    manifest's shard list is used when it has that prefix, else the tars on disk."""
    path = os.path.expanduser(os.fspath(path))
    folder, name = os.path.split(os.path.normpath(path))
    folder = folder or "."
    if not name or not os.path.isdir(folder):
        return []
    man = os.path.join(folder, MANIFEST_NAME)
    if os.path.isfile(man):
        try:
            names = [str(r.get("name")) for r in _read_json(man).get("shards", []) if isinstance(r, dict)]
        except (ValueError, AttributeError):
            names = []
        mine = [n for n in names if (m := SHARD_RE.match(n)) and m.group("prefix") == name]
        if mine:
            return [os.path.join(folder, n) for n in mine]
    return [os.path.join(folder, p.name) for p in list_shards(folder, name)]


def shard_keys(url: str | os.PathLike) -> list[str]:
    """The sample keys of one shard in order: from its manifest record when there is one, else
    by reading the tar (members are read, nothing is decoded)."""
    entry = manifest_entry(url) if not os.fspath(url).startswith(REMOTE_PREFIXES) else None
    if entry and isinstance(entry.get("keys"), list):
        return [str(k) for k in entry["keys"]]
    return [s["__key__"] for s in iter_shard(url)]


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
