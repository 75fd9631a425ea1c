"""APNs on the wire: HTTP/2 only, `POST /3/device/<token>` with a provider token (an ES256
JWT) and the `apns-*` headers, answered `200` with `apns-id`, or a status with a JSON body
`{"reason": "..."}` (Apple's "Handling notification responses from APNs").

The stand-in checks the provider token like APNs does (signature under the team's key,
`kid`, `iss`, and `iat` no older than an hour) and answers 403 InvalidProviderToken or
ExpiredProviderToken otherwise. APNs documents no Retry-After on its 429; the harness's 429
carries one, which the adapter honours when present.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.providers.apns_push import ApnsAdapter
from gateway.providers.base import Adapter, AdapterDeps, Address, Message
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

KEY = ec.generate_private_key(ec.SECP256R1())
AUTH_KEY = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
KEY_ID = "ABC123DEFG"
TEAM_ID = "DEF123GHIJ"
TOPIC = "com.example.notigate"
VALID_TOKEN = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"
BAD_TOKEN = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"
ENVIRON = {"APNS_AUTH_KEY": AUTH_KEY}


def raw_spec(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    return {
        "channel": "push",
        "adapter": "apns",
        "cost": 0,
        "platforms": ["ios"],
        "timeout": f"{int(timeout * 1000)}ms",
        "credentials": {"auth_key": "APNS_AUTH_KEY"},
        "settings": {"key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC, "base_url": base_url},
    }


def provider_token_problem(request: Request, now: float | None = None) -> str | None:
    """Why APNs would refuse the request's provider token, as its `reason`; None if it is good."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme != "bearer" or not token:
        return "MissingProviderToken"
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, KEY.public_key(), algorithms=["ES256"], options={"verify_iat": False})
    except jwt.PyJWTError:
        return "InvalidProviderToken"
    if header.get("kid") != KEY_ID or claims.get("iss") != TEAM_ID:
        return "InvalidProviderToken"
    if (now or time.time()) - int(claims.get("iat", 0)) > 3600:
        return "ExpiredProviderToken"
    return None


def refused(status: int, reason: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"reason": reason}, headers={"content-type": "application/json", **(headers or {})})


def accepted(request: Request) -> Reply:
    problem = provider_token_problem(request)
    if problem is not None:
        return refused(403, problem)
    return Reply(200, b"", headers={"apns-id": request.headers.get("apns-id") or secrets.token_hex(16)})


class ApnsWire:
    adapter = "apns"
    channel = "push"
    secrets = (AUTH_KEY.splitlines()[1],)  # a line of the key's body
    http2 = True  # the harness serves it with tests/stub_h2.py

    def build(self, base_url: str, timeout: float) -> Adapter:
        return ApnsAdapter.from_spec(
            ProviderSpec.parse("apns", raw_spec(base_url, timeout), ENVIRON), AdapterDeps()
        )

    def address(self, valid: bool = True) -> Address:
        return Address("device", VALID_TOKEN if valid else BAD_TOKEN, "ios", "apns")

    def is_send(self, request: Request) -> bool:
        return request.path.startswith("/3/device/")

    reply = staticmethod(
        by_scenario(
            {
                SUCCESS: accepted,
                INVALID_ADDRESS: lambda r: refused(400, "BadDeviceToken"),
                RATE_LIMITED: lambda r: refused(429, "TooManyRequests", {"retry-after": str(RETRY_AFTER)}),
                SERVER_ERROR: lambda r: refused(503, "ServiceUnavailable"),
                MALFORMED_ANSWER: lambda r: Reply(raw=b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            }
        )
    )

    def check_request(self, request: Request, message: Message, address: Address, key: str) -> None:
        assert request.method == "POST"
        assert request.path == f"/3/device/{address.value}"
        assert provider_token_problem(request) is None
        headers = request.headers
        assert headers["apns-topic"] == TOPIC
        assert headers["apns-push-type"] == "alert" and headers["apns-priority"] == "10"
        assert headers["apns-collapse-id"] == message.delivery_id
        body = json.loads(request.body)
        assert body["aps"] == {"alert": {"title": message.fields["title"], "body": message.fields["body"]}}
        assert body["order_id"] == message.fields["data"]["order_id"]
        assert body["notigate_delivery_id"] == message.delivery_id

    def invalid_address_code(self) -> str:
        return "bad_device_token"


WIRE = ApnsWire()
