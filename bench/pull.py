"""Cold pulls through each server of the line-up, each timed against the same pull straight from
the upstream made just before it (pairs, so the machine's drift hits both alike):

- the big image pulled by skopeo into a directory, as a user's client pulls (it checks every
  digest and writes every blob): the figure the cold-pull target is about, from several pairs
  per run (`skopeo_pairs`);
- the same pull by curl into /dev/null: the transfer alone, with the time to the layer's first
  byte (and behind a link of registry-like speed, for the mirror);
- the first byte of small blobs the server has never seen, each asked right after (or before)
  the same blob direct: what a cold miss adds before the client gets an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.context import Context, describe_problems
from bench.curl import fetch_parallel
from bench.lineup import EMBEDDED_W1, LINEUP, Entrant, Running, start
from bench.plan import MIB
from bench.report import PhaseReport, table
from bench.rss import RssSampler
from bench.skopeo import PullFailed, skopeo_pull
from bench.stats import fmt, median
from bench.throttle import ThrottledRelay
from bench.upstream import ACCEPT_MANIFESTS, SeededImage

GOAL_PULL = 1.10  # a cold pull through a mirror takes at most this multiple of a direct one
GOAL_FIRST_BYTE_MS = 5.0  # and its first byte of a cold blob comes at most this much later
LOOPBACK = "loopback"


@dataclass(frozen=True)
class Pull:
    """One pull: how long it took, the layer's first byte (curl only), what failed."""

    seconds: float | None
    layer_ttfb_ms: float | None = None
    failure: str | None = None


@dataclass(frozen=True)
class PullPair:
    client: str  # "skopeo" or "curl"
    link: str
    target: str
    run: int
    direct: Pull
    through: Pull
    upstream_bytes_ratio: float | None
    log_problems: list[str]

    @property
    def ratio(self) -> float | None:
        if self.direct.seconds and self.through.seconds is not None:
            return self.through.seconds / self.direct.seconds
        return None


@dataclass(frozen=True)
class FirstBytes:
    """First-byte times of cold blobs, direct and through one fresh server, pair by pair."""

    target: str
    run: int
    direct_ms: list[float]
    through_ms: list[float]
    failures: list[str]

    @property
    def deltas(self) -> list[float]:
        return [t - d for d, t in zip(self.direct_ms, self.through_ms, strict=True)]


Puller = Callable[[Context, SeededImage, str], Pull]


def _curl(ctx: Context, image: SeededImage, base: str) -> Pull:
    urls = [
        base + image.manifest_path(image.tag),
        base + image.blob_path(image.config_digest),
        base + image.blob_path(image.layer_digest),
    ]
    sizes = [image.manifest_size, image.config_size, image.layer_size]
    result = fetch_parallel([urls], headers=ACCEPT_MANIFESTS, timeout=ctx.plan.transfer_timeout)
    client = result.clients[0]
    got = [(t.status, t.bytes) for t in client.transfers]
    if got != [(200, size) for size in sizes]:
        return Pull(None, failure=f"got {got} {client.error}")
    return Pull(sum(t.total_s for t in client.transfers), client.transfers[-1].ttfb_s * 1000, None)


def _skopeo(ctx: Context, image: SeededImage, base: str) -> Pull:
    try:
        dest = ctx.scratch("skopeo") / "image"
        return Pull(skopeo_pull(base, image.repo, image.tag, dest, ctx.plan.transfer_timeout))
    except PullFailed as e:
        return Pull(None, failure=str(e))


PULLERS: dict[str, Puller] = {"skopeo": _skopeo, "curl": _curl}


def _pair(
    ctx: Context,
    image: SeededImage,
    client: str,
    entrant: Entrant,
    run: int,
    link: str = LOOPBACK,
    upstream_url: str | None = None,
) -> PullPair:
    pull = PULLERS[client]
    direct = pull(ctx, image, upstream_url or ctx.upstream.url)
    running = start(ctx, entrant, upstream_url=upstream_url)
    try:
        mark = ctx.upstream.mark()
        with RssSampler(running.pid) as sampler:
            through = pull(ctx, image, running.url)
            ctx.record_memory("cold", f"{entrant.name} image pull", sampler.stop())
        traffic = ctx.upstream.since(mark)
    finally:
        running.discard()
    problems = []
    if running.mirror is not None:
        where = f"cold {client} pull {entrant.name} {link} run {run}"
        problems = describe_problems(where, running.mirror.problems())
    return PullPair(
        client, link, entrant.name, run, direct, through, traffic.get_bytes / image.size, problems
    )


def _first_bytes(
    ctx: Context, running: Running, blobs: Sequence[SeededImage], run: int
) -> FirstBytes:
    direct_ms: list[float] = []
    through_ms: list[float] = []
    failures: list[str] = []
    for number, blob in enumerate(blobs):
        path = blob.blob_path(blob.layer_digest)
        order = [ctx.upstream.url, running.url]
        if number % 2:
            order.reverse()  # neither side always goes first
        timed = {}
        for base in order:
            result = fetch_parallel([[base + path]], timeout=ctx.plan.transfer_timeout)
            transfers = result.clients[0].transfers
            if [(t.status, t.bytes) for t in transfers] != [(200, blob.layer_size)]:
                failures.append(f"{base}{path}: {[(t.status, t.bytes) for t in transfers]}")
                break
            timed[base] = transfers[0].ttfb_s * 1000
        else:
            direct_ms.append(timed[ctx.upstream.url])
            through_ms.append(timed[running.url])
    return FirstBytes(running.entrant.name, run, direct_ms, through_ms, failures)


def run_pulls(ctx: Context, report: PhaseReport) -> None:
    """Every pull of every entrant, run by run; the tables go into `report`."""
    image = ctx.big()
    blobs = ctx.small_layers(ctx.plan.first_byte_blobs)
    pairs: list[PullPair] = []
    first: list[FirstBytes] = []
    slow = f"{ctx.plan.slow_link / MIB:.0f} MiB/s"
    for run in range(ctx.plan.runs):
        for entrant in LINEUP:
            for client in PULLERS:
                for _ in range(ctx.plan.skopeo_pairs if client == "skopeo" else 1):
                    try:
                        pairs.append(_pair(ctx, image, client, entrant, run))
                    except Exception as e:
                        report.errors.append(f"{client} pull {entrant.name} run {run}: {e}")
            try:
                running = start(ctx, entrant)
                try:
                    first.append(_first_bytes(ctx, running, blobs, run))
                finally:
                    running.discard()
            except Exception as e:
                report.errors.append(f"first bytes {entrant.name} run {run}: {e}")
        # Behind a link of registry-like speed, the mirror should add nothing measurable.
        host, _, port = ctx.upstream.url.removeprefix("http://").partition(":")
        try:
            with ThrottledRelay(host, int(port), ctx.plan.slow_link) as relay:
                pairs.append(_pair(ctx, image, "curl", EMBEDDED_W1, run, slow, relay.url))
        except Exception as e:
            report.errors.append(f"curl pull at {slow} run {run}: {e}")
    _summarize(report, pairs, first, image)


def _summarize(
    report: PhaseReport, pairs: list[PullPair], first: list[FirstBytes], image: SeededImage
) -> None:
    report.lines += [
        "",
        f"cold image pull ({image.size / MIB:.0f} MiB: manifest by tag, config, layer), one "
        "client, through a fresh server, each timed against a direct pull made just before:",
    ]
    rows = []
    summary: dict[str, dict[str, object]] = {}
    seen = {(p.client, p.link, p.target) for p in pairs}
    links = dict.fromkeys(p.link for p in pairs)
    groups = [
        (c, link, e.name)
        for c in PULLERS
        for link in links
        for e in LINEUP
        if (c, link, e.name) in seen
    ]
    for client, link, target in groups:
        ours = [p for p in pairs if (p.client, p.link, p.target) == (client, link, target)]
        done = [p for p in ours if p.ratio is not None]
        is_mirror = target.startswith("mirror")
        if client == "skopeo" and is_mirror:
            goal = f"≤{GOAL_PULL:.2f}x direct; bytes 1.00"
        else:
            goal = "bytes 1.00" if is_mirror else "(reference)"
        rows.append(
            [
                f"{client}, {link}",
                target,
                fmt(median([p.direct.seconds for p in done if p.direct.seconds]), ".3f"),
                fmt(median([p.through.seconds for p in done if p.through.seconds]), ".3f"),
                fmt(median([p.ratio for p in done if p.ratio]), ".2f", "x"),
                fmt(median([p.through.layer_ttfb_ms for p in done if p.through.layer_ttfb_ms])),
                " ".join(
                    sorted(
                        {f"{p.upstream_bytes_ratio:.2f}" for p in ours if p.upstream_bytes_ratio}
                    )
                )
                or "-",
                f"{len(ours) - len(done)}/{len(ours)}",
                goal,
            ]
        )
        summary.setdefault(f"{client} {link}", {})[target] = {
            "ratio": median([p.ratio for p in done if p.ratio]),
            "upstream_bytes_ratios": [p.upstream_bytes_ratio for p in ours],
        }
        for p in ours:
            failed = [f for f in (p.direct.failure, p.through.failure) if f]
            report.errors += [f"{client} pull {target} {link} run {p.run}: {f}" for f in failed]
            report.errors += p.log_problems
    headers = ["client, link", "server", "direct s", "through s", "xdirect", "layer TTFB ms"]
    headers += ["upstream xsize", "failed", "target"]
    report.lines += table(headers, rows)

    report.lines += ["", "cold blob (1 MiB), first byte through a fresh server over direct:"]
    rows = []
    for target in dict.fromkeys(f.target for f in first):
        timed = [f for f in first if f.target == target]
        deltas = [d for f in timed for d in f.deltas]
        is_mirror = target.startswith("mirror")
        rows.append(
            [
                target,
                fmt(median([d for f in timed for d in f.direct_ms]), ".2f"),
                fmt(median([t for f in timed for t in f.through_ms]), ".2f"),
                fmt(median(deltas), "+.2f"),
                str(len(deltas)),
                f"≤+{GOAL_FIRST_BYTE_MS:.0f} ms" if is_mirror else "(reference)",
            ]
        )
        summary.setdefault("first byte", {})[target] = {"over_direct_ms": median(deltas)}
        report.errors += [
            f"first bytes {target} run {f.run}: {e}" for f in timed for e in f.failures
        ]
    report.lines += table(
        ["server", "direct ms", "through ms", "over direct ms", "pairs", "target"], rows
    )
    report.data.update({"pulls": pairs, "first_bytes": first, "pull_summary": summary})
