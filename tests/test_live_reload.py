"""Live config with a real server: SIGHUP rotates a token under load without dropping a
report or a connection; a renewed TLS certificate is served to the next connection."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from certs import self_signed
from liveserver import LiveServer, live_server, wait_for

from cronmetrics.web.auth import hash_token
from cronmetrics.web.tls import fingerprint

pytestmark = pytest.mark.slow

OLD, NEW = "cm_old-token-0123456789abcdef", "cm_new-token-0123456789abcdef"


def config_for(token: str, *, extra: str = "") -> str:
    return (
        "auth:\n  tokens:\n"
        f'    - {{name: ops, sha256: "{hash_token(token)}", scopes: [submit, read]}}\n' + extra
    )


def records(server: LiveServer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def logged(server: LiveServer, message: str) -> list[dict[str, Any]]:
    return [r for r in records(server) if r.get("msg", "").startswith(message)]


class Streamer(threading.Thread):
    """Submits runs as fast as it can; on a 401 with the old token it switches to the new
    one (a client being rotated). ``keepalive``: one connection for the whole test."""

    def __init__(self, port: int, name: str, *, keepalive: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.job, self.keepalive = port, name, keepalive
        self.token = OLD
        self.statuses: list[tuple[str, int]] = []
        self.errors: list[BaseException] = []
        self.sockets: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            for i in range(100_000):  # bounded; stopped long before
                if self.stop.is_set():
                    return
                if not self.keepalive:
                    conn.close()
                conn.request(
                    "POST",
                    f"/api/ping/{self.job}/success?run_id={self.job}-{i}",
                    body=b"ok",
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                response = conn.getresponse()
                response.read()
                if self.keepalive and conn.sock is not None:
                    self.sockets.add(id(conn.sock))
                self.statuses.append((self.token, response.status))
                if response.status == 401 and self.token == OLD:
                    self.token = NEW
        except BaseException as exc:  # a dropped connection or a reset lands here
            self.errors.append(exc)
        finally:
            conn.close()


def test_a_token_rotated_with_sighup_under_load_drops_no_report(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    for name in ("stream_a", "stream_b"):
        (jobs / f"{name}.yaml").write_text(f"job_name: {name}\nautomatic_failure_threshold: 3600\n")
    config = tmp_path / "cronmetrics.yaml"
    config.write_text(config_for(OLD))
    with live_server(jobs, tmp_path / "state", args=["--config", str(config)]) as server:
        streamers = [
            Streamer(server.port, "stream_a", keepalive=True),
            Streamer(server.port, "stream_b", keepalive=False),
        ]
        for streamer in streamers:
            streamer.start()
        wait_for(lambda: all(len(s.statuses) >= 20 for s in streamers), "reports before")
        config.write_text(config_for(NEW))
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for(
            lambda: all(
                s.token == NEW and sum(t == NEW for t, _ in s.statuses) >= 20 for s in streamers
            ),
            "reports after the rotation",
            process=server.process,
            log=server.log,
        )
        for streamer in streamers:
            streamer.stop.set()
            streamer.join(10)

        for streamer in streamers:
            assert streamer.errors == [], server.log()
            # the old token worked until the reload, then got exactly one 401; nothing else
            assert {code for token, code in streamer.statuses if token == OLD} == {200, 401}
            assert [c for t, c in streamer.statuses if t == OLD].count(401) == 1
            assert {code for token, code in streamer.statuses if token == NEW} == {200}
            acknowledged = sum(code == 200 for _, code in streamer.statuses)
            state = httpx.get(
                f"{server.url}/api/job/{streamer.job}",
                headers={"Authorization": f"Bearer {NEW}"},
                timeout=10,
            ).json()["state"]
            assert state["runs_total"] == acknowledged  # every acknowledged report is there
        assert len(streamers[0].sockets) == 1  # one connection, never dropped
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert (
                client.get("/api/job", headers={"Authorization": f"Bearer {OLD}"}).status_code
                == 401
            )
            assert (
                client.get("/api/job", headers={"Authorization": f"Bearer {NEW}"}).status_code
                == 200
            )
        assert len(logged(server, "worker ready")) == 1  # the worker was never replaced
        assert logged(server, "SIGHUP: reloading the configuration")
        reloaded = logged(server, "config reloaded")
        assert reloaded and reloaded[-1]["changed"] == ["auth"]
        assert reloaded[-1]["reason"] == "SIGHUP"


def test_sighup_refuses_a_restart_key_by_name_and_keeps_serving(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text("job_name: a\nautomatic_failure_threshold: 60\n")
    config = tmp_path / "cronmetrics.yaml"
    config.write_text(config_for(OLD))
    with live_server(jobs, tmp_path / "state", args=["--config", str(config)]) as server:
        # a broken file first: every problem logged with file:line, the old config serves
        config.write_text(config_for(NEW, extra="limits: {max_body_bytes: 1}\nretention: 3\n"))
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for(lambda: len(logged(server, "invalid config")) == 2, "the refusal", log=server.log)
        problems = sorted(r["problem"] for r in logged(server, "invalid config"))
        assert problems[0].startswith(f"{config}:4:") and "max_body_bytes" in problems[0]
        assert problems[1].startswith(f"{config}:5:") and "retention" in problems[1]
        deep = httpx.get(f"{server.url}/health/deep", timeout=10)
        assert deep.status_code == 200 and "config_file" in deep.json()["warnings"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert "cronmetrics_config_file_last_reload_successful 0.0" in metrics
        auth = {"Authorization": f"Bearer {OLD}"}
        assert httpx.post(f"{server.url}/api/ping/a/success", headers=auth).status_code == 200

        # then a valid one that also changes the snapshots: tokens apply, snapshot waits for
        # a restart (a bind in the file would not count: --bind, a flag, wins over it)
        config.write_text(config_for(NEW, extra="snapshot: {interval: 5}\nbind: 127.0.0.1:1\n"))
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for(lambda: logged(server, "config key 'snapshot'"), "the refusal", log=server.log)
        line = logged(server, "config key 'snapshot'")[0]
        assert line["level"] == "warning" and line["key"] == "snapshot"
        assert not logged(server, "config key 'bind'")
        assert "needs a restart" in line["msg"]
        auth = {"Authorization": f"Bearer {NEW}"}
        wait_for(
            lambda: httpx.post(f"{server.url}/api/ping/a/success", headers=auth).status_code == 200,
            "the new token",
        )
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert "cronmetrics_config_file_last_reload_successful 1.0" in metrics
        assert "cronmetrics_config_file_restart_required 1.0" in metrics


def test_a_config_file_changed_on_disk_applies_without_a_signal(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text("job_name: a\nautomatic_failure_threshold: 60\n")
    config = tmp_path / "cronmetrics.yaml"
    config.write_text(config_for(OLD))
    with live_server(jobs, tmp_path / "state", args=["--config", str(config)]) as server:
        new = tmp_path / "next.yaml"  # replaced by a rename, like an editor or a ConfigMap
        new.write_text(config_for(NEW))
        new.replace(config)
        auth = {"Authorization": f"Bearer {NEW}"}
        wait_for(
            lambda: httpx.post(f"{server.url}/api/ping/a/success", headers=auth).status_code == 200,
            "the change on disk",
            log=server.log,
        )
        assert logged(server, "config reloaded")[-1]["reason"] == "file changed"


def test_a_larger_body_limit_applies_through_gunicorn_too(tmp_path: Path) -> None:
    """A changed body limit applies end to end, through gunicorn's worker (which frames
    requests by it too) and the app."""
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text("job_name: a\nautomatic_failure_threshold: 60\n")
    config = tmp_path / "cronmetrics.yaml"
    config.write_text(config_for(OLD, extra="limits: {max_body_bytes: 4096}\n"))
    auth = {"Authorization": f"Bearer {OLD}"}
    body = b"z" * 8000
    with live_server(jobs, tmp_path / "state", args=["--config", str(config)]) as server:
        url = f"{server.url}/api/ping/a/success"
        assert httpx.post(url, headers=auth, content=body, timeout=10).status_code == 413
        config.write_text(config_for(OLD, extra="limits: {max_body_bytes: 16384}\n"))
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for(lambda: logged(server, "config reloaded"), "the reload", log=server.log)
        assert httpx.post(url, headers=auth, content=body, timeout=10).status_code == 200
        config.write_text(config_for(OLD, extra="limits: {max_body_bytes: 2048}\n"))
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for(lambda: len(logged(server, "config reloaded")) == 2, "the second reload")
        assert httpx.post(url, headers=auth, content=b"z" * 3000, timeout=10).status_code == 413


def served_fingerprint(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_a_renewed_certificate_is_served_to_the_next_connection(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text("job_name: a\nautomatic_failure_threshold: 60\n")
    live_dir, next_dir = tmp_path / "tls", tmp_path / "renewed"
    live_dir.mkdir()
    next_dir.mkdir()
    cert, key = self_signed(live_dir)
    first = fingerprint(cert)
    args = ["--no-auth", "--tls-cert", str(cert), "--tls-key", str(key)]
    with live_server(jobs, tmp_path / "state", args=args, scheme="https") as server:
        trusting = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trusting, timeout=10) as old_client:
            assert old_client.get(f"{server.url}/health").status_code == 200
            assert served_fingerprint(server.port) == first

            # a renewal caught halfway (new key, old certificate) keeps the old one serving
            new_cert, new_key = self_signed(next_dir)
            os.replace(new_key, key)
            assert served_fingerprint(server.port) == first
            wait_for(lambda: logged(server, "cannot load the new TLS"), "the refusal")
            os.replace(new_cert, cert)
            renewed = fingerprint(cert)
            assert renewed != first
            wait_for(lambda: served_fingerprint(server.port) == renewed, "the new certificate")
            # the connection opened before keeps working with the certificate it made
            assert old_client.get(f"{server.url}/health").status_code == 200
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as c:
            assert c.get(f"{server.url}/health").status_code == 200
        deep = httpx.get(f"{server.url}/health/deep", verify=False, timeout=10).json()
        assert deep["checks"]["tls"]["ok"] is True
        assert renewed[:16] in deep["checks"]["tls"]["detail"]
        assert logged(server, "TLS certificate reloaded")
        assert (
            logged(server, f"listening on https://127.0.0.1:{server.port}")[0]["scheme"] == "https"
        )
