"""The `[[access]]` tables: who may do what with which repositories.

Each table is a grant: the clients it names (`users`, `anonymous`) may perform its `actions` on
every `<registry>/<repository>` that matches one of its `allow` patterns and none of its `deny`
patterns. A request is allowed when some table grants it. Without any table, every client the
mirror lets in (logged in, or anyone when there is no `--htpasswd`) may pull everything.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from mirror.config.values import ConfigError, boolean, patterns

ANY_USER = "*"  # in `users`: every client that logged in
# `push` and `delete` apply to local namespaces only: mirrored registries are read-only.
ACTIONS = frozenset({"pull", "push", "delete"})
_KEYS = {"users", "anonymous", "allow", "deny", "actions"}


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One `[[access]]` table."""

    allow: tuple[str, ...]
    users: frozenset[str] = frozenset()
    anonymous: bool = False
    deny: tuple[str, ...] = ()
    actions: frozenset[str] = frozenset({"pull"})

    def applies_to(self, user: str | None) -> bool:
        """Whether the rule speaks of this client: `None` is a client that did not log in."""
        if user is None:
            return self.anonymous
        return user in self.users or ANY_USER in self.users

    def grants(self, action: str, name: str) -> bool:
        """Whether the rule lets `action` be done on `name` (`<registry>/<repository>`)."""
        if action not in self.actions:
            return False
        if any(fnmatch.fnmatchcase(name, p) for p in self.deny):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self.allow)


def parse_access(tables: Any) -> tuple[AccessRule, ...]:
    """The rules of the file's `[[access]]` array, validated; none when there is no array."""
    if tables is None:
        return ()
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("access: expected [[access]] tables")
    return tuple(_parse_one(f"access[{i}]", table) for i, table in enumerate(tables))


def _parse_one(label: str, table: dict[str, Any]) -> AccessRule:
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"{label}.{key}: unknown key (known: {', '.join(sorted(_KEYS))})")
    users = table.get("users", [])
    if not isinstance(users, list) or not all(
        isinstance(u, str) and u and ":" not in u for u in users
    ):
        raise ConfigError(f"{label}.users: must be a list of user names")
    anonymous = boolean(f"{label}.anonymous", table.get("anonymous", False))
    if not users and not anonymous:
        raise ConfigError(f"{label}: names no one; give users = [...] or anonymous = true")
    if "allow" not in table:
        raise ConfigError(f'{label}.allow: required, e.g. allow = ["docker.io/library/*"]')
    allow = patterns(f"{label}.allow", table["allow"])
    if not allow:
        raise ConfigError(f"{label}.allow: must name at least one pattern")
    deny = patterns(f"{label}.deny", table.get("deny", []))
    actions = table.get("actions", ["pull"])
    if not isinstance(actions, list) or not actions:
        raise ConfigError(f'{label}.actions: must be a list such as ["pull"]')
    for action in actions:
        if action not in ACTIONS:
            raise ConfigError(
                f"{label}.actions: {action!r} is not an action of this mirror "
                f"(known: {', '.join(sorted(ACTIONS))})"
            )
    if anonymous and set(actions) - {"pull"}:
        raise ConfigError(f"{label}.actions: clients that did not log in may only pull")
    return AccessRule(
        allow=allow,
        users=frozenset(users),
        anonymous=anonymous,
        deny=deny,
        actions=frozenset(actions),
    )
