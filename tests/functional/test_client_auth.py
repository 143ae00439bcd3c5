"""Client login (--htpasswd) and [[access]] rules, through HTTP against a real upstream."""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from mirror.api.keys import SETTINGS
from mirror.config import Settings, UpstreamSettings
from mirror.config.access import parse_access
from tests.conftest import MirrorFromSettings, RegistryFactory, Seeded, seed_registry
from tests.support.clients import raw_exchange
from tests.support.htpasswd import write_htpasswd
from tests.support.oci import ACCEPT_ALL, wait_until
from tests.support.registry import Registry

USERS = {"team-a": "a-password-1", "team-b": "b-password-2", "admin": "admin-password-3"}
RULES = """
[[access]]
users = ["team-a"]
allow = ["docker.io/seed/*"]
deny = ["docker.io/seed/big"]

[[access]]
users = ["team-b"]
allow = ["docker.io/org/*"]

[[access]]
users = ["admin"]
allow = ["*"]
"""
CHALLENGE = 'Basic realm="mirror"'

MakeMirror = Callable[..., Awaitable[TestClient[Any, Any]]]


def basic(user: str, password: str | None = None) -> dict[str, str]:
    secret = USERS[user] if password is None else password
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": ACCEPT_ALL}


@pytest.fixture
def secured(mirror_from: MirrorFromSettings, cache_dir: Path, tmp_path: Path) -> MakeMirror:
    """A mirror over `upstream` with the USERS file and the given [[access]] rules."""

    async def make(
        upstream: Registry, rules: str = "", *, users: bool = True, **upstream_settings: Any
    ) -> TestClient[Any, Any]:
        htpasswd = write_htpasswd(tmp_path / "users", USERS) if users else None
        access = parse_access(tomllib.loads(rules).get("access"))
        settings = Settings(
            cache_dir=cache_dir,
            upstreams=(UpstreamSettings(default=True, url=upstream.url, **upstream_settings),),
            htpasswd=htpasswd,
            access=access,
        )
        return await mirror_from(settings)

    return make


async def test_without_a_login_every_v2_request_is_401_and_health_stays_open(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """No credentials: the ping, manifests, blobs, tag lists and refused methods all answer
    401 UNAUTHORIZED with a Basic challenge; /healthz and /readyz answer without one."""
    client = await secured(registry)
    registry.clear_requests()
    repo, tag = seeded.schema2_ref
    layer = seeded.schema2.layers[0].digest
    for method, path in [
        ("GET", "/v2/"),
        ("HEAD", "/v2/"),
        ("GET", f"/v2/{repo}/manifests/{tag}"),
        ("HEAD", f"/v2/{repo}/blobs/{layer}"),
        ("GET", f"/v2/{repo}/blobs/{layer}"),
        ("GET", f"/v2/{repo}/tags/list"),
        ("PUT", f"/v2/{repo}/manifests/{tag}"),
    ]:
        response = await client.request(method, path)
        assert response.status == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        if method == "GET":
            assert (await response.json())["errors"][0]["code"] == "UNAUTHORIZED"
    for path in ("/healthz", "/readyz"):
        assert (await client.get(path)).status == 200
    assert registry.requests() == []  # no unauthenticated request went upstream


async def test_a_logged_in_client_pings_and_pulls(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """With valid Basic credentials the ping is 200 and a whole image comes through."""
    client = await secured(registry)
    repo, tag = seeded.schema2_ref
    headers = basic("team-a")
    ping = await client.get("/v2/", headers=headers)
    assert ping.status == 200
    manifest = await client.get(f"/v2/{repo}/manifests/{tag}", headers=headers)
    assert manifest.status == 200
    assert await manifest.read() == seeded.schema2.manifest
    for blob in seeded.schema2.blobs:
        response = await client.get(f"/v2/{repo}/blobs/{blob.digest}", headers=headers)
        assert response.status == 200
        assert await response.read() == blob.data


async def test_wrong_credentials_are_401_whatever_the_rules(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """A wrong password or an unknown user is 401 on the ping and on content, even for a
    repository anonymous clients may pull."""
    client = await secured(registry, RULES + '[[access]]\nanonymous = true\nallow = ["*"]\n')
    repo, tag = seeded.schema2_ref
    for headers in (basic("team-a", "wrong"), basic("team-a", ""), {"Authorization": "Basic x"}):
        for path in ("/v2/", f"/v2/{repo}/manifests/{tag}"):
            response = await client.get(path, headers=headers)
            assert response.status == 401, (headers, path)
            assert response.headers["WWW-Authenticate"] == CHALLENGE
    ghost = base64.b64encode(b"ghost:a-password-1").decode()
    response = await client.get("/v2/", headers={"Authorization": f"Basic {ghost}"})
    assert response.status == 401


async def test_credentials_that_are_not_ascii_are_401_without_a_traceback(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """Raw latin-1 bytes or UTF-8 text where base64 belongs are malformed credentials: 401
    with the challenge, nothing logged as an unexpected error."""
    client = await secured(registry)
    repo, tag = seeded.schema2_ref
    with structlog.testing.capture_logs() as logs:
        for value in ("Basic \xe9\xe9", "Basic \u00e9t\u00e9".encode().decode("latin-1")):
            for path in ("/v2/", f"/v2/{repo}/manifests/{tag}"):
                answer = await raw_exchange(
                    client.host, client.port, "GET", path, {"Authorization": value}
                )
                assert answer.status == 401, (value, path)
                assert answer.headers["www-authenticate"] == CHALLENGE
                assert json.loads(answer.body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert not [entry for entry in logs if entry["log_level"] in ("error", "critical")]


async def test_a_denied_pull_looks_the_same_whether_or_not_the_content_is_cached(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """team-a caches an image; team-b asking for it (manifest by tag and by digest, blobs, hot
    manifest answers included) gets the same 403 DENIED as for content never cached, and
    none of team-b's requests reaches the upstream."""
    client = await secured(registry, RULES)
    repo, tag = seeded.schema2_ref
    image = seeded.schema2
    cached_paths = [
        f"/v2/{repo}/manifests/{tag}",
        f"/v2/{repo}/manifests/{image.digest}",
        *(f"/v2/{repo}/blobs/{blob.digest}" for blob in image.blobs),
    ]
    for path in cached_paths:
        response = await client.get(path, headers=basic("team-a"))
        assert response.status == 200
        await response.read()
    # The upstream logs a request once it has sent its answer, which may be after the mirror's
    # client had it: wait for those of the blobs.
    blob_paths = {path for path in cached_paths if "/blobs/" in path}
    assert await wait_until(lambda: blob_paths <= {p for _, p in registry.requests()})
    registry.clear_requests()
    uncached_paths = [
        f"/v2/{repo}/manifests/never-pushed",
        f"/v2/{repo}/manifests/sha256:{'0' * 64}",
        f"/v2/{repo}/blobs/sha256:{'1' * 64}",
    ]
    answers = set()
    for path in cached_paths + uncached_paths:
        for method in ("GET", "HEAD"):
            response = await client.request(method, path, headers=basic("team-b"))
            assert response.status == 403, (method, path)
            if method == "GET":
                answers.add(await response.read())
    assert len(answers) == 1
    (body,) = answers
    assert json.loads(body)["errors"][0]["code"] == "DENIED"
    assert registry.requests() == []
    # The same repository through containerd's ns= and a registry prefix is denied alike.
    for path in (
        f"/v2/{repo}/manifests/{tag}?ns=docker.io",
        f"/v2/docker.io/{repo}/manifests/{tag}",
    ):
        assert (await client.get(path, headers=basic("team-b"))).status == 403
    # deny inside team-a's own table, and the admin's allow-all.
    big_repo, big_tag = seeded.big_ref
    assert (
        await client.get(f"/v2/{big_repo}/manifests/{big_tag}", headers=basic("team-a"))
    ).status == 403
    assert (
        await client.get(f"/v2/{big_repo}/manifests/{big_tag}", headers=basic("admin"))
    ).status == 200


async def test_anonymous_rules_beside_logins(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """With a user file, anonymous = true opens what its table allows to clients that did not
    log in; anything else asks them (401) to log in, while a logged-in user lacking a grant
    gets 403."""
    client = await secured(
        registry, RULES + '[[access]]\nanonymous = true\nallow = ["docker.io/library/*"]\n'
    )
    solo, tag = seeded.solo_ref  # docker.io's `solo` is library/solo
    response = await client.get(f"/v2/{solo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200
    assert await response.read() == seeded.schema2.manifest
    repo, tag = seeded.schema2_ref
    response = await client.get(f"/v2/{repo}/manifests/{tag}")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert (await client.get("/v2/")).status == 401  # the ping still offers a login
    assert (await client.get(f"/v2/{solo}/manifests/{tag}", headers=basic("team-b"))).status == 403


async def test_access_rules_without_logins_apply_to_everyone(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """Without --htpasswd, [[access]] rules with anonymous = true decide for every client:
    the ping is open, a repository outside them is 403 DENIED."""
    client = await secured(
        registry, '[[access]]\nanonymous = true\nallow = ["docker.io/seed/*"]\n', users=False
    )
    repo, tag = seeded.schema2_ref
    assert (await client.get("/v2/")).status == 200
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200
    deep, tag = seeded.deep_ref
    response = await client.get(f"/v2/{deep}/manifests/{tag}")
    assert response.status == 403
    assert (await response.json())["errors"][0]["code"] == "DENIED"


async def test_without_rules_every_user_pulls_everything(
    secured: MakeMirror, registry: Registry, seeded: Seeded
) -> None:
    """A user file and no [[access]] tables: any logged-in user pulls any repository."""
    client = await secured(registry)
    for ref in (seeded.schema2_ref, seeded.deep_ref):
        response = await client.get(f"/v2/{ref[0]}/manifests/{ref[1]}", headers=basic("team-b"))
        assert response.status == 200


async def test_no_secret_reaches_the_logs_or_the_answers(
    secured: MakeMirror, make_registry: RegistryFactory, seeded: Seeded
) -> None:
    """Across a login, a failed login and a denied pull through an upstream that needs the
    mirror's own credentials, no password (nor its Basic encoding) is logged or answered."""
    upstream_password = "upstream-Pa55-word"
    upstream = make_registry(htpasswd=("bot", upstream_password))
    seed_registry(upstream, seeded, auth=("bot", upstream_password))
    client = await secured(upstream, RULES, username="bot", password=upstream_password)
    repo, tag = seeded.schema2_ref
    secrets = [upstream_password, *USERS.values(), "wrong-password-9"]
    secrets += [base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in USERS.items()]
    secrets.append(base64.b64encode(f"bot:{upstream_password}".encode()).decode())
    bodies = []
    with structlog.testing.capture_logs() as logs:
        for headers, expected in [
            (basic("team-a"), 200),
            (basic("team-a", "wrong-password-9"), 401),
            (basic("team-b"), 403),
        ]:
            response = await client.get(f"/v2/{repo}/manifests/{tag}", headers=headers)
            assert response.status == expected
            bodies.append((await response.read()).decode() + str(response.headers))
    text = "\n".join([repr(logs), *bodies, repr(client.app[SETTINGS])])
    assert "login failed" in text
    for secret in secrets:
        assert secret not in text
