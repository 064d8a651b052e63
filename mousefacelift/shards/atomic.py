"""Never half-written: atomic file and folder writes, writable-folder checks and the shard error type.

Every file the project publishes (shards, sidecars, manifests, calibrations, frames,
checkpoints) is written through :func:`atomic_file`: a temporary name ``NAME.tmp-<host>-<pid>``
in the same folder, fsync, then ``os.replace``. The temporary name says which writer left it, so
:func:`mousefacelift.shards.clean_stale_tmp` can remove those of dead writers.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


class ShardError(RuntimeError):
    """A shard or output folder problem; the message names the file (and member) and what to do."""


def host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tmp_name(target: Path) -> Path:
    """``NAME.tmp-<host>-<pid>``: unique per writer, and tells :func:`clean_stale_tmp` whose it is."""
    return target.with_name(f"{target.name}{TMP_MARK}{host_tag()}-{os.getpid()}")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only if the block ends without an error (temporary
    name, fsync, ``os.replace``, folder fsync); otherwise the temporary file is removed and the
    error goes on unchanged."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        unlink_quiet(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; OS failures become a ShardError saying what is safe."""
    try:
        with atomic_file(path) as f:
            f.write(data)
    except OSError as e:
        raise os_error(e, Path(path)) from None


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:   # pragma: no cover - best effort cleanup
        log.warning("could not remove %s: %s", p, e)


def os_error(e: OSError, path: Path) -> ShardError:
    """Turn disk-full / permission errors into messages that say what happened and what is safe."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ShardError(f"disk full (or quota exceeded) while writing {path}: the unfinished file was removed, "
                          "finished shards are intact; free space and re-run the same command to resume")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ShardError(f"cannot write {path}: {e.strerror}; choose a writable output folder (--out)")
    return ShardError(f"writing {path} failed: {e}")


def check_writable_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and prove it is writable (a probe file), else a clear ShardError."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ShardError(f"output path {out} exists and is not a folder") from None
    except OSError as e:
        raise os_error(e, out) from None
    if not out.is_dir():
        raise ShardError(f"output path {out} exists and is not a folder")
    probe = tmp_name(out / ".write-probe")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
    except OSError as e:
        raise os_error(e, out) from None
    finally:
        unlink_quiet(probe)
    return out


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """A folder built under a temporary name beside ``final`` (``.NAME.tmp-<pid>``), moved into
    place when the block ends without an error, replacing an existing ``final``; after an error
    nothing is left, and an existing ``final`` is untouched."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
