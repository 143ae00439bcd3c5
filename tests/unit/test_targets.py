"""Where an upstream may send the mirror, and who may receive its credentials."""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp.abc import ResolveResult
from yarl import URL

from mirror.errors import UpstreamError
from mirror.upstream.auth import may_receive_credentials
from mirror.upstream.targets import RefusedAddress, TargetGuard, is_public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_non_public_addresses(address: str) -> None:
    """Loopback, link-local, private, shared, unspecified, multicast, reserved: not public."""
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    """Addresses on the internet are public."""
    assert is_public(ipaddress.ip_address(address))


def guard(upstream: str, *, allow_private: bool = False) -> TargetGuard:
    return TargetGuard("up.test", URL(upstream), allow_private, is_public)


def resolved(host: str, *addresses: str) -> list[ResolveResult]:
    return [
        {"hostname": host, "host": a, "port": 443, "family": 2, "proto": 0, "flags": 0}
        for a in addresses
    ]


def test_a_public_upstream_may_not_name_a_private_literal_address() -> None:
    """169.254.169.254 (cloud metadata) and friends are refused, unless allowed explicitly."""
    source = URL("https://8.8.8.8/v2/x")
    for target in ("https://169.254.169.254/latest", "https://[::1]/x", "https://10.0.0.1/"):
        with pytest.raises(UpstreamError, match="allow_private_targets"):
            guard("https://8.8.8.8").check(source, URL(target), "redirect")
        guard("https://8.8.8.8", allow_private=True).check(source, URL(target), "redirect")
    guard("https://8.8.8.8").check(source, URL("https://1.1.1.1/blob"), "redirect")


def test_a_private_upstream_may_name_any_address_but_a_link_local_one() -> None:
    """A site registry on a private address redirects within its network, but not to the
    cloud's metadata service (link-local), unless allowed explicitly."""
    site, source = guard("https://10.0.0.5"), URL("https://10.0.0.5/v2/")
    for target in ("https://10.0.0.6/x", "https://127.0.0.1:9000/x", "https://[fc00::1]/x"):
        site.check(source, URL(target), "redirect")
    for target in ("https://169.254.169.254/latest", "https://[fe80::1]/x"):
        with pytest.raises(UpstreamError, match=r"link-local.*allow_private_targets"):
            site.check(source, URL(target), "redirect")
        guard("https://10.0.0.5", allow_private=True).check(source, URL(target), "redirect")
    on_link = guard("https://169.254.7.7")
    on_link.check(URL("https://169.254.7.7/v2/"), URL("https://169.254.7.7/blob"), "redirect")


def test_https_is_never_left() -> None:
    """An https answer may not send the mirror to plain http, whatever the address class."""
    for upstream in ("https://8.8.8.8", "https://10.0.0.5"):
        with pytest.raises(UpstreamError, match="plain http"):
            guard(upstream, allow_private=True).check(
                URL(f"{upstream}/v2/"), URL("http://1.1.1.1/x"), "token realm"
            )
    guard("http://10.0.0.5").check(URL("http://10.0.0.5/"), URL("https://1.1.1.1/"), "redirect")


def test_unusable_targets_are_refused() -> None:
    """Other schemes and host-less URLs are upstream errors, not crashes."""
    for target in ("file:///etc/passwd", "ftp://1.1.1.1/x", "https:///nohost"):
        with pytest.raises(UpstreamError, match="unusable"):
            guard("https://8.8.8.8").check(URL("https://8.8.8.8/"), URL(target), "redirect")


def test_names_are_judged_by_the_addresses_they_resolve_to() -> None:
    """The upstream's own answer sets its class; other names keep only public addresses."""
    names = guard("https://registry.example")
    assert names.restricted, "before the upstream is resolved, targets must be public"
    upstream = resolved("registry.example", "8.8.8.8")
    assert names.admit("registry.example", upstream) == upstream
    with pytest.raises(RefusedAddress, match="link-local"):
        names.admit("cdn.example", resolved("cdn.example", "169.254.169.254"))
    mixed = resolved("cdn.example", "127.0.0.1", "1.1.1.1")
    assert names.admit("cdn.example", mixed) == mixed[1:]
    site = guard("https://registry.internal")
    site.admit("registry.internal", resolved("registry.internal", "10.0.0.5"))
    inside = resolved("cdn.internal", "10.0.0.6")
    assert site.admit("cdn.internal", inside) == inside
    with pytest.raises(RefusedAddress, match="link-local"):
        site.admit("metadata.internal", resolved("metadata.internal", "169.254.169.254"))
    both = resolved("cdn.internal", "169.254.1.1", "10.0.0.7")
    assert site.admit("cdn.internal", both) == both[1:]


@pytest.mark.parametrize(
    ("upstream", "realm", "allowed"),
    [
        ("https://registry-1.docker.io", "https://auth.docker.io/token", True),
        ("https://registry.gitlab.com", "https://gitlab.com/jwt/auth", True),
        ("https://ghcr.io", "https://ghcr.io/token", True),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/token", True),
        # One public suffix, two owners.
        ("https://registry.alice.co.uk", "https://auth.bob.co.uk/token", False),
        ("https://alice.s3.amazonaws.com", "https://bob.s3.amazonaws.com/token", False),
        ("https://a.compute-1.amazonaws.com", "https://b.compute-1.amazonaws.com/t", False),
        # Addresses are owned by no one in particular; names and addresses never match.
        ("http://127.0.0.1:5000", "http://localhost:5001/token", False),
        ("http://10.0.0.5", "http://10.0.0.6/token", False),
        # A realm on plain http from an https upstream would hand the password to anyone.
        ("https://registry-1.docker.io", "http://auth.docker.io/token", False),
    ],
)
def test_credentials_go_only_to_the_upstream_operators_realm(
    upstream: str, realm: str, allowed: bool
) -> None:
    """Same host, or the same registrable domain by the Public Suffix List; nothing else."""
    assert may_receive_credentials(URL(upstream), URL(realm)) is allowed
