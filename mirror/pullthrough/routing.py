"""Which upstream repository a client's name refers to."""

from __future__ import annotations

from yarl import URL


def is_docker_hub(upstream_url: str) -> bool:
    host = URL(upstream_url).host or ""
    return host == "docker.io" or host.endswith(".docker.io")


def upstream_repository(name: str, *, docker_hub: bool) -> str:
    """Docker Hub keeps official images under `library/`; clients that use the mirror as their
    registry may send `alpine` where the Docker daemon would send `library/alpine`."""
    if docker_hub and "/" not in name:
        return f"library/{name}"
    return name


def upstream_key(upstream_url: str) -> str:
    """A directory-safe name for the upstream in tag paths: its host and port."""
    url = URL(upstream_url)
    port = f"_{url.explicit_port}" if url.explicit_port else ""
    return f"{url.host}{port}".lower()
