"""The status page: one server-rendered HTML document, no script, no external asset.

Every figure comes from `mirror.metrics.summary` (the samples `/metrics` exports) or from the
bounded activity lists, and carries its exact value in a `data-value` attribute beside the
rounded one people read. Nothing on it is secret: registry names, image names and digests, as
clients ask for them; no URL, credential, token or file system path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape

from mirror import __version__
from mirror.metrics.activity import Merged, Miss
from mirror.metrics.summary import Summary, UpstreamSummary

REFRESH_SECONDS = 30
NONE = "\N{EN DASH}"  # shown for a figure not known (yet)
# No script and nothing from elsewhere may run or load, whatever ends up in the page.
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem auto; max-width: 70rem;
  padding: 0 1rem; color: #1d2126; background: #fff; }
h1 { font-size: 1.5rem; margin: 0; } h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
header p { color: #59616b; margin: .2rem 0 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e3e6ea; }
th { font-weight: 600; color: #59616b; } td.n, th.n { text-align: right;
  font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(13rem, 1fr)); gap: .8rem; }
.card { border: 1px solid #e3e6ea; border-radius: 6px; padding: .6rem .8rem; }
.card .label { color: #59616b; font-size: .85rem; } .card .value { font-size: 1.4rem; }
.bad { color: #b3261e; font-weight: 600; } .good { color: #1e7b34; }
.empty { color: #59616b; font-style: italic; }
code { font-size: .85rem; word-break: break-all; } td.image code { word-break: normal; }
"""


def render(summary: Summary, activity: Merged, *, now: float | None = None) -> str:
    now = time.time() if now is None else now
    since = f"since {_when(summary.started)}" if summary.started else ""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>mirror status</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>mirror {escape(__version__)}</h1>",
        f"<p>Counts {since} · page made {_when(now)}</p></header>",
        _cache(summary),
        _traffic(summary),
        _upstreams(summary.upstreams),
        _downloads(summary),
        _images(activity.pulls),
        _misses(activity.misses),
        "</body></html>",
    ]
    return "\n".join(parts)


def _card(key: str, label: str, shown: str, value: object, css: str = "") -> str:
    klass = f"value {css}".strip()
    return (
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="{klass}" id="{key}" data-value="{escape(str(value))}">{escape(shown)}</div>'
        "</div>"
    )


def _cache(s: Summary) -> str:
    if s.cache_size is not None:
        cap = f" of {_bytes(s.cache_cap)}" if s.cache_cap is not None else " (no cap)"
        size = _card("cache-size", "cache size", _bytes(s.cache_size) + cap, s.cache_size)
    else:
        size = _card("cache-size", "cache size", "not measured", "")
    cards = [size]
    if s.filesystem_size is not None and s.filesystem_free is not None:
        free_share = s.filesystem_free / s.filesystem_size if s.filesystem_size else 0.0
        cards.append(
            _card(
                "disk-free",
                "free on its file system",
                f"{_bytes(s.filesystem_free)} of {_bytes(s.filesystem_size)}",
                s.filesystem_free,
                "bad" if free_share < 0.05 else "",
            )
        )
    return f'<section id="cache"><h2>Cache</h2><div class="grid">{"".join(cards)}</div></section>'


def _traffic(s: Summary) -> str:
    ratio = NONE if s.hit_ratio is None else f"{s.hit_ratio * 100:.1f} %"
    results = ", ".join(f"{name} {count:,}" for name, count in sorted(s.results.items()))
    cards = [
        _card("hit-ratio", "hit ratio (manifests and blobs)", ratio, _num(s.hit_ratio)),
        _card("served", "bytes served", _bytes(s.served), s.served),
        _card(
            "served-from-cache",
            "served from the cache",
            _bytes(s.served_from_cache),
            s.served_from_cache,
        ),
        _card("received", "fetched from upstreams", _bytes(s.received), s.received),
        _card("saved", "bytes saved", _bytes(s.saved), s.saved, "good" if s.saved else ""),
    ]
    detail = f'<p id="results">Requests by cache result: {escape(results) or "none yet"}</p>'
    return (
        f'<section id="traffic"><h2>Since start</h2><div class="grid">{"".join(cards)}</div>'
        f"{detail}</section>"
    )


def _upstreams(upstreams: Iterable[UpstreamSummary]) -> str:
    rows = []
    for u in upstreams:
        breaker = '<span class="bad">open</span>' if u.breaker_open else "closed"
        if u.ratelimit_remaining is None:
            budget = '<span class="empty">not announced</span>'
        else:
            of = f" of {u.ratelimit_limit:,}" if u.ratelimit_limit is not None else ""
            budget = f"{u.ratelimit_remaining:,}{of}"
        latency = NONE if u.mean_latency is None else f"{u.mean_latency * 1000:.0f} ms"
        errors = f'<span class="bad">{u.errors:,}</span>' if u.errors else "0"
        rows.append(
            f'<tr data-registry="{escape(u.name)}"><td>{escape(u.name)}</td>'
            f'<td class="breaker" data-value="{int(u.breaker_open)}">{breaker}</td>'
            f'<td class="n ratelimit" data-value="{_num(u.ratelimit_remaining)}">{budget}</td>'
            f'<td class="n requests" data-value="{u.requests}">{u.requests:,}</td>'
            f'<td class="n server-errors" data-value="{u.server_errors}">{u.server_errors:,}</td>'
            f'<td class="n errors" data-value="{u.errors}">{errors}</td>'
            f'<td class="n latency" data-value="{_num(u.mean_latency)}">{latency}</td>'
            f'<td class="n received" data-value="{u.received}">{_bytes(u.received)}</td></tr>'
        )
    head = (
        "<tr><th>registry</th><th>circuit</th><th class=n>pulls left</th><th class=n>answers</th>"
        "<th class=n>5xx</th><th class=n>failures</th><th class=n>mean latency</th>"
        "<th class=n>received</th></tr>"
    )
    return (
        f'<section id="upstreams"><h2>Upstreams</h2><table>{head}{"".join(rows)}</table></section>'
    )


def _downloads(s: Summary) -> str:
    if s.redis_up is None:
        redis = _card("redis", "Redis", "not configured", "")
    else:
        redis = _card(
            "redis",
            "Redis",
            "up" if s.redis_up else "down",
            int(s.redis_up),
            "" if s.redis_up else "bad",
        )
    cards = [
        _card("fills", "downloads in flight", f"{s.fills:,}", s.fills),
        _card("fill-readers", "clients reading them", f"{s.fill_readers:,}", s.fill_readers),
        _card("slots-used", "download slots used", f"{s.slots_used:,}", s.slots_used),
        _card("slots-queued", "waiting for a slot", f"{s.slots_queued:,}", s.slots_queued),
        redis,
    ]
    return f'<section id="downloads"><h2>Now</h2><div class="grid">{"".join(cards)}</div></section>'


def _images(pulls: list[tuple[str, int]]) -> str:
    if not pulls:
        body = '<p class="empty">No manifest pulled yet.</p>'
    else:
        rows = "".join(
            f'<tr><td><code>{escape(image)}</code></td><td class="n" data-value="{count}">'
            f"{count:,}</td></tr>"
            for image, count in pulls
        )
        body = f"<table><tr><th>image</th><th class=n>manifest pulls</th></tr>{rows}</table>"
    return f'<section id="images"><h2>Most pulled images</h2>{body}</section>'


def _misses(misses: Iterable[Miss]) -> str:
    rows = [
        f"<tr><td>{_when(m.at)}</td><td>{escape(m.kind)}</td>"
        f'<td class="image"><code>{escape(m.image)}</code></td>'
        f"<td><code>{escape(m.reference)}</code></td><td class=n>{m.status}</td>"
        f'<td class="n" data-value="{m.size}">{_bytes(m.size)}</td></tr>'
        for m in misses
    ]
    if not rows:
        body = '<p class="empty">No miss yet.</p>'
    else:
        head = (
            "<tr><th>when</th><th>kind</th><th>image</th><th>reference</th><th class=n>status</th>"
            "<th class=n>sent</th></tr>"
        )
        body = f"<table>{head}{''.join(rows)}</table>"
    return f'<section id="misses"><h2>Recent misses</h2>{body}</section>'


def _bytes(count: int | None) -> str:
    if count is None:
        return NONE
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _num(value: float | None) -> str:
    return "" if value is None else repr(value)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
