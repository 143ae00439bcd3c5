"""What the bucket holds under the prefix, counted by kind from one listing (ListObjectsV2, a
page per thousand keys): `mirror du` with `--storage s3://…`, and the bucket's cap
(`cache.bucket_cap`). Sizes are the listing's; no object is read."""

from __future__ import annotations

from dataclasses import dataclass, field

from mirror.storage.s3.bucket import Bucket


@dataclass
class Objects:
    """A number of objects and their bytes."""

    count: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size


@dataclass
class BucketUsage:
    """The keys under the prefix by the layout's top-level paths (`blobs/`, `manifests/`,
    `tags/`, `uploads/`); `tags` counts tag records (not the repositories' tag lists, though
    their bytes count); `other` is anything else found under the prefix."""

    blobs: Objects = field(default_factory=Objects)
    manifests: Objects = field(default_factory=Objects)
    tags: Objects = field(default_factory=Objects)
    uploads: Objects = field(default_factory=Objects)
    other: Objects = field(default_factory=Objects)

    @property
    def total(self) -> int:
        kinds = (self.blobs, self.manifests, self.tags, self.uploads, self.other)
        return sum(kind.bytes for kind in kinds)


async def bucket_usage(bucket: Bucket) -> BucketUsage:
    """Count every object under the prefix (StorageUnavailable when the store cannot be read)."""
    usage = BucketUsage()
    kinds = {"blobs": usage.blobs, "manifests": usage.manifests, "uploads": usage.uploads}
    async for key, size in bucket.list(""):
        path = bucket.relative(key)
        top = path.partition("/")[0]
        if top == "tags" and "/_tags/" not in path:
            usage.tags.bytes += size  # a repository's tag list
        elif top == "tags":
            usage.tags.add(size)
        else:
            kinds.get(top, usage.other).add(size)
    return usage
