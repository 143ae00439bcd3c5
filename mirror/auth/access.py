"""Deciding from the `[[access]]` rules whether a client may act on a repository."""

from __future__ import annotations

from collections.abc import Sequence

from mirror.config.access import AccessRule

PULL = "pull"
PUSH = "push"  # uploads, mounts and manifest pushes into a local namespace
DELETE = "delete"  # tags, manifests and blobs of a local namespace


class AccessPolicy:
    """The rules of the settings file; with none, every client that got in may pull all, and
    nobody may push or delete: those need a grant, to a user who logged in."""

    def __init__(self, rules: Sequence[AccessRule]) -> None:
        self._rules = tuple(rules)

    @property
    def lets_anonymous_in(self) -> bool:
        """Whether some rule grants anything to clients that did not log in."""
        return any(rule.anonymous for rule in self._rules)

    def allows(self, user: str | None, action: str, name: str) -> bool:
        """Whether `user` (None: not logged in) may do `action` on `<registry>/<repository>`."""
        if action != PULL and user is None:
            return False
        if not self._rules:
            return action == PULL
        return any(rule.applies_to(user) and rule.grants(action, name) for rule in self._rules)
