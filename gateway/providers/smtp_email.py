"""Email through any SMTP relay (aiosmtplib): the message `gateway.providers.mime` builds.

A session is opened with EHLO, then STARTTLS (`tls: starttls`, the default on port 587) or
TLS from the first byte (`tls: implicit`, the default on port 465), AUTH when both
credentials are set; each message is then MAIL FROM, RCPT TO, DATA on a session kept open
for the next one (`gateway.providers.smtp_pool`: at most `max_connections` per worker,
reused for `keepalive` seconds, QUIT when the worker stops). A kept session the relay has
dropped meanwhile is found out before anything of the message went out (the hang-up comes
at MAIL FROM, or the connection is already closed), so the message is sent once more on a
fresh session: it still goes, once. SMTP has no idempotency key: a
repeat is a second email, so this adapter is not `idempotent`. The stable `Message-ID`
still lets a person (or a relay's logs) recognise a repeat.

Outcomes, from the reply code (RFC 5321 section 4.2) and its enhanced status (RFC 3463):

| reply                                             | result                                      |
|---------------------------------------------------|---------------------------------------------|
| 250 to DATA                                       | delivered (message id: the relay's queue id |
|                                                   | from "queued as ...", else our Message-ID)  |
| 550/551/553 to RCPT, enhanced 5.1.x naming the    | permanent `invalid_address`, address        |
| recipient (5.1.0-5.1.4, 5.1.6, 5.1.10) or none    | invalid (no such user, bad mailbox syntax)  |
| 552 to RCPT (too many recipients)                 | retryable: RFC 5321 4.5.3.1.10 reads it as  |
|                                                   | 452                                         |
| 535/534 to AUTH, 530 (authentication required)    | retryable `auth_failed` (configuration)     |
| other 5xx (5.7.1 policy, 554 transaction failed)  | permanent `smtp_<code>` (message)           |
| 4xx (421 closing, 450/451/452 try later)          | retryable `smtp_<code>`; SMTP sends no retry|
|                                                   | time, the worker's schedule decides         |
| no answer within the timeout (greeting or any     | retryable `timeout` (health); *ambiguous*   |
| command)                                          | once the message's DATA was sent            |
| connection refused, DNS, TLS handshake            | retryable `unreachable`                     |
| a reply that is not SMTP (garbage greeting, no    | retryable `malformed_response` (health);    |
| 3-digit code), a hang-up mid-session              | *ambiguous* once DATA was sent              |
| server lacks STARTTLS or AUTH that we need        | retryable `not_supported` (configuration)   |

*Ambiguous*: the relay may have queued the message (the end of DATA went out, its 250 did
not come back), so it is not sent again (see `gateway.providers.base`).

Server replies often quote the recipient (`<ada@example.com>: Recipient address
rejected`): error strings mask it before they leave this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aiosmtplib

from gateway.errors import ConfigError
from gateway.providers import mime
from gateway.providers.base import (
    MALFORMED,
    TIMEOUT,
    UNREACHABLE,
    AdapterDeps,
    Address,
    Delivered,
    Limits,
    Message,
    Permanent,
    Retryable,
    SendResult,
)
from gateway.providers.settings import SmtpSettings, TlsMode
from gateway.providers.smtp_pool import PoolClosed, SmtpPool
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret, redact

ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
QUEUED = re.compile(r"queued as\s+([A-Za-z0-9._-]+)", re.IGNORECASE)
BAD_MAILBOX_CODES = frozenset({550, 551, 553})
# X.1.y of RFC 3463 that say the *destination* address is bad (X.1.5 is "valid"; X.1.7
# and X.1.8 are about our sender); X.1.10 is RFC 7505's null MX.
BAD_DESTINATION_DETAILS = frozenset({0, 1, 2, 3, 4, 6, 10})
AUTH_CODES = frozenset({530, 534, 535})
CLOSING = 421  # RFC 5321 4.2.3: service not available, closing the transmission channel


def optional_credentials(spec: ProviderSpec) -> tuple[Secret, Secret] | None:
    """Username and password when both variables are set, None when neither is.

    One without the other is a configuration error: the relay would refuse us on every
    send, and the message says which variable is missing.
    """
    names = {key: spec.credential_vars.get(key) for key in ("username", "password")}
    values = {key: spec.environ.get(name) if name else None for key, name in names.items()}
    if not any(values.values()):
        return None
    missing = [names[key] or f"credentials.{key}" for key, value in values.items() if not value]
    if missing:
        raise ConfigError(
            f"provider {spec.name!r}: {', '.join(missing)} is not set; "
            "set both SMTP credentials to log in, or neither to send without AUTH"
        )
    return spec.credential("username"), spec.credential("password")


class SmtpAdapter:
    idempotent = False
    settings = SmtpSettings
    secrets = SmtpSettings.credentials
    limits = Limits()

    def __init__(
        self,
        name: str,
        channel: str,
        *,
        host: str,
        port: int,
        sender: str,
        timeout: float,
        tls: TlsMode = "starttls",
        ca_file: str | None = None,
        credentials: tuple[Secret, Secret] | None = None,
        max_connections: int = 4,
        keepalive: float = 30.0,
    ) -> None:
        self.name = name
        self.channel = channel
        self.host = host
        self.port = port
        self.tls = tls
        self.ca_file = ca_file
        self.sender = sender
        self.timeout = timeout
        self.credentials = credentials
        self.pool: SmtpPool[_StagedSMTP] = SmtpPool(self._open, size=max_connections, idle_for=keepalive)

    @classmethod
    def from_spec(cls, spec: ProviderSpec, deps: AdapterDeps) -> SmtpAdapter:
        settings = spec.typed(SmtpSettings)
        return cls(
            spec.name,
            spec.channel,
            host=settings.host,
            port=settings.port,
            tls=settings.tls_mode(),
            ca_file=settings.ca_file,
            sender=settings.sender,
            timeout=spec.timeout,
            credentials=optional_credentials(spec),
            max_connections=settings.max_connections,
            keepalive=settings.keepalive,
        )

    async def _open(self) -> _StagedSMTP:
        """A new session: connected, encrypted as `tls` says, logged in when we have credentials."""
        username, password = (c.reveal() for c in self.credentials) if self.credentials else (None, None)
        client = _StagedSMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.tls == "implicit",
            start_tls=self.tls == "starttls",
            cert_bundle=self.ca_file,
            username=username,
            password=password,
        )
        await client.connect()
        return client

    async def _deliver(self, email: mime.Email, recipient: str, sent: _Sent) -> str:
        """The relay's reply to the message, on a kept session when there is one.

        A kept session found dead before DATA carried nothing of the message: the relay hung up
        while it was idle, or said so with a 421 ("timeout exceeded") that reads as the answer
        to our MAIL FROM. It is closed and the message tries the next session, at the latest a
        fresh one, whose failure is the message's.
        """
        while True:
            client, reused = await self.pool.acquire()
            client.data_sent, keep = False, False
            try:
                _, reply = await _transmit(client, email, mime.envelope_sender(self.sender), recipient)
                keep = True
                return reply
            except aiosmtplib.SMTPRecipientsRefused:
                keep = True  # a refusal ends the transaction (aiosmtplib sent RSET): the session serves on
                raise
            except aiosmtplib.SMTPResponseException as exc:
                if not (reused and exc.code == CLOSING and not client.data_sent):
                    keep = exc.code != CLOSING
                    raise
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                if not reused or client.data_sent:
                    raise
            finally:
                sent.data = client.data_sent
                await self.pool.release(client, keep=keep)

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        try:
            email = mime.compose(message, address, self.sender)
        except mime.InvalidRecipient as exc:
            return Permanent("invalid_address", f"{self.name}: {exc}", address_invalid=True)
        except ValueError as exc:
            return Permanent("unsendable", f"{self.name}: the message cannot be written as email: {exc}")
        sent = _Sent()
        try:
            reply = await self._deliver(email, address.value, sent)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return self._reply(refused.code, refused.message, address, at_rcpt=True)
        except aiosmtplib.SMTPTimeoutError:
            return Retryable(
                f"{self.name}: no answer from {self.host}:{self.port} in time",
                code=TIMEOUT,
                ambiguous=sent.data,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return self._reply(exc.code, exc.message, address, at_rcpt=False)
        except (aiosmtplib.SMTPConnectError, PoolClosed):
            return Retryable(f"{self.name}: cannot connect to {self.host}:{self.port}", code=UNREACHABLE)
        except aiosmtplib.SMTPServerDisconnected:
            return Retryable(
                f"{self.name}: {self.host}:{self.port} hung up mid-session",
                code=MALFORMED,
                ambiguous=sent.data,
            )
        except aiosmtplib.SMTPException as exc:  # no STARTTLS, no AUTH method we can use, SMTPUTF8
            return Retryable(
                f"{self.name}: {self.host}:{self.port}: {_masked(exc.message, address)}",
                code="not_supported",
                failure="configuration",
            )
        except OSError as exc:  # TLS handshake, a reset connection
            return Retryable(f"{self.name}: connection failed ({type(exc).__name__})", code=UNREACHABLE)
        except ValueError as exc:  # an address aiosmtplib will not put on a command line
            return Permanent(
                "invalid_address", f"{self.name}: {_masked(str(exc), address)}", address_invalid=True
            )
        queued = QUEUED.search(reply)
        return Delivered(provider_message_id=queued.group(1) if queued else email.message_id)

    def _reply(self, code: int, text: str, address: Address, *, at_rcpt: bool) -> SendResult:
        said = f"{self.name}: {code} {_masked(text, address)}"
        if not 200 <= code < 600:  # aiosmtplib's -1: the line had no 3-digit code
            return Retryable(f"{self.name}: the answer is not SMTP", code=MALFORMED)
        if 400 <= code < 500:
            return Retryable(said, code=f"smtp_{code}")
        if code >= 500:
            if at_rcpt and code in BAD_MAILBOX_CODES and _names_bad_destination(text):
                return Permanent("invalid_address", said, address_invalid=True)
            if at_rcpt and code == 552:
                return Retryable(said, code="smtp_552")
            if code in AUTH_CODES:
                return Retryable(
                    f"{said} (check SMTP_USERNAME and SMTP_PASSWORD)",
                    code="auth_failed",
                    failure="configuration",
                )
            return Permanent(f"smtp_{code}", said)
        return Retryable(f"{self.name}: unexpected reply {code}", code=MALFORMED)

    async def close(self) -> None:
        await self.pool.close()


@dataclass
class _Sent:
    """Whether the message's DATA went out on the last session tried (then a failure is ambiguous)."""

    data: bool = False


class _StagedSMTP(aiosmtplib.SMTP):
    """Knows whether the message itself went out: a failure after DATA's end is ambiguous
    (the relay may have queued it), one before it is not."""

    data_sent = False

    async def data(self, message: str | bytes, /, **options: Any) -> aiosmtplib.SMTPResponse:
        self.data_sent = True
        return await super().data(message, **options)


async def _transmit(
    client: aiosmtplib.SMTP, email: mime.Email, sender: str, recipient: str
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """`send_message` without its re-serialisation: aiosmtplib flattens with a 78-character
    policy of its own, which turns a long `List-Unsubscribe` into encoded words. The same
    ESMTP options it would ask for (SMTPUTF8, 8BITMIME), with our own flattening."""
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    utf8 = not (sender + recipient).isascii()
    if utf8 and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("the address needs SMTPUTF8, which this server does not offer")
    eight_bit = client.supports_extension("8bitmime")
    options = (["SMTPUTF8"] if utf8 else []) + (["BODY=8BITMIME"] if eight_bit else [])
    data = email.flatten(linesep="\r\n", utf8=utf8, eight_bit=eight_bit)
    return await client.sendmail(sender, [recipient], data, mail_options=options)


def _names_bad_destination(text: str) -> bool:
    """No enhanced status (an old relay: the reply code alone), or 5.1.x about the recipient."""
    enhanced = ENHANCED.match(text)
    return enhanced is None or (enhanced[2] == "1" and int(enhanced[3]) in BAD_DESTINATION_DETAILS)


def _masked(text: str, address: Address) -> str:
    return text.replace(address.value, redact(address.kind, address.value))[:500]
