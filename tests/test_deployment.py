"""docs/deploy/ (the Compose file and systemd units of docs/deployment.md) runs commands the
CLI accepts: each is parsed by `notigate`'s own argument parser, nothing is started."""

from __future__ import annotations

import configparser
import shlex

import pytest
import yaml

from gateway.cli import _parser
from tests.conftest import REPO

DEPLOY = REPO / "docs" / "deploy"


def _accepts(argv: list[str]) -> str | None:
    """Why `notigate` would refuse argv, or None when it parses."""
    try:
        _parser().parse_args(argv)
    except SystemExit as exit_:
        return f"`notigate {shlex.join(argv)}` is refused (exit {exit_.code})"
    return None


def test_every_compose_service_runs_a_command_the_cli_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    commands = {name: s["command"] for name, s in services.items() if s.get("command", [""])[0] == "notigate"}
    assert set(commands) == {"migrate", "api", "worker-critical", "worker-standard", "worker-bulk"}
    refused = [f"{name}: {why}" for name, argv in commands.items() if (why := _accepts(argv[1:]))]
    assert not refused, "\n".join(refused) + capsys.readouterr().err
    # The tiers' queues, each with its own worker: a campaign never delays a one-time code.
    queues = sorted(argv[argv.index("--queue") + 1] for argv in commands.values() if "--queue" in argv)
    assert queues == ["bulk", "critical", "standard"]
    assert {"--appendonly", "noeviction"} <= set(services["redis"]["command"])


def test_every_systemd_unit_runs_a_command_the_cli_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert [u.name for u in units] == [
        "notigate-api.service",
        "notigate-migrate.service",
        "notigate-worker@.service",
    ]
    for unit in units:
        parsed = configparser.ConfigParser(interpolation=None, strict=False)
        parsed.read_string(unit.read_text())
        argv = shlex.split(parsed["Service"]["ExecStart"].replace("%i", "critical"))
        assert argv[0] == "/opt/notigate/.venv/bin/notigate", unit.name
        assert _accepts(argv[1:]) is None, f"{unit.name}: {capsys.readouterr().err}"
