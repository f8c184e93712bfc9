"""Dockerfile: a light structural check (no Docker engine in the test environment)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
STATE_DIR = "/var/lib/cronmetrics"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def _args(keyword: str) -> list[str]:
    return [args for kw, args in _instructions() if kw == keyword]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _args("ENV"):
        env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def test_image_builds_from_a_slim_python_base() -> None:
    (base,) = _args("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base)


def test_image_runs_as_the_unprivileged_cronmetrics_user() -> None:
    user = _args("USER")[-1].split(":")[0]
    assert user not in {"root", "0"}
    run = " ".join(_args("RUN"))
    assert re.search(r"useradd\b.*\bcronmetrics\b", run)
    if user.isdigit():
        assert re.search(rf"useradd\b.*--uid {user}\b.*\bcronmetrics\b", run)
    else:
        assert user == "cronmetrics"


def test_state_dir_is_a_volume_and_the_server_uses_it() -> None:
    volumes = " ".join(_args("VOLUME"))
    assert STATE_DIR in volumes
    assert _env()["CRONMETRICS_STATE_DIR"] == STATE_DIR
    assert _env()["CRONMETRICS_JOBS_DIR"] == "/etc/cronmetrics/jobs.d"


def test_entrypoint_serves_on_the_exposed_port() -> None:
    (entrypoint,) = _args("ENTRYPOINT")
    (cmd,) = _args("CMD")
    assert json.loads(entrypoint) == ["cronmetrics"]
    command = json.loads(cmd)
    assert command[0] == "serve"
    port = command[command.index("--bind") + 1].rpartition(":")[2]
    assert port in " ".join(_args("EXPOSE")).split()
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "cronmetrics" in scripts


def test_healthcheck_probes_health_on_the_exposed_port() -> None:
    (healthcheck,) = _args("HEALTHCHECK")
    probe = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert probe[:2] == ["python", "-c"]
    (port,) = _args("EXPOSE")
    assert f"http://127.0.0.1:{port}/health'" in probe[2]
    compile(probe[2], "<healthcheck>", "exec")


def test_everything_copied_into_the_image_exists_and_is_not_dockerignored() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in DOCKERIGNORE.read_text().splitlines(), ".dockerignore should be an allowlist"
    for args in _args("COPY"):
        *sources, _dest = args.split()
        for source in sources:
            if source.startswith("--"):
                continue
            assert (REPO_ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
