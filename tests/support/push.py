"""Pushing to a mirror's local namespace through its HTTP API, from tests (aiohttp test client)."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.images import Blob, Image, Index

LOCAL = "registry.example.internal"
USERS = {"ci": "ci-password-1", "reader": "reader-password-2", "admin": "admin-password-3"}
# ci pushes to team/*, reader only pulls, admin may also delete; docker.io pulls for everyone.
RULES = f"""
[[access]]
users = ["ci"]
allow = ["{LOCAL}/team/*", "docker.io/*"]
actions = ["pull", "push"]

[[access]]
users = ["reader"]
allow = ["{LOCAL}/team/*"]

[[access]]
users = ["admin"]
allow = ["*"]
actions = ["pull", "push", "delete"]
"""


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Pusher:
    """The push API as a client uses it, for one user."""

    def __init__(self, client: TestClient[Any, Any], user: str = "ci") -> None:
        self.client = client
        self.headers = basic(user)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def push_blob(self, repo: str, blob: Blob) -> None:
        """A whole blob in one POST (end-4b)."""
        response = await self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            params={"digest": blob.digest},
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status == 201, (response.status, await response.text())

    async def push_manifest(
        self, repo: str, reference: str, manifest: bytes, media_type: str
    ) -> Any:
        response = await self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            data=manifest,
            headers={"Content-Type": media_type},
        )
        assert response.status == 201, (response.status, await response.text())
        return response

    async def push_image(self, repo: str, tag: str | None, image: Image) -> None:
        for blob in image.blobs:
            await self.push_blob(repo, blob)
        await self.push_manifest(repo, tag or image.digest, image.manifest, image.media_type)

    async def push_index(self, repo: str, tag: str, index: Index) -> None:
        for image in index.images:
            await self.push_image(repo, None, image)
        await self.push_manifest(repo, tag, index.manifest, index.media_type)

    async def start_upload(self, repo: str) -> str:
        response = await self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert response.status == 202, (response.status, await response.text())
        return str(response.headers["Location"])
