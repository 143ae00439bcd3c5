"""What went wrong in an HTTP exchange, in words: aiohttp's class names (`ClientResponseError`,
`ClientPayloadError`) mean nothing to a client or an operator, and its messages may quote
whatever bytes the other side sent."""

from __future__ import annotations

import aiohttp

# Most specific first: the first class an error is an instance of gives its words.
_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (TimeoutError, "did not answer in time"),
    (aiohttp.ClientConnectorDNSError, "has a name that does not resolve"),
    (aiohttp.ClientConnectorCertificateError, "presented a TLS certificate that is not trusted"),
    (aiohttp.ClientSSLError, "failed the TLS handshake"),
    (aiohttp.ClientConnectorError, "refused the connection or cannot be reached"),
    (aiohttp.ServerFingerprintMismatch, "presented a TLS certificate other than the one pinned"),
    (aiohttp.ServerDisconnectedError, "closed the connection before its answer was complete"),
    # Bytes after a body that a Content-Length ended, or a status line or headers that are not
    # HTTP: aiohttp's parser reports both as a response error.
    (aiohttp.ClientResponseError, "sent an answer that is not valid HTTP"),
    (aiohttp.ClientPayloadError, "sent a body that broke off or is malformed"),
    (aiohttp.InvalidURL, "cannot be asked at that address"),
    (aiohttp.ClientConnectionError, "broke the connection"),
)


def describe(error: BaseException) -> str:
    """What the other side of a failed exchange did, as a phrase after its name."""
    for kind, words in _WORDS:
        if isinstance(error, kind):
            return words
    return "failed to answer"
