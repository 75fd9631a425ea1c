"""Twilio's Messages API on the wire: a form POST with Basic auth, answered in Twilio's JSON.

Success is `201 Created` with a Message resource; errors are Twilio's REST error body
`{"code", "message", "more_info", "status"}` (https://www.twilio.com/docs/usage/twilios-response).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any
from urllib.parse import parse_qs

from gateway.providers.base import Adapter, AdapterDeps, Address, Message
from gateway.providers.spec import ProviderSpec
from gateway.providers.twilio_sms import TwilioAdapter
from tests.providers.conformance import (
    INVALID_ADDRESS,
    MALFORMED_ANSWER,
    RATE_LIMITED,
    RETRY_AFTER,
    SERVER_ERROR,
    SUCCESS,
    by_scenario,
)
from tests.stub_http import Reply, Request

ACCOUNT_SID = "AC" + "5ef8732a3c49700934481addd5ce1659"
AUTH_TOKEN = "twilio-auth-token-9c1d7e"  # a test credential
SENDER = "+15005550006"  # Twilio's magic test "From" number
VALID = "+14155550123"
INVALID = "+15005550001"  # Twilio's magic test number for 21211
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
RFC2822 = "Thu, 24 Aug 2023 05:01:45 +0000"


def form(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}


def message_resource(request: Request) -> dict[str, Any]:
    """The Message resource Twilio answers a create with (status `queued`)."""
    fields = form(request)
    sid = "SM" + secrets.token_hex(16)
    uri = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}"
    return {
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": fields.get("Body"),
        "date_created": RFC2822,
        "date_sent": None,
        "date_updated": RFC2822,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": fields.get("From"),
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": fields.get("To"),
        "uri": f"{uri}.json",
    }


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply(status, body, headers=headers or {})


def spec(base_url: str, timeout: float, name: str = "twilio", **entry: Any) -> ProviderSpec:
    """A `twilio` entry of providers.yaml with Twilio at `base_url`; `entry` adds to it."""
    return ProviderSpec.parse(
        name,
        {
            "channel": "sms",
            "adapter": "twilio",
            "cost": 0.0075,
            "timeout": f"{int(timeout * 1000)}ms",
            "credentials": {"account_sid": "T_SID", "auth_token": "T_TOKEN"},
            "settings": {"from": SENDER, "base_url": base_url},
            **entry,
        },
        {"T_SID": ACCOUNT_SID, "T_TOKEN": AUTH_TOKEN},
    )


class TwilioWire:
    adapter = "twilio"
    channel = "sms"
    secrets = (ACCOUNT_SID, AUTH_TOKEN)

    def build(self, base_url: str, timeout: float) -> Adapter:
        return TwilioAdapter.from_spec(spec(base_url, timeout), AdapterDeps())

    def address(self, valid: bool = True) -> Address:
        return Address("phone", VALID if valid else INVALID)

    def is_send(self, request: Request) -> bool:
        return request.path == MESSAGES_PATH

    reply = staticmethod(
        by_scenario(
            {
                SUCCESS: lambda r: Reply(201, message_resource(r)),
                INVALID_ADDRESS: lambda r: error(
                    400, 21211, f"The 'To' number {form(r).get('To')} is not a valid phone number."
                ),
                RATE_LIMITED: lambda r: error(
                    429, 20429, "Too Many Requests", headers={"Retry-After": str(RETRY_AFTER)}
                ),
                SERVER_ERROR: lambda r: error(503, 20503, "Service Unavailable"),
                MALFORMED_ANSWER: lambda r: Reply(
                    201, "<html>upstream proxy</html>", headers={"content-type": "text/html"}
                ),
            }
        )
    )

    def check_request(self, request: Request, message: Message, address: Address, key: str) -> None:
        assert request.method == "POST"
        assert request.path == MESSAGES_PATH
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        assert request.headers["authorization"] == f"Basic {credentials}"
        assert request.headers["accept"] == "application/json"
        fields = form(request)
        assert fields == {"To": address.value, "From": SENDER, "Body": message.fields["body"]}

    def invalid_address_code(self) -> str:
        return "invalid_number"


WIRE = TwilioWire()
