"""FCM HTTP v1 on the wire: an OAuth token fetch, then `messages:send` answered like Google.

The fake service account has a real RSA key (generated here), and its `token_uri` points at
the stub, so firebase-admin's own token flow runs: it POSTs a JWT assertion signed with the
key, the stub checks the signature and answers with an access token, and every send must carry
that token. Errors come in Google's format, the FCM `ErrorCode` in an `FcmError` detail.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.providers.base import Adapter, AdapterDeps, Address, Message
from gateway.providers.fcm_push import FID, FcmAdapter
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

PROJECT = "notigate-conformance"
SEND_PATH = f"/v1/projects/{PROJECT}/messages:send"
TOKEN_PATH = "/token"
ACCESS_TOKEN = "ya29.c.conformance-access-token-4b1d"
CLIENT_EMAIL = f"notigate-sender@{PROJECT}.iam.gserviceaccount.com"
SEND_SCOPES = {
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
}
# google-auth signs the assertion for Google's token endpoint, whatever the key's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
VALID_TOKEN = "dV3hT0k3n:APA91bHunx7Qk2fYwq8conformanceValidDevice9f2c"
UNREGISTERED_TOKEN = "eX9hT0k3n:APA91bGoneConformanceUnregisteredDevice0b7e"

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEY = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_KEY = _KEY.public_key()
# A line from the middle of the key: enough to notice a partial leak of the PEM.
KEY_LINE = PRIVATE_KEY.splitlines()[10]


def service_account(token_uri: str, **overrides: Any) -> dict[str, Any]:
    """A service-account key file as the Firebase console downloads it."""
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6",
        "private_key": PRIVATE_KEY,
        "client_email": CLIENT_EMAIL,
        "client_id": "109876543210987654321",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
        **overrides,
    }


def spec(
    base_url: str,
    timeout: float,
    *,
    token_uri: str | None = None,
    account: str | None = None,
    name: str = "fcm",
    **entry: Any,
) -> ProviderSpec:
    """The `fcm` entry of providers.yaml, with FCM and the token endpoint at `base_url`;
    `entry` adds to it."""
    text = account if account is not None else json.dumps(service_account(token_uri or base_url + TOKEN_PATH))
    return ProviderSpec.parse(
        name,
        {
            "channel": "push",
            "adapter": "fcm",
            "cost": 0,
            "platforms": ["android", "ios", "web"],
            "timeout": f"{int(timeout * 1000)}ms",
            "credentials": {"service_account": "FCM_SERVICE_ACCOUNT"},
            "settings": {"project_id": PROJECT, "base_url": base_url},
            **entry,
        },
        {"FCM_SERVICE_ACCOUNT": text},
    )


def google_error(
    status: int, google_status: str, message: str, fcm_code: str | None = None, **extra: Any
) -> Reply:
    """An error as Google APIs send it: `{"error": {code, message, status, details}}`."""
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": FCM_ERROR, "errorCode": fcm_code})
    details.extend(extra.pop("details", []))
    error = {"code": status, "message": message, "status": google_status, "details": details}
    return Reply(
        status, {"error": error}, headers={"content-type": "application/json; charset=UTF-8", **extra}
    )


def token_reply(request: Request) -> Reply:
    """Google's token endpoint: a JWT-bearer grant signed with the service account's key."""
    form = urllib.parse.parse_qs(request.body.decode())
    if form.get("grant_type") != [JWT_GRANT]:
        return Reply(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
    try:
        claims = jwt.decode(
            form["assertion"][0], PUBLIC_KEY, algorithms=["RS256"], audience=GOOGLE_TOKEN_AUDIENCE
        )
    except (KeyError, jwt.InvalidTokenError):
        return Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    # FCM v1 takes a token for the firebase.messaging or the cloud-platform scope.
    scopes = set(str(claims.get("scope", "")).split())
    if claims.get("iss") != CLIENT_EMAIL or not scopes & SEND_SCOPES:
        return Reply(400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope."})
    return Reply(200, {"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"})


def delivered(request: Request) -> Reply:
    return Reply(200, {"name": f"projects/{PROJECT}/messages/0:1718000000000000%31bd1c9631bd1c96"})


def google(request: Request) -> Reply:
    """The token endpoint, and FCM: the valid token is delivered, any other is unregistered."""
    if request.path == TOKEN_PATH:
        return token_reply(request)
    if request.json()["message"].get("token") == VALID_TOKEN:
        return delivered(request)
    return google_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")


class FcmWire:
    adapter = "fcm"
    channel = "push"
    secrets = (PRIVATE_KEY, KEY_LINE, ACCESS_TOKEN)

    def build(self, base_url: str, timeout: float) -> Adapter:
        return FcmAdapter.from_spec(spec(base_url, timeout), AdapterDeps())

    def address(self, valid: bool = True) -> Address:
        return Address("device", VALID_TOKEN if valid else UNREGISTERED_TOKEN, "android")

    def is_send(self, request: Request) -> bool:
        return request.path == SEND_PATH

    _send_reply = staticmethod(
        by_scenario(
            {
                SUCCESS: delivered,
                INVALID_ADDRESS: lambda r: google_error(
                    404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"
                ),
                RATE_LIMITED: lambda r: google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for quota metric 'Send requests'.",
                    "QUOTA_EXCEEDED",
                    **{"retry-after": str(RETRY_AFTER)},
                ),
                SERVER_ERROR: lambda r: google_error(
                    503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"
                ),
                # A 200 from something in the way (a captive portal, a proxy), not from FCM.
                MALFORMED_ANSWER: lambda r: Reply(
                    200, "<html><body>Gateway</body></html>", headers={"content-type": "text/html"}
                ),
            }
        )
    )

    def reply(self, scenario: str, request: Request) -> Reply:
        if request.path == TOKEN_PATH:
            return token_reply(request)
        if request.path != SEND_PATH:
            return google_error(404, "NOT_FOUND", "Method not found.")
        return self._send_reply(scenario, request)

    def check_request(self, request: Request, message: Message, address: Address, key: str) -> None:
        assert request.method == "POST"
        assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert request.headers["content-type"] == "application/json"
        body = request.json()
        assert set(body) == {"message"}, "validate_only must not be set: that is a dry run"
        sent = body["message"]
        target = "fid" if FID.fullmatch(address.value) else "token"
        assert sent[target] == address.value
        assert not ({"fid", "token", "topic", "condition"} - {target}) & set(sent), "one target only"
        assert sent["notification"] == {"title": message.fields["title"], "body": message.fields["body"]}
        assert sent["data"] == {
            **{k: str(v) for k, v in message.fields["data"].items()},
            "notigate_delivery_id": key,
            "notigate_notification_id": message.notification_id,
        }
        assert all(isinstance(v, str) for v in sent["data"].values())

    def invalid_address_code(self) -> str:
        return "unregistered"


WIRE = FcmWire()
