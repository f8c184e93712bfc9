"""The one-file client: stdlib only, deterministic, and the same behaviour as the full CLI
when run under ``python3 -I -S`` (no site packages at all) against a real server."""

from __future__ import annotations

import ast
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipapp
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from liveserver import wait_for

from cronmetrics.client import bundle
from cronmetrics.jobs import model

REPO = Path(__file__).resolve().parent.parent
CLIENT = REPO / "cronmetrics" / "client"
JOB = "logrotate@web1"
#: cronmetrics modules the cron host side may import: the package (its version), the one
#: exception hierarchy, and itself.
ALLOWED_OWN = ("cronmetrics", "cronmetrics.errors", "cronmetrics.client")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _own_allowed(module: str) -> bool:
    return module in ALLOWED_OWN or module.startswith("cronmetrics.client.")


@pytest.mark.parametrize("name", bundle.MODULES)
def test_every_bundled_module_imports_only_the_standard_library(name: str) -> None:
    for module in _imports(REPO / "cronmetrics" / name):
        top = module.partition(".")[0]
        if top == "cronmetrics":
            assert _own_allowed(module), f"{name} imports {module}"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", f"{name}: {module}"


def test_every_client_module_is_bundled_or_server_side() -> None:
    shipped = {Path(n).name for n in bundle.MODULES if n.startswith("client/")}
    present = {p.name for p in CLIENT.glob("*.py")}
    assert present - shipped == {"bundle.py"}  # the writer runs on the server only


@pytest.mark.parametrize("name", bundle.MODULES)
def test_bundled_modules_are_python_3_9_code(name: str) -> None:
    """3.9 syntax, and none of the 3.10+ APIs this code would otherwise reach for."""
    source = (REPO / "cronmetrics" / name).read_text()
    ast.parse(source, feature_version=(3, 9))
    for newer in ("slots=True", "kw_only=", "dt.UTC", "datetime.UTC", "process_group="):
        assert newer not in source, f"{name} uses {newer!r} (Python >= 3.10)"


def test_client_id_patterns_match_the_servers() -> None:
    from cronmetrics.client import settings

    assert (settings.NAME_PATTERN, settings.HOST_PATTERN) == (
        model.NAME_PATTERN,
        model.HOST_PATTERN,
    )


def test_importing_the_client_loads_nothing_but_the_standard_library(tmp_path: Path) -> None:
    """In a fresh ``-I -S`` interpreter with only the bundle on sys.path."""
    pyz = tmp_path / "c.pyz"
    pyz.write_bytes(bundle.bundle_bytes())
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import cronmetrics.client.cli, cronmetrics.client.runner, cronmetrics.client.ingest;"
        "import json; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(pyz)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded = json.loads(out)
    foreign = [
        m
        for m in loaded
        if m.partition(".")[0] not in sys.stdlib_module_names
        and not (m.startswith("cronmetrics") and _own_allowed(m))
        and m not in ("__main__", "__mp_main__")
    ]
    assert foreign == []
    assert "cronmetrics.client.http" in loaded


def test_the_full_cli_runs_the_light_commands_without_click_or_pydantic() -> None:
    probe = (
        "import sys, runpy;"
        "from cronmetrics.cli import entry;"
        "sys.argv = ['cronmetrics', 'run', '--help'];"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: entry.main()\n"
        "    except SystemExit: pass\n"
        "print(sorted(m for m in ('click', 'pydantic', 'flask', 'cronmetrics.config',"
        " 'httpx', 'http.client', 'email.parser') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_bundle_is_deterministic_and_a_zipapp() -> None:
    first = bundle.bundle_bytes()
    bundle.bundle_bytes.cache_clear()
    bundle.bundle_digest.cache_clear()
    assert bundle.bundle_bytes() == first
    archive = zipfile.ZipFile(io.BytesIO(first))
    names = archive.namelist()
    assert names == sorted(names)
    assert "__main__.py" in names
    assert {f"cronmetrics/{m}" for m in bundle.MODULES} <= set(names)
    assert all(i.date_time == bundle.FIXED_DATE for i in archive.infolist())
    assert first.startswith(b"#!/usr/bin/env python3\n")


def test_client_bundle_command_writes_an_executable(tmp_path: Path) -> None:
    target = tmp_path / "cronmetrics.pyz"
    subprocess.run(
        [sys.executable, "-m", "cronmetrics", "client-bundle", str(target)],
        check=True,
        capture_output=True,
    )
    assert target.read_bytes() == bundle.bundle_bytes()
    assert os.access(target, os.X_OK)
    assert zipapp.get_interpreter(target) == "/usr/bin/env python3"
    version = subprocess.run([str(target), "--version"], capture_output=True, text=True)
    assert version.stdout.strip().startswith("cronmetrics ")


def test_the_bundle_carries_bytecode_that_zipimport_uses_and_any_process_rebuilds(
    tmp_path: Path,
) -> None:
    """Each module goes with its pyc: this interpreter loads that instead of compiling the
    source at every start, and another process (another hash seed, other modules loaded)
    writes the very same bytes."""
    names = zipfile.ZipFile(io.BytesIO(bundle.bundle_bytes())).namelist()
    assert {f"cronmetrics/{m[:-3]}.pyc" for m in bundle.MODULES} <= set(names)
    target = tmp_path / "cronmetrics.pyz"
    target.write_bytes(bundle.bundle_bytes())
    probe = (
        f"import sys; sys.path.insert(0, {str(target)!r});"
        "import cronmetrics.client.cli as m, cronmetrics.errors as e; print(m.__file__, e.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert [p.rsplit("/", 1)[1] for p in out.stdout.split()] == ["cli.pyc", "errors.pyc"]
    build = (
        "import sys; from cronmetrics.client import bundle;"
        " sys.stdout.buffer.write(bundle.bundle_bytes())"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        again = subprocess.run([sys.executable, "-c", build], capture_output=True, env=env)
        assert again.stdout == bundle.bundle_bytes()


def test_a_foreign_pyc_falls_back_to_the_source(tmp_path: Path) -> None:
    """Another Python version finds a magic number not its own and compiles the source."""
    archive = tmp_path / "foreign.pyz"
    with (
        zipfile.ZipFile(io.BytesIO(bundle.bundle_bytes())) as src,
        zipfile.ZipFile(archive, "w") as dst,
    ):
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".pyc"):
                data = b"\x00\x00\r\n" + data[4:]  # no Python's magic number
            dst.writestr(info, data)
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(archive), "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("cronmetrics ")


# -- against a real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def downloaded(bundled_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The file as a fleet gets it: ``curl -o cronmetrics.pyz URL/client.pyz``."""
    answer = httpx.get(f"{bundled_url}/client.pyz", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    path = tmp_path_factory.mktemp("pyz") / "cronmetrics.pyz"
    path.write_bytes(answer.content)
    yield path


def test_the_server_offers_the_same_bytes_with_an_etag(bundled_url: str) -> None:
    answer = httpx.get(f"{bundled_url}/client.pyz", timeout=30)
    assert answer.content == bundle.bundle_bytes()
    etag = answer.headers["etag"]
    again = httpx.get(f"{bundled_url}/client.pyz", headers={"If-None-Match": etag}, timeout=30)
    assert again.status_code == 304


def pyz(path: Path, *args: str, url: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONMETRICS_")}
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-I", "-S", str(path), *args],
        env={**env, "CRONMETRICS_URL": url},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def last_two(url: str, job: str = JOB) -> list[dict[str, object]]:
    body = httpx.get(f"{url}/api/job/{job}/results", params={"limit": 2}, timeout=5).json()
    return body["results"]  # type: ignore[no-any-return]


def test_zipapp_run_keeps_the_exit_code_and_reports(downloaded: Path, bundled_url: str) -> None:
    proc = pyz(
        downloaded, "run", "--job", JOB, "--", "sh", "-c", "echo out; exit 3", url=bundled_url
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert out == b"out\n"
    assert b"Traceback" not in err
    final, start = last_two(bundled_url)
    assert (start["status"], final["status"], final["exit_code"]) == ("start", "failure", 3)
    assert start["run_id"] == final["run_id"]
    assert "out" in str(final["output"])


def test_zipapp_forwards_sigterm_and_exits_as_the_command(
    downloaded: Path, bundled_url: str, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    script = f"trap 'echo got-term; exit 42' TERM; touch {ready}; while :; do sleep 0.1; done"
    proc = pyz(downloaded, "run", "--job", JOB, "--", "sh", "-c", script, url=bundled_url)
    wait_for(ready.exists, "the wrapped command to start", timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 42, err
    assert b"got-term" in out
    final = last_two(bundled_url)[0]
    assert (final["status"], final["exit_code"]) == ("failure", 42)
    assert "SIGTERM" in str(final["output"])


def test_zipapp_result_submit_and_ingest(
    downloaded: Path, bundled_url: str, tmp_path: Path
) -> None:
    proc = pyz(
        downloaded,
        "result", "submit", "--job", JOB, "--status", "success", "--duration", "4",
        url=bundled_url,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert last_two(bundled_url)[0]["duration"] == 4
    log = tmp_path / "runs.jsonl"
    log.write_text(json.dumps({"ts": time.time(), "exit": 5, "msg": "from a log"}) + "\n")
    proc = pyz(downloaded, "ingest", str(log), "--job", JOB, url=bundled_url)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"1 results submitted" in err
    newest = last_two(bundled_url)[0]
    assert (newest["exit_code"], newest["output"]) == (5, "from a log")


def test_zipapp_with_the_server_down_keeps_the_exit_code(downloaded: Path) -> None:
    from liveserver import free_port

    url = f"http://127.0.0.1:{free_port()}"
    proc = pyz(
        downloaded,
        "run",
        "--report-timeout",
        "1",
        "--job",
        JOB,
        "--",
        "sh",
        "-c",
        "exit 9",
        url=url,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 9
    assert b"Traceback" not in err
    assert b"connection refused" in err


def test_answers_are_parsed_with_content_length_or_chunked() -> None:
    from cronmetrics.client.wire import ProtocolError, parse_answer

    plain = b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}junk"
    assert parse_answer(plain) == (429, {"retry-after": "3", "content-length": "2"}, b"{}")
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert parse_answer(chunked)[2] == b"abcde"
    for broken in (b"", b"\x15\x03\x01\x00\x02\x02\x50", b"HTTP/1.1 200 OK\r\nno end"):
        with pytest.raises(ProtocolError):
            parse_answer(broken)


def _oldest_pythons() -> list[str]:
    """Python 3.9 and 3.10 interpreters on this machine (pyenv's, else on PATH; a pyenv
    shim is not one: it refuses versions that are not selected)."""
    import glob
    import shutil

    found = []
    for version in ("3.9", "3.10"):
        pattern = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3")
        candidates = [*sorted(glob.glob(pattern)), shutil.which(f"python{version}")]
        path = next((c for c in candidates if c and "/shims/" not in c), None)
        if path:
            found.append(path)
    return found


@pytest.mark.parametrize("python", _oldest_pythons() or [None])
def test_the_bundle_runs_on_the_oldest_pythons_it_promises(
    python: str | None, tmp_path: Path
) -> None:
    """Python >= 3.9: a runtime ``X | None`` (3.10 syntax) in a client module broke every
    command there, ``run`` included (exit 1, the command never ran)."""
    if python is None:
        pytest.skip("no Python 3.9 or 3.10 on this machine")
    from liveserver import free_port

    target = tmp_path / "cronmetrics.pyz"
    target.write_bytes(bundle.bundle_bytes())
    marker = tmp_path / "ran"
    done = subprocess.run(
        [python, "-I", "-S", str(target), "run", "--url", f"http://127.0.0.1:{free_port()}",
         "--job", JOB, "--report-timeout", "0.5", "--", "sh", "-c", f"touch {marker}; exit 3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert marker.exists()
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
