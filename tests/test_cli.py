"""The `notigate` command line: check, test, explain and serve, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from gateway.redis_server import RedisServer, free_port
from tests.conftest import REPO

DRY_RUN = {
    "intent": {
        "event": "marketing.weekly_digest",
        "user_id": "u_linus",
        "priority": "low",
        "data": {"week": "W47"},
    },
    "user": {
        "user_id": "u_linus",
        "timezone": "America/Los_Angeles",
        "quiet_hours": {"start": "22:00", "end": "08:00"},
        "contacts": {"email": "linus@example.com", "devices": [{"platform": "android", "token": "t"}]},
        "preferences": [{"event": "marketing.*", "channel": "push", "enabled": False}],
    },
    "at": "2026-11-22T07:30:00Z",
}


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for name in list(os.environ):
        if name.startswith("NOTIGATE_"):
            monkeypatch.delenv(name)


def test_check_passes_on_the_shipped_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 12 rules in ")
    assert "test cases passed" in out


def test_check_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "policies", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["diagnostics"]) == (True, [])
    # every SMS template's segment count, as a note with its location
    assert {n["code"] for n in report["notes"]} == {"sms-segments"}
    assert all(n["file"].endswith("sms.yaml") and n["line"] > 0 for n in report["notes"])


def test_test_reports_full_coverage_and_enforces_a_minimum(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "--coverage", "--min-coverage", "100"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out
    assert "(100.0%)" in out


def test_min_coverage_fails_when_suites_leave_rules_untested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(
        REPO / "policies", tmp_path / "policies", ignore=shutil.ignore_patterns("social_test.yaml")
    )
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy2(REPO / "providers.yaml", tmp_path)
    status = main(["test", str(tmp_path / "policies"), "--coverage", "--min-coverage", "95"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "never exercised: rule 'likes' never matched" in out
    assert "never exercised: constraint 'no-self-notifications' never applied" in out
    assert "is below the required 95%" in err


def test_test_selects_cases_with_k(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "-k", "R11", "-v"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("pass ")]
    assert lines and all("R11" in line for line in lines)


def test_explain_prints_a_readable_decision_with_its_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "digest.json"
    request.write_text(json.dumps(DRY_RUN))
    assert main(["explain", str(request)]) == 0
    out = capsys.readouterr().out
    assert "marketing.weekly_digest for u_linus (priority low)" in out
    assert "rule weekly-digest, category marketing, tier bulk" in out
    assert "2026-11-22 16:00:00Z (quiet_hours)" in out
    suppressed = {line.split()[0]: line.split()[1] for line in out.split("Suppressed\n")[1].splitlines()[:2]}
    assert suppressed == {"push": "opted_out", "in_app": "muted"}
    assert "policies/marketing.yaml" in out  # the trace names where each step came from


def test_explain_json_equals_the_dry_run_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litestar.testing import TestClient

    from gateway.api.app import create_app

    request = tmp_path / "digest.json"
    request.write_text(json.dumps(DRY_RUN))
    assert main(["explain", str(request), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    from gateway.api.context import Gateway
    from gateway.settings import Settings
    from tests.conftest import compiled_policy

    gateway = Gateway(settings=Settings(), policy=compiled_policy("cel-expr-python"))
    with TestClient(create_app(gateway=gateway)) as client:
        served = client.post("/v1/dry-run", json=DRY_RUN).json()
    assert printed == served


def test_explain_at_overrides_the_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = tmp_path / "digest.json"
    request.write_text(json.dumps(DRY_RUN))
    assert main(["explain", str(request), "--json", "--at", "2026-11-21T18:00:00Z"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["evaluated_at"] == "2026-11-21T18:00:00Z"
    assert decision["deliveries"][0]["send_at"] is None


def test_explain_a_bare_intent_without_a_store_decides_as_intake_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    intent = tmp_path / "intent.json"
    intent.write_text(json.dumps(DRY_RUN["intent"]))
    assert main(["explain", str(intent), "--json", "--at", str(DRY_RUN["at"])]) == 0
    out = capsys.readouterr()
    decision = json.loads(out.out)
    assert decision["deliveries"] == []  # nothing on file: no address, and the feed is muted
    assert decision["trace"][0]["step"] == "user" and decision["trace"][0]["value"] == "unknown"
    assert "'u_linus' is not stored (DATABASE_URL is not set)" in out.err


def test_explain_rejects_an_invalid_body_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"intent": {"event": "order.shipped", "user_id": "u", "priority": "asap"}}))
    assert main(["explain", str(bad)]) == 2
    assert "$.intent.priority" in capsys.readouterr().err


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not answer in time")


def test_db_upgrade_keys_create_and_serve_answer_on_loopback(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
        "REDIS_URL": redis_server.url,
        "NOTIGATE_REDIS_PREFIX": "cli-test",
    }

    def notigate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert notigate("db", "current").returncode == 1  # an empty database is not current
    upgraded = notigate("db", "upgrade")
    assert upgraded.returncode == 0 and "database at revision" in upgraded.stdout
    assert notigate("db", "current").returncode == 0
    created = notigate("keys", "create", "checkout", "--events", "order.*", "marketing.*")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("k_") and "." in token
    assert "checkout" in notigate("keys", "list").stdout
    assert token.split(".")[1] not in notigate("keys", "list").stdout  # secrets are never listed
    # explain reads the stored user (DATABASE_URL) and history (REDIS_URL) for a bare intent.
    (tmp_path / "users.jsonl").write_text(json.dumps(DRY_RUN["user"]) + "\n")
    assert notigate("users", "import", str(tmp_path / "users.jsonl")).returncode == 0
    (tmp_path / "intent.json").write_text(json.dumps(DRY_RUN["intent"]))
    local = notigate("explain", str(tmp_path / "intent.json"), "--json", "--at", str(DRY_RUN["at"]))
    assert local.returncode == 0, local.stderr
    explained = json.loads(local.stdout)
    assert explained["deliveries"][0]["deferred"] == "quiet_hours"
    assert explained["trace"][0]["step"] != "user"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/schema/openapi.json", process).status_code == 200
        headers = {"authorization": f"Bearer {token}"}
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/dry-run", json=DRY_RUN, headers=headers, timeout=5.0
        )
        assert response.status_code == 200
        assert response.json()["deliveries"][0]["deferred"] == "quiet_hours"
        assert httpx.post(f"http://127.0.0.1:{port}/v1/dry-run", json=DRY_RUN, timeout=5.0).status_code == 401
        # ... or asks the running gateway, with the key from the environment.
        env["NOTIGATE_API_KEY"] = token
        remote = notigate(
            "explain",
            str(tmp_path / "intent.json"),
            "--json",
            "--at",
            str(DRY_RUN["at"]),
            "--api",
            f"http://127.0.0.1:{port}",
        )
        assert remote.returncode == 0, remote.stderr
        assert json.loads(remote.stdout) == explained
        revoked = notigate("keys", "revoke", "checkout")
        assert revoked.returncode == 0
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def test_serve_refuses_to_start_on_a_bundle_check_rejects(tmp_path: Path) -> None:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy2(REPO / "providers.yaml", tmp_path)
    marketing = tmp_path / "policies" / "marketing.yaml"
    marketing.write_text(marketing.read_text().replace("tier: bulk", "tier: bulky"))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NOTIGATE_SCHEMAS": str(REPO / "schemas")},
    )
    assert done.returncode == 1
    assert "policies/marketing.yaml:12:9: unknown-tier: unknown tier 'bulky'" in done.stderr


def test_users_import_checks_every_line_before_writing_any(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["db", "upgrade"]) == 0
    users = [
        {"user_id": f"u_{i}", "timezone": "Europe/Paris", "contacts": {"email": f"u{i}@example.com"}}
        for i in range(3)
    ]
    good = tmp_path / "users.jsonl"
    good.write_text("\n".join(json.dumps(u) for u in users) + "\n\n")
    assert main(["users", "import", str(good)]) == 0
    assert "imported 3 users from" in (out := capsys.readouterr().out) and "3 new, 0 replaced" in out
    assert _emails(url) == {"u_0": "u0@example.com", "u_1": "u1@example.com", "u_2": "u2@example.com"}

    changed = {**users[0], "contacts": {"email": "new@example.com"}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(changed) + "\n" + json.dumps({**users[1], "timezone": "Mars/Olympus"}) + "\n")
    assert main(["users", "import", str(bad)]) == 2
    error = capsys.readouterr().err
    assert f"{bad}:2:" in error and "Mars/Olympus" in error
    assert _emails(url)["u_0"] == "u0@example.com"  # line 1 was fine, but nothing was written

    good.write_text(json.dumps(changed) + "\n")
    assert main(["users", "import", str(good)]) == 0
    assert "0 new, 1 replaced" in capsys.readouterr().out
    assert _emails(url) == {"u_0": "new@example.com", "u_1": "u1@example.com", "u_2": "u2@example.com"}


def _emails(url: str) -> dict[str, str | None]:
    import asyncio

    from gateway.store.database import Database
    from gateway.store.recipients import SqlRecipients

    async def stored() -> dict[str, str | None]:
        database = Database(url)
        try:
            found = await SqlRecipients(database).get_users(["u_0", "u_1", "u_2"])
            return {uid: user.contacts.email for uid, user in found.items()}
        finally:
            await database.dispose()

    return asyncio.run(stored())
