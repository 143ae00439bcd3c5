"""Checking logins against an htpasswd file written by the real `htpasswd -B`."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.auth import logins as logins_module
from mirror.auth.htpasswd import HtpasswdFile
from mirror.auth.logins import (
    FAILURE_WINDOW,
    MAX_FAILURES,
    MAX_PENDING,
    MAX_PENDING_PER_NETWORK,
    MAX_PENDING_PER_SOURCE,
    REFUSED_FOR,
    VERIFIED_FOR,
    Logins,
    network_of,
    source_of,
)
from mirror.config import ConfigError
from mirror.errors import TooManyRequests, Unauthorized
from tests.support.htpasswd import htpasswd_entry, write_htpasswd


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def bcrypt_rounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The passwords of every bcrypt check made, in order (the real check still runs)."""
    calls: list[str] = []
    real = logins_module._matches

    def counting(password: str, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(logins_module, "_matches", counting)
    yield calls


async def test_a_good_login_costs_one_bcrypt_round_until_it_is_forgotten(
    tmp_path: Path, bcrypt_rounds: list[str]
) -> None:
    """The same header is answered from memory for VERIFIED_FOR seconds, well past the time a
    failed one is, then checked again."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret", "other": "x"})
    logins = Logins(HtpasswdFile(users, clock=clock), clock=clock)
    try:
        for _ in range(20):
            assert await logins.user(basic("ci", "s3cret"), "10.0.0.1") == "ci"
        assert bcrypt_rounds == ["s3cret"]
        clock.now += REFUSED_FOR + 1
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.1") == "ci"
        assert bcrypt_rounds == ["s3cret"]
        clock.now += VERIFIED_FOR
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.1") == "ci"
        assert len(bcrypt_rounds) == 2
        assert await logins.user(None, "10.0.0.1") is None
    finally:
        logins.close()


async def test_wrong_logins_are_refused_and_repeats_cost_nothing(
    tmp_path: Path, bcrypt_rounds: list[str]
) -> None:
    """A wrong password, an unknown user and a malformed header are 401; a repeated wrong
    header is refused from memory."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret"})
    logins = Logins(HtpasswdFile(users, clock=clock), clock=clock)
    try:
        for header in [basic("ci", "nope"), basic("ci", "nope"), basic("ghost", "s3cret")]:
            with pytest.raises(Unauthorized):
                await logins.user(header, "10.0.0.1")
        assert len(bcrypt_rounds) == 2  # the repeated header was not checked again
        for header in ["Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no").decode()]:
            with pytest.raises(Unauthorized):
                await logins.user(header, "10.0.0.1")
        assert len(bcrypt_rounds) == 2
    finally:
        logins.close()


async def test_a_client_that_fails_too_often_waits_without_costing_bcrypt(
    tmp_path: Path, bcrypt_rounds: list[str]
) -> None:
    """After MAX_FAILURES failed checks an address gets 429 with no bcrypt round, other
    addresses and remembered good logins are unaffected, and the window passing lifts it."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret"})
    logins = Logins(HtpasswdFile(users, clock=clock), clock=clock)
    try:
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.9") == "ci"
        for attempt in range(MAX_FAILURES):
            with pytest.raises(Unauthorized):
                await logins.user(basic("ci", f"guess-{attempt}"), "10.0.0.9")
        rounds = len(bcrypt_rounds)
        with pytest.raises(TooManyRequests) as refused:
            await logins.user(basic("ci", "another-guess"), "10.0.0.9")
        assert refused.value.headers["Retry-After"] == str(int(FAILURE_WINDOW))
        assert len(bcrypt_rounds) == rounds
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.9") == "ci"  # remembered
        with pytest.raises(Unauthorized):
            await logins.user(basic("ci", "guess"), "10.0.0.10")  # another address
        clock.now += FAILURE_WINDOW + 1
        with pytest.raises(Unauthorized):
            await logins.user(basic("ci", "later-guess"), "10.0.0.9")
    finally:
        logins.close()


async def test_failures_from_one_ipv6_64_count_together(
    tmp_path: Path, bcrypt_rounds: list[str]
) -> None:
    """A host picks any address of its /64, so guesses from new addresses of one /64 count as
    one address's; another /64 and IPv4 addresses (mapped or not) count on their own."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret"})
    logins = Logins(HtpasswdFile(users, clock=clock), clock=clock)
    try:
        for attempt in range(MAX_FAILURES):
            with pytest.raises(Unauthorized):
                await logins.user(basic("ci", f"guess-{attempt}"), f"2001:db8:0:1::{attempt + 1}")
        with pytest.raises(TooManyRequests):
            await logins.user(basic("ci", "another-guess"), "2001:db8:0:1:ffff::99")
        with pytest.raises(Unauthorized):
            await logins.user(basic("ci", "guess"), "2001:db8:0:2::1")
        assert await logins.user(basic("ci", "s3cret"), "::ffff:10.0.0.9") == "ci"
    finally:
        logins.close()


@pytest.mark.parametrize(
    ("client", "counted"),
    [
        ("10.0.0.9", "10.0.0.9"),
        ("2001:db8:0:1:2:3:4:5", "2001:db8:0:1::/64"),
        ("::ffff:10.0.0.9", "10.0.0.9"),
        ("unix", "unix"),
    ],
)
def test_what_failures_count_against(client: str, counted: str) -> None:
    assert source_of(client) == counted


@pytest.mark.parametrize(
    ("client", "network"),
    [
        ("10.0.0.9", "10.0.0.0/24"),
        ("2001:db8:0:1:2:3:4:5", "2001:db8::/48"),
        ("::ffff:10.0.0.9", "10.0.0.0/24"),
        ("unix", "unix"),
    ],
)
def test_what_shares_a_networks_checks(client: str, network: str) -> None:
    assert network_of(client) == network


async def test_guesses_sent_at_once_get_no_more_checks_than_the_limit(
    tmp_path: Path, bcrypt_rounds: list[str]
) -> None:
    """Sixty different wrong passwords sent together from one address, again and again: no
    more than MAX_PENDING_PER_SOURCE are checked at a time, and checks under way count against
    its failures' allowance, so MAX_FAILURES are checked in all and the rest are 429 at once;
    another address still logs in meanwhile, and a pull's burst with one new header is one
    check."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret", "dev": "pw"})
    logins = Logins(HtpasswdFile(users, clock=clock), clock=clock)
    try:
        failed = 0
        while failed < MAX_FAILURES:
            passwords = [f"guess-{failed}-{n}" for n in range(60)]
            guesses = [logins.user(basic("ci", pw), "10.0.0.9") for pw in passwords]
            burst = [logins.user(basic("dev", "pw"), "10.0.0.7") for _ in range(20)]
            outcomes = await asyncio.gather(*guesses, *burst, return_exceptions=True)
            refused = [o for o in outcomes[:60] if isinstance(o, TooManyRequests)]
            wrong = [o for o in outcomes[:60] if isinstance(o, Unauthorized)]
            checked = min(MAX_PENDING_PER_SOURCE, MAX_FAILURES - failed)
            assert (len(wrong), len(refused)) == (checked, 60 - checked)
            assert {r.headers["Retry-After"] for r in refused} == {"1"}
            assert outcomes[60:] == ["dev"] * 20
            failed += checked
        assert len(bcrypt_rounds) == MAX_FAILURES + 1
    finally:
        logins.close()


@pytest.mark.parametrize(
    ("guessers", "newcomer"),
    [
        ([f"2001:db8:1:{n:x}::1" for n in range(2 * MAX_PENDING)], "2001:db8:2::1"),
        ([f"10.1.1.{n}" for n in range(1, 2 * MAX_PENDING + 1)], "10.1.2.1"),
    ],
    ids=["ipv6-48", "ipv4-24"],
)
async def test_guesses_from_one_networks_many_addresses_leave_room_for_others(
    tmp_path: Path, bcrypt_rounds: list[str], guessers: list[str], newcomer: str
) -> None:
    """Guesses sent at once from twice MAX_PENDING addresses of one network (each IPv6 one a
    /64 of its own) get MAX_PENDING_PER_NETWORK checks and 429 beyond them, so a new login
    from elsewhere is still checked, and one that logged in over a minute ago is answered from
    memory."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret", "dev": "pw"})
    logins = Logins(HtpasswdFile(users, clock=clock), clock=clock)
    try:
        assert await logins.user(basic("ci", "s3cret"), "192.0.2.1") == "ci"
        clock.now += REFUSED_FOR + 1
        guesses = [logins.user(basic("ci", f"guess-{n}"), a) for n, a in enumerate(guessers)]
        outcomes = await asyncio.gather(
            *guesses,
            logins.user(basic("dev", "pw"), newcomer),
            logins.user(basic("ci", "s3cret"), "192.0.2.1"),
            return_exceptions=True,
        )
        assert outcomes[-2:] == ["dev", "ci"]
        assert bcrypt_rounds.count("s3cret") == 1
        refused = [o for o in outcomes[:-2] if isinstance(o, TooManyRequests)]
        wrong = [o for o in outcomes[:-2] if isinstance(o, Unauthorized)]
        assert (len(wrong), len(refused)) == (
            MAX_PENDING_PER_NETWORK,
            len(guessers) - MAX_PENDING_PER_NETWORK,
        )
        assert {r.headers["Retry-After"] for r in refused} == {"1"}
    finally:
        logins.close()


async def test_an_unknown_name_costs_a_round_of_the_files_own_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash checked for a name not in the file has the cost most of its hashes have, and
    follows the file when it is rewritten with another: an unknown name takes as long as a
    wrong password."""
    checked: list[bytes] = []
    real = logins_module._matches

    def recording(password: str, hashed: bytes) -> bool:
        checked.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(logins_module, "_matches", recording)
    clock = Clock()
    users = tmp_path / "users"
    entries = [htpasswd_entry("a", "pw", cost=7), htpasswd_entry("b", "pw", cost=7)]
    users.write_text("\n".join([*entries, htpasswd_entry("c", "pw", cost=4)]) + "\n")
    logins = Logins(HtpasswdFile(users, clock=clock, interval=1.0), clock=clock)
    try:
        for header in (basic("a", "wrong"), basic("ghost", "pw")):
            with pytest.raises(Unauthorized):
                await logins.user(header, "10.0.0.1")
        assert [hashed[:7] for hashed in checked] == [b"$2y$07$", b"$2b$07$"]
        users.write_text(htpasswd_entry("a", "pw", cost=6) + "\n")
        clock.now += 2
        with pytest.raises(Unauthorized):
            await logins.user(basic("ghost", "other"), "10.0.0.1")
        assert checked[-1][:7] == b"$2b$06$"
    finally:
        logins.close()


async def test_a_changed_file_is_reloaded_and_forgets_remembered_logins(tmp_path: Path) -> None:
    """Once the interval passes, a rewritten file is read: a removed user is refused at once
    even though the header was remembered, and a new user gets in."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret"})
    htpasswd = HtpasswdFile(users, clock=clock, interval=2.0)
    logins = Logins(htpasswd, clock=clock)
    try:
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.1") == "ci"
        write_htpasswd(users, {"new": "pw"})
        clock.now += 1.0  # not yet time to look
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.1") == "ci"
        clock.now += 1.5
        with pytest.raises(Unauthorized):
            await logins.user(basic("ci", "s3cret"), "10.0.0.1")
        assert await logins.user(basic("new", "pw"), "10.0.0.1") == "new"
        # A broken rewrite keeps the users in force.
        users.write_text(htpasswd_entry("md5user", "pw", kind="-m") + "\n")
        clock.now += 3.0
        assert await logins.user(basic("new", "pw"), "10.0.0.1") == "new"
        assert htpasswd.users == 1
    finally:
        logins.close()


async def test_a_remembered_login_lasts_through_reloads_until_its_entry_changes(
    tmp_path: Path, bcrypt_rounds: list[str]
) -> None:
    """A file rewritten with a user added leaves logins remembered as they were; one that
    removes a user or gives one a new password ends their remembered logins at the reload."""
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret", "dev": "pw"})
    ci_line, dev_line = users.read_text().splitlines()
    logins = Logins(HtpasswdFile(users, clock=clock, interval=1.0), clock=clock)
    try:
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.1") == "ci"
        assert await logins.user(basic("dev", "pw"), "10.0.0.1") == "dev"
        users.write_text(f"{ci_line}\n{dev_line}\n{htpasswd_entry('new', 'pw')}\n")
        clock.now += REFUSED_FOR + 1
        assert await logins.user(basic("new", "pw"), "10.0.0.1") == "new"
        assert await logins.user(basic("ci", "s3cret"), "10.0.0.1") == "ci"
        assert await logins.user(basic("dev", "pw"), "10.0.0.1") == "dev"
        assert bcrypt_rounds == ["s3cret", "pw", "pw"]  # ci, dev, then new alone
        users.write_text(f"{htpasswd_entry('dev', 'changed')}\n")
        clock.now += 2
        for header in (basic("ci", "s3cret"), basic("dev", "pw")):
            with pytest.raises(Unauthorized):
                await logins.user(header, "10.0.0.1")
        assert await logins.user(basic("dev", "changed"), "10.0.0.1") == "dev"
    finally:
        logins.close()


async def test_a_login_checked_while_its_user_is_removed_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that began before the reload that removed its user answers as the file stood
    when it began, but the header is refused from then on."""
    gate = threading.Event()
    real = logins_module._matches

    def held(password: str, hashed: bytes) -> bool:
        if password == "s3cret":  # ci's check waits until the file has been reloaded
            gate.wait()
        return real(password, hashed)

    monkeypatch.setattr(logins_module, "_matches", held)
    clock = Clock()
    users = write_htpasswd(tmp_path / "users", {"ci": "s3cret"})
    logins = Logins(HtpasswdFile(users, clock=clock, interval=1.0), clock=clock)
    try:
        first = asyncio.ensure_future(logins.user(basic("ci", "s3cret"), "10.0.0.1"))
        await asyncio.sleep(0)  # its check has begun, with the file as it stands
        write_htpasswd(users, {"new": "pw"})
        clock.now += 2
        assert await logins.user(basic("new", "pw"), "10.0.0.2") == "new"
        gate.set()
        assert await first == "ci"
        with pytest.raises(Unauthorized):
            await logins.user(basic("ci", "s3cret"), "10.0.0.1")
    finally:
        gate.set()
        logins.close()


@pytest.mark.parametrize("kind", ["-m", "-s", "-p"])
def test_a_file_with_other_hash_kinds_is_refused_at_start(tmp_path: Path, kind: str) -> None:
    """MD5, SHA-1 and plain-text entries stop start-up with the file, the line and the user."""
    users = tmp_path / "users"
    users.write_text(
        htpasswd_entry("good", "pw") + "\n" + htpasswd_entry("weak", "pw", kind=kind) + "\n"
    )
    with pytest.raises(ConfigError) as refused:
        HtpasswdFile(users)
    message = str(refused.value)
    assert message.startswith(f"--htpasswd: {users} line 2: the password of 'weak'")
    assert "htpasswd -B" in message
    assert "\n" not in message


def test_an_unreadable_file_is_refused_at_start(tmp_path: Path) -> None:
    """A missing file is one line naming the option."""
    with pytest.raises(ConfigError, match=r"^--htpasswd: cannot read .*No such file"):
        HtpasswdFile(tmp_path / "missing")
