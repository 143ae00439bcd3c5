"""File descriptors: how many this process may open, and how many clients that leaves room for.

Every client connection costs a descriptor, and one sending a blob costs a second (the file or
the spool it reads). Running out is what makes a server fail on everything at once, so the
connection cap is derived from the descriptor limit rather than guessed.
"""

from __future__ import annotations

import resource

from mirror.config import Settings

# Descriptors kept out of the client budget: spool files and fill locks, Redis, the log, the
# listening socket, and what Python and aiohttp hold.
RESERVE = 128
PER_CONNECTION = 2  # the socket, and the blob or spool file it is sent from
POOLS_PER_UPSTREAM = 2  # blob bodies, and everything else (mirror.upstream.pool)
MIN_CONNECTIONS = 16


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the soft default, often 1024, is for
    programs that do not expect many files); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


def max_connections(settings: Settings, open_files: int | None = None) -> int:
    """The configured cap on client connections, or by default half the descriptors left
    (of `open_files`, this process's limit unless given) once the upstream connection pools
    and the reserve are counted: enough that accepting a client or opening a blob does not
    meet the limit first."""
    if settings.max_connections is not None:
        return settings.max_connections
    if open_files is None:
        open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    pools = POOLS_PER_UPSTREAM * sum(u.max_connections for u in settings.upstreams)
    spare = open_files - RESERVE - pools
    return max(MIN_CONNECTIONS, spare // PER_CONNECTION)
