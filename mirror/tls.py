"""The server's TLS context: built from `--tls-cert`/`--tls-key`, reloaded in place on SIGHUP.

A new certificate is loaded into the live `ssl.SSLContext`: OpenSSL copies a context's
certificate into each connection when the connection is created, so connections already open
keep the certificate they were set up with, and every handshake after the reload gets the new
one. The pair is first loaded into a scratch context, so a bad file (a key that does not match,
a half-written certificate) leaves the served certificate as it was.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from mirror import log
from mirror.config import ConfigError, Settings

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*-----END CERTIFICATE-----"
)


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load the pair; a failure is a ConfigError naming the option at fault."""
    files = {}
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            files[option] = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{option}: cannot read {path}: {e.strerror}") from None
    # Only the certificates: text around them (`subject=CN = Müller`, as `openssl x509` and
    # PKCS#12 exports write above each) may be in any encoding, and OpenSSL skips it.
    blocks = _PEM_CERTIFICATE.findall(files["--tls-cert"])
    try:
        # Parses every certificate of the chain file, so that what fails below is the key.
        _new_context().load_verify_locations(cadata=b"\n".join(blocks).decode("ascii"))
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"--tls-cert: {cert} holds no PEM certificate") from None
    try:
        # A password (none) is given so that OpenSSL never prompts for one on a terminal.
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"--tls-key: {key} is not the key of {cert}") from None
        raise ConfigError(
            f"--tls-key: {key} holds no usable PEM private key (unencrypted)"
        ) from None


def _new_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ServerTls:
    """The context every client connection is wrapped with, and its reload."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = _new_context()
        _load(self.context, cert, key)

    @classmethod
    def of(cls, settings: Settings) -> ServerTls | None:
        """The server's TLS when the settings name a certificate and its key, else None."""
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        return cls(settings.tls_cert, settings.tls_key)

    def reload(self) -> bool:
        """Load the files again for the connections to come; False (and a logged error) when
        they cannot be used, in which case the current certificate stays."""
        try:
            _load(_new_context(), self.cert, self.key)
            _load(self.context, self.cert, self.key)
        except ConfigError as e:
            log.get_logger().error(
                "TLS certificate not reloaded; the previous one stays", error=str(e)
            )
            return False
        log.get_logger().info("TLS certificate reloaded", cert=str(self.cert))
        return True
