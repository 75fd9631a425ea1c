"""Every adapter against the harness's table (see conformance.py)."""

from __future__ import annotations

import logging
import socket

import pytest

from gateway.providers.base import Address, Retryable
from tests.providers.conformance import (
    ADAPTER_TIMEOUT,
    REFUSED,
    SCENARIOS,
    TIMED_OUT,
    Wire,
    discover,
    expected,
    judge,
    message,
)
from tests.stub_h2 import h2_stub_server
from tests.stub_http import Reply, Request, stub_server

WIRES = discover()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _no_leaks(caplog: pytest.LogCaptureFixture, wire: Wire, address: Address) -> None:
    text = caplog.text
    for secret in wire.secrets:
        assert secret not in text, f"a credential of {wire.adapter} appears in the logs"
    assert address.value not in text, f"{wire.adapter} logged the recipient's address in clear"


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.adapter)
async def test_adapter_conformance(wire: Wire, scenario: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    valid = scenario != "invalid_address"
    msg = message(wire.channel)

    def script(request: Request) -> Reply:
        reply = wire.reply(scenario, request)
        if scenario == TIMED_OUT and wire.is_send(request):
            reply.delay = ADAPTER_TIMEOUT * 2
        return reply

    # A provider that speaks only HTTP/2 (APNs) gets the HTTP/2 stand-in, same script.
    serve = h2_stub_server if getattr(wire, "http2", False) else stub_server
    async with serve(script) as server:
        base = f"http://127.0.0.1:{_free_port()}" if scenario == REFUSED else server.url
        adapter = wire.build(base, ADAPTER_TIMEOUT)
        address = wire.address(valid=valid)  # after build: a webhook's address is a URL on `base`
        try:
            result = await adapter.send(msg, address, idempotency_key=msg.delivery_id)
        finally:
            await adapter.close()
        judge(result, expected(wire, scenario))
        if scenario in (TIMED_OUT, REFUSED):
            # The request went out and no answer came: a provider that cannot drop a repeat may
            # have the message. A refused connection carried nothing.
            assert isinstance(result, Retryable)
            assert result.ambiguous is (scenario == TIMED_OUT and not adapter.idempotent), result
        sends = [r for r in server.requests if wire.is_send(r)]
        if scenario == REFUSED:
            assert not sends
        else:
            assert sends, f"{wire.adapter} sent nothing to the provider"
            for request in sends:
                wire.check_request(request, msg, address, msg.delivery_id)
    _no_leaks(caplog, wire, address)


def test_every_live_adapter_has_a_wire() -> None:
    """An adapter without a wire would escape the harness."""
    from gateway.providers.registry import INTERNAL_ADAPTERS, LIVE_ADAPTERS

    covered = {w.adapter for w in WIRES}
    # SMTP is not HTTP: tests/providers/test_smtp.py runs the same table against a real SMTP server.
    missing = set(LIVE_ADAPTERS) - covered - INTERNAL_ADAPTERS - {"smtp"}
    assert not missing, f"adapters without a conformance wire: {sorted(missing)}"
