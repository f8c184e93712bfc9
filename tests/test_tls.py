"""HTTPS served by gunicorn itself: ``--tls-cert/--tls-key`` or ``tls:`` in the config.

The certificate is generated here (self-signed, for 127.0.0.1), the real server is
started, and a client that trusts exactly that certificate gets through while plain HTTP
and clients that don't trust it do not.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from certs import self_signed
from liveserver import LiveServer, live_server

from cronmetrics.web.auth import hash_token

pytestmark = pytest.mark.slow

TOKEN = "cm_tls-test-token-0123456789abcdef"
MAX_BODY = 4096


def write_config(path: Path, tls: tuple[Path, Path] | None) -> Path:
    lines = [
        "auth:",
        "  tokens:",
        f'    - {{name: tls-test, sha256: "{hash_token(TOKEN)}", scopes: [submit, read]}}',
        f"limits: {{max_body_bytes: {MAX_BODY}}}",
    ]
    if tls is not None:
        lines.append(f'tls: {{cert: "{tls[0]}", key: "{tls[1]}"}}')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module", params=["flags", "config"])
def https_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Path]]:
    """One server per way of configuring TLS, shared by the tests of this module."""
    from conftest import REPO_ROOT

    tmp_path = tmp_path_factory.mktemp(f"tls-{request.param}")
    jobs_dir = tmp_path / "jobs.d"
    shutil.copytree(REPO_ROOT / "jobs.d", jobs_dir)
    cert, key = self_signed(tmp_path)
    if request.param == "flags":
        config = write_config(tmp_path / "config.yaml", None)
        args = ["--config", str(config), "--tls-cert", str(cert), "--tls-key", str(key)]
    else:
        config = write_config(tmp_path / "config.yaml", (cert, key))
        args = ["--config", str(config)]
    with live_server(jobs_dir, tmp_path / "state", args=args, scheme="https") as live:
        yield live, cert


def test_https_works_with_the_certificate_as_ca(https_server: tuple[LiveServer, Path]) -> None:
    live, cert = https_server
    trusting = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=trusting, timeout=10) as client:
        assert client.get(f"{live.url}/health").status_code == 200
        ok = client.post(
            f"{live.url}/api/ping/home_rsync/success",
            headers={"Authorization": f"Bearer {TOKEN}"},
            content=b"all good",
        )
        assert ok.status_code == 200, ok.text
        denied = client.get(f"{live.url}/api/job", headers={"Authorization": "Bearer cm_nope"})
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "UNAUTHORIZED"


def test_https_refuses_plain_http_and_untrusting_clients(
    https_server: tuple[LiveServer, Path],
) -> None:
    live, _ = https_server
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{live.port}/health", timeout=5)
    with pytest.raises(httpx.ConnectError):  # not signed by any CA the client trusts
        httpx.get(f"{live.url}/health", timeout=5)
    assert live.process.poll() is None  # a bad client does not take the server down


def test_chunked_body_over_the_limit_is_refused_through_gunicorn(
    https_server: tuple[LiveServer, Path],
) -> None:
    live, cert = https_server

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"z" * 1024

    trusting = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=trusting, timeout=10) as client:
        response = client.post(
            f"{live.url}/api/ping/cert_renew/success",
            headers={"Authorization": f"Bearer {TOKEN}"},
            content=chunks(),
        )
        assert response.request.headers.get("Transfer-Encoding") == "chunked"
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        listed = client.get(
            f"{live.url}/api/job/cert_renew", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert listed.json()["state"]["runs_total"] == 0
