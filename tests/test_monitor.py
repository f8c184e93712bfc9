"""The monitor: resolution, all-or-nothing submissions, reloads and deadline ticks."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from cronmetrics.errors import NotFound, ValidationError
from cronmetrics.jobs.model import JobDefinition, ResultIn
from cronmetrics.monitor import Monitor

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z


def job(name: str, host: str | None = None, **fields: Any) -> JobDefinition:
    fields.setdefault("automatic_failure_threshold", 600)
    return JobDefinition.model_validate({"job_name": name, "host": host, **fields})


def defs(*jobs: JobDefinition) -> dict[str, JobDefinition]:
    return {d.id: d for d in jobs}


def res(name: str, status: str = "success", **fields: Any) -> ResultIn:
    return ResultIn.model_validate({"job_name": name, "status": status, **fields})


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


@pytest.fixture
def monitor() -> Monitor:
    m = Monitor()
    m.apply_definitions(defs(job("backup"), job("backup", "db1"), job("sync", "web1")), T0)
    return m


def test_result_from_a_host_goes_to_the_host_specific_job_when_defined(monitor: Monitor) -> None:
    assert monitor.submit([res("backup", host="db1")], T0) == ["backup@db1"]


def test_result_from_another_host_goes_to_the_host_agnostic_job(monitor: Monitor) -> None:
    assert monitor.submit([res("backup", host="db2")], T0) == ["backup"]
    assert monitor.submit([res("backup")], T0) == ["backup"]


def test_host_specific_job_does_not_take_results_from_other_hosts(monitor: Monitor) -> None:
    with pytest.raises(NotFound):
        monitor.submit([res("sync", host="web2")], T0)
    with pytest.raises(NotFound):
        monitor.submit([res("sync")], T0)


def test_unknown_job_is_not_found_by_default(monitor: Monitor) -> None:
    with pytest.raises(NotFound) as info:
        monitor.submit([res("nope", host="h1")], T0)
    assert "nope@h1" in info.value.message
    assert "nope@h1" not in monitor.definitions


def test_unknown_job_is_tracked_unmanaged_when_accepted() -> None:
    m = Monitor(accept_unknown=True)
    assert m.submit([res("adhoc", host="h1", status="failure")], T0) == ["adhoc@h1"]
    view = m.view("adhoc@h1")
    assert view.unmanaged
    assert (view.evaluation.value, view.evaluation.reason) == (0, "failed")
    m.submit([res("adhoc", host="h1")], T0 + 1)
    assert m.view("adhoc@h1").state.runs_total == 2
    # a reload without it keeps it (nobody declared it, nobody can remove it by a file)
    m.apply_definitions({}, T0 + 2)
    assert m.view("adhoc@h1").unmanaged


def test_unmanaged_job_becomes_managed_when_a_file_declares_it() -> None:
    m = Monitor(accept_unknown=True)
    m.submit([res("adhoc", host="h1")], T0)
    m.apply_definitions(defs(job("adhoc", "h1")), T0 + 1)
    view = m.view("adhoc@h1")
    assert not view.unmanaged
    assert view.state.runs_total == 1


def test_batch_is_all_or_nothing(monitor: Monitor) -> None:
    batch = [res("backup"), res("ghost"), res("backup", host="db1")]
    with pytest.raises(NotFound) as info:
        monitor.submit(batch, T0, index_errors=True)
    assert "item 1" in info.value.message
    assert monitor.view("backup").state.runs_total == 0
    assert monitor.view("backup@db1").state.runs_total == 0
    assert monitor.store.history("backup") == []


def test_batch_authorization_failure_records_nothing(monitor: Monitor) -> None:
    def authorize(job_id: str) -> None:
        if job_id == "sync@web1":
            raise NotFound("no")

    with pytest.raises(NotFound):
        monitor.submit([res("backup"), res("sync", host="web1")], T0, authorize=authorize)
    assert monitor.view("backup").state.runs_total == 0


def test_timestamp_more_than_five_minutes_in_the_future_is_rejected(monitor: Monitor) -> None:
    with pytest.raises(ValidationError) as info:
        monitor.submit(
            [res("backup"), res("backup", timestamp=iso(T0 + 301))], T0, index_errors=True
        )
    assert info.value.field == "[1].timestamp"
    assert monitor.view("backup").state.runs_total == 0
    monitor.submit([res("backup", timestamp=iso(T0 + 299))], T0)
    assert monitor.view("backup").state.last_report == T0 + 299


def test_late_result_is_recorded_but_does_not_roll_state_back(monitor: Monitor) -> None:
    monitor.submit([res("backup", timestamp=iso(T0 + 100))], T0 + 100)
    monitor.submit([res("backup", status="failure", timestamp=iso(T0 + 10))], T0 + 101)
    view = monitor.view("backup")
    assert view.evaluation.reason == "ok"
    assert view.state.failures_total == 1
    assert len(monitor.store.history("backup")) == 2


def test_output_is_truncated_keeping_the_tail() -> None:
    m = Monitor(max_output_bytes=10)
    m.apply_definitions(defs(job("backup")), T0)
    m.submit([res("backup", output="0123456789abcdefghij")], T0)
    assert m.store.history("backup")[0].output == "abcdefghij"


def test_output_truncation_never_splits_a_character() -> None:
    m = Monitor(max_output_bytes=5)
    m.apply_definitions(defs(job("backup")), T0)
    m.submit([res("backup", output="ééééé")], T0)  # 10 bytes; 5 would cut one in half
    assert m.store.history("backup")[0].output == "éé"


def test_output_is_redacted_before_it_is_truncated() -> None:
    def redact(text: str) -> str:
        return re.sub(r"password=\S+", "[REDACTED]", text)

    m = Monitor(max_output_bytes=16, redact=redact)
    m.apply_definitions(defs(job("backup")), T0)
    # the cut falls inside "password=": truncating first would leave "word=hunter2" behind
    m.submit([res("backup", output="x" * 40 + " password=hunter2 done")], T0)
    stored = m.store.history("backup")[0].output
    assert stored is not None
    assert "hunter2" not in stored
    assert stored.endswith("done")


def test_apply_definitions_keeps_state_across_edits(monitor: Monitor) -> None:
    monitor.submit([res("backup", status="failure")], T0)
    diff = monitor.apply_definitions(
        defs(job("backup", labels={"env": "prod"}), job("backup", "db1"), job("sync", "web1")),
        T0 + 1,
    )
    assert diff.changed == ["backup"]
    view = monitor.view("backup")
    assert view.definition.labels == {"env": "prod"}
    assert view.state.failures_total == 1
    assert view.evaluation.reason == "failed"


def test_removing_a_definition_detaches_the_job_until_the_same_id_returns(
    monitor: Monitor,
) -> None:
    monitor.submit([res("sync", host="web1")], T0)
    monitor.take_dirty()
    diff = monitor.apply_definitions(defs(job("backup"), job("backup", "db1")), T0 + 1)
    assert diff.removed == ["sync@web1"]
    with pytest.raises(NotFound):
        monitor.view("sync@web1")
    assert monitor.store.state("sync@web1").detached_since == T0 + 1  # type: ignore[union-attr]
    assert "sync@web1" in monitor.take_dirty()
    # put back (a git checkout, a ConfigMap swap): state and history are back
    monitor.apply_definitions(
        defs(job("backup"), job("backup", "db1"), job("sync", "web1")), T0 + 2
    )
    assert monitor.view("sync@web1").state.runs_total == 1
    assert monitor.view("sync@web1").state.detached_since is None
    assert len(monitor.store.history("sync@web1")) == 1


def test_dropping_a_job_removes_its_state_at_once(monitor: Monitor) -> None:
    monitor.submit([res("sync", host="web1")], T0)
    monitor.apply_definitions(defs(job("backup"), job("backup", "db1")), T0 + 1)
    monitor.drop("sync@web1")
    assert monitor.store.state("sync@web1") is None
    monitor.apply_definitions(
        defs(job("backup"), job("backup", "db1"), job("sync", "web1")), T0 + 2
    )
    assert monitor.view("sync@web1").state.runs_total == 0


def test_resume_from_paused_starts_a_fresh_window(monitor: Monitor) -> None:
    monitor.submit([res("backup")], T0)
    paused = defs(job("backup", status="paused"), job("backup", "db1"), job("sync", "web1"))
    monitor.apply_definitions(paused, T0 + 10)
    assert monitor.view("backup").evaluation.reason == "paused"
    resumed = defs(job("backup"), job("backup", "db1"), job("sync", "web1"))
    monitor.apply_definitions(resumed, T0 + 5000)
    view = monitor.view("backup")
    assert (view.evaluation.reason, view.evaluation.deadline) == ("ok", T0 + 5600)


def test_tick_only_touches_jobs_whose_deadline_passed() -> None:
    m = Monitor()
    m.apply_definitions(
        defs(
            job("a", automatic_failure_threshold=100),
            job("b", automatic_failure_threshold=200),
            job("c", automatic_failure_threshold=300),
            job("p", automatic_failure_threshold=50, status="paused"),
        ),
        T0,
    )
    assert m.next_wakeup() == T0 + 100
    assert m.tick(T0 + 99) == []
    assert m.tick(T0 + 150) == ["a"]
    assert m.view("a").evaluation.reason == "never reported"
    assert m.view("b").evaluation.reason == "pending"
    assert m.next_wakeup() == T0 + 200
    assert sorted(m.tick(T0 + 1000)) == ["b", "c"]
    assert m.tick(T0 + 2000) == []
    assert m.next_wakeup() is None


def test_a_submission_reschedules_the_job(monitor: Monitor) -> None:
    monitor.submit([res("backup")], T0 + 500)
    assert sorted(monitor.tick(T0 + 700)) == ["backup@db1", "sync@web1"]
    assert monitor.view("backup").evaluation.reason == "ok"
    assert monitor.tick(T0 + 1100) == ["backup"]
    assert monitor.view("backup").evaluation.reason == "missed deadline"


def test_maintenance_until_ends_on_tick() -> None:
    until = dt.datetime.fromtimestamp(T0 + 1000, dt.UTC)
    m = Monitor()
    m.apply_definitions(defs(job("m", status="maintenance", maintenance_until=until)), T0)
    assert m.next_wakeup() == T0 + 1000
    assert m.tick(T0 + 1000) == ["m"]
    view = m.view("m")
    assert (view.evaluation.lifecycle, view.evaluation.reason) == ("active", "pending")
    assert view.evaluation.deadline == T0 + 1600


def test_counts_by_lifecycle_and_failing() -> None:
    m = Monitor()
    m.apply_definitions(
        defs(
            job("a"),
            job("b", status="paused"),
            job("c", status="retired"),
            job("d", status="maintenance"),
        ),
        T0,
    )
    m.submit([res("a", status="failure")], T0)
    counts = m.counts()
    assert counts["by_status"] == {"active": 1, "maintenance": 1, "paused": 1, "retired": 1}
    assert counts["failing"] == 1
