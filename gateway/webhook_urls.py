"""Which webhook URLs the gateway will call: the rules against server-side request forgery.

A user's webhook URL is chosen by whoever registers the user, and the worker POSTs to it
from inside our network; without rules it could reach loopback services, the cloud metadata
endpoint (169.254.169.254) or private hosts. So a URL is refused when
- its scheme is not http or https, it has no host, or it holds user info (`user:pass@`);
- it contains whitespace or a control character (CR/LF would split headers or requests);
- its host is, or resolves to, an address that is loopback, private (RFC 1918, fc00::/7),
  link-local, shared (100.64/10), multicast, reserved or unspecified, including such an
  IPv4 address written as IPv6 (::ffff:127.0.0.1);
unless the address is inside a network the operator allows (`NOTIGATE_WEBHOOK_ALLOWED_NETWORKS`,
e.g. `10.20.0.0/16` for an internal receiver, or `127.0.0.0/8` for local stand-ins).

Checked at registration (`PUT /v1/users/{id}`) and again before every send, since a name's
addresses can change. The send-time check resolves the name, then httpx connects by name
again: a DNS answer that changes between the two (rebinding) is not caught here; an egress
proxy or firewall is the complete answer and should exist too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Ip = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOKUP_TIMEOUT = 2.0  # seconds
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not `is_private` in every Python


def parse_networks(raw: str) -> tuple[Network, ...]:
    """`10.20.0.0/16, 127.0.0.1`: comma-separated networks or addresses; ValueError names the bad one."""
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not a network (10.0.0.0/8) or an address") from None
    return tuple(networks)


def syntax_problem(url: str) -> str | None:
    """Why the URL itself is refused, before any lookup; None when it is well formed."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "a webhook URL may not contain spaces, CR, LF or other control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "the webhook URL is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "a webhook URL is http:// or https://"
    if not parts.hostname:
        return "a webhook URL names a host"
    if parts.username is not None or parts.password is not None:
        return "a webhook URL may not carry user info (user:password@)"
    return None


def address_problem(ip: Ip, allowed: Sequence[Network] = ()) -> str | None:
    """Why the gateway will not call this address; None when it is a public one (or allowed)."""
    if any(ip in network for network in allowed if network.version == ip.version):
        return None
    inner = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    if inner.is_loopback:
        kind = "loopback"
    elif inner.is_link_local:
        kind = "link-local"
    elif inner.is_multicast or inner.is_reserved or inner.is_unspecified:
        kind = "reserved"
    elif inner.is_private or inner in _SHARED:
        kind = "private"
    else:
        return None
    return f"the webhook URL's host is a {kind} address ({inner}); the operator can allow its network"


async def resolved_problem(url: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why the URL is refused, after looking its host up (without blocking the event loop).

    A name that does not resolve (or not within LOOKUP_TIMEOUT) is no problem here: the
    send fails as unreachable and is retried, and is checked again then.
    """
    problem = syntax_problem(url)
    if problem is not None:
        return problem
    host = urlsplit(url).hostname or ""
    try:
        literal: Ip | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return address_problem(literal, allowed)
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT):
            found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, TimeoutError):
        return None
    for *_, sockaddr in found:
        problem = address_problem(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]), allowed)
        if problem is not None:
            return problem
    return None
