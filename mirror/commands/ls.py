"""`mirror ls [--json]`: what is cached, tag by tag: digest, size, last pull, pull count; with
`--storage s3://…`, what the bucket holds (which keeps no pull counts: those are each cache
directory's own)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mirror.cache.inventory import Inventory, Scanner
from mirror.commands import Command
from mirror.commands.cachedir import human_size, on_bucket, open_cache, scan, table, utc_time
from mirror.config import Settings


def rows(inventory: Inventory) -> list[dict[str, Any]]:
    """One row per cached tag, then one per image no tag names; sizes count an image's
    manifests (an index's children too) and blobs as cached."""
    found: list[dict[str, Any]] = []
    for image in inventory.images():
        for entry in image.tags:
            found.append(
                {
                    "registry": entry.registry,
                    "repository": entry.repo,
                    "tag": entry.tag,
                    "digest": str(image.digest),
                    "size": image.size,
                    "last_pull": utc_time(entry.pulls.last),
                    "pulls": entry.pulls.count,
                }
            )
        if not image.tags:
            found.append(
                {
                    "registry": None,
                    "repository": None,
                    "tag": None,
                    "digest": str(image.digest),
                    "size": image.size,
                    "last_pull": utc_time(image.last_used),
                    "pulls": None,
                }
            )
    return sorted(
        found,
        key=lambda r: (
            r["registry"] is None,
            r["registry"] or "",
            r["repository"] or "",
            r["tag"] or "",
            r["digest"],
        ),
    )


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.storage is not None:
        inventory = on_bucket(settings.storage, lambda bucket: scan(bucket, settings))
    else:
        inventory = Scanner(open_cache(settings)).scan()
    found = rows(inventory)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    headers = ["REGISTRY", "REPOSITORY", "TAG", "DIGEST", "SIZE", "LAST PULL", "PULLS"]
    print(
        table(
            headers,
            [
                [
                    r["registry"] or "-",
                    r["repository"] or "-",
                    r["tag"] or "<none>",
                    r["digest"][:19],
                    human_size(r["size"]),
                    r["last_pull"] or "never",
                    "-" if r["pulls"] is None else str(r["pulls"]),
                ]
                for r in found
            ],
        )
    )
    return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON array of every row")


COMMAND = Command("ls", "list cached tags and images", _arguments, _run)
