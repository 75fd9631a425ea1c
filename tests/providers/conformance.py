"""The conformance harness: every provider adapter, through its real SDK, against one table.

Each adapter has a *wire* (`wire_<adapter>.py` in this folder, found by `discover()`): it
knows how to build the adapter from a `ProviderSpec` pointed at a local server, how that
provider answers each scenario in its own wire format, and what a correct request looks
like. The table below is the same for all of them; an adapter passes when each scenario
yields the normalized result the table asks for, its requests have the provider's shape,
and no log line shows a credential or the recipient's address.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.providers.base import (
    MALFORMED,
    TIMEOUT,
    UNREACHABLE,
    Adapter,
    Address,
    Delivered,
    Message,
    Permanent,
    Retryable,
    SendResult,
)
from tests.stub_http import Reply, Request

# The scenarios, in the words of the issue.
SUCCESS = "success"
INVALID_ADDRESS = "invalid_address"
RATE_LIMITED = "rate_limited"  # 429 with Retry-After
SERVER_ERROR = "server_error"  # 5xx
TIMED_OUT = "timeout"  # the server answers later than the adapter's timeout
REFUSED = "refused"  # nothing listens on the port
MALFORMED_ANSWER = "malformed"  # an answer the provider's format does not allow
SCENARIOS = (SUCCESS, INVALID_ADDRESS, RATE_LIMITED, SERVER_ERROR, TIMED_OUT, REFUSED, MALFORMED_ANSWER)

RETRY_AFTER = 7  # seconds, what every 429 of the harness announces
ADAPTER_TIMEOUT = 0.5  # seconds; TIMED_OUT answers after twice this


class Wire(Protocol):
    """What one provider looks like on the wire, for the harness."""

    adapter: str  # the `adapter` kind of providers.yaml
    channel: str
    secrets: tuple[str, ...]  # credential values the adapter is given; never to be logged

    def build(self, base_url: str, timeout: float) -> Adapter:
        """The adapter, built by `from_spec` from a spec whose endpoint is `base_url`."""

    def address(self, valid: bool = True) -> Address:
        """The recipient; called after `build`, so it may name the local server."""

    def is_send(self, request: Request) -> bool:
        """Whether this request is the message itself (not, say, an OAuth token fetch)."""

    def reply(self, scenario: str, request: Request) -> Reply:
        """The provider's answer to `request` in `scenario`, in its documented format."""

    def check_request(self, request: Request, message: Message, address: Address, key: str) -> None:
        """Assert the request has the provider's shape and carries this message."""

    def invalid_address_code(self) -> str:
        """The `Permanent.code` this provider's invalid-address answer maps to."""


@dataclass(frozen=True)
class Expected:
    kind: type
    code: str | None = None
    address_invalid: bool | None = None
    retry_after: float | None = None


class WireFacts(Protocol):
    """What `expected()` reads of a wire: also met by wires that are not HTTP (SMTP)."""

    def invalid_address_code(self) -> str: ...


def expected(wire: WireFacts, scenario: str) -> Expected:
    return {
        SUCCESS: Expected(Delivered),
        INVALID_ADDRESS: Expected(Permanent, wire.invalid_address_code(), address_invalid=True),
        RATE_LIMITED: Expected(Retryable, retry_after=RETRY_AFTER),
        SERVER_ERROR: Expected(Retryable),
        TIMED_OUT: Expected(Retryable, TIMEOUT),
        REFUSED: Expected(Retryable, UNREACHABLE),
        MALFORMED_ANSWER: Expected(Retryable, MALFORMED),
    }[scenario]


def judge(result: SendResult, want: Expected) -> None:
    assert isinstance(result, want.kind), f"wanted {want.kind.__name__}, got {result!r}"
    if want.code is not None:
        assert getattr(result, "code", None) == want.code, result
    if want.address_invalid is not None:
        assert isinstance(result, Permanent) and result.address_invalid is want.address_invalid, result
    if want.retry_after is not None:
        assert isinstance(result, Retryable) and result.retry_after is not None, result
        assert abs(result.retry_after - want.retry_after) < 1.5, result
    if isinstance(result, Delivered):
        assert result.provider_message_id, "a delivered result carries the provider's message id"


def message(channel: str, delivery_id: str = "dlv_conformance_1") -> Message:
    """A rendered message with every field a channel may use."""
    return Message(
        channel=channel,
        event="order.shipped",
        notification_id="ntf_conformance",
        delivery_id=delivery_id,
        user_id="u_conformance",
        fields={
            "subject": "Your order A-1001 has shipped",
            "text": "Order A-1001 is on its way with UPS.",
            "html": "<p>Order <strong>A-1001</strong> is on its way with UPS.</p>",
            "title": "Your order is on its way",
            "body": "Order A-1001 shipped with UPS.",
            "data": {"order_id": "A-1001"},
        },
        locale="en",
    )


def discover() -> list[Wire]:
    """Every `wire_*.py` module's `WIRE`, so a new adapter joins the table by adding one file."""
    wires: list[Wire] = []
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda i: i.name):
        if info.name.startswith("wire_"):
            module = importlib.import_module(f"tests.providers.{info.name}")
            wires.append(module.WIRE)
    return wires


def by_scenario(replies: dict[str, Callable[[Request], Reply]]) -> Callable[[str, Request], Reply]:
    """A `reply()` from a table of scenario -> answer, defaulting to success."""

    def reply(scenario: str, request: Request) -> Reply:
        return replies.get(scenario, replies[SUCCESS])(request)

    return reply
