"""Texts people send to our Twilio number: the opt-out keywords, read and answered in TwiML.

Twilio POSTs each incoming message to the number's "A message comes in" webhook, signed like
the status callbacks (`X-Twilio-Signature`, checked by `twilio.verify`), with the form fields
`MessageSid`, `From` (the sender's phone, E.164), `To` (our number), `Body` and, when the
number or its Messaging Service has Advanced Opt-Out on, `OptOutType` (`STOP`, `START`,
`HELP`): Twilio's own reading of the keyword, which wins over ours.

| the text (trimmed, any case)                  | keyword | effect                                          |
|-----------------------------------------------|---------|-------------------------------------------------|
| STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT | stop    | the phone is marked `opted_out` for every user  |
|                                               |         | who has it: SMS is suppressed as `no_address`   |
| START, YES, UNSTOP                            | start   | that phone is `active` again (undoing a STOP,   |
|                                               |         | or a 21610 refusal at send time)                |
| HELP, INFO                                    | help    | answered with the help text                     |
| anything else                                 | none    | nothing (an empty TwiML answer)                 |

These are the keywords Twilio handles itself on long codes and toll-free numbers: Twilio
blocks the sender after STOP whatever we do, so not marking the phone would only pay for
refused sends (21610). The answer is TwiML; only HELP carries a message, since Twilio already
confirms STOP and START itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from twilio.twiml.messaging_response import MessagingResponse

PATH = "/v1/webhooks/twilio/inbound"

Keyword = Literal["stop", "start", "help"]

KEYWORDS: Mapping[str, Keyword] = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), "stop"),
    **dict.fromkeys(("START", "YES", "UNSTOP"), "start"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}
# Twilio's `OptOutType` values (Advanced Opt-Out).
_OPT_OUT_TYPES: Mapping[str, Keyword] = {"STOP": "stop", "START": "start", "HELP": "help"}


class PayloadError(ValueError):
    """A signed form that is not an incoming message."""


@dataclass(frozen=True, slots=True)
class InboundSms:
    message_sid: str
    phone: str  # who texted us, E.164
    keyword: Keyword | None


def parse(form: Mapping[str, str]) -> InboundSms:
    sid = form.get("MessageSid") or form.get("SmsSid")
    phone = (form.get("From") or "").strip()
    if not sid or not phone:
        raise PayloadError("an incoming message names MessageSid and From")
    told = _OPT_OUT_TYPES.get((form.get("OptOutType") or "").strip().upper())
    return InboundSms(sid, phone, told or keyword_of(form.get("Body") or ""))


def keyword_of(body: str) -> Keyword | None:
    """The keyword a whole text is, as carriers read it: the text alone, trimmed, any case."""
    return KEYWORDS.get(body.strip().rstrip(".!").strip().upper())


def answer(keyword: Keyword | None, help_text: str) -> str:
    """The TwiML to answer with: the help text for HELP, else nothing to send."""
    response = MessagingResponse()
    if keyword == "help":
        response.message(help_text)
    return str(response)
