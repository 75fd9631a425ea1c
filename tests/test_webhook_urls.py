"""The webhook URL rules (gateway/webhook_urls.py): syntax, forbidden ranges, the operator's allowance."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.webhook_urls import address_problem, parse_networks, resolved_problem, syntax_problem


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https:///no-host", "names a host"),
        ("https://hooks.example.com/x\r\nX-Injected: 1", "control characters"),
        ("https://hooks.example.com/a b", "control characters"),
        ("https://user:secret@hooks.example.com/x", "user info"),
        ("https://hooks.example.com:port/x", "not a valid URL"),
    ],
)
def test_malformed_urls_are_refused_before_any_lookup(url: str, says: str) -> None:
    problem = syntax_problem(url)
    assert problem is not None and says in problem


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4 written as IPv6
        ("169.254.169.254", "link-local"),  # the cloud metadata endpoint
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "private"),
        ("0.0.0.0", "reserved"),
        ("224.0.0.1", "reserved"),
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None and f"a {kind} address" in problem


def test_public_addresses_pass_and_the_operator_may_allow_a_network() -> None:
    assert address_problem(ipaddress.ip_address("93.184.216.34")) is None
    assert address_problem(ipaddress.ip_address("2606:2800:220:1::1")) is None
    allowed = parse_networks("10.20.0.0/16, 127.0.0.1")
    assert address_problem(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert address_problem(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert address_problem(ipaddress.ip_address("10.21.0.1"), allowed) is not None
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network"):
        parse_networks("10.0.0.0/8,10.0.0.0/33")


async def test_names_are_judged_by_what_they_resolve_to() -> None:
    assert "loopback" in (await resolved_problem("http://localhost:8080/hook") or "")
    assert "loopback" in (await resolved_problem("http://[::1]/hook") or "")
    assert await resolved_problem("http://localhost:8080/hook", parse_networks("127.0.0.0/8,::1")) is None
    assert await resolved_problem("https://no-such-host.invalid/hook") is None  # retried at send time
