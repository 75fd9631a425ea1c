"""SendGrid's v3 Mail Send on the wire: a JSON POST with a Bearer key, answered as the API does.

202 Accepted with an empty body and `X-Message-Id`; errors as
`{"errors": [{"message", "field", "help"}]}`; 429 with `X-RateLimit-*` headers, the reset
as a Unix time.
"""

from __future__ import annotations

import time

from gateway.providers.base import Adapter, AdapterDeps, Address, Message
from gateway.providers.sendgrid_email import SendGridAdapter
from gateway.providers.spec import ProviderSpec
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

API_KEY = "SG.conformance-key.Zx81bQ7wPq"
SENDER = "Notigate <no-reply@notigate.example>"


def errors(*entries: tuple[str | None, str]) -> dict[str, object]:
    return {
        "errors": [
            {"message": message, "field": field, "help": "http://sendgrid.com/docs/API_Reference/errors.html"}
            for field, message in entries
        ]
    }


def rate_limited(request: Request) -> Reply:
    reset = int(time.time() + RETRY_AFTER + 0.5)  # SendGrid's reset is a whole Unix second
    return Reply(
        429,
        errors((None, "too many requests")),
        headers={"x-ratelimit-limit": "600", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )


class SendGridWire:
    adapter = "sendgrid"
    channel = "email"
    secrets = (API_KEY,)

    def build(self, base_url: str, timeout: float) -> Adapter:
        spec = ProviderSpec.parse(
            "sendgrid",
            {
                "channel": "email",
                "adapter": "sendgrid",
                "cost": 0.001,
                "timeout": f"{int(timeout * 1000)}ms",
                "credentials": {"api_key": "SENDGRID_API_KEY"},
                "settings": {"from": SENDER, "base_url": base_url},
            },
            {"SENDGRID_API_KEY": API_KEY},
        )
        return SendGridAdapter.from_spec(spec, AdapterDeps())

    def address(self, valid: bool = True) -> Address:
        return Address("email", "ada@example.com" if valid else "ada@example..com")

    def is_send(self, request: Request) -> bool:
        return request.path == "/v3/mail/send"

    reply = staticmethod(
        by_scenario(
            {
                SUCCESS: lambda r: Reply(202, headers={"x-message-id": "W3kZ8r5pRmWk3vB0yYc1Xw"}),
                INVALID_ADDRESS: lambda r: Reply(
                    400, errors(("personalizations.0.to.0.email", "Does not contain a valid address."))
                ),
                RATE_LIMITED: rate_limited,
                SERVER_ERROR: lambda r: Reply(500, errors((None, "internal error"))),
                # A 400 that is not SendGrid's errors JSON (a proxy's page): we cannot tell why.
                MALFORMED_ANSWER: lambda r: Reply(
                    400, "<html><body>Bad Request</body></html>", headers={"content-type": "text/html"}
                ),
            }
        )
    )

    def check_request(self, request: Request, message: Message, address: Address, key: str) -> None:
        assert request.method == "POST"
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert request.headers["content-type"] == "application/json"
        body = request.json()
        assert body["from"] == {"email": "no-reply@notigate.example", "name": "Notigate"}
        assert body["subject"] == message.fields["subject"]
        (personalization,) = body["personalizations"]
        assert personalization["to"] == [{"email": address.value}]
        assert body["content"] == [
            {"type": "text/plain", "value": message.fields["text"]},
            {"type": "text/html", "value": message.fields["html"]},
        ]
        assert body["custom_args"] == {
            "delivery_id": message.delivery_id,
            "notification_id": message.notification_id,
        }
        assert body.get("headers", {}) == message.headers

    def invalid_address_code(self) -> str:
        return "invalid_address"


WIRE = SendGridWire()
