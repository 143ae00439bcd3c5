"""Credentials per upstream: each registry gets its own, nobody else's, and no log holds one."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from mirror.config import Settings, UpstreamSettings, load_settings
from tests.conftest import MirrorFromSettings, RegistryFactory
from tests.faults import (
    FakeFactory,
    FakeUpstream,
    api_root,
    basic_auth,
    bearer_auth,
    content,
    redirect,
    token_endpoint,
)
from tests.support.images import make_image, push_image, sha256_digest
from tests.support.network import loopback_network
from tests.support.oci import ACCEPT_ALL
from tests.support.tokens import TokenService

Client = TestClient[Any, Any]
MirrorOver = Callable[..., Awaitable[Client]]

# Distinctive, so finding one in a log or a header cannot be a coincidence.
TOKEN_USER, TOKEN_PASSWORD = "tok-robot", "TokPw-7f3a9c1e"
BASIC_USER, BASIC_PASSWORD = "basic-robot", "BasicPw-42d8b6e0"
ALICE_PASSWORD, BOB_PASSWORD = "AlicePw-0c5e77aa", "BobPw-9b1d3f52"
BOB_TOKEN = "BobToken-5a6e0d8c41"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def secrets_of(*pairs: tuple[str, str]) -> list[str]:
    """Each password, and the Basic header value that would carry it."""
    found = []
    for user, password in pairs:
        found += [password, basic(user, password).split(" ", 1)[1]]
    return found


@pytest.fixture
def mirror_over(mirror_from: MirrorFromSettings, cache_dir: Path) -> MirrorOver:
    """A factory: a mirror over the given upstreams (or ready settings), on this test's backend."""

    async def make(*upstreams: UpstreamSettings, settings: Settings | None = None) -> Client:
        if settings is None:
            settings = Settings(cache_dir=cache_dir, upstreams=tuple(upstreams))
        return await mirror_from(settings)

    return make


@pytest.fixture
def private_tokens(tmp_path: Path) -> Iterator[TokenService]:
    """A token service that grants tokens only to TOKEN_USER."""
    service = TokenService(tmp_path / "tokens", username=TOKEN_USER, password=TOKEN_PASSWORD)
    try:
        yield service
    finally:
        service.close()


def assert_never_logged(
    logs: Iterable[Any], caplog: pytest.LogCaptureFixture, secrets: Iterable[str]
) -> None:
    structured = repr(list(logs))
    for secret in secrets:
        assert secret not in structured, f"a credential reached a structlog line: {secret[:6]}…"
        assert secret not in caplog.text, f"a credential reached a logging record: {secret[:6]}…"


def authorizations(fake: FakeUpstream) -> set[str | None]:
    return {r.headers.get("Authorization") for r in fake.requests}


async def pull(client: Client, manifest_path: str, blob_paths: Iterable[str]) -> list[bytes]:
    """GET a manifest and blobs, asserting each is a 200; returns the bodies."""
    bodies = []
    for path in (manifest_path, *blob_paths):
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, (path, await response.text())
        bodies.append(await response.read())
    return bodies


async def test_token_and_basic_upstreams_each_pull_with_their_own_credentials(
    mirror_over: MirrorOver,
    make_registry: RegistryFactory,
    private_tokens: TokenService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Bearer upstream's realm sees its user, the Basic one works; no log holds either."""
    caplog.set_level(logging.DEBUG)
    token_upstream = make_registry(token_auth=private_tokens)
    basic_upstream = make_registry(htpasswd=(BASIC_USER, BASIC_PASSWORD))
    image_t = make_image(layer_sizes=(2000,), seed="creds-token")
    image_b = make_image(layer_sizes=(2000,), seed="creds-basic")
    push_image(token_upstream.url, "team/app", "v1", image_t, auth=private_tokens)
    push_image(basic_upstream.url, "team/app", "v1", image_b, auth=(BASIC_USER, BASIC_PASSWORD))
    client = await mirror_over(
        UpstreamSettings(
            name="tok.test",
            url=token_upstream.url,
            default=True,
            username=TOKEN_USER,
            password=TOKEN_PASSWORD,
        ),
        UpstreamSettings(
            name="basic.test",
            url=basic_upstream.url,
            username=BASIC_USER,
            password=BASIC_PASSWORD,
        ),
    )
    with structlog.testing.capture_logs() as logs:
        got_t = await pull(
            client,
            "/v2/team/app/manifests/v1?ns=tok.test",
            [f"/v2/team/app/blobs/{b.digest}?ns=tok.test" for b in image_t.blobs],
        )
        got_b = await pull(
            client,
            "/v2/basic.test/team/app/manifests/v1",
            [f"/v2/basic.test/team/app/blobs/{b.digest}" for b in image_b.blobs],
        )
    assert got_t == [image_t.manifest, *(b.data for b in image_t.blobs)]
    assert got_b == [image_b.manifest, *(b.data for b in image_b.blobs)]
    requests = private_tokens.requests()
    assert requests, "the token service was never asked"
    assert all(r.username == TOKEN_USER and r.granted for r in requests), requests
    assert_never_logged(
        logs, caplog, secrets_of((TOKEN_USER, TOKEN_PASSWORD), (BASIC_USER, BASIC_PASSWORD))
    )


async def test_credentials_never_reach_another_upstream(
    mirror_over: MirrorOver, make_fake_upstream: FakeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Each upstream and its realm see only their own credentials (or none), never the other's."""
    caplog.set_level(logging.DEBUG)
    alice = await make_fake_upstream()  # Basic, like a private registry
    bob = await make_fake_upstream()  # Bearer, like Docker Hub
    realm = await make_fake_upstream()  # bob's token service, on bob's host
    image_a = make_image(seed="creds-alice")
    image_b = make_image(seed="creds-bob")
    alice.route("/v2/", basic_auth("alice", ALICE_PASSWORD, api_root))
    for ref in ("v1", image_a.digest):
        served = content(image_a.manifest, image_a.media_type)
        alice.route(f"/v2/lib/a/manifests/{ref}", basic_auth("alice", ALICE_PASSWORD, served))
    realm.route("/token", basic_auth("bob", BOB_PASSWORD, token_endpoint(BOB_TOKEN)))
    scope = "repository:lib/b:pull"
    bob.route("/v2/", bearer_auth(f"{realm.url}/token", "bob.test", BOB_TOKEN, scope, api_root))
    for ref in ("v1", image_b.digest):
        served = content(image_b.manifest, image_b.media_type)
        bob.route(
            f"/v2/lib/b/manifests/{ref}",
            bearer_auth(f"{realm.url}/token", "bob.test", BOB_TOKEN, scope, served),
        )
    client = await mirror_over(
        UpstreamSettings(
            name="alice.test",
            url=alice.url,
            default=True,
            username="alice",
            password=ALICE_PASSWORD,
        ),
        UpstreamSettings(name="bob.test", url=bob.url, username="bob", password=BOB_PASSWORD),
    )
    with structlog.testing.capture_logs() as logs:
        for path, image in (
            ("/v2/lib/a/manifests/v1?ns=alice.test", image_a),
            ("/v2/bob.test/lib/b/manifests/v1", image_b),
            ("/v2/lib/a/manifests/v1", image_a),
            ("/v2/lib/b/manifests/v1?ns=bob.test", image_b),
        ):
            response = await client.get(path, headers={"Accept": ACCEPT_ALL})
            assert response.status == 200, (path, await response.text())
            assert await response.read() == image.manifest
    assert authorizations(alice) <= {None, basic("alice", ALICE_PASSWORD)}
    assert basic("alice", ALICE_PASSWORD) in authorizations(alice)
    assert authorizations(bob) <= {None, f"Bearer {BOB_TOKEN}"}
    assert f"Bearer {BOB_TOKEN}" in authorizations(bob)
    assert authorizations(realm) <= {None, basic("bob", BOB_PASSWORD)}
    assert basic("bob", BOB_PASSWORD) in authorizations(realm)
    # Not in any other header either (a leak through a custom header is a leak all the same).
    bobs = [*secrets_of(("bob", BOB_PASSWORD)), BOB_TOKEN]
    alices = secrets_of(("alice", ALICE_PASSWORD))
    for fake, foreign in ((alice, bobs), (bob, alices), (realm, alices)):
        for seen in fake.requests:
            values = " ".join(f"{k}: {v}" for k, v in seen.headers.items()) + seen.path
            assert not any(secret in values for secret in foreign), seen
    assert_never_logged(
        logs,
        caplog,
        [*secrets_of(("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)), BOB_TOKEN],
    )


async def test_credentials_are_not_sent_to_a_token_realm_on_another_site(
    mirror_over: MirrorOver, make_fake_upstream: FakeFactory
) -> None:
    """A challenge naming a realm on a foreign host must not get the upstream's password."""
    upstream = await make_fake_upstream()
    foreign = await make_fake_upstream()
    foreign.route("/token", token_endpoint(BOB_TOKEN))
    port = foreign.host.rsplit(":", 1)[1]
    # Same machine, but another host name than the upstream's 127.0.0.1: another site.
    realm_url = f"http://localhost:{port}/token"
    image = make_image(seed="creds-foreign-realm")
    served = content(image.manifest, image.media_type)
    scope = "repository:lib/app:pull"
    upstream.route("/v2/", bearer_auth(realm_url, "svc", BOB_TOKEN, scope, api_root))
    for ref in ("v1", image.digest):
        upstream.route(
            f"/v2/lib/app/manifests/{ref}", bearer_auth(realm_url, "svc", BOB_TOKEN, scope, served)
        )
    client = await mirror_over(
        UpstreamSettings(
            name="up.test", url=upstream.url, default=True, username="bob", password=BOB_PASSWORD
        )
    )
    response = await client.get("/v2/lib/app/manifests/v1", headers={"Accept": ACCEPT_ALL})
    await response.read()  # a token fetched anonymously, or a refusal: either is fine
    assert authorizations(foreign) <= {None}, "the password went to a foreign token realm"


async def test_credentials_load_from_a_docker_config_json(
    mirror_over: MirrorOver,
    make_registry: RegistryFactory,
    private_tokens: TokenService,
    tmp_path: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`credentials_file` reads the host's `auths` entry: `auth` (base64) or username/password."""
    caplog.set_level(logging.DEBUG)
    token_upstream = make_registry(token_auth=private_tokens)
    basic_upstream = make_registry(htpasswd=(BASIC_USER, BASIC_PASSWORD))
    image_t = make_image(seed="config-json-token")
    image_b = make_image(seed="config-json-basic")
    push_image(token_upstream.url, "team/app", "v1", image_t, auth=private_tokens)
    push_image(basic_upstream.url, "team/app", "v1", image_b, auth=(BASIC_USER, BASIC_PASSWORD))
    docker_config = tmp_path / "docker" / "config.json"
    docker_config.parent.mkdir()
    auth = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    docker_config.write_text(
        json.dumps(
            {
                "auths": {
                    "basic.test": {"auth": auth},
                    "tok.test": {"username": TOKEN_USER, "password": TOKEN_PASSWORD},
                    "elsewhere.example": {"auth": base64.b64encode(b"x:y").decode()},
                }
            }
        )
    )
    toml = tmp_path / "mirror.toml"
    toml.write_text(
        f'[upstreams."basic.test"]\nurl = "{basic_upstream.url}"\ndefault = true\n'
        f'credentials_file = "{docker_config}"\n'
        f'[upstreams."tok.test"]\nurl = "{token_upstream.url}"\n'
        f'credentials_file = "{docker_config}"\n'
    )
    settings = load_settings(str(toml), {"cache_dir": str(cache_dir)}, environ={})
    assert BASIC_PASSWORD not in repr(settings) and TOKEN_PASSWORD not in repr(settings)
    client = await mirror_over(settings=settings)
    with structlog.testing.capture_logs() as logs:
        got_b = await pull(client, "/v2/team/app/manifests/v1", [])
        got_t = await pull(client, "/v2/tok.test/team/app/manifests/v1", [])
    assert got_b == [image_b.manifest]
    assert got_t == [image_t.manifest]
    requests = private_tokens.requests()
    assert requests and all(r.username == TOKEN_USER and r.granted for r in requests)
    assert_never_logged(
        logs, caplog, secrets_of((TOKEN_USER, TOKEN_PASSWORD), (BASIC_USER, BASIC_PASSWORD))
    )


async def test_blob_redirects_carry_no_authorization_even_to_another_configured_upstream(
    mirror_over: MirrorOver, make_fake_upstream: FakeFactory
) -> None:
    """A 307 target gets no Authorization: not the redirecting upstream's, not its own."""
    alice = await make_fake_upstream()
    bob = await make_fake_upstream()
    cdn = await make_fake_upstream()
    alice.route("/v2/", basic_auth("alice", ALICE_PASSWORD, api_root))
    bob.route("/v2/", basic_auth("bob", BOB_PASSWORD, api_root))
    targets = {"bob": bob, "cdn": cdn}
    blobs = {name: f"layer parked at {name} ".encode() * 500 for name in targets}
    for name, target in targets.items():
        target.route(f"/cdn/{name}", content(blobs[name]))
        location = f"{target.url}/cdn/{name}?sig=a%2Fb"
        alice.route(
            f"/v2/lib/app/blobs/{sha256_digest(blobs[name])}",
            basic_auth("alice", ALICE_PASSWORD, redirect(location)),
        )
    client = await mirror_over(
        UpstreamSettings(
            name="alice.test",
            url=alice.url,
            default=True,
            username="alice",
            password=ALICE_PASSWORD,
        ),
        UpstreamSettings(name="bob.test", url=bob.url, username="bob", password=BOB_PASSWORD),
    )
    for name, target in targets.items():
        response = await client.get(f"/v2/lib/app/blobs/{sha256_digest(blobs[name])}")
        assert response.status == 200, name
        assert await response.read() == blobs[name]
        followed = target.seen("GET", f"/cdn/{name}")
        assert followed, f"the redirect to {name} was not followed"
        assert all("Authorization" not in r.headers for r in target.requests), name
    assert basic("alice", ALICE_PASSWORD) in authorizations(alice)


async def test_credentials_reach_the_realm_of_their_own_site_only(
    make_fake_upstream: FakeFactory, mirror_from: MirrorFromSettings, cache_dir: Path
) -> None:
    """registry.alice.co.uk's password may go to auth.alice.co.uk, never to auth.bob.co.uk:
    co.uk is a public suffix, not a site."""
    upstream = await make_fake_upstream()
    realms = {owner: await make_fake_upstream() for owner in ("alice", "bob")}
    image = make_image(seed="creds-suffix")
    served = content(image.manifest, image.media_type)
    for owner, realm in realms.items():
        realm.route("/token", token_endpoint(f"{owner}-token"))
        realm_url = f"http://auth.{owner}.co.uk:{realm.host.rsplit(':', 1)[1]}/token"
        scope = f"repository:lib/{owner}:pull"
        upstream.route(
            f"/v2/lib/{owner}/manifests/v1",
            bearer_auth(realm_url, "svc", f"{owner}-token", scope, served),
        )
    names = {f"{host}.co.uk": "127.0.0.1" for host in ("registry.alice", "auth.alice", "auth.bob")}
    port = upstream.host.rsplit(":", 1)[1]
    settings = Settings(
        cache_dir=cache_dir,
        upstreams=(
            UpstreamSettings(
                name="alice.test",
                url=f"http://registry.alice.co.uk:{port}",
                default=True,
                username="alice",
                password=ALICE_PASSWORD,
            ),
        ),
    )
    client = await mirror_from(settings, loopback_network(names))
    for owner in ("alice", "bob"):
        path = f"/v2/lib/{owner}/manifests/v1"
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, await response.text()
    assert authorizations(realms["alice"]) == {basic("alice", ALICE_PASSWORD)}
    assert realms["bob"].seen("GET", "/token"), "bob's realm was never asked"
    assert authorizations(realms["bob"]) == {None}, "the password went to another site's realm"
