"""docker-compose.yml runs the five services, every dbjobs command in it exists, and it holds no secret."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_services_and_their_healthchecks() -> None:
    services = compose()["services"]
    assert {"redis", "postgres", "worker", "beat", "flower"} <= set(services)
    assert all("healthcheck" in s for s in services.values())
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_every_dbjobs_command_parses() -> None:
    commands = [s["command"] for s in compose()["services"].values() if s.get("command", [""])[0] == "dbjobs"]
    assert {c[1] for c in commands} == {"worker", "start-scheduler"}
    for command in commands:
        build_parser().parse_args(command[1:])


def test_secrets_come_from_the_environment() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"PASSWORD|_KEY|BASIC_AUTH", line) and ":" in line and not line.lstrip().startswith("#"):
            value = line.split(":", 1)[1]
            assert "${" in value, f"a secret is written into docker-compose.yml: {line.strip()}"
    assert "postgres:${POSTGRES_PASSWORD:?" in text
