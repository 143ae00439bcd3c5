"""Which upstream (or local namespace) a request is for, and under which repository name
(design.md §2).

In order: containerd's `?ns=<registry>`, then a first path component naming a configured
registry or local namespace (`/v2/ghcr.io/org/app/...`, as podman mirrors with a path send),
then the default: the local namespace marked `default = true` if there is one, else the default
upstream. Only configured upstreams are ever chosen, so no request can make the mirror contact
a host of the client's choosing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mirror.config.local import LocalSettings
from mirror.errors import Denied, NameUnknown
from mirror.oci.names import validate_name
from mirror.upstream.registry import UpstreamRegistry

DOCKER_HUB = "docker.io"
# Names clients use for Docker Hub besides docker.io itself.
_HUB_ALIASES = {"index.docker.io": DOCKER_HUB, "registry-1.docker.io": DOCKER_HUB}


@dataclass(frozen=True, slots=True)
class Route:
    upstream: UpstreamRegistry
    repo: str  # the repository name at the upstream
    namespace: str | None  # the `ns` the client sent, echoed as OCI-Namespace

    @property
    def registry(self) -> str:
        return self.upstream.name


@dataclass(frozen=True, slots=True)
class LocalRoute:
    """A repository of a local namespace: content pushed to the mirror itself."""

    registry: str  # the local namespace's name
    repo: str
    namespace: str | None  # the `ns` the client sent


class Router:
    def __init__(
        self, upstreams: Iterable[UpstreamRegistry], local: Iterable[LocalSettings] = ()
    ) -> None:
        self._by_name = {u.name: u for u in upstreams}
        self._default = next(u for u in self._by_name.values() if u.settings.default)
        self._local = {n.name: n for n in local}
        self._local_default = next((n.name for n in self._local.values() if n.default), None)

    def resolve(self, name: str, namespace: str | None) -> Route | LocalRoute:
        """The repository a request names, mirrored or local."""
        local = self.local(name, namespace)
        return local if local is not None else self._mirrored(name, namespace)

    def local(self, name: str, namespace: str | None) -> LocalRoute | None:
        """The local repository a request names, or None when it names a mirrored one (cheap
        when there are no local namespaces, which keeps the pull path as it was)."""
        if not self._local:
            return None
        if namespace is not None:
            local = self._local.get(namespace.lower())
            return None if local is None else LocalRoute(local.name, validate_name(name), namespace)
        first, slash, rest = name.partition("/")
        if slash and first in self._local:
            return LocalRoute(first, validate_name(rest), None)
        if self._local_default is None or (slash and self._known(first) is not None):
            return None
        if slash and ("." in first or ":" in first):
            return None  # a registry host that is not ours: `route` refuses it
        return LocalRoute(self._local_default, validate_name(name), None)

    def route(self, name: str, namespace: str | None) -> Route:
        """The mirrored repository a request names."""
        if self.local(name, namespace) is not None:
            raise NameUnknown(f"{name[:200]!r} is in a local namespace, not a mirrored registry")
        return self._mirrored(name, namespace)

    def _mirrored(self, name: str, namespace: str | None) -> Route:
        if namespace is not None:
            upstream = self._known(namespace)
            if upstream is None:
                raise NameUnknown(f"registry {namespace[:100]!r} is not mirrored here")
            return self._checked(upstream, name, namespace)
        first, slash, rest = name.partition("/")
        if slash:
            upstream = self._known(first)
            if upstream is not None:
                return self._checked(upstream, rest, None)
            if "." in first or ":" in first:
                # A registry host, but not one of ours: never an open proxy.
                raise NameUnknown(f"registry {first[:100]!r} is not mirrored here")
        return self._checked(self._default, name, None)

    def _known(self, host: str) -> UpstreamRegistry | None:
        host = host.lower()
        return self._by_name.get(_HUB_ALIASES.get(host, host))

    @staticmethod
    def _checked(upstream: UpstreamRegistry, name: str, namespace: str | None) -> Route:
        repo = validate_name(name)
        if upstream.name == DOCKER_HUB and "/" not in repo:
            # Docker Hub keeps official images under library/; the Docker daemon already
            # sends `library/alpine`, clients using the mirror as their registry may not.
            repo = f"library/{repo}"
        if not upstream.settings.allows(repo):
            raise Denied(f"{upstream.name}/{repo} is not allowed through this mirror")
        return Route(upstream, repo, namespace)
