"""Twilio's price for an SMS, read once Twilio has set it, and recorded on its attempt.

Twilio prices a message only once it is sent: the Message resource's `price` is "populated
after the message has been sent" and usually null in the create call's answer, where the
adapter reads it (so that attempt stores the configured cost). The status callback does not
carry it either: its form is a subset of the messaging webhook's properties plus
`MessageStatus` and `ErrorCode` (Twilio, "Track the Message Status of Outbound Messages"),
with `AccountSid` and `MessageSid` but no `Price`. So when a callback says a message of ours
left Twilio (`sent`, `delivered`, `undelivered`) and its attempt has no reported price yet,
the price is read from the Message resource,
`GET /2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}.json`, with the SDK, under the
account the callback names and the Auth Token its signature was just checked with (the same
`TWILIO_AUTH_TOKEN`; `TWILIO_BASE_URL` points it elsewhere, as for the adapter). A price in
a currency other than USD, or still null, is not recorded: the next callback tries again.

The lookup is bounded (`timeout`) and never fails the callback: Twilio's retry of a
callback we answered 5xx would only store the event again, and the configured cost stays
where the price is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import aiohttp
from twilio.base.exceptions import TwilioException

from gateway.metrics import DELIVERY_COST, DELIVERY_COST_REPLACED
from gateway.providers.twilio_sms import price_of, sdk_client
from gateway.redact import Secret
from gateway.store.prices import PriceStore, Repriced

log = logging.getLogger("gateway.tracking.twilio")

# Statuses after which Twilio has (or soon has) priced the message.
PRICED = frozenset({"sent", "delivered", "undelivered"})


class TwilioPrices:
    def __init__(self, store: PriceStore, auth_token: Secret, base_url: str, timeout: float = 5.0) -> None:
        self.store = store
        self.auth_token = auth_token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def settle(self, form: Mapping[str, str]) -> Repriced | None:
        """Record the price of the message a verified status callback names, when it is due."""
        sid = form.get("MessageSid") or form.get("SmsSid")
        account = form.get("AccountSid")
        status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        if not sid or not account or status not in PRICED or not await self.store.unpriced(sid):
            return None
        price = await self.fetch(account, sid)
        if price is None:
            return None
        repriced = await self.store.record(sid, price)
        if repriced is not None:
            labels = {"channel": repriced.channel, "provider": repriced.provider}
            DELIVERY_COST.labels(**labels).inc(repriced.price)
            if repriced.replaced:
                DELIVERY_COST_REPLACED.labels(**labels).inc(repriced.replaced)
        return repriced

    async def fetch(self, account_sid: str, message_sid: str) -> float | None:
        """The Message resource's price in USD; None when unset, or when Twilio cannot say now."""
        client, http = sdk_client(account_sid, self.auth_token.reveal(), self.base_url)
        try:
            async with asyncio.timeout(self.timeout):
                message = await client.messages(message_sid).fetch_async()
        except (TimeoutError, TwilioException, aiohttp.ClientError, ValueError, TypeError, KeyError) as exc:
            log.warning("could not read the price of a Twilio message: %s", type(exc).__name__)
            return None
        finally:
            await http.close()
        return price_of(message)
