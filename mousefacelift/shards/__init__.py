"""The ``mfl-sample/1`` shard format: the only code that reads or writes shards.

Renderers and importers write through :class:`ShardWriter` (or :func:`write_samples`), the
training stream and the data tools read through :func:`iter_shard`, and a sample's members
are encoded and decoded by :class:`MultiViewSample`. The schema is described in
``docs/architecture.md``.

- :mod:`.sample` — one sample in memory and its members (RGBA, depth, normals, arrays, meta);
- :mod:`.writer` — writing a shard atomically (and a whole small set: :func:`write_samples`);
- :mod:`.layout` — the folder's names, sidecars, which shards are complete, stale leftovers;
- :mod:`.manifest` — the lock-merged manifest.json and its rebuild from the sidecars;
- :mod:`.read` — the tar reader and shard-spec expansion;
- :mod:`.atomic` — never-half-written files and the error type.
"""
from .atomic import ShardError, atomic_write_bytes, atomic_write_json, check_writable_dir
from .read import (REMOTE_PREFIXES, HttpStream, ShardRejected, ShardUnavailable, iter_shard, manifest_entry,
                   manifest_record, resolve_shards, shard_keys, shard_sha256, sibling_shards, verify_shard)
from .sample import (DEPTH_LEVELS, SCHEMA, SOURCES, MultiViewSample, SampleError, decode_depth, decode_normal,
                     encode_depth, encode_normal, group_members)
from .layout import SHARD_RE, ShardRecord, clean_stale_tmp, complete_shards, list_shards, shard_name, sidecar_path
from .manifest import (LOCK_NAME, MANIFEST_NAME, MANIFEST_SCHEMA, ManifestMismatch, check_header, manifest_lock,
                       merge_into_manifest, read_manifest, rebuild_manifest)
from .writer import ShardWriter, write_samples

__all__ = [
    "DEPTH_LEVELS", "LOCK_NAME", "MANIFEST_NAME", "MANIFEST_SCHEMA", "REMOTE_PREFIXES", "SCHEMA", "SHARD_RE", "SOURCES",
    "HttpStream", "ManifestMismatch", "MultiViewSample", "SampleError", "ShardError", "ShardRecord", "ShardRejected",
    "ShardUnavailable", "ShardWriter",
    "atomic_write_bytes", "atomic_write_json", "check_header", "check_writable_dir", "clean_stale_tmp",
    "complete_shards", "decode_depth", "decode_normal", "encode_depth", "encode_normal", "group_members",
    "iter_shard", "list_shards", "manifest_entry", "manifest_lock", "manifest_record", "merge_into_manifest", "read_manifest",
    "rebuild_manifest", "resolve_shards", "shard_keys", "shard_name", "shard_sha256", "sibling_shards", "sidecar_path",
    "verify_shard", "write_samples",
]
