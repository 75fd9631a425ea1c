"""Bad request bodies answer 4xx in the error shape on every route, and store nothing."""

from __future__ import annotations

from gateway.services import Services
from tests.harness import NOTIFICATIONS, admin_key, client, count

SHIPPED = b'{"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1", "carrier": "UPS"}'
JSON = {"content-type": "application/json"}
# (method, path, body, headers) -> (status, code, field)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str, str | None]] = [
    ("POST", "/v1/intents", b"[" * 5000 + b"]" * 5000, JSON, 400, "malformed_json", None),
    ("POST", "/v1/dry-run", b'{"intent": ' * 5000 + b"1" + b"}" * 5000, JSON, 400, "malformed_json", None),
    ("POST", "/v1/intents", b'{"data": ' * 40 + b"{}" + b"}" * 40, JSON, 400, "malformed_json", None),
    ("POST", "/v1/intents", SHIPPED[:-1] + b', "note": "\xff\xfe"}}', JSON, 400, "malformed_json", None),
    (
        "POST",
        "/v1/intents",
        SHIPPED[:-1] + b', "note": "a\\u0000b"}}',
        JSON,
        422,
        "invalid_character",
        "data.note",
    ),
    (
        "POST",
        "/v1/intents",
        SHIPPED[:-1] + b', "n\\u0000": "x"}}',
        JSON,
        422,
        "invalid_character",
        "data.n\\u0000",
    ),
    (
        "POST",
        "/v1/intents",
        SHIPPED + b', "idempotency_key": "k\\u0000"}',
        JSON,
        422,
        "invalid_character",
        "idempotency_key",
    ),
    (
        "POST",
        "/v1/intents",
        SHIPPED + b"}",
        {"content-type": "text/plain"},
        415,
        "unsupported_media_type",
        None,
    ),
    ("POST", "/v1/intents", b"", JSON, 422, "missing_body", None),
    (
        "PUT",
        "/v1/users/u_1",
        b'{"user_id": "u_1", "contacts": {"email": "a@b.c\\u0000"}}',
        JSON,
        422,
        "invalid_character",
        "contacts.email",
    ),
    (
        "POST",
        "/v1/intents/bulk",
        b'{"event": "order.shipped", "user_ids": ["u_1", "u\\u0000"], "data": {}}',
        JSON,
        422,
        "invalid_character",
        "user_ids[1]",
    ),
    # Whole-string patterns: Python's `$` let a trailing newline through ("u_alice\n" got mail).
    (
        "POST",
        "/v1/intents",
        b'{"event": "order.shipped", "user_id": "u_alice\\n"}',
        JSON,
        422,
        "invalid_value",
        "user_id",
    ),
    (
        "POST",
        "/v1/intents",
        b'{"event": "order.shipped\\n", "user_id": "u_alice"}',
        JSON,
        422,
        "invalid_value",
        "event",
    ),
    (
        "PUT",
        "/v1/users/u_1",
        b'{"user_id": "u_1", "contacts": {"email": "a@b.c\\u0001"}}',
        JSON,
        422,
        "invalid_value",
        "contacts.email",
    ),
    # A zone name that is a directory of the zone database, or too long for a file name: were 500s.
    (
        "PUT",
        "/v1/users/u_1",
        b'{"user_id": "u_1", "timezone": "Etc"}',
        JSON,
        422,
        "invalid_value",
        "timezone",
    ),
    (
        "PUT",
        "/v1/users/u_1",
        b'{"user_id": "u_1", "timezone": "' + b"x" * 300 + b'"}',
        JSON,
        422,
        "invalid_value",
        "timezone",
    ),
    # Dates near datetime's limits overflowed the gateway's arithmetic; a cap beyond its column.
    (
        "POST",
        "/v1/intents",
        SHIPPED + b', "send_at": "9999-12-31T00:00:00Z"}',
        JSON,
        422,
        "invalid_value",
        "send_at",
    ),
    (
        "POST",
        "/v1/dry-run",
        b'{"intent": ' + SHIPPED + b'}, "at": "0001-01-01T00:00:00Z"}',
        JSON,
        422,
        "invalid_value",
        "at",
    ),
    (
        "POST",
        "/v1/dry-run",
        b'{"intent": ' + SHIPPED + b'}, "at": "9999-01-01T00:00:00Z"}',
        JSON,
        422,
        "invalid_value",
        "at",
    ),
    (
        "PUT",
        "/v1/users/u_1",
        b'{"user_id": "u_1", "preferences": [{"event": "a.*", "channel": "email", "enabled": true, '
        b'"frequency_cap": 2147483648}]}',
        JSON,
        422,
        "invalid_value",
        "preferences[0].frequency_cap",
    ),
]


async def test_bad_bodies_are_refused_alike_on_every_route(services: Services) -> None:
    token = await admin_key(services)
    answers = []
    async with client(services, token) as http:
        for method, path, body, headers, *_ in CASES:
            response = await http.request(method, path, content=body, headers=headers)
            error = response.json().get("error", {})
            answers.append((response.status_code, error.get("code"), error.get("field")))
    assert answers == [(status, code, field) for *_, status, code, field in CASES]
    assert await count(services, NOTIFICATIONS) == 0


async def test_query_errors_and_garbage_cursors_name_their_parameter(services: Services) -> None:
    """Regression: a query error named its field `ParamType.QUERY.limit`; a garbage cursor gave
    an empty page on every list but the inbox's."""
    token = await admin_key(services)
    async with client(services, token) as http:
        answers = [
            (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"])
            for r in [
                await http.get("/v1/dead-letters?limit=many"),
                await http.get("/v1/dead-letters?cursor=zzz"),
                await http.get("/v1/users/u_ada/notifications?cursor=n_%2E%2E"),
                await http.get("/v1/scheduled?cursor=n_0123456789ABCDEFGHJKMNPQRS%0A"),
            ]
        ]
        fine = await http.get("/v1/dead-letters?cursor=dl_01JDZ0000000000000000000AB")
    assert answers == [
        (422, "invalid_value", "limit"),
        (422, "invalid_cursor", "cursor"),
        (422, "invalid_cursor", "cursor"),
        (422, "invalid_cursor", "cursor"),
    ]
    assert fine.status_code == 200 and fine.json()["dead_letters"] == []
