"""No secret in any log, ever: a real gateway (API and worker processes, live profile, a
SendGrid and Twilio stand-in) is driven through its error paths at DEBUG, and every line
the processes wrote is searched for the addresses, tokens, keys and passwords it used.

The error paths: database URLs with a password that are invalid or unreachable, providers
refusing an address and echoing it back (SendGrid's email, Twilio's phone), a provider
failing with the address in its answer, a database refusing a write that carries an
address, unknown and forged API keys, forged inbox, unsubscribe and console tokens. Each
path is checked to have happened (its status code or outcome), so a quiet log proves
something.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx

from gateway.redis_server import RedisServer, free_port
from tests.conftest import REPO
from tests.providers import wire_sendgrid, wire_twilio
from tests.stub_http import Reply, Request, StubServer
from tests.test_live_profile import _environment, _notigate, _spawn, _until_ready

PASSWORD = "pw-Hunter2-never-logged"
REFUSED = "zelda.refused@example.com"  # SendGrid answers 400 naming it
FAILING = "yorick.failing@example.com"  # SendGrid answers 500 naming it
DB_REFUSED = "db-error.person@example.com"  # the database refuses the row that holds it
PHONE = "+14155550123"
DEVICE = "fcmTokenNeverLogged:APA91bHun3dsOfCharacters_abcdefghijklmnopqrstuvwxyz0123456789"
FORGED_KEY = "key_01JFORGEDFORGEDFORGEDFORGE.forged-api-secret-never-logged"


def providers_script(request: Request) -> Reply:
    """SendGrid refuses one address and fails on another, Twilio refuses the phone: each
    echoing the address back, as their errors do."""
    body = request.body.decode()
    if request.path == wire_twilio.MESSAGES_PATH:
        return wire_twilio.error(400, 21211, f"The 'To' number {PHONE} is not a valid phone number.")
    if REFUSED in body:
        message = f"The to email {REFUSED} does not contain a valid address."
        return Reply(400, wire_sendgrid.errors(("personalizations.0.to.0.email", message)))
    if FAILING in body:
        return Reply(500, f"internal error while sending to {FAILING}")
    return Reply(202, headers={"x-message-id": "m-1"})


def failed_start(env: dict[str, str], database_url: str, *args: str) -> str:
    """What a command says when its database URL is wrong: it must fail, and say why."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env={**env, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "DATABASE_URL" in done.stdout + done.stderr or "database" in (done.stdout + done.stderr).lower()
    return done.stdout + done.stderr


async def refuse_in_database(database_url: str) -> None:
    """A trigger that fails the write of one address: a database error whose statement
    carries that address among its parameters."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.partition(":///")[2]) as connection:
            connection.execute(
                "CREATE TRIGGER refuse_address BEFORE INSERT ON contacts "
                f"WHEN NEW.value = '{DB_REFUSED}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        return
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(
            "CREATE FUNCTION refuse_address() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.value = '{DB_REFUSED}' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql;"
            "CREATE TRIGGER refuse_address BEFORE INSERT ON contacts "
            "FOR EACH ROW EXECUTE FUNCTION refuse_address();"
        )
    finally:
        await connection.close()


def user(user_id: str, email: str, **contacts: object) -> dict[str, object]:
    """A recipient who opted into SMS too, so a phone among `contacts` is texted."""
    return {
        "user_id": user_id,
        "quiet_hours": {"start": "00:00", "end": "00:00"},
        "contacts": {"email": email, **contacts},
        "preferences": [{"event": "order.*", "channel": "sms", "enabled": True}],
    }


async def exercise(http: httpx.AsyncClient, anonymous: httpx.AsyncClient) -> tuple[dict[str, int], list[str]]:
    """Drive every error path once: the status each answered, by name, and the notifications
    whose emails SendGrid will refuse or fail."""
    seen: dict[str, int] = {}
    notifications: list[str] = []
    devices = [{"platform": "android", "token": DEVICE}]
    for user_id, email in (("u_refused", REFUSED), ("u_failing", FAILING)):
        answer = await http.put(
            f"/v1/users/{user_id}", json=user(user_id, email, phone=PHONE, devices=devices)
        )
        assert answer.status_code == 201, answer.text
        intent = {"event": "order.shipped", "user_id": user_id, "data": {"order_id": "A-1", "carrier": "UPS"}}
        accepted = await http.post("/v1/intents", json=intent)
        assert accepted.status_code == 202, accepted.text
        notifications.append(accepted.json()["notification_id"])
    seen["db_error"] = (await http.put("/v1/users/u_db", json=user("u_db", DB_REFUSED))).status_code
    seen["forged_key"] = (
        await anonymous.get("/v1/users/u_refused", headers={"authorization": f"Bearer {FORGED_KEY}"})
    ).status_code
    seen["no_key"] = (await anonymous.get("/v1/users/u_refused")).status_code
    inbox = (await http.post("/v1/users/u_refused/inbox-token")).json()["token"]
    seen["forged_inbox_token"] = (
        await anonymous.get("/v1/inbox", headers={"authorization": f"Bearer {inbox}x"})
    ).status_code
    seen["expired_shape_inbox_token"] = (
        await anonymous.get("/v1/inbox", params={"token": inbox[:-4] + "AAAA"})
    ).status_code
    seen["forged_unsubscribe"] = (
        await anonymous.post(f"/v1/unsubscribe/us_{inbox[3:]}", content=b"List-Unsubscribe=One-Click")
    ).status_code
    seen["forged_console_link"] = (
        await anonymous.get("/v1/keys/current", headers={"authorization": f"Bearer cl_{inbox[3:]}"})
    ).status_code
    return seen, notifications


async def delivery_outcomes(http: httpx.AsyncClient, notifications: list[str]) -> set[str]:
    """Wait for the emails to settle; their statuses."""
    statuses: list[str] = []
    for _ in range(300):
        statuses = []
        for notification_id in notifications:
            deliveries = (await http.get(f"/v1/notifications/{notification_id}")).json()["deliveries"]
            statuses += [d["status"] for d in deliveries if d["channel"] == "email"]
        if not {"pending", "sending", "scheduled"} & set(statuses):
            return set(statuses)
        await asyncio.sleep(0.2)
    raise AssertionError(f"the emails did not settle: {statuses}")


async def test_no_address_token_key_or_password_reaches_any_log(
    tmp_path: Path, redis_server: RedisServer, database_url: str
) -> None:
    providers = await StubServer(providers_script).start()
    port = free_port()
    env = {
        **_environment(tmp_path, redis_server.url, providers.url, port),
        "TWILIO_ACCOUNT_SID": wire_twilio.ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": wire_twilio.AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": wire_twilio.SENDER,
        "TWILIO_BASE_URL": providers.url,
        "DATABASE_URL": database_url,
        "NOTIGATE_LOG_LEVEL": "DEBUG",
    }
    outputs = [
        failed_start(
            env, f"postgresql://notigate:{PASSWORD}@127.0.0.1:{free_port()}/notigate", "db", "upgrade"
        ),
        failed_start(
            env, f"postgresql+asyncpg://notigate:{PASSWORD}@127.0.0.1:{free_port()}/notigate", "db", "upgrade"
        ),
        failed_start(env, f"mysql://notigate:{PASSWORD}@db.internal/notigate", "worker"),
    ]
    _notigate(env, "db", "upgrade")
    await refuse_in_database(database_url)
    key = _notigate(env, "keys", "create", "ops", "--events", "*", "--admin").strip().splitlines()[-1]
    logs = [tmp_path / "api.log", tmp_path / "worker.log"]
    commands = [["serve", "--host", "127.0.0.1", "--port", str(port)], ["worker"]]
    sinks = [log.open("wb") for log in logs]
    processes = [_spawn(env, sink, *args) for args, sink in zip(commands, sinks, strict=True)]
    base = f"http://127.0.0.1:{port}"
    try:
        await _until_ready(base, processes, logs)
        async with (
            httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=10) as http,
            httpx.AsyncClient(base_url=base, timeout=10) as anonymous,
        ):
            seen, notifications = await exercise(http, anonymous)
            outcomes = await delivery_outcomes(http, notifications)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        for sink in sinks:
            sink.close()
        await providers.stop()

    assert seen["db_error"] >= 400 and seen["forged_key"] == 401 and seen["no_key"] == 401, seen
    assert (seen["forged_inbox_token"], seen["expired_shape_inbox_token"]) == (401, 401), seen
    assert seen["forged_unsubscribe"] == 404 and seen["forged_console_link"] == 401, seen
    assert outcomes - {"delivered"} and outcomes <= {"failed", "retrying", "dead"}, outcomes
    mail = [r for r in providers.requests if r.path == "/v3/mail/send"]
    assert {r.json()["personalizations"][0]["to"][0]["email"] for r in mail} >= {REFUSED, FAILING}
    assert any(r.path == wire_twilio.MESSAGES_PATH for r in providers.requests)  # the SMS was tried

    text = "\n".join([*outputs, *(log.read_text(errors="replace") for log in logs)])
    secret_part = key.partition(".")[2]
    never = {
        "password": PASSWORD,
        "refused email": REFUSED,
        "failing email": FAILING,
        "email the database refused": DB_REFUSED,
        "phone": PHONE,
        "phone without +": PHONE[1:],
        "device token": DEVICE,
        "device token's middle": DEVICE[10:-10],
        "admin key": key,
        "admin key's secret": secret_part,
        "forged key's secret": FORGED_KEY.partition(".")[2],
        "SendGrid key": wire_sendgrid.API_KEY,
        "Twilio auth token": wire_twilio.AUTH_TOKEN,
        "inbox secret": env["NOTIGATE_INBOX_SECRET"],
        "unsubscribe secret": env["NOTIGATE_UNSUBSCRIBE_SECRET"],
        "console secret": env["NOTIGATE_CONSOLE_SECRET"],
    }
    leaked = {name: value for name, value in never.items() if value in text}
    assert not leaked, f"in the logs: {sorted(leaked)}"
    assert "z***@example.com" in text or "y***@example.com" in text  # the failures were logged, masked
