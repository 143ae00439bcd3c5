"""`mirror verify`: re-hash every blob and manifest; what does not match its digest is moved to
`quarantine/` and reported, and the exit status is 1.

With `--storage s3://…`, the cache directory in front of the bucket on this host first (if any),
then every object in the bucket: a damaged one is removed from it, so the next pull fetches a
good copy."""

from __future__ import annotations

import argparse
from collections import Counter

from mirror.cache.inventory import Stores
from mirror.cache.verification import verify
from mirror.commands import Command
from mirror.commands.cachedir import human_size, in_front, on_bucket, open_cache, open_front
from mirror.config import S3Settings, Settings
from mirror.storage.s3.bucket import Bucket
from mirror.storage.s3.verification import verify_bucket


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    if settings.storage is None:
        return 1 if _directory(open_cache(settings)) else 0
    front = open_front(settings)
    bad = 0
    if front is not None:
        print(in_front(front))
        bad += _directory(front)
        print()
    bad += _bucket(settings.storage)
    return 1 if bad else 0


def _directory(stores: Stores) -> int:
    """Verify a cache directory; returns how many files were bad."""
    counts: Counter[str] = Counter()
    checked_bytes = bad = 0
    for checked in verify(stores):
        counts[checked.kind] += 1
        checked_bytes += checked.file.size
        if checked.good:
            continue
        bad += 1
        where = checked.quarantined or "nowhere: it changed while it was checked"
        print(f"bad {checked.kind} {checked.file.digest}: moved to {where}")
    print(_summary(counts, checked_bytes, bad))
    return bad


def _bucket(storage: S3Settings) -> int:
    """Verify the bucket; returns how many objects were bad."""

    async def work(bucket: Bucket) -> int:
        counts: Counter[str] = Counter()
        checked_bytes = bad = 0
        async for checked in verify_bucket(bucket):
            counts[checked.kind] += 1
            checked_bytes += checked.size
            if checked.good:
                continue
            bad += 1
            where = "removed" if checked.removed else "kept: it was written again meanwhile"
            print(f"bad {checked.kind} {checked.digest}: {where} from {storage.url}")
        print(f"bucket {storage.url}: {_summary(counts, checked_bytes, bad)}")
        return bad

    return on_bucket(storage, work)


def _summary(counts: Counter[str], checked_bytes: int, bad: int) -> str:
    return (
        f"verified {counts['blob']} blobs and {counts['manifest']} manifests "
        f"({human_size(checked_bytes)}): {bad} bad"
    )


COMMAND = Command(
    "verify", "re-hash the cache; quarantine what does not match", lambda _p: None, _run
)
