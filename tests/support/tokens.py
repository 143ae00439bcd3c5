"""A token service that docker-registry's `auth: token` trusts, like auth.docker.io for Docker Hub.

It runs a stdlib HTTP server on a background thread so synchronous, session-scoped fixtures can
own it, and it records every token request so tests can prove the challenge flow happened and
that the mirror reused a cached token instead of asking again.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TokenRequest:
    """One request the token service answered (or refused)."""

    scopes: tuple[str, ...]
    service: str | None
    username: str | None  # from Basic credentials, None when anonymous
    granted: bool

    @property
    def sent_credentials(self) -> bool:
        """Whether the request carried HTTP Basic credentials."""
        return self.username is not None


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The key ID docker-registry expects in a token's `kid` header (libtrust's format)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenService:
    """Issues RS256 JWTs for `service`; with username/password set it demands Basic credentials."""

    def __init__(
        self,
        workdir: Path,
        *,
        service: str = "test-registry",
        issuer: str = "test-token-issuer",
        username: str | None = None,
        password: str | None = None,
        expires_in: int = 300,
        withheld: frozenset[str] = frozenset(),
    ) -> None:
        self.service = service
        # Repositories whose tokens grant nothing (still 200, as Docker Hub answers for a
        # repository that does not exist): the registry then answers insufficient_scope.
        self.withheld = withheld
        self.issuer = issuer
        self.username = username
        self.password = password
        self.expires_in = expires_in
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = libtrust_key_id(self._key.public_key())
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-signing.pem"
        self.cert_path.write_bytes(self._certificate())
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/token"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-service", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> TokenService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _certificate(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue_token(self, repository: str, actions: Sequence[str] = ("pull",)) -> str:
        """A signed token for `repository`, without going through HTTP (and without recording)."""
        return self._sign([f"repository:{repository}:{','.join(actions)}"], subject="seeder")

    def _sign(self, scopes: Sequence[str], subject: str) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and name not in self.withheld:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})

    def requests(self) -> list[TokenRequest]:
        """Every token request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the requests seen so far, so a test can count from now."""
        with self._lock:
            self._requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, object]]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        scopes = tuple(query.get("scope", []))
        service = query.get("service", [None])[0]
        username = None
        password = None
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:]).decode()
            except ValueError:
                decoded = ""
            username, _, password = decoded.partition(":")
        granted = self.username is None or (username == self.username and password == self.password)
        with self._lock:
            self._requests.append(TokenRequest(scopes, service, username, granted))
        if not granted:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        token = self._sign(scopes, subject=username or "anonymous")
        issued_at = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        return 200, {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": issued_at,
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, document = service._answer(self.path, self.headers.get("Authorization"))
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Stay quiet: the recorded requests are the log tests read."""

        return Handler
