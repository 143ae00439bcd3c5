"""Each real client logs in to the mirror over HTTPS, trusting a CA the suite creates, and the
access rules hold for them: docker (certs.d), podman (--cert-dir), skopeo (--src-creds) and
containerd (hosts.toml `ca` with an Authorization header, or ctr --user)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.catalogue import Catalogue, Seeded
from tests.e2e.checks import assert_fetched_via_mirror, assert_ok
from tests.e2e.clients import Containerd, Docker, Outcome, Podman, Skopeo
from tests.e2e.daemons import MirrorServer
from tests.support.certs import CertificateAuthority
from tests.support.htpasswd import write_htpasswd
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e

PASSWORDS = {"puller": "pull-Pa55word", "outsider": "out-Pa55word"}
RULES = """
[[access]]
users = ["puller"]
allow = ["docker.io/library/e2e-*"]

[[access]]
users = ["outsider"]
allow = ["docker.io/library/elsewhere/*"]
"""
DOCKER_CERTS = Path("/etc/docker/certs.d")


@dataclass(frozen=True)
class SecureMirror:
    server: MirrorServer
    ca: CertificateAuthority
    cert_dir: Path  # holds ca.crt only: what podman and skopeo are pointed at

    def ref(self, item: Seeded) -> str:
        """The item's tag addressed at the mirror by its own name."""
        return f"{self.server.host}/{item.tag_ref}"


@pytest.fixture(scope="module")
def secure_mirror(e2e_dir: Path, upstream: Registry) -> Iterator[SecureMirror]:
    """The mirror over HTTPS with a user file and access rules, on the e2e upstream."""
    workdir = e2e_dir / "secure-mirror"
    ca = CertificateAuthority(workdir / "ca")
    cert = ca.issue("server")
    users = write_htpasswd(workdir / "users", PASSWORDS)
    config = workdir / "mirror.toml"
    config.write_text(RULES)
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
        yield SecureMirror(server, ca, cert_dir)
    finally:
        server.stop()


@pytest.fixture
def docker_trusts(secure_mirror: SecureMirror) -> Iterator[None]:
    """dockerd trusts the CA for the mirror's host:port (its certs.d, read at every pull)."""
    directory = DOCKER_CERTS / secure_mirror.server.host
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(secure_mirror.ca.ca_file, directory / "ca.crt")
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_docker_login_and_pull_over_tls(
    docker: Docker,
    secure_mirror: SecureMirror,
    docker_trusts: None,
    upstream: Registry,
    catalogue: Catalogue,
) -> None:
    """`docker login` with a wrong password fails, with the right one succeeds, and `docker
    pull` of the mirror's own name then gets the image."""
    host = secure_mirror.server.host
    item = catalogue["docker-login"]
    wrong = docker.run("login", host, "-u", "puller", "-p", "wrong", timeout=60)
    assert not wrong.ok, wrong.explain()
    assert "401" in wrong.output or "unauthorized" in wrong.output.lower(), wrong.explain()
    assert_ok(docker.run("login", host, "-u", "puller", "-p", PASSWORDS["puller"], timeout=60))
    try:
        mark = secure_mirror.server.log_size()
        assert_ok(docker.pull(secure_mirror.ref(item)))
        assert docker.image_id(secure_mirror.ref(item)) == item.image.config.digest
        assert_fetched_via_mirror(upstream, secure_mirror.server, mark, item.repo, item.image)
    finally:
        docker.run("logout", host, timeout=30)
        docker.remove(secure_mirror.ref(item))


def test_podman_login_and_pull_over_tls(
    podman: Podman, secure_mirror: SecureMirror, catalogue: Catalogue, tmp_path: Path
) -> None:
    """`podman login --cert-dir` then `podman pull` of the mirror's own name."""
    host = secure_mirror.server.host
    item = catalogue["podman-login"]
    auth = ["--authfile", str(tmp_path / "auth.json"), "--cert-dir", str(secure_mirror.cert_dir)]
    wrong = podman.run("login", *auth, "-u", "puller", "-p", "wrong", host, timeout=60)
    assert not wrong.ok, wrong.explain()
    assert_ok(podman.run("login", *auth, "-u", "puller", "-p", PASSWORDS["puller"], host))
    ref = secure_mirror.ref(item)
    assert_ok(podman.run("pull", *auth, "--signature-policy", str(podman.policy), ref))
    found = podman.run("image", "inspect", "--format", "{{.Id}}", ref, timeout=30)
    assert found.stdout.strip() == item.image.config.digest.removeprefix("sha256:")
    podman.run("rmi", "--force", ref, timeout=60)


def test_skopeo_with_creds_and_the_access_rules(
    skopeo: Skopeo, secure_mirror: SecureMirror, catalogue: Catalogue, tmp_path: Path
) -> None:
    """`skopeo copy --src-creds` works for a user the rules allow; wrong credentials are
    unauthorized; a user the rules do not allow is denied alike for the image just cached
    and for one never pulled; no password reaches the mirror's log."""
    item = catalogue["skopeo-login"]
    cert_dir = ["--src-cert-dir", str(secure_mirror.cert_dir)]

    def copy(creds: str, ref: str, target: str) -> Outcome:
        return skopeo.run(
            "copy", *cert_dir, "--src-creds", creds, f"docker://{ref}", f"oci:{tmp_path / target}"
        )

    puller = f"puller:{PASSWORDS['puller']}"
    outsider = f"outsider:{PASSWORDS['outsider']}"
    assert_ok(copy(puller, secure_mirror.ref(item), "ok"))
    wrong = copy("puller:wrong", secure_mirror.ref(item), "wrong")
    assert not wrong.ok
    assert "unauthorized" in wrong.output.lower(), wrong.explain()
    uncached = catalogue["skopeo-offline"]  # never pulled through this mirror
    for ref in (secure_mirror.ref(item), secure_mirror.ref(uncached)):
        denied = copy(outsider, ref, "denied")
        assert not denied.ok
        assert "denied" in denied.output.lower(), denied.explain()
    log = secure_mirror.server.log_text()
    assert "login failed" in log
    for user, password in PASSWORDS.items():
        assert password not in log
        assert base64.b64encode(f"{user}:{password}".encode()).decode() not in log


def test_containerd_pulls_with_a_header_or_credentials_over_tls(
    containerd: Containerd, secure_mirror: SecureMirror, catalogue: Catalogue, tmp_path: Path
) -> None:
    """ctr pulls with hosts.toml naming the CA and sending an Authorization header, and with
    only the CA in hosts.toml and `--user` answering the Basic challenge."""
    host = secure_mirror.server.host
    item = catalogue["containerd-login"]
    token = base64.b64encode(f"puller:{PASSWORDS['puller']}".encode()).decode()
    ca = secure_mirror.ca.ca_file
    with_header = tmp_path / "with-header"
    (with_header / host).mkdir(parents=True)
    (with_header / host / "hosts.toml").write_text(
        f'server = "https://{host}"\n\n'
        f'[host."https://{host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f'  ca = "{ca}"\n'
        f'  [host."https://{host}".header]\n'
        f'    Authorization = "Basic {token}"\n'
    )
    ref = secure_mirror.ref(item)
    pull = ["images", "pull", "--snapshotter", "native"]
    assert_ok(containerd.run(*pull, "--hosts-dir", str(with_header), ref))
    assert {blob.digest for blob in item.image.blobs} <= containerd.content_digests()
    containerd.run("images", "rm", "--sync", ref, timeout=60)
    ca_only = tmp_path / "ca-only"
    (ca_only / host).mkdir(parents=True)
    (ca_only / host / "hosts.toml").write_text(
        f'server = "https://{host}"\n\n[host."https://{host}"]\n'
        f'  capabilities = ["pull", "resolve"]\n  ca = "{ca}"\n'
    )
    refused = containerd.run(*pull, "--hosts-dir", str(ca_only), ref)
    assert not refused.ok, refused.explain()
    user = f"puller:{PASSWORDS['puller']}"
    assert_ok(containerd.run(*pull, "--hosts-dir", str(ca_only), "--user", user, ref))
    containerd.run("images", "rm", "--sync", ref, timeout=60)
