"""The hooks the upstream layer reports through, and their do-nothing default (used by the
commands that work on the cache, and by a server with `metrics = false`)."""

from __future__ import annotations

from typing import Protocol


class UpstreamStats(Protocol):
    """What one upstream's requests tell: bytes, answers, failures, its breaker and rate limit."""

    def received(self, count: int) -> None:
        """Body bytes read from the upstream."""

    def answered(self, method: str, status: int, seconds: float) -> None:
        """An answer (its headers) came back after `seconds`."""

    def failed(self, error: BaseException) -> None:
        """An exchange failed: no connection, a timeout, a body that broke off."""

    def breaker(self, is_open: bool) -> None:
        """This process opened (or closed again) the upstream's circuit."""

    def rate_limit(self, remaining: int, limit: int | None) -> None:
        """The pulls left in the upstream's window, as its `RateLimit-*` headers say."""


class Unobserved:
    """Counts nothing."""

    def received(self, count: int) -> None:
        pass

    def answered(self, method: str, status: int, seconds: float) -> None:
        pass

    def failed(self, error: BaseException) -> None:
        pass

    def breaker(self, is_open: bool) -> None:
        pass

    def rate_limit(self, remaining: int, limit: int | None) -> None:
        pass


UNOBSERVED = Unobserved()


def unobserved(_registry: str) -> UpstreamStats:
    """The stats of an upstream nobody counts."""
    return UNOBSERVED
