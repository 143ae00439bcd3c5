"""HTTPS with --tls-cert/--tls-key: served by a real `mirror serve`, reloaded on SIGHUP, and
refused at start-up when the files cannot be used."""

from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror.config import ConfigError
from mirror.tls import ServerTls
from tests.e2e.daemons import MirrorServer
from tests.support.certs import CertificateAuthority, ServerCert, serial_of
from tests.support.htpasswd import htpasswd_entry
from tests.support.processes import free_port
from tests.support.registry import Registry


def served_serial(server: MirrorServer) -> int:
    """The serial of the certificate a new connection to the server gets."""
    connection = https_connection(server)
    try:
        connection.connect()
        return peer_serial(connection)
    finally:
        connection.close()


def https_connection(server: MirrorServer) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        "127.0.0.1", server.port, timeout=10, context=server.ssl_context()
    )


def peer_serial(connection: http.client.HTTPSConnection) -> int:
    assert connection.sock is not None
    der = connection.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert der is not None
    return serial_of(der)


def ping(connection: http.client.HTTPSConnection) -> int:
    connection.request("GET", "/v2/")
    response = connection.getresponse()
    response.read()
    return response.status


def tls_args(cert: ServerCert) -> list[str]:
    return ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]


def install(cert: ServerCert, live: ServerCert) -> None:
    """Put `cert`'s files where the server reads `live`'s, as a renewal tool would."""
    for source, target in ((cert.cert, live.cert), (cert.key, live.key)):
        shutil.copyfile(source, f"{target}.new")
        Path(f"{target}.new").replace(target)


def wait_for(condition: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_sighup_serves_a_new_certificate_while_open_connections_keep_theirs(
    tmp_path: Path, registry: Registry
) -> None:
    """After the files are replaced and SIGHUP sent, new connections get the new certificate,
    and a connection opened before keeps working on the old one."""
    ca = CertificateAuthority(tmp_path / "ca")
    live, renewed = ca.issue("live"), ca.issue("renewed")
    server = MirrorServer.start(
        tmp_path, registry.url, tag_ttl=300, extra_args=tls_args(live), ca_file=ca.ca_file
    )
    try:
        before = https_connection(server)
        assert ping(before) == 200
        assert peer_serial(before) == live.serial
        sock = before.sock
        install(renewed, live)
        server.daemon.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        assert wait_for(lambda: served_serial(server) == renewed.serial), server.log_text()
        assert ping(before) == 200
        assert before.sock is sock, "the old connection was replaced"
        assert peer_serial(before) == live.serial
        before.close()
        assert wait_for(lambda: "TLS certificate reloaded" in server.log_text()), server.log_text()
    finally:
        server.stop()


def test_a_bad_certificate_on_sighup_leaves_the_served_one(
    tmp_path: Path, registry: Registry
) -> None:
    """A key that does not match the new certificate is logged, and the old pair stays."""
    ca = CertificateAuthority(tmp_path / "ca")
    live, other = ca.issue("live"), ca.issue("other")
    server = MirrorServer.start(
        tmp_path, registry.url, tag_ttl=300, extra_args=tls_args(live), ca_file=ca.ca_file
    )
    try:
        shutil.copyfile(other.cert, live.cert)  # the key stays live's: a mismatched pair
        server.daemon.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        assert wait_for(lambda: "TLS certificate not reloaded" in server.log_text())
        assert served_serial(server) == live.serial
        assert server.daemon.is_running()
    finally:
        server.stop()


def start_up_error(tmp_path: Path, *args: str) -> str:
    """What `mirror serve` prints when it refuses to start with `args` (it must exit 2)."""
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{free_port()}",
         "--cache-dir", str(tmp_path / "cache"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stderr.strip()


def test_unusable_tls_and_login_files_stop_start_up_with_one_line(tmp_path: Path) -> None:
    """A missing option of the pair, an unreadable file, a key of another certificate and an
    htpasswd file with MD5 entries each stop start-up with one line naming the option."""
    ca = CertificateAuthority(tmp_path / "ca")
    one, two = ca.issue("one"), ca.issue("two")
    md5 = tmp_path / "md5-users"
    md5.write_text(htpasswd_entry("old", "pw", kind="-m") + "\n")
    cases = [
        (["--tls-cert", str(one.cert)], "mirror: --tls-key: required with --tls-cert"),
        (["--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(one.key)],
         "mirror: --tls-cert: cannot read"),
        (["--tls-cert", str(one.cert), "--tls-key", str(two.key)],
         f"mirror: --tls-key: {two.key} is not the key of {one.cert}"),
        (["--tls-cert", str(one.key), "--tls-key", str(one.key)],
         "mirror: --tls-cert:"),
        (["--htpasswd", str(md5)], f"mirror: --htpasswd: {md5} line 1"),
    ]  # fmt: skip
    for args, expected in cases:
        message = start_up_error(tmp_path, *args)
        assert message.startswith(expected), (args, message)
        assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize("protocol", ["http"])
def test_plain_http_gets_no_answer_from_a_tls_port(
    tmp_path: Path, registry: Registry, protocol: str
) -> None:
    """A TLS port does not serve plain HTTP: the request fails instead of leaking content."""
    ca = CertificateAuthority(tmp_path / "ca")
    live = ca.issue("live")
    server = MirrorServer.start(
        tmp_path, registry.url, tag_ttl=300, extra_args=tls_args(live), ca_file=ca.ca_file
    )
    try:
        plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/v2/")
            plain.getresponse().read()
        plain.close()
    finally:
        server.stop()


def test_mirror_health_asks_a_tls_server_over_https(tmp_path: Path, registry: Registry) -> None:
    """`mirror health` with the server's settings probes it over HTTPS and exits 0, though
    the certificate's CA is in no trust store it knows."""
    ca = CertificateAuthority(tmp_path / "ca")
    live = ca.issue("live")
    server = MirrorServer.start(
        tmp_path, registry.url, tag_ttl=300, extra_args=tls_args(live), ca_file=ca.ca_file
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mirror", "health", "--listen", server.host, *tls_args(live)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"status":"ok"' in done.stdout.replace(" ", "")
    finally:
        server.stop()


def test_text_in_any_encoding_around_the_certificates_is_skipped(tmp_path: Path) -> None:
    """`openssl x509 -subject` and PKCS#12 exports write `subject=CN = Müller` (UTF-8) above
    each certificate, which OpenSSL skips: the pair loads, and reloads; a file with no
    certificate at all is still one clear error."""
    ca = CertificateAuthority(tmp_path / "ca")
    one = ca.issue("one")
    annotated = tmp_path / "annotated.crt"
    annotated.write_bytes("subject=CN = Müller GmbH\n".encode() + one.cert.read_bytes())
    tls = ServerTls(annotated, one.key)
    assert tls.reload()
    annotated.write_bytes("subject=CN = Müller GmbH\n".encode())
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        ServerTls(annotated, one.key)
