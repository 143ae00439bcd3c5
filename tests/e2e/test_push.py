"""Real clients push to the mirror's local namespace over HTTPS with a login, and pull back what
they pushed: docker, podman, skopeo (in and out), and oras (a chunked upload and an artifact
with a `subject`, listed by the referrers API)."""

from __future__ import annotations

import base64
import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.catalogue import Catalogue
from tests.e2e.checks import assert_ok
from tests.e2e.clients import Containerd, Docker, Podman, Skopeo
from tests.e2e.daemons import MirrorServer
from tests.support.certs import CertificateAuthority
from tests.support.htpasswd import write_htpasswd
from tests.support.images import sha256_digest
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e

LOCAL = "registry.example.internal"
PASSWORD = "push-Pa55word"
CONFIG = f"""
[local."{LOCAL}"]

[[access]]
users = ["pusher"]
allow = ["{LOCAL}/*", "docker.io/*"]
actions = ["pull", "push", "delete"]
"""
DOCKER_CERTS = Path("/etc/docker/certs.d")


@dataclass(frozen=True)
class PushMirror:
    server: MirrorServer
    ca: CertificateAuthority
    cert_dir: Path  # holds ca.crt only

    @property
    def host(self) -> str:
        return self.server.host

    def local(self, repo: str) -> str:
        return f"{self.host}/{LOCAL}/{repo}"

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """A GET as the pushing user, over HTTPS trusting the suite's CA."""
        token = base64.b64encode(f"pusher:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"{self.server.url}{path}", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, context=self.server.ssl_context(), timeout=30) as r:
            return r.status, dict(r.headers), r.read()


@pytest.fixture(scope="module")
def push_mirror(e2e_dir: Path, upstream: Registry) -> Iterator[PushMirror]:
    """The mirror over HTTPS, with a user who may push to the local namespace."""
    workdir = e2e_dir / "push-mirror"
    ca = CertificateAuthority(workdir / "ca")
    cert = ca.issue("server")
    users = write_htpasswd(workdir / "users", {"pusher": PASSWORD})
    config = workdir / "mirror.toml"
    config.write_text(CONFIG)
    server = MirrorServer.start(
        workdir,
        upstream.url,
        tag_ttl=300,
        ca_file=ca.ca_file,
        extra_args=[
            "--config", str(config), "--htpasswd", str(users),
            "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
        ],
    )  # fmt: skip
    cert_dir = workdir / "certs"
    cert_dir.mkdir()
    shutil.copyfile(ca.ca_file, cert_dir / "ca.crt")
    try:
        yield PushMirror(server, ca, cert_dir)
    finally:
        server.stop()


def _pushed_requests(mirror: PushMirror, since: int) -> list[dict[str, Any]]:
    return [e for e in mirror.server.entries(since) if e.get("event") == "request"]


def test_docker_pushes_and_pulls_through_a_login(
    docker: Docker, push_mirror: PushMirror, catalogue: Catalogue
) -> None:
    """`docker push` of an image pulled through the mirror lands in the local namespace (its
    layers mounted from the cached Docker Hub repository, not uploaded again), and `docker
    pull` gets it back after the local copy is removed."""
    host = push_mirror.host
    item = catalogue["docker-push"]
    directory = DOCKER_CERTS / host
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(push_mirror.ca.ca_file, directory / "ca.crt")
    source = f"{host}/{item.tag_ref}"
    target = push_mirror.local("team/docker:1")
    try:
        assert_ok(docker.run("login", host, "-u", "pusher", "-p", PASSWORD, timeout=60))
        assert_ok(docker.pull(source))
        assert_ok(docker.run("tag", source, target, timeout=30))
        mark = push_mirror.server.log_size()
        assert_ok(docker.run("push", target))
        requests = _pushed_requests(push_mirror, mark)
        assert any(r["method"] == "PUT" and "/manifests/1" in r["path"] for r in requests)
        # The layers came from the cache: no PATCH carried their bytes.
        assert not [r for r in requests if r["method"] == "PATCH" and r["bytes"]], requests
        docker.remove(source)
        assert_ok(docker.pull(target))
        assert docker.image_id(target) == item.image.config.digest
    finally:
        docker.remove(target)
        docker.run("logout", host, timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    status, _, body = push_mirror.get(f"/v2/{LOCAL}/team/docker/tags/list")
    assert status == 200 and json.loads(body)["tags"] == ["1"]


def test_skopeo_copies_into_and_out_of_the_local_namespace(
    skopeo: Skopeo,
    push_mirror: PushMirror,
    upstream: Registry,
    catalogue: Catalogue,
    tmp_path: Path,
) -> None:
    """skopeo copies an OCI image from a registry into the local namespace and back out to
    an OCI layout: the manifest and every blob keep their digests."""
    item = catalogue["skopeo-push"]
    creds = f"pusher:{PASSWORD}"
    target = f"docker://{push_mirror.local('team/skopeo:1')}"
    assert_ok(
        skopeo.run(
            "copy", "--src-tls-verify=false", f"docker://{upstream.host}/{item.tag_ref}",
            "--dest-creds", creds, "--dest-cert-dir", str(push_mirror.cert_dir), target,
        )
    )  # fmt: skip
    out = tmp_path / "out"
    assert_ok(
        skopeo.run(
            "copy", "--src-creds", creds, "--src-cert-dir", str(push_mirror.cert_dir),
            target, f"oci:{out}:1",
        )
    )  # fmt: skip
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == item.image.digest
    for blob in item.image.blobs:
        assert (out / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")).exists()


def test_podman_pushes_to_the_local_namespace(
    podman: Podman, push_mirror: PushMirror, catalogue: Catalogue, tmp_path: Path
) -> None:
    """`podman push` with credentials and the CA: the manifest is then served by the mirror."""
    item = catalogue["podman-push"]
    auth = ["--creds", f"pusher:{PASSWORD}", "--cert-dir", str(push_mirror.cert_dir)]
    source = f"{push_mirror.host}/{item.tag_ref}"
    target = push_mirror.local("team/podman:1")
    policy = ["--signature-policy", str(podman.policy)]
    assert_ok(podman.run("pull", *auth, *policy, source))
    try:
        assert_ok(podman.run("push", *auth, *policy, source, target))
    finally:
        podman.run("rmi", "--force", source, timeout=60)
    status, headers, body = push_mirror.get(f"/v2/{LOCAL}/team/podman/manifests/1")
    assert status == 200
    manifest = json.loads(body)
    assert manifest["config"]["digest"] == item.image.config.digest
    for layer in manifest["layers"]:
        blob_status, _, _ = push_mirror.get(f"/v2/{LOCAL}/team/podman/blobs/{layer['digest']}")
        assert blob_status == 200
    assert headers["Docker-Content-Digest"].startswith("sha256:")


def test_containerd_pushes_to_the_local_namespace(
    containerd: Containerd, push_mirror: PushMirror, catalogue: Catalogue, tmp_path: Path
) -> None:
    """`ctr images push --user` with the CA in hosts.toml: the image pulled through the mirror
    goes back into the local namespace, byte for byte."""
    host = push_mirror.host
    item = catalogue["containerd-push"]
    hosts = tmp_path / "hosts"
    (hosts / host).mkdir(parents=True)
    (hosts / host / "hosts.toml").write_text(
        f'server = "https://{host}"\n\n[host."https://{host}"]\n'
        f'  capabilities = ["pull", "resolve", "push"]\n  ca = "{push_mirror.ca.ca_file}"\n'
    )
    user = f"pusher:{PASSWORD}"
    source = f"{host}/{item.tag_ref}"
    target = push_mirror.local("team/containerd:1")
    common = ["--hosts-dir", str(hosts), "--user", user]
    assert_ok(containerd.run("images", "pull", "--snapshotter", "native", *common, source))
    try:
        assert_ok(containerd.run("images", "tag", source, target, timeout=30))
        assert_ok(containerd.run("images", "push", *common, target, timeout=120))
    finally:
        for ref in (source, target):
            containerd.run("images", "rm", "--sync", ref, timeout=60)
    status, headers, body = push_mirror.get(f"/v2/{LOCAL}/team/containerd/manifests/1")
    assert status == 200
    assert body == item.image.manifest
    assert headers["Docker-Content-Digest"] == item.image.digest


def test_oras_pushes_an_artifact_with_a_subject_in_chunks(
    push_mirror: PushMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """oras uploads a file in several PATCH chunks and pushes an artifact manifest whose
    subject is an image of the namespace; the referrers API lists it, and the file comes back
    whole."""
    oras_client = pytest.importorskip("oras.client")
    oras_oci = pytest.importorskip("oras.oci")
    subject_ref = f"{LOCAL}/team/artifact"
    # The subject is an artifact oras pushes first.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "image.txt").write_text("the subject\n")
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes(b'{"sbom": true}' + b" " * (3 << 20))  # three chunks of 1 MiB and more
    client = oras_client.OrasClient(
        hostname=push_mirror.host, tls_verify=str(push_mirror.ca.ca_file), auth_backend="basic"
    )
    client.login(username="pusher", password=PASSWORD, hostname=push_mirror.host)
    client.push(target=f"{push_mirror.host}/{subject_ref}:v1", files=["image.txt"])
    _, headers, subject_manifest = push_mirror.get(f"/v2/{subject_ref}/manifests/v1")
    subject = oras_oci.Subject(
        mediaType="application/vnd.oci.image.manifest.v1+json",
        digest=headers["Docker-Content-Digest"],
        size=len(subject_manifest),
    )
    mark = push_mirror.server.log_size()
    client.push(
        target=f"{push_mirror.host}/{subject_ref}:sbom",
        files=["sbom.json:application/vnd.example.sbom.v1+json"],
        subject=subject,
        do_chunked=True,
        chunk_size=1 << 20,
    )
    patches = [r for r in _pushed_requests(push_mirror, mark) if r["method"] == "PATCH"]
    assert len(patches) >= 3
    _, _, listed = push_mirror.get(f"/v2/{subject_ref}/referrers/{subject.digest}")
    referrers = json.loads(listed)["manifests"]
    assert len(referrers) == 1
    _, _, sbom_manifest = push_mirror.get(f"/v2/{subject_ref}/manifests/sbom")
    assert referrers[0]["digest"] == sha256_digest(sbom_manifest)
    layer = json.loads(sbom_manifest)["layers"][0]
    _, _, data = push_mirror.get(f"/v2/{subject_ref}/blobs/{layer['digest']}")
    assert data == sbom.read_bytes()
    status, _, catalog = push_mirror.get("/v2/_catalog")
    assert status == 200 and subject_ref in json.loads(catalog)["repositories"]
