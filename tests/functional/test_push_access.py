"""Who may push, pull and delete in a local namespace; the default namespace; the catalog;
and what `gc` keeps of pushed content."""

from __future__ import annotations

import time
from pathlib import Path

from mirror.api.keys import LOCAL as LOCAL_KEY
from mirror.cache.collection import collect
from mirror.cache.eviction import Freed, Policy, Sweeper, evict
from mirror.cache.inventory import Scanner, Stores
from tests.conftest import LocalMirrorFactory, MirrorFactory, Seeded
from tests.support.images import make_image
from tests.support.oci import ACCEPT_ALL, assert_oci_error, cached_blob, cached_manifest, wait_until
from tests.support.push import LOCAL, Pusher, basic
from tests.support.registry import Registry

REPO = f"{LOCAL}/team/app"


async def test_pushing_needs_a_login_with_push_rights(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """Anonymous: 401 with a challenge; a user without push rights: 403 DENIED; both before
    any work (no upload session is made). Pulls of local repositories follow the rules too."""
    client = await local_mirror(registry)
    image = make_image(oci=True, seed="access")
    anonymous = await client.post(f"/v2/{REPO}/blobs/uploads/")
    await assert_oci_error(anonymous, 401, "UNAUTHORIZED")
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="mirror"'
    reader = Pusher(client, "reader")
    refused = await reader.request("POST", f"/v2/{REPO}/blobs/uploads/")
    await assert_oci_error(refused, 403, "DENIED")
    refused_manifest = await reader.request(
        "PUT",
        f"/v2/{REPO}/manifests/v1",
        data=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    await assert_oci_error(refused_manifest, 403, "DENIED")
    assert not (cache_dir / "uploads").exists() or not any((cache_dir / "uploads").iterdir())
    # ci pushes to team/*, not elsewhere in the namespace.
    ci = Pusher(client)
    outside = await ci.request("POST", f"/v2/{LOCAL}/other/app/blobs/uploads/")
    await assert_oci_error(outside, 403, "DENIED")
    await ci.push_image(REPO, "v1", image)
    pulled = await reader.request("GET", f"/v2/{REPO}/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert await pulled.read() == image.manifest
    nobody = await client.get(f"/v2/{REPO}/manifests/v1")
    await assert_oci_error(nobody, 401, "UNAUTHORIZED")


async def test_a_default_local_namespace_takes_names_without_a_registry(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """With default = true, `team/app` is the local repository; Docker Hub is still reached
    by its prefix (and by ns=docker.io)."""
    client = await local_mirror(registry, default=True)
    ci = Pusher(client)
    image = make_image(oci=True, seed="default")
    await ci.push_image("team/app", "v1", image)
    by_prefix = await ci.request("GET", f"/v2/{REPO}/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert await by_prefix.read() == image.manifest
    repo, tag = seeded.schema2_ref
    hub = await ci.request(
        "GET", f"/v2/docker.io/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
    )
    assert await hub.read() == seeded.schema2.manifest
    by_ns = await ci.request(
        "GET",
        f"/v2/{repo}/manifests/{tag}",
        params={"ns": "docker.io"},
        headers={"Accept": ACCEPT_ALL},
    )
    assert by_ns.status == 200
    not_local = await Pusher(client, "admin").request(
        "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
    )
    await assert_oci_error(not_local, 404, "MANIFEST_UNKNOWN")


async def test_the_catalog_lists_pushed_and_cached_repositories_the_caller_may_pull(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """Pushed repositories under the namespace's name, cached ones under their registry,
    sorted, paged with n/last and a Link, each caller seeing only what it may pull."""
    client = await local_mirror(registry)
    admin = Pusher(client, "admin")
    image = make_image(oci=True, seed="catalog")
    for repo in (f"{LOCAL}/team/b", f"{LOCAL}/team/a", f"{LOCAL}/other/x"):
        await admin.push_image(repo, "v1", image)
    hub_repo, tag = seeded.schema2_ref
    pulled = await admin.request(
        "GET", f"/v2/{hub_repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
    )
    assert pulled.status == 200
    everything = [
        f"docker.io/{hub_repo}",
        f"{LOCAL}/other/x",
        f"{LOCAL}/team/a",
        f"{LOCAL}/team/b",
    ]
    whole = await admin.request("GET", "/v2/_catalog")
    assert whole.status == 200
    assert await whole.json() == {"repositories": everything}
    page = await admin.request("GET", "/v2/_catalog", params={"n": "2"})
    assert (await page.json())["repositories"] == everything[:2]
    assert page.headers["Link"] == f'</v2/_catalog?n=2&last={LOCAL}/other/x>; rel="next"'
    rest = await admin.request("GET", "/v2/_catalog", params={"n": "2", "last": everything[1]})
    assert (await rest.json())["repositories"] == everything[2:]
    assert "Link" not in rest.headers
    reader = await client.get("/v2/_catalog", headers=basic("reader"))
    assert (await reader.json())["repositories"] == [f"{LOCAL}/team/a", f"{LOCAL}/team/b"]
    anonymous = await client.get("/v2/_catalog")
    await assert_oci_error(anonymous, 401, "UNAUTHORIZED")
    bad = await admin.request("GET", "/v2/_catalog", params={"n": "-1"})
    await assert_oci_error(bad, 400, "PAGINATION_NUMBER_INVALID")


async def test_gc_keeps_pushed_and_cached_images_and_removes_what_was_deleted(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """After a manifest delete, collecting past the grace period removes its manifest and the
    blobs nothing else names; pushed images, cached images and a fresh upload stay."""
    client = await local_mirror(registry)
    admin = Pusher(client, "admin")
    kept = make_image(layer_sizes=(300,), oci=True, seed="kept")
    dropped = make_image(layer_sizes=(400,), oci=True, seed="dropped")
    await admin.push_image(REPO, "keep", kept)
    await admin.push_image(f"{LOCAL}/team/gone", "v1", dropped)
    hub_repo, tag = seeded.oci_ref
    assert (
        await admin.request(
            "GET", f"/v2/{hub_repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
        )
    ).status == 200
    for blob in seeded.oci.blobs:
        assert (await admin.request("GET", f"/v2/{hub_repo}/blobs/{blob.digest}")).status == 200
        assert await wait_until(cached_blob(cache_dir, blob.digest).exists)
    deleted = await admin.request("DELETE", f"/v2/{LOCAL}/team/gone/manifests/{dropped.digest}")
    assert deleted.status == 202

    grace = 3600.0
    soon = _collect(cache_dir, now=time.time(), grace=grace)
    assert (soon.manifests, soon.blobs) == (0, 0)  # everything is within the grace period
    holdings = client.app[LOCAL_KEY].store.holdings()
    assert dropped.digest not in {str(d) for d in holdings.manifests}
    assert kept.digest in {str(d) for d in holdings.manifests}
    # Past the grace period, the links of the deleted image's blobs are old too.
    later = _collect(cache_dir, now=time.time() + 2 * grace, grace=grace)
    assert (later.manifests, later.blobs) == (1, len(dropped.blobs))
    assert not cached_manifest(cache_dir, dropped.digest).exists()
    for blob in dropped.blobs:
        assert not cached_blob(cache_dir, blob.digest).exists()
    for digest in (kept.digest, seeded.oci.digest):
        assert cached_manifest(cache_dir, digest).exists()
    for blob in (*kept.blobs, *seeded.oci.blobs):
        assert cached_blob(cache_dir, blob.digest).exists()
    again = await admin.request("GET", f"/v2/{REPO}/manifests/keep", headers={"Accept": ACCEPT_ALL})
    assert await again.read() == kept.manifest


def _collect(cache_dir: Path, *, now: float, grace: float) -> Freed:
    """What `mirror gc` collects (its first half), at a time of the test's choosing."""
    stores = Stores.at(cache_dir)
    sweeper = Sweeper(stores)
    collect(Scanner(stores).scan(), sweeper, now, grace)
    return sweeper.freed


async def test_the_catalog_of_a_mirror_without_local_namespaces(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """Without logins or local namespaces, the catalog lists the cached repositories: none
    before a pull, the pulled one (under its registry's name) after."""
    client = await make_mirror(registry)
    assert await (await client.get("/v2/_catalog")).json() == {"repositories": []}
    repo, tag = seeded.schema2_ref
    pulled = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert pulled.status == 200
    listed = await client.get("/v2/_catalog")
    assert listed.headers["Content-Type"] == "application/json"
    assert await listed.json() == {"repositories": [f"docker.io/{repo}"]}


async def test_eviction_never_takes_pushed_images_nor_counts_them_against_the_cap(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A pass that must free everything it can evicts the cached image and leaves the pushed
    one whole; the cap is measured without what was pushed."""
    client = await local_mirror(registry)
    admin = Pusher(client, "admin")
    pushed = make_image(layer_sizes=(5000,), oci=True, seed="pushed-not-cache")
    await admin.push_image(REPO, "keep", pushed)
    hub_repo, tag = seeded.oci_ref
    assert (
        await admin.request(
            "GET", f"/v2/{hub_repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
        )
    ).status == 200
    for blob in seeded.oci.blobs:
        assert (await admin.request("GET", f"/v2/{hub_repo}/blobs/{blob.digest}")).status == 200
        assert await wait_until(cached_blob(cache_dir, blob.digest).exists)
    stores = Stores.at(cache_dir)
    inventory = Scanner(stores).scan()
    pushed_bytes = len(pushed.manifest) + sum(b.size for b in pushed.blobs)
    assert inventory.total - inventory.cached_total >= pushed_bytes
    sweeper = Sweeper(stores)
    later = time.time() + 10 * 3600
    evict(inventory, inventory.total, Policy(protect_window=0, pins=(), cap=1), sweeper, later)
    assert not cached_manifest(cache_dir, seeded.oci.digest).exists()
    assert cached_manifest(cache_dir, pushed.digest).exists()
    for blob in pushed.blobs:
        assert cached_blob(cache_dir, blob.digest).exists()
    again = await admin.request("GET", f"/v2/{REPO}/manifests/keep", headers={"Accept": ACCEPT_ALL})
    assert await again.read() == pushed.manifest


async def test_a_web_page_of_another_site_cannot_push_with_a_browsers_login(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """A form another site's page posts carries the login the browser keeps for the mirror,
    and `Origin` or `Sec-Fetch-Site` saying where it comes from: 403, nothing stored. The same
    push from the mirror's own origin, or from a registry client (no such header), goes on."""
    client = await local_mirror(registry)
    ci = Pusher(client)
    image = make_image(oci=True, seed="csrf")
    blob = image.layers[0]
    path = f"/v2/{REPO}/blobs/uploads/"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for foreign in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = await ci.request(
            "POST",
            path,
            params={"digest": blob.digest},
            data=blob.data,
            headers={**form, **foreign},
        )
        await assert_oci_error(refused, 403, "DENIED")
    assert not cached_blob(cache_dir, blob.digest).exists()
    own = f"http://{client.server.host}:{client.server.port}"
    accepted = await ci.request(
        "POST", path, params={"digest": blob.digest}, data=blob.data, headers={"Origin": own}
    )
    assert accepted.status == 201, await accepted.text()
    await ci.push_blob(REPO, image.config)
