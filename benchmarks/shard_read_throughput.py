"""Raw shard reading: the project's one tar reader against WebDataset's own tar iterator.

Why: every consumer of shards (training stream, verify, inspect, export) reads through
:func:`mousefacelift.shards.iter_shard`, which also checks what WebDataset's
``tar_file_iterator`` + ``group_by_keys`` do not (members of a sample consecutive, no
duplicate member, truncation named). This measures what those checks cost: both readers
group the same shards into samples (raw bytes, nothing decoded), interleaved round by round
so machine drift hits both alike; the table gives medians and the ratio.

    python benchmarks/shard_read_throughput.py --samples 32 --size 256 --rounds 7
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from webdataset import tariterators

from mousefacelift.analytic import write_sphere_shards
from mousefacelift.shards import iter_shard


def _payload(sample: dict) -> tuple[int, int]:
    """(members, bytes) of a grouped sample, so both readers can be checked to agree."""
    data = [v for k, v in sample.items() if not k.startswith("__")]
    return len(data), sum(len(v) for v in data)


def read_ours(paths: list[str]) -> tuple[int, int]:
    got = [_payload(s) for p in paths for s in iter_shard(p)]
    return sum(m for m, _ in got), sum(b for _, b in got)


def read_webdataset(paths: list[str]) -> tuple[int, int]:
    got = []
    for p in paths:
        with open(p, "rb") as f:
            files = (dict(member, __url__=p) for member in tariterators.tar_file_iterator(f))
            got += [_payload(s) for s in tariterators.group_by_keys(files, lcase=False)]
    return sum(m for m, _ in got), sum(b for _, b in got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--size", type=int, default=256, help="image size of the sphere samples (32 views each)")
    ap.add_argument("--per-shard", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sphere_shards(tmp, samples=a.samples, per_shard=a.per_shard, size=a.size)
        mb = sum(os.path.getsize(p) for p in paths) / 1e6
        readers = {"mousefacelift.shards.iter_shard": read_ours, "webdataset tar_file_iterator": read_webdataset}
        assert len({f(paths) for f in readers.values()}) == 1, "the readers disagree on the members"
        times: dict[str, list[float]] = {k: [] for k in readers}
        for _ in range(a.rounds):
            for name, f in readers.items():
                t = time.perf_counter()
                f(paths)
                times[name].append(time.perf_counter() - t)
    print(f"{a.samples} samples x 32 views at {a.size}^2 in {len(paths)} shards, {mb:.1f} MB; "
          f"{a.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f}")
    print(f"{'reader':34s} {'median s':>9s} {'MB/s':>8s} {'samples/s':>10s}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in med.items():
        print(f"{name:34s} {m:9.4f} {mb / m:8.0f} {a.samples / m:10.0f}")
    ours, theirs = med["mousefacelift.shards.iter_shard"], med["webdataset tar_file_iterator"]
    print(f"time ratio iter_shard / webdataset: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
