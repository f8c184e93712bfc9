"""``/metrics`` rendering: format, escaping, caching, gzip ."""

from __future__ import annotations

import gzip
import random
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cronmetrics.jobs.model import JobDefinition, ResultIn
from cronmetrics.jobs.repository import load_directory
from cronmetrics.monitor import Monitor
from cronmetrics.web.exposition import FAMILIES, Exposition
from cronmetrics.web.metrics import SelfMetrics
from cronmetrics.windows import Window, parse_matcher

RICH = Path(__file__).resolve().parent / "data" / "jobs_rich"
T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z


def rich_monitor() -> Monitor:
    """Every status and reason, evaluated at ``T0 + 200``."""
    m = Monitor(accept_unknown=True)
    loaded = load_directory(RICH)
    assert not loaded.invalid
    definitions = {i: jf.definition for i, jf in loaded.jobs.items()}
    extra = {"job_name": "maint_window_job", "automatic_failure_threshold": 60}
    definitions["maint_window_job"] = JobDefinition.model_validate(extra)  # silenced below
    m.apply_definitions(definitions, T0)
    submit = [
        {"job_name": "ok_job", "status": "success", "duration": 12.5, "exit_code": 0},
        {"job_name": "running_job", "host": "web1", "status": "start"},
        {"job_name": "timeout_job", "status": "start"},
        {"job_name": "failed_job", "host": "db1", "status": "failure", "exit_code": 3},
        {"job_name": "missed_job", "status": "success", "duration": 1},
        {"job_name": "weird.labels-job", "host": "db1", "status": "success"},
        {"job_name": "adhoc", "host": "h9", "status": "success"},
        {"job_name": "scheduled_job", "status": "success"},
    ]
    m.submit([ResultIn.model_validate(r) for r in submit], T0 + 10)
    m.tick(T0 + 200)
    window = Window("w1", (parse_matcher("job_name=maint_window_job"),), T0, T0 + 7200)
    pending = Window("w2", (parse_matcher("env=~nowhere"),), T0 + 7200, T0 + 9000)
    m.set_windows([window, pending], T0 + 200)
    return m


def body(exposition: Exposition, now: float, *, gz: bool = False) -> bytes:
    return b"".join(exposition.render(now, gzip=gz))


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.timestamp is None
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def by_job(samples: list[tuple[dict[str, str], float]]) -> dict[str, tuple[dict[str, str], float]]:
    return {labels["job_name"]: (labels, value) for labels, value in samples}


@pytest.fixture
def rich_text() -> str:
    m = rich_monitor()
    metrics = SelfMetrics(m.counts, lambda: m.window_counts(T0 + 200))
    return body(Exposition(m, metrics.render), T0 + 200).decode()


def test_rich_fixture_passes_promtool(promtool: str, rich_text: str) -> None:
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=rich_text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    # promtool exits 0 when only lint warnings about naming are printed; any error is fatal
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert b"error" not in proc.stderr.lower()


def test_every_status_and_reason_is_exported(rich_text: str) -> None:
    got = families(rich_text)
    reasons = {
        k: labels["reason"] for k, (labels, _) in by_job(got["cronjob_status_reason"]).items()
    }
    assert reasons == {
        "ok_job": "ok",
        "running_job": "running",
        "timeout_job": "timeout",
        "failed_job": "failed",
        "missed_job": "missed deadline",
        "never_job": "never reported",
        "pending_job": "pending",
        "paused_job": "paused",
        "maint_job": "maintenance",
        "maint_until_job": "maintenance",
        "maint_window_job": "maintenance",
        "scheduled_job": "ok",
        "weird.labels-job": "ok",
        "adhoc": "ok",
    }
    status = by_job(got["cronjob_status"])
    assert status["ok_job"] == ({**status["ok_job"][0], "status": "active"}, 1)
    assert status["failed_job"][1] == 0
    assert status["paused_job"][0]["status"] == "paused"
    assert status["maint_window_job"] == (
        {**status["maint_window_job"][0], "status": "maintenance"},
        -1,
    )
    ends = by_job(got["cronjob_maintenance_end_timestamp_seconds"])
    assert {k: v for k, (_, v) in ends.items()} == {
        "maint_window_job": T0 + 7200,
        "maint_until_job": 4070908800.0,
    }
    assert got["cronmetrics_maintenance_windows"] == [
        ({"state": "active"}, 1.0),
        ({"state": "pending"}, 1.0),
    ]
    assert status["paused_job"][1] == -1
    assert status["maint_job"][0]["status"] == "maintenance"
    assert status["maint_job"][1] == -1
    assert by_job(got["cronjob_last_duration_seconds"])["ok_job"][1] == 12.5
    assert by_job(got["cronjob_last_exit_code"])["failed_job"][1] == 3
    assert by_job(got["cronjob_running"])["running_job"][1] == 1
    assert by_job(got["cronjob_unmanaged"]) == {"adhoc": ({"job_name": "adhoc", "host": "h9"}, 1)}
    assert by_job(got["cronjob_runs_total"])["failed_job"][1] == 1
    assert by_job(got["cronjob_failures_total"])["failed_job"][1] == 1
    assert by_job(got["cronjob_threshold_seconds"])["missed_job"][1] == 60
    assert by_job(got["cronjob_deadline_timestamp_seconds"])["missed_job"][1] == T0 + 70
    assert by_job(got["cronjob_last_failure_timestamp_seconds"])["ok_job"][1] == 0
    jobs = {labels["status"]: value for labels, value in got["cronjobs"]}
    assert jobs == {"active": 10, "maintenance": 3, "paused": 1, "retired": 1}
    assert got["cronjobs_failing"][0][1] == 4


def test_retired_jobs_are_not_exported(rich_text: str) -> None:
    assert "retired_job" not in rich_text


def test_labels_with_quotes_backslashes_newlines_and_unicode_round_trip(rich_text: str) -> None:
    labels, _ = by_job(families(rich_text)["cronjob_status"])["weird.labels-job"]
    assert labels == {
        "job_name": "weird.labels-job",
        "host": "db1",
        "quote": 'say "hi"',
        "backslash": "C:\\path\\to\\dir\\",
        "newline": "line one\nline two",
        "unicode": "Zürich ☃ 日本 🚀",
        "empty": "",
        "status": "active",
    }


def test_no_job_label_no_timestamps_no_string_values(rich_text: str) -> None:
    for family in text_string_to_metric_families(rich_text):
        for sample in family.samples:
            assert "job" not in sample.labels
            assert sample.timestamp is None
            assert isinstance(sample.value, int | float)
    for line in rich_text.splitlines():
        if line and not line.startswith("#"):
            rest = line[line.rfind("}") + 1 :] if "{" in line else line.split(" ", 1)[1]
            assert len(rest.split()) == 1, line  # a value and no timestamp
            float(rest)


def test_each_family_header_appears_once(rich_text: str) -> None:
    types = Counter(line.split()[2] for line in rich_text.splitlines() if line.startswith("# TYPE"))
    helps = Counter(line.split()[2] for line in rich_text.splitlines() if line.startswith("# HELP"))
    assert types and max(types.values()) == 1
    assert max(helps.values()) == 1
    for name, _, _ in FAMILIES[:-1]:
        assert types[name] == 1, name
    # and a family's samples are contiguous (the text format requires it)
    seen: list[str] = []
    for line in rich_text.splitlines():
        if line.startswith("# TYPE"):
            seen.append(line.split()[2])
    assert len(seen) == len(set(seen))


def test_metric_names_are_the_design_names(
    rich_text: str, design_metric_names: frozenset[str]
) -> None:
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(rich_text)
    }
    missing = {n for n in design_metric_names if n not in exported}
    assert not missing


def test_gzip_body_is_the_plain_body() -> None:
    m = rich_monitor()
    exposition = Exposition(m, lambda: b"# tail\n")
    plain = body(exposition, T0 + 200)
    assert gzip.decompress(body(exposition, T0 + 200, gz=True)) == plain


def test_body_only_changes_when_something_changed() -> None:
    m = rich_monitor()
    exposition = Exposition(m)
    first = exposition.render(T0 + 200)[0]
    assert exposition.render(T0 + 201)[0] is first  # the cached bytes, not re-rendered


def test_deadline_passing_changes_the_body_without_a_submission() -> None:
    m = rich_monitor()
    exposition = Exposition(m)
    before = body(exposition, T0 + 200).decode()
    assert 'job_name="ok_job",host="",env="prod",team="infra",reason="ok"' in before
    after = body(exposition, T0 + 10 + 3600).decode()
    assert 'job_name="ok_job",host="",env="prod",team="infra",reason="missed deadline"' in after


STATUS_LINE = re.compile(r'^cronjob_status\{job_name="([^"]*)"', re.MULTILINE)


def _definition(i: int, **extra: object) -> JobDefinition:
    return JobDefinition.model_validate(
        {"job_name": f"job{i}", "automatic_failure_threshold": 50 + i % 400, **extra}
    )


def test_incremental_renders_match_a_fresh_render_and_gzip_after_many_changes() -> None:
    rng = random.Random(1234)
    m = Monitor()
    defined = {f"job{i}": _definition(i) for i in range(300)}
    m.apply_definitions(defined, T0)
    exposition = Exposition(m, lambda: b"# self metrics\n")
    now = T0
    next_id = 300
    for step in range(60):
        now += rng.randint(0, 40)
        action = rng.random()
        if action < 0.6:
            names = rng.sample(sorted(defined), k=rng.randint(1, 20))
            results = [
                ResultIn.model_validate(
                    {
                        "job_name": n,
                        "status": rng.choice(["start", "success", "failure"]),
                        "duration": rng.random() * 100,
                    }
                )
                for n in names
            ]
            m.submit(results, now)
        elif action < 0.75:
            for name in rng.sample(sorted(defined), k=min(len(defined), rng.randint(1, 120))):
                del defined[name]
            m.apply_definitions(defined, now)
        elif action < 0.9:
            for _ in range(rng.randint(1, 200)):
                defined[f"job{next_id}"] = _definition(next_id)
                next_id += 1
            m.apply_definitions(defined, now)
        else:
            name = rng.choice(sorted(defined))
            status = rng.choice(["paused", "retired", "maintenance", "active"])
            defined[name] = _definition(int(name[3:]), status=status, labels={"x": str(step)})
            m.apply_definitions(defined, now)
        plain = body(exposition, now)
        assert gzip.decompress(body(exposition, now, gz=True)) == plain, step
        fresh = body(Exposition(m, lambda: b"# self metrics\n"), now)
        assert plain == fresh, step
        exported = set(STATUS_LINE.findall(plain.decode()))
        expected = {n for n, d in defined.items() if d.status != "retired"}
        assert exported == expected, step


def test_removed_jobs_disappear() -> None:
    m = Monitor()
    m.apply_definitions({"job1": _definition(1), "job2": _definition(2)}, T0)
    exposition = Exposition(m)
    assert 'job_name="job2"' in body(exposition, T0).decode()
    m.apply_definitions({"job1": _definition(1)}, T0 + 1)
    text = body(exposition, T0 + 1).decode()
    assert 'job_name="job2"' not in text
    assert 'job_name="job1"' in text


def test_empty_monitor_renders_no_job_families() -> None:
    exposition = Exposition(Monitor(), lambda: b"")
    assert body(exposition, T0) == b""
    assert gzip.decompress(body(exposition, T0, gz=True)) == b""


def test_prepare_builds_only_the_bodies_scrapers_asked_for_and_matches_a_fresh_render() -> None:
    from cronmetrics.jobs.model import JobDefinition, ResultIn
    from cronmetrics.monitor import Monitor
    from cronmetrics.web.exposition import PREPARE_WINDOW, Exposition

    monitor = Monitor()
    defs = [JobDefinition(job_name=f"j{i}", automatic_failure_threshold=600) for i in range(300)]
    monitor.apply_definitions({d.id: d for d in defs}, 1000.0)
    expo = Exposition(monitor)
    expo.prepare(1001.0)  # nobody scraped yet: nothing is built
    assert expo._parts is None and expo._packed is None
    first = b"".join(expo.render(1002.0, gzip=True))
    monitor.submit([ResultIn(job_name="j7", status="failure")], 1003.0)
    expo.prepare(1004.0)  # a gzip scraper is around: the change is folded in and deflated
    assert expo._packed is not None and expo._plain is None
    warm = b"".join(expo.render(1005.0, gzip=True))
    assert warm != first
    assert gzip.decompress(warm) == b"".join(Exposition(monitor).render(1005.0))
    monitor.submit([ResultIn(job_name="j8", status="failure")], 1006.0)
    expo.prepare(1005.0 + PREPARE_WINDOW + 1)  # the scraper went away: no work is done
    assert monitor.take_dirty() == {"j8"}
