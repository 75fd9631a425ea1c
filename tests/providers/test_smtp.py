"""The SMTP adapter against real servers on 127.0.0.1, through the harness's scenario table.

SMTP is not HTTP, so it has no wire for the stub HTTP server: here an aiosmtpd server,
scripted per scenario, answers as Postfix does; a raw TCP server says garbage (malformed)
or nothing at all (timeout). The expected results and the judge are the harness's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from gateway.errors import ConfigError
from gateway.providers.base import (
    MALFORMED,
    TIMEOUT,
    AdapterDeps,
    Address,
    Delivered,
    Message,
    Permanent,
    Retryable,
)
from gateway.providers.settings import SmtpSettings, decode
from gateway.providers.smtp_email import SmtpAdapter
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret
from gateway.tracking.unsubscribe import ONE_CLICK, UnsubscribeLinks
from tests.providers.conformance import (
    ADAPTER_TIMEOUT,
    INVALID_ADDRESS,
    MALFORMED_ANSWER,
    RATE_LIMITED,
    REFUSED,
    SCENARIOS,
    SERVER_ERROR,
    TIMED_OUT,
    expected,
    judge,
    message,
)
from tests.tls import local_ca

USERNAME = "relay-user-4b1f"
PASSWORD = "relay-pass-9c2e77"
SENDER = "Notigate <no-reply@notigate.example>"
QUEUE_ID = "4ZbQ7k1xYz"
VALID = Address("email", "ada@example.com")
UNKNOWN = Address("email", "no-such-user@example.com")


class SmtpWire:
    """The fields of the harness's `Wire` that `expected()` reads."""

    adapter = "smtp"
    channel = "email"
    secrets = (USERNAME, PASSWORD)

    def invalid_address_code(self) -> str:
        return "invalid_address"


WIRE = SmtpWire()


class Scripted:
    """An aiosmtpd handler answering as a Postfix relay would in `scenario`."""

    def __init__(self, scenario: str = "success", data_delay: float = 0.0) -> None:
        self.scenario = scenario
        self.data_delay = data_delay
        self.received: list[Envelope] = []

    async def handle_RCPT(
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.scenario == INVALID_ADDRESS:
            # Postfix quotes the address: the adapter must mask it in its error.
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.scenario == RATE_LIMITED:
            return "421 4.7.0 Too many messages from your address, try again later"
        if self.scenario == SERVER_ERROR:
            return "451 4.3.0 Error: queue file write error"
        return f"250 2.0.0 Ok: queued as {QUEUE_ID}"


def _authenticator(
    server: SmtpServer, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@contextlib.asynccontextmanager
async def listening(
    serve: Callable[[], asyncio.Protocol] | None = None,
    raw: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None,
) -> AsyncIterator[int]:
    """A server on 127.0.0.1: an SMTP protocol factory, or a raw stream handler whose
    connections are closed on the way out (Server.close leaves them open)."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        assert raw is not None
        await raw(reader, writer)

    if raw is not None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
    else:
        assert serve is not None
        server = await asyncio.get_running_loop().create_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def smtp_server(handler: Scripted, *, auth: bool = False) -> Callable[[], asyncio.Protocol]:
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {"authenticator": _authenticator, "auth_require_tls": False} if auth else {}
    return lambda: SmtpServer(handler, hostname="relay.test", loop=loop, **options)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HELLO THERE, I AM NOT AN SMTP SERVER\r\n")
    await writer.drain()
    with contextlib.suppress(Exception):
        await reader.read(1024)
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await asyncio.sleep(ADAPTER_TIMEOUT * 4)
    writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The adapter's timeout where the relay answers: long enough that a loaded CI machine never
# turns an answer into a timeout. The tests of timeouts pass ADAPTER_TIMEOUT.
PATIENT = 10.0


def adapter(
    port: int,
    *,
    starttls: bool = False,
    credentials: dict[str, str] | None = None,
    timeout: float = PATIENT,
    **settings: Any,
) -> SmtpAdapter:
    spec = ProviderSpec.parse(
        "smtp",
        {
            "channel": "email",
            "adapter": "smtp",
            "cost": 0.0005,
            "timeout": f"{int(timeout * 1000)}ms",
            "credentials": {"username": "SMTP_USERNAME", "password": "SMTP_PASSWORD"},
            "settings": {
                "host": "127.0.0.1",
                "port": {"env": "SMTP_PORT", "default": 587},
                "starttls": {"env": "SMTP_STARTTLS", "default": True},
                "from": SENDER,
                **settings,
            },
        },
        {"SMTP_PORT": str(port), "SMTP_STARTTLS": "true" if starttls else "false", **(credentials or {})},
    )
    return SmtpAdapter.from_spec(spec, AdapterDeps())


def with_headers(msg: Message) -> Message:
    return dataclasses.replace(msg, headers={"List-Unsubscribe": "<https://notigate.example/u/abc>"})


def _no_leaks(caplog: pytest.LogCaptureFixture, address: Address) -> None:
    ours = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("mail.")
    )  # not aiosmtpd's
    for secret in WIRE.secrets:
        assert secret not in ours
    assert address.value not in ours


async def _send(port: int, address: Address, msg: Message, **options: Any) -> Any:
    smtp = adapter(port, **options)
    try:
        return await smtp.send(msg, address, idempotency_key=msg.delivery_id)
    finally:
        await smtp.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_smtp_conformance(scenario: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    address = UNKNOWN if scenario == INVALID_ADDRESS else VALID
    msg = with_headers(message("email"))
    want = expected(WIRE, scenario)
    if scenario == RATE_LIMITED:  # SMTP has no Retry-After: the worker's schedule decides when
        want = dataclasses.replace(want, retry_after=None)
    handler = Scripted(scenario)
    if scenario == REFUSED:
        result = await _send(_free_port(), address, msg, credentials={})
    elif scenario == TIMED_OUT:
        async with listening(raw=_silent) as port:
            result = await _send(port, address, msg, timeout=ADAPTER_TIMEOUT)
    elif scenario == MALFORMED_ANSWER:
        async with listening(raw=_garbage) as port:
            result = await _send(port, address, msg)
    else:
        async with listening(smtp_server(handler)) as port:
            result = await _send(port, address, msg)
    judge(result, want)
    if scenario == INVALID_ADDRESS:
        assert isinstance(result, Permanent) and "n***@example.com" in result.error
        assert address.value not in result.error
    if scenario in (SERVER_ERROR, RATE_LIMITED) or scenario == "success":
        assert len(handler.received) == 1
        _check_received(handler.received[0], msg, address)
    _no_leaks(caplog, address)


def _check_received(envelope: Envelope, msg: Message, address: Address) -> None:
    assert envelope.mail_from == "no-reply@notigate.example"
    assert envelope.rcpt_tos == [address.value]
    assert isinstance(envelope.original_content, bytes)
    raw = envelope.original_content.replace(b"\r\n", b"\n")  # SMTP's CRLF, as a mail file has LF
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == msg.fields["subject"]
    assert mail["From"] == SENDER
    assert mail["To"] == address.value
    assert mail["Date"]
    assert mail["Message-ID"] == f"<{msg.delivery_id}@notigate.example>"
    assert mail["X-Notigate-Delivery"] == msg.delivery_id
    assert mail["List-Unsubscribe"] == msg.headers["List-Unsubscribe"]
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().rstrip("\n") == msg.fields["text"]
    assert html.get_content().rstrip("\n") == msg.fields["html"]  # as the renderer escaped it


async def test_delivered_carries_the_relays_queue_id() -> None:
    handler = Scripted()
    async with listening(smtp_server(handler)) as port:
        result = await _send(port, VALID, message("email"))
    assert result == Delivered(provider_message_id=QUEUE_ID)


async def test_a_reply_slower_than_the_timeout_is_a_timeout() -> None:
    handler = Scripted(data_delay=ADAPTER_TIMEOUT * 3)
    async with listening(smtp_server(handler)) as port:
        result = await _send(port, VALID, message("email"), timeout=ADAPTER_TIMEOUT)
    judge(result, expected(WIRE, TIMED_OUT))
    assert result.code == TIMEOUT


async def test_a_garbage_greeting_is_malformed_not_a_config_error() -> None:
    async with listening(raw=_garbage) as port:
        result = await _send(port, VALID, message("email"))
    assert result.code == MALFORMED


async def test_policy_rejection_is_permanent_but_not_an_address_problem() -> None:
    class Relay(Scripted):
        async def handle_RCPT(
            self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: list[str]
        ) -> str:
            return "554 5.7.1 <ada@example.com>: Relay access denied"

    async with listening(smtp_server(Relay())) as port:
        result = await _send(port, VALID, message("email"))
    assert isinstance(result, Permanent) and (result.code, result.address_invalid) == ("smtp_554", False)
    assert VALID.value not in result.error


async def test_starttls_required_but_not_offered_is_a_configuration_error() -> None:
    async with listening(smtp_server(Scripted())) as port:
        result = await _send(port, VALID, message("email"), starttls=True)
    assert isinstance(result, Retryable) and (result.code, result.failure) == (
        "not_supported",
        "configuration",
    )


async def test_auth_logs_in_when_both_credentials_are_set(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler = Scripted()
    credentials = {"SMTP_USERNAME": USERNAME, "SMTP_PASSWORD": PASSWORD}
    async with listening(smtp_server(handler, auth=True)) as port:
        result = await _send(port, VALID, message("email"), credentials=credentials)
    assert isinstance(result, Delivered)
    assert len(handler.received) == 1
    _no_leaks(caplog, VALID)


async def test_auth_refused_is_a_configuration_failure_naming_the_variables(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = {"SMTP_USERNAME": USERNAME, "SMTP_PASSWORD": "wrong-" + PASSWORD}
    async with listening(smtp_server(Scripted(), auth=True)) as port:
        result = await _send(port, VALID, message("email"), credentials=credentials)
    assert isinstance(result, Retryable) and (result.code, result.failure) == ("auth_failed", "configuration")
    assert "SMTP_PASSWORD" in result.error and PASSWORD not in result.error
    _no_leaks(caplog, VALID)


def test_one_credential_without_the_other_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SMTP_PASSWORD is not set") as error:
        adapter(25, credentials={"SMTP_USERNAME": USERNAME})
    assert USERNAME not in str(error.value)


async def test_an_address_no_header_can_carry_is_refused_before_connecting() -> None:
    result = await _send(_free_port(), Address("email", "ada@example..com"), message("email"))
    assert isinstance(result, Permanent) and (result.code, result.address_invalid) == (
        "invalid_address",
        True,
    )


async def test_one_click_unsubscribe_headers_reach_the_relay_unfolded() -> None:
    """RFC 8058's pair, with a link longer than a 78-character line, reaches the relay verbatim."""
    links = UnsubscribeLinks(Secret("s" * 40), "https://notify.example.com", "unsubscribe@notify.example.com")
    link = links.url("u_" + "a" * 60, "marketing")
    msg = dataclasses.replace(
        message("email"),
        headers={
            "List-Unsubscribe": f"<{link}>, <mailto:unsubscribe@notify.example.com>",
            "List-Unsubscribe-Post": ONE_CLICK,
        },
    )
    handler = Scripted()
    async with listening(smtp_server(handler)) as port:
        result = await _send(port, VALID, msg)
    assert isinstance(result, Delivered)
    raw = handler.received[0].original_content
    assert isinstance(raw, bytes)
    mail = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(mail["List-Unsubscribe"]) == msg.headers["List-Unsubscribe"]
    # On the wire as written: mail clients read the URL between the angle brackets, and an
    # RFC 2047 encoded word (which a parser would quietly decode) is no URL to them.
    assert f"List-Unsubscribe: <{link}>, <mailto:".encode() in raw


# --- kept sessions and TLS ----------------------------------------------------------------


class Relay(Scripted):
    """Counts the sessions opened and closed with QUIT; `drop` makes it end a kept session:
    `after_message` hangs up right after each message's 250 (an idle timeout, noticed by the
    client before its next send), `at_next_mail` hangs up on a session's second MAIL FROM
    without answering (the relay's timeout racing our next message), `closing_at_next_mail`
    answers it 421 and hangs up (Postfix's "timeout exceeded", read as MAIL's answer)."""

    def __init__(self, drop: str | None = None) -> None:
        super().__init__()
        self.drop = drop
        self.sessions = 0
        self.open = 0
        self.most_open = 0
        self.quits = 0
        self.mails: dict[int, int] = {}

    def factory(self, **options: Any) -> Callable[[], asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        relay = self

        class Counted(SmtpServer):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                relay.sessions += 1
                relay.open += 1
                relay.most_open = max(relay.most_open, relay.open)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                relay.open -= 1
                super().connection_lost(exc)

        return lambda: Counted(self, hostname="relay.test", loop=loop, **options)

    async def handle_MAIL(
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        count = self.mails[id(session)] = self.mails.get(id(session), 0) + 1
        if self.drop == "at_next_mail" and count > 1:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            return "421 4.4.2 closing"  # never reaches the client: the connection is gone
        if self.drop == "closing_at_next_mail" and count > 1:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.write(b"421 4.4.2 relay.test Error: timeout exceeded\r\n")
            server.transport.close()
            return "421 4.4.2 closing"  # written after the close: never sent
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.drop == "after_message":
            transport = server.transport
            assert transport is not None
            asyncio.get_running_loop().call_soon(transport.close)
        return reply

    async def handle_QUIT(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 2.0.0 Bye"


def _recipients(relay: Relay) -> list[str]:
    return [rcpt for envelope in relay.received for rcpt in envelope.rcpt_tos]


async def test_messages_share_one_kept_session_which_quits_when_the_adapter_closes() -> None:
    relay = Relay()
    async with listening(relay.factory()) as port:
        smtp = adapter(port)
        results = [await smtp.send(message("email"), VALID, idempotency_key=f"d{i}") for i in range(3)]
        assert all(isinstance(r, Delivered) for r in results)
        assert (relay.sessions, relay.quits, len(relay.received)) == (1, 0, 3)
        await smtp.close()
        assert relay.quits == 1
        after = await smtp.send(message("email"), VALID, idempotency_key="late")
    assert isinstance(after, Retryable) and after.code == "unreachable"  # a stopped worker sends nothing
    assert relay.sessions == 1


@pytest.mark.parametrize("drop", ["after_message", "at_next_mail", "closing_at_next_mail"])
async def test_a_kept_session_the_relay_dropped_is_replaced_and_the_next_message_goes_once(drop: str) -> None:
    """Dropped while idle (the client sees it closed) or at the next MAIL FROM (a hang-up, or
    a 421, before DATA): nothing of the message went out, so it goes on a fresh session."""
    relay = Relay(drop=drop)
    async with listening(relay.factory()) as port:
        smtp = adapter(port)
        try:
            first = await smtp.send(message("email"), VALID, idempotency_key="d1")
            await asyncio.sleep(0.1)  # the relay's hang-up, if any, arrives while the session is idle
            second = await smtp.send(message("email"), UNKNOWN, idempotency_key="d2")
        finally:
            await smtp.close()
    assert isinstance(first, Delivered) and isinstance(second, Delivered)
    assert _recipients(relay) == [VALID.value, UNKNOWN.value]  # each once
    assert relay.sessions == 2 and smtp.pool.opened == 2


async def test_a_refused_recipient_leaves_the_session_usable_for_the_next_message() -> None:
    class Refusing(Relay):
        async def handle_RCPT(
            self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: list[str]
        ) -> str:
            if address == UNKNOWN.value:
                return f"550 5.1.1 <{address}>: Recipient address rejected"
            return await super().handle_RCPT(server, session, envelope, address, options)

    relay = Refusing()
    async with listening(relay.factory()) as port:
        smtp = adapter(port)
        try:
            refused = await smtp.send(message("email"), UNKNOWN, idempotency_key="d1")
            sent = await smtp.send(message("email"), VALID, idempotency_key="d2")
        finally:
            await smtp.close()
    assert isinstance(refused, Permanent) and refused.address_invalid
    assert isinstance(sent, Delivered) and _recipients(relay) == [VALID.value]
    assert relay.sessions == 1


async def test_concurrent_sends_open_at_most_max_connections_sessions() -> None:
    relay = Relay()
    relay.data_delay = 0.05  # each message holds its session a moment
    async with listening(relay.factory()) as port:
        smtp = adapter(port, max_connections=2)
        try:
            results = await asyncio.gather(
                *(smtp.send(message("email"), VALID, idempotency_key=f"d{i}") for i in range(6))
            )
        finally:
            await smtp.close()
    assert all(isinstance(r, Delivered) for r in results) and len(relay.received) == 6
    assert relay.most_open <= 2 and smtp.pool.opened <= 2


async def test_keepalive_zero_opens_a_session_per_message() -> None:
    relay = Relay()
    async with listening(relay.factory()) as port:
        smtp = adapter(port, keepalive=0)
        try:
            for i in range(2):
                assert isinstance(
                    await smtp.send(message("email"), VALID, idempotency_key=f"d{i}"), Delivered
                )
        finally:
            await smtp.close()
    assert (relay.sessions, relay.quits) == (2, 2)


@contextlib.asynccontextmanager
async def implicit_tls(relay: Relay, context: ssl.SSLContext) -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(relay.factory(), "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def test_implicit_tls_trusts_the_relays_private_ca_from_ca_file(tmp_path: Path) -> None:
    ca = local_ca(tmp_path)
    relay = Relay()
    async with implicit_tls(relay, ca.server_context) as port:
        smtp = adapter(port, tls="implicit", ca_file=str(ca.ca_file))
        try:
            result = await smtp.send(with_headers(message("email")), VALID, idempotency_key="d1")
        finally:
            await smtp.close()
    assert result == Delivered(provider_message_id=QUEUE_ID)
    _check_received(relay.received[0], with_headers(message("email")), VALID)


async def test_implicit_tls_refuses_a_certificate_it_does_not_trust(tmp_path: Path) -> None:
    ca = local_ca(tmp_path)
    relay = Relay()
    async with implicit_tls(relay, ca.server_context) as port:
        result = await _send(port, VALID, message("email"), tls="implicit")  # the system's CAs only
    assert isinstance(result, Retryable) and result.code == "unreachable" and not result.ambiguous
    assert relay.received == []


async def test_starttls_upgrades_before_auth_with_the_private_ca(tmp_path: Path) -> None:
    ca = local_ca(tmp_path)
    relay = Relay()
    credentials = {"SMTP_USERNAME": USERNAME, "SMTP_PASSWORD": PASSWORD}
    options = {"tls_context": ca.server_context, "require_starttls": True, "authenticator": _authenticator}
    async with listening(relay.factory(**options)) as port:
        result = await _send(
            port, VALID, message("email"), starttls=True, credentials=credentials, ca_file=str(ca.ca_file)
        )
    assert isinstance(result, Delivered) and len(relay.received) == 1


def test_port_465_means_implicit_tls_unless_tls_says_otherwise() -> None:
    def mode(**values: Any) -> str:
        return decode(SmtpSettings, values).tls_mode()

    assert mode(port=465) == "implicit"
    assert mode(port="465", tls="starttls") == "starttls"
    assert mode(port=587) == "starttls"
    assert mode(port=25, starttls="no") == "none"
    assert mode(port=2525, tls="implicit") == "implicit"
