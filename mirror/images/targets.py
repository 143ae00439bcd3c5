"""Which upstream and repository an image reference is served from, as the router decides for
a request that names the registry."""

from __future__ import annotations

from dataclasses import dataclass

from mirror.oci.reference import ImageReference
from mirror.pullthrough.routing import Router
from mirror.upstream.registry import UpstreamRegistry


@dataclass(frozen=True, slots=True)
class Target:
    upstream: UpstreamRegistry
    repo: str
    name: ImageReference  # the full reference, with the upstream's own name as its registry


def resolve(router: Router, reference: ImageReference) -> Target:
    """Raises NameUnknown for a registry that is not mirrored, Denied for a repository its
    upstream's allow/deny lists refuse."""
    route = router.route(reference.repository, reference.registry)
    name = ImageReference(route.upstream.name, route.repo, reference.tag, reference.digest)
    return Target(route.upstream, route.repo, name)
