"""Manifests of a local namespace: pushed with validation, served byte-exact, tagged, listed,
referred to by artifacts, deleted; every refusal a clear OCI error with nothing stored."""

from __future__ import annotations

import io
import json
from pathlib import Path

from mirror.oci.mediatypes import DOCKER_MANIFEST
from tests.conftest import LocalMirrorFactory, Seeded
from tests.support.images import OCI_MANIFEST, make_image, make_index, sha256_digest
from tests.support.oci import ACCEPT_ALL, assert_oci_error, cached_manifest
from tests.support.push import LOCAL, Pusher
from tests.support.registry import Registry

REPO = f"{LOCAL}/team/app"
EMPTY_CONFIG = b"{}"
ARTIFACT_TYPE = "application/vnd.example.sbom.v1"


def _artifact(subject_digest: str, subject_size: int, artifact_type: str = ARTIFACT_TYPE) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha256_digest(EMPTY_CONFIG),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
        "annotations": {"org.example.kind": artifact_type.rsplit(".", 2)[-2]},
    }
    return json.dumps(document).encode()


async def test_a_pushed_image_is_served_by_tag_and_digest_byte_exact(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """PUT by tag: 201 with Location and Docker-Content-Digest; GET and HEAD by tag and by
    digest answer the exact bytes with their media type, as cached manifests are answered."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    image = make_image(layer_sizes=(1500, 2500), oci=True, seed="pushed")
    for blob in image.blobs:
        await pusher.push_blob(REPO, blob)
    pushed = await pusher.push_manifest(REPO, "v1", image.manifest, image.media_type)
    assert pushed.headers["Docker-Content-Digest"] == image.digest
    assert pushed.headers["Location"] == f"/v2/{REPO}/manifests/{image.digest}"
    for reference in ("v1", image.digest):
        got = await pusher.request(
            "GET", f"/v2/{REPO}/manifests/{reference}", headers={"Accept": ACCEPT_ALL}
        )
        assert got.status == 200
        assert await got.read() == image.manifest
        assert got.headers["Content-Type"] == image.media_type
        assert got.headers["Docker-Content-Digest"] == image.digest
        head = await pusher.request(
            "HEAD", f"/v2/{REPO}/manifests/{reference}", headers={"Accept": ACCEPT_ALL}
        )
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(image.manifest))
    assert cached_manifest(cache_dir, image.digest).read_bytes() == image.manifest
    for blob in image.blobs:
        got = await pusher.request("GET", f"/v2/{REPO}/blobs/{blob.digest}")
        assert await got.read() == blob.data


async def test_an_index_needs_its_children_pushed_first(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """An index naming a manifest the repository lacks is MANIFEST_BLOB_UNKNOWN; after the
    children it is accepted, by tag and by digest."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    index = make_index(
        [
            make_image(oci=True, arch="amd64", seed="ix"),
            make_image(oci=True, arch="arm64", seed="ix"),
        ]
    )
    early = await pusher.request(
        "PUT",
        f"/v2/{REPO}/manifests/multi",
        data=index.manifest,
        headers={"Content-Type": index.media_type},
    )
    await assert_oci_error(early, 400, "MANIFEST_BLOB_UNKNOWN")
    await pusher.push_index(REPO, "multi", index)
    got = await pusher.request("GET", f"/v2/{REPO}/manifests/multi", headers={"Accept": ACCEPT_ALL})
    assert await got.read() == index.manifest
    await pusher.push_manifest(REPO, index.digest, index.manifest, index.media_type)


async def test_a_manifest_naming_a_missing_blob_stores_nothing(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """400 MANIFEST_BLOB_UNKNOWN naming the blob; no manifest file, no tag."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    image = make_image(oci=True, seed="missing")
    await pusher.push_blob(REPO, image.config)  # the layer is never pushed
    response = await pusher.request(
        "PUT",
        f"/v2/{REPO}/manifests/v1",
        data=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    body = await assert_oci_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert body["errors"][0]["detail"] == {"digest": image.layers[0].digest}
    assert not cached_manifest(cache_dir, image.digest).exists()
    missing = await pusher.request("GET", f"/v2/{REPO}/manifests/v1")
    await assert_oci_error(missing, 404, "MANIFEST_UNKNOWN")
    tags = await pusher.request("GET", f"/v2/{REPO}/tags/list")
    assert (await tags.json())["tags"] == []


async def test_bad_manifests_are_refused_with_a_reason(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """Not JSON, JSON nested past any parser's depth, a Content-Type other than its mediaType,
    an unknown type, a Docker type for a manifest without its mediaType (which is an OCI one,
    whoever pulls it), a digest reference the bytes do not hash to, a bad tag: each a 400 with
    its code, nothing stored."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    image = make_image(oci=True, seed="bad")
    for blob in image.blobs:
        await pusher.push_blob(REPO, blob)
    untyped = json.loads(image.manifest)
    del untyped["mediaType"]
    untyped_manifest = json.dumps(untyped).encode()
    cases = [
        ("v1", b"not json", OCI_MANIFEST, "MANIFEST_INVALID"),
        ("v1", b"[" * 200_000, OCI_MANIFEST, "MANIFEST_INVALID"),
        ("v1", b'{"a":' * 50_000, OCI_MANIFEST, "MANIFEST_INVALID"),
        (
            "v1",
            image.manifest,
            "application/vnd.docker.distribution.manifest.v2+json",
            "MANIFEST_INVALID",
        ),
        ("v1", b'{"schemaVersion":2,"mediaType":"text/plain"}', "text/plain", "MANIFEST_INVALID"),
        ("v1", b'{"schemaVersion":1,"fsLayers":[]}', OCI_MANIFEST, "MANIFEST_INVALID"),
        ("v1", untyped_manifest, DOCKER_MANIFEST, "MANIFEST_INVALID"),
        (sha256_digest(b"other"), image.manifest, OCI_MANIFEST, "DIGEST_INVALID"),
        ("-bad-tag", image.manifest, OCI_MANIFEST, "TAG_INVALID"),
    ]
    for reference, data, content_type, code in cases:
        response = await pusher.request(
            "PUT",
            f"/v2/{REPO}/manifests/{reference}",
            data=data,
            headers={"Content-Type": content_type},
        )
        await assert_oci_error(response, 400, code)
    assert not cached_manifest(cache_dir, image.digest).exists()
    assert not cached_manifest(cache_dir, sha256_digest(untyped_manifest)).exists()


async def test_an_oversized_manifest_is_413_and_stores_nothing(
    local_mirror: LocalMirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """Past 4 MiB a manifest is refused with 413, whether Content-Length says so or not."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    huge = b'{"schemaVersion":2,"annotations":{"a":"' + b"x" * (4 << 20) + b'"}}'

    async def streamed() -> object:
        for at in range(0, len(huge), 1 << 20):
            yield huge[at : at + (1 << 20)]

    for data in (io.BytesIO(huge), streamed()):
        response = await pusher.request(
            "PUT",
            f"/v2/{REPO}/manifests/big",
            data=data,
            headers={"Content-Type": OCI_MANIFEST},
        )
        await assert_oci_error(response, 413, "MANIFEST_INVALID")
    assert not any((cache_dir / "manifests").rglob("*"))


async def test_an_artifact_with_a_subject_is_listed_by_the_referrers_api(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """A manifest with `subject` (pushed before its subject, as allowed) answers OCI-Subject;
    the referrers API lists it with artifactType and annotations, filters by artifactType
    (OCI-Filters-Applied), and forgets it once it is deleted."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    admin = Pusher(client, "admin")
    image = make_image(oci=True, seed="subject")
    await pusher.push_blob(REPO, _empty_config())
    sbom = _artifact(image.digest, len(image.manifest))
    signature = _artifact(image.digest, len(image.manifest), "application/vnd.example.sig.v1")
    sbom_digest, signature_digest = sha256_digest(sbom), sha256_digest(signature)
    pushed = await pusher.push_manifest(REPO, sbom_digest, sbom, OCI_MANIFEST)
    assert pushed.headers["OCI-Subject"] == image.digest
    await pusher.push_manifest(REPO, signature_digest, signature, OCI_MANIFEST)
    await pusher.push_image(REPO, "v1", image)

    listed = await pusher.request("GET", f"/v2/{REPO}/referrers/{image.digest}")
    assert listed.status == 200
    assert listed.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    index = json.loads(await listed.read())
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sbom_digest, signature_digest}
    assert by_digest[sbom_digest] == {
        "mediaType": OCI_MANIFEST,
        "digest": sbom_digest,
        "size": len(sbom),
        "artifactType": ARTIFACT_TYPE,
        "annotations": {"org.example.kind": "sbom"},
    }
    filtered = await pusher.request(
        "GET", f"/v2/{REPO}/referrers/{image.digest}", params={"artifactType": ARTIFACT_TYPE}
    )
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in (await filtered.json(content_type=None))["manifests"]] == [
        sbom_digest
    ]
    none = await pusher.request("GET", f"/v2/{REPO}/referrers/{sbom_digest}")
    assert (await none.json(content_type=None))["manifests"] == []

    assert (await admin.request("DELETE", f"/v2/{REPO}/manifests/{sbom_digest}")).status == 202
    after = await pusher.request("GET", f"/v2/{REPO}/referrers/{image.digest}")
    assert [d["digest"] for d in (await after.json(content_type=None))["manifests"]] == [
        signature_digest
    ]


def _empty_config() -> object:
    from tests.support.images import Blob

    return Blob.of(EMPTY_CONFIG, "application/vnd.oci.empty.v1+json")


async def test_tags_are_listed_in_pages_and_a_repository_nobody_pushed_is_unknown(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """tags/list of a local repository: sorted, n/last with a Link; an unknown one 404."""
    client = await local_mirror(registry)
    pusher = Pusher(client)
    image = make_image(oci=True, seed="tags")
    await pusher.push_image(REPO, "b", image)
    for tag in ("a", "c"):
        await pusher.push_manifest(REPO, tag, image.manifest, image.media_type)
    whole = await pusher.request("GET", f"/v2/{REPO}/tags/list")
    assert await whole.json() == {"name": REPO, "tags": ["a", "b", "c"]}
    first = await pusher.request("GET", f"/v2/{REPO}/tags/list", params={"n": "2"})
    assert (await first.json())["tags"] == ["a", "b"]
    assert first.headers["Link"] == f'</v2/{REPO}/tags/list?n=2&last=b>; rel="next"'
    rest = await pusher.request("GET", f"/v2/{REPO}/tags/list", params={"n": "2", "last": "b"})
    assert (await rest.json())["tags"] == ["c"] and "Link" not in rest.headers
    unknown = await pusher.request("GET", f"/v2/{LOCAL}/team/nothing/tags/list")
    await assert_oci_error(unknown, 404, "NAME_UNKNOWN")


async def test_deleting_a_tag_and_a_manifest(
    local_mirror: LocalMirrorFactory, registry: Registry
) -> None:
    """DELETE by tag removes that tag only; by digest removes the manifest and every tag of
    it; each 202, then 404; deleting needs the delete action."""
    client = await local_mirror(registry)
    pusher, admin = Pusher(client), Pusher(client, "admin")
    image = make_image(oci=True, seed="deletes")
    await pusher.push_image(REPO, "v1", image)
    await pusher.push_manifest(REPO, "latest", image.manifest, image.media_type)
    refused = await pusher.request("DELETE", f"/v2/{REPO}/manifests/v1")
    await assert_oci_error(refused, 403, "DENIED")
    assert (await admin.request("DELETE", f"/v2/{REPO}/manifests/v1")).status == 202
    await assert_oci_error(
        await pusher.request("GET", f"/v2/{REPO}/manifests/v1"), 404, "MANIFEST_UNKNOWN"
    )
    assert (await pusher.request("GET", f"/v2/{REPO}/manifests/latest")).status == 200
    assert (await admin.request("DELETE", f"/v2/{REPO}/manifests/{image.digest}")).status == 202
    for reference in ("latest", image.digest):
        gone = await pusher.request("GET", f"/v2/{REPO}/manifests/{reference}")
        await assert_oci_error(gone, 404, "MANIFEST_UNKNOWN")
    again = await admin.request("DELETE", f"/v2/{REPO}/manifests/{image.digest}")
    await assert_oci_error(again, 404, "MANIFEST_UNKNOWN")
    assert (await (await pusher.request("GET", f"/v2/{REPO}/tags/list")).json())["tags"] == []


async def test_a_push_to_a_mirrored_registry_is_unsupported(
    local_mirror: LocalMirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Uploads, manifest pushes and deletes through a mirrored registry: 405 UNSUPPORTED, and
    the upstream and the cache are untouched."""
    client = await local_mirror(registry)
    admin = Pusher(client, "admin")
    repo, tag = seeded.schema2_ref
    image = make_image(seed="not-here")
    registry.clear_requests()
    for method, path, params in [
        ("POST", f"/v2/docker.io/{repo}/blobs/uploads/", {}),
        ("POST", f"/v2/{repo}/blobs/uploads/", {"digest": image.config.digest}),
        ("PUT", f"/v2/docker.io/{repo}/manifests/{tag}", {}),
        ("DELETE", f"/v2/docker.io/{repo}/manifests/{tag}", {}),
        ("DELETE", f"/v2/docker.io/{repo}/blobs/{image.config.digest}", {}),
        ("PATCH", f"/v2/docker.io/{repo}/blobs/uploads/{'0' * 32}", {}),
    ]:
        response = await admin.request(method, path, params=params, data=image.config.data)
        await assert_oci_error(response, 405, "UNSUPPORTED")
    assert registry.requests() == []
    assert not (cache_dir / "uploads").exists() or not any((cache_dir / "uploads").iterdir())
    assert not any((cache_dir / "blobs").rglob("*"))
