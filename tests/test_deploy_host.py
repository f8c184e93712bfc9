"""deploy/systemd and deploy/compose: parsed, cross-checked, verified by the real tools.

The unit goes through ``systemd-analyze verify`` and ``security --offline`` where systemd
is installed; its ExecStart runs a real server with the sample config. The compose file
cannot run here (no docker daemon): its paths, ports and commands are cross-checked, and
the Prometheus and Alertmanager configs it mounts pass ``promtool`` and ``amtool``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from cronmetrics.cli.main import serve
from cronmetrics.config import load_config

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "systemd" / "cronmetrics.service"
SAMPLE = REPO / "deploy" / "systemd" / "config.yaml"
COMPOSE_DIR = REPO / "deploy" / "compose"
HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each key possibly repeated."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"{UNIT.name}:{number}: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def exec_start() -> list[str]:
    (command,) = unit()["Service"]["ExecStart"]
    return shlex.split(command)


def serve_params(args: list[str]) -> dict[str, Any]:
    assert args[0] == "serve", args
    return dict(serve.make_context("serve", list(args[1:])).params)


# -- systemd -------------------------------------------------------------------------------


def test_unit_is_hardened() -> None:
    service = unit()["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], key
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Restart"] == ["on-failure"]
    assert service["User"] == ["cronmetrics"]
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_flags_agree_with_its_directories() -> None:
    service = unit()["Service"]
    args = exec_start()
    assert Path(args[0]).name == "cronmetrics"
    params = serve_params(args[1:])
    (state,) = service["StateDirectory"]
    assert params["state_dir"] == Path("/var/lib") / state
    # ProtectSystem=strict: the jobs dir is writable only because ReadWritePaths says so
    assert str(params["jobs_dir"]) in service["ReadWritePaths"]
    assert params["config_path"] == Path("/etc/cronmetrics/config.yaml")
    assert f"deploy/systemd/config.yaml {params['config_path']}" in UNIT.read_text()


def test_sample_config_loads_and_has_a_token() -> None:
    params = serve_params(exec_start()[1:])
    config = load_config(SAMPLE, jobs_dir=params["jobs_dir"], state_dir=params["state_dir"])
    assert config.auth.tokens and not config.no_auth
    assert config.snapshot.journal is True


def test_unit_execstart_runs_a_server_with_the_sample_config(tmp_path: Path) -> None:
    """The unit's command line, with its directories moved to tmp, serves and is ready."""
    from liveserver import live_server

    params = serve_params(exec_start()[1:])
    config = tmp_path / "config.yaml"
    config.write_text(SAMPLE.read_text())
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "hello.yaml").write_text("job_name: hello\nautomatic_failure_threshold: 60\n")
    assert params["no_auth"] is None  # the unit never runs without tokens
    with live_server(jobs, tmp_path / "state", args=("--config", str(config))) as server:
        assert httpx.get(f"{server.url}/health/deep", timeout=5).status_code == 200
        denied = httpx.get(f"{server.url}/api/job", timeout=5)
        assert denied.status_code == 401  # the placeholder hash admits nobody


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's cronmetrics (verify checks it exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed: the unit is checked by parsing only")
    installed = shutil.which("cronmetrics")
    assert installed is not None
    text = UNIT.read_text().replace(exec_start()[0], installed)
    target = tmp_path / "cronmetrics.service"
    target.write_text(text)
    return target


def test_systemd_analyze_verify_is_silent(verifiable_unit: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(verifiable_unit)], capture_output=True, text=True
    )
    # verify exits 0 on unknown keys and bad values too: it only warns, so demand silence
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_systemd_analyze_verify_can_fail(verifiable_unit: Path) -> None:
    text = verifiable_unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt")
    verifiable_unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(verifiable_unit)], capture_output=True, text=True
    )
    assert "ProtectSystem" in done.stderr or "protect system" in done.stderr


def test_systemd_exposure_is_low(verifiable_unit: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(verifiable_unit)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {done.stderr[:200]}")
    assert float(match.group(1)) <= 2.0, done.stdout


# -- compose -------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def mounts(service: str) -> dict[PurePosixPath, Path]:
    """Container path -> host path of a service's bind mounts (relative to the file)."""
    out = {}
    for spec in compose()["services"][service].get("volumes", []):
        source, target, *_ = spec.split(":")
        if source.startswith("."):
            out[PurePosixPath(target)] = (COMPOSE_DIR / source).resolve()
    return out


def published(service: str) -> dict[int, int]:
    pairs = (p.split(":") for p in compose()["services"][service]["ports"])
    return {int(container): int(host) for host, container in pairs}


def test_compose_builds_the_repository_image() -> None:
    build = compose()["services"]["cronmetrics"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).is_file()


def test_compose_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    data = compose()
    for name, service in data["services"].items():
        for spec in service.get("volumes", []):
            source = spec.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
            else:
                assert source in data["volumes"], f"{name}: undeclared volume {source}"


def test_compose_cronmetrics_command_ports_and_jobs_agree() -> None:
    service = compose()["services"]["cronmetrics"]
    params = serve_params([str(a) for a in service["command"]])
    port = int(params["bind"].rpartition(":")[2])
    assert published("cronmetrics") == {port: port}
    jobs = mounts("cronmetrics")[PurePosixPath(str(params["jobs_dir"]))]
    assert jobs == REPO / "jobs.d"
    state = PurePosixPath(str(params["state_dir"]))
    assert any(v.endswith(f":{state}") for v in service["volumes"]), "state on a volume"


def prometheus_config() -> dict[str, Any]:
    (config_flag,) = [
        a for a in compose()["services"]["prometheus"]["command"] if a.startswith("--config.file=")
    ]
    host = mounts("prometheus")[PurePosixPath(config_flag.partition("=")[2])]
    data = yaml.safe_load(host.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_prometheus_scrapes_cronmetrics_and_alerts_alertmanager() -> None:
    data = compose()
    config = prometheus_config()
    (scrape,) = config["scrape_configs"]
    assert scrape["job_name"] == "cronmetrics"  # what the alert rules select
    (target,) = scrape["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    assert host in data["services"]
    command = [str(a) for a in data["services"][host]["command"]]
    assert serve_params(command)["bind"].endswith(f":{port}")
    (am,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    am_host, _, am_port = am.partition(":")
    assert am_host in data["services"] and int(am_port) in published(am_host)
    (rules,) = config["rule_files"]
    assert mounts("prometheus")[PurePosixPath(rules)] == REPO / "docs" / "alerts.yaml"


def test_docs_use_the_same_rules_path_as_compose() -> None:
    (rules,) = prometheus_config()["rule_files"]
    for doc in ("getting-started.md", "prometheus.md"):
        paths = set(
            re.findall(
                r"/etc/prometheus/\S*cronmetrics-alerts\.yaml", (REPO / "docs" / doc).read_text()
            )
        )
        assert paths == {rules}, doc


def test_compose_prometheus_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    """promtool on the config as the container sees it: the mounts laid out under tmp."""
    config = prometheus_config()
    for container, host in mounts("prometheus").items():
        target = tmp_path / container.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(host, target)
    config["rule_files"] = [
        str(tmp_path / PurePosixPath(r).relative_to("/")) for r in config["rule_files"]
    ]
    path = tmp_path / "etc" / "prometheus" / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def doc_alertmanager_config() -> str:
    text = (REPO / "docs" / "prometheus.md").read_text()
    blocks = re.findall(
        r"^```yaml\n(# alertmanager\.yml\n.*?)^```$", text, re.MULTILINE | re.DOTALL
    )
    assert len(blocks) == 1
    return str(blocks[0])


def test_docs_receivers_cover_email_slack_and_a_webhook() -> None:
    config = yaml.safe_load(doc_alertmanager_config())
    kinds = {k for r in config["receivers"] for k in r if k.endswith("_configs")}
    assert {"email_configs", "slack_configs", "webhook_configs"} <= kinds
    assert config["route"]["group_by"] == ["alertname", "job_name", "host"]


@pytest.mark.parametrize("source", ["compose", "docs"])
def test_alertmanager_configs_pass_amtool(amtool: str, source: str, tmp_path: Path) -> None:
    if source == "compose":
        (flag,) = [
            a
            for a in compose()["services"]["alertmanager"]["command"]
            if a.startswith("--config.file=")
        ]
        path = mounts("alertmanager")[PurePosixPath(flag.partition("=")[2])]
    else:
        path = tmp_path / "alertmanager.yml"
        path.write_text(doc_alertmanager_config())
    done = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_check_can_fail(amtool: str, tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(
        doc_alertmanager_config().replace("receiver: job-owners", "receiver: nobody", 1)
    )
    done = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    assert done.returncode != 0
