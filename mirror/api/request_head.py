"""The head of a request that a ready answer may take, read straight from the connection's bytes.

Only the plainest requests qualify: `GET` or `HEAD` over HTTP/1.1 of a `/v2/` path made of
name and reference characters (an optional `?ns=` as containerd's mirrors send), header fields
of visible ASCII (one `Host`, no field aiohttp takes once given twice), no body and no upgrade.
Whatever is not exactly that (a percent-encoded or
dotted path, another query, a folded or non-ASCII field, `Transfer-Encoding`, `Expect`, a body,
HTTP/1.0, more fields than aiohttp takes) is left to aiohttp's parser, so that what this reads
is never something aiohttp would read otherwise: the two can only differ in who answers, never
in what a request means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# aiohttp's limits: 8190 bytes for a request line or a field (a longer head is its to refuse),
# and 128 fields.
MAX_HEAD = 8190
MAX_FIELDS = 128
KNOWN_HEADS = 1024  # heads a HeadReader remembers, each of at most KNOWN_HEAD bytes
KNOWN_HEAD = 1024

# Path segments start with a name or reference character, never a dot: no `.` or `..`
# segments, no empty ones, nothing a path normalisation could read differently.
_REQUEST_LINE = re.compile(
    rb"(GET|HEAD) (/v2(?:/[A-Za-z0-9_:-][A-Za-z0-9._:-]*)+)(?:\?ns=([A-Za-z0-9._:-]+))? HTTP/1\.1"
)
# RFC 9110 §5.1 token, then a value of visible ASCII with spaces and tabs inside it.
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[\x21-\x7e][\x20-\x7e\t]*)?)")
_TRAILING_SPACE = b" \t"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A plain request, as much of it as its ready answer depends on."""

    method: str
    path: str
    ns: str
    accept: str  # every Accept field, joined with commas as aiohttp's `getall` gives them
    close: bool  # the client asked for the connection to close after the answer
    conditional: bool  # it has an `If-None-Match`, whose answer may be a 304

    @property
    def key(self) -> tuple[str, str, str]:
        """The key of its ready answer (`HotAnswers.key` of the same request)."""
        return self.path, self.ns, self.accept


def parse(head: bytes) -> RequestHead | None:
    """The request whose head (everything before the blank line) is `head`; None when it is not
    one of the plain requests above, and so is aiohttp's to read."""
    lines = head.split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None or len(lines) > MAX_FIELDS + 1:
        return None
    accept: list[str] = []
    close = conditional = False
    singletons: set[bytes] = set()
    for raw in lines[1:]:
        field = _plain_field(raw)
        if field is None:
            return None
        name, value = field
        if name in _SINGLETONS:
            if name in singletons:
                return None
            singletons.add(name)
        if name == b"accept":
            accept.append(value.decode())
        elif name == b"connection" and value.lower() == b"close":
            close = True
        elif name == b"if-none-match":
            conditional = True
    if b"host" not in singletons:
        return None
    method, path, ns = line.groups()
    return RequestHead(
        method.decode(),
        path.decode(),
        ns.decode() if ns else "",
        ",".join(accept),
        close,
        conditional,
    )


def plain_so_far(start: bytes, checked: int = 0) -> int | None:
    """For the start of a head still incomplete, whose lines before offset `checked` were found
    plain: the offset up to which its whole lines are plain, or None when it cannot turn out
    plain whatever follows (a TLS handshake on the plain port, another method, a bad field), so
    that aiohttp answers it at once rather than after the rest that will never come."""
    if checked == 0:
        end = start.find(b"\r\n")
        if end < 0:
            first = start.rstrip(b"\r")
            if b"\r" in first or not any(p.startswith(first[: len(p)]) for p in _STARTS):
                return None
            return 0 if b"\n" not in first else None
        if _REQUEST_LINE.fullmatch(start, 0, end) is None:
            return None
        checked = end + 2
    while (end := start.find(b"\r\n", checked)) >= 0:
        if _plain_field(start[checked:end]) is None:
            return None
        checked = end + 2
    tail = start[checked:].rstrip(b"\r")
    if b"\r" in tail or b"\n" in tail:
        return None  # a bare CR or LF: aiohttp's to refuse
    return checked


def _plain_field(raw: bytes) -> tuple[bytes, bytes] | None:
    """A header field's name (lower case) and value, if the field leaves the request plain."""
    field = _FIELD.fullmatch(raw)
    if field is None:
        return None
    name = field[1].lower()
    value = field[2].rstrip(_TRAILING_SPACE)
    if name == b"connection":
        if value.lower() not in (b"close", b"keep-alive"):
            return None  # an upgrade, or options aiohttp weighs itself
    elif name == b"content-length":
        if value != b"0":
            return None
    elif name in _NOT_PLAIN:
        return None
    return name, value


_STARTS = (b"GET /v2/", b"HEAD /v2/")
# Fields that give a request a body, a second protocol or a condition on how to proceed, and
# `Proxy-Connection`, which aiohttp's C parser reads as `Connection`.
_NOT_PLAIN = frozenset((b"transfer-encoding", b"upgrade", b"expect", b"te", b"proxy-connection"))
# Fields aiohttp refuses twice in a request (RFC 9110's singletons); `Host` it also requires.
_SINGLETONS = frozenset(
    (
        b"content-length",
        b"content-location",
        b"content-range",
        b"content-type",
        b"etag",
        b"host",
        b"max-forwards",
        b"server",
        b"transfer-encoding",
        b"user-agent",
    )
)


class HeadReader:
    """`parse`, remembering the heads it read: the clients of a fleet send the same head again
    and again, and a lookup costs a tenth of reading it. At most KNOWN_HEADS are kept; when
    full, it starts over."""

    def __init__(self) -> None:
        self._known: dict[bytes, RequestHead] = {}

    def __len__(self) -> int:
        return len(self._known)

    def read(self, head: bytes) -> RequestHead | None:
        known = self._known.get(head)
        if known is not None:
            return known
        parsed = parse(head)
        if parsed is not None and len(head) <= KNOWN_HEAD:
            if len(self._known) >= KNOWN_HEADS:
                self._known.clear()
            self._known[head] = parsed
        return parsed
