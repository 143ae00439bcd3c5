"""`mirror verify`: re-hash every blob and manifest; what does not match its digest is moved to
`quarantine/` and reported, and the exit status is 1."""

from __future__ import annotations

import argparse

from mirror.cache.verification import verify
from mirror.commands import Command
from mirror.commands.cachedir import human_size, open_cache
from mirror.config import Settings


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    stores = open_cache(settings)
    counts = {"blob": 0, "manifest": 0}
    checked_bytes = bad = 0
    for checked in verify(stores):
        counts[checked.kind] += 1
        checked_bytes += checked.file.size
        if checked.good:
            continue
        bad += 1
        where = checked.quarantined or "nowhere: it changed while it was checked"
        print(f"bad {checked.kind} {checked.file.digest}: moved to {where}")
    print(
        f"verified {counts['blob']} blobs and {counts['manifest']} manifests "
        f"({human_size(checked_bytes)}): {bad} bad"
    )
    return 1 if bad else 0


COMMAND = Command(
    "verify", "re-hash the cache; quarantine what does not match", lambda _p: None, _run
)
