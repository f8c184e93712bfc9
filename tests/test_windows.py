"""Maintenance windows: matchers, coverage, and what they do to a job's status (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cronmetrics.errors import ValidationError
from cronmetrics.evaluator import evaluate
from cronmetrics.jobs.model import JobDefinition, ResultIn, parse_job
from cronmetrics.monitor import Monitor
from cronmetrics.storage.interface import JobState, new_state
from cronmetrics.windows import Window, coverage, covers, parse_duration, parse_matcher

T0 = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC).timestamp()  # a Monday
HOUR = 3600.0


def job(**fields: Any) -> JobDefinition:
    fields.setdefault("job_name", "backup")
    fields.setdefault("automatic_failure_threshold", 600)
    return JobDefinition.model_validate(fields)


def window(
    *matchers: str, start: float = T0, end: float = T0 + 2 * HOUR, wid: str = "w1"
) -> Window:
    return Window(wid, tuple(parse_matcher(m) for m in matchers), start, end)


def fresh(at: float = T0) -> JobState:
    return new_state("backup", at)


# -- matchers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("host=db1", {"host": "db1"}, True),
        ("host=db1", {"host": "db10"}, False),
        ("host!=db1", {"host": "db2"}, True),
        ("host=~db.*", {"host": "db12"}, True),
        ("host=~db", {"host": "mydb"}, False),  # anchored at both ends, as in Alertmanager
        ("host=~db", {"host": "db1"}, False),
        ("host!~web.*", {"host": "db1"}, True),
        ("env=", {}, True),  # a label the job lacks compares as ""
        ("env!=prod", {}, True),
        ('env="prod"', {"env": "prod"}, True),
        ('comment="a \\"b\\""', {"comment": 'a "b"'}, True),
        ("job_name =~ backup_(db|files)", {"job_name": "backup_db"}, True),
        ("team=~ops|sre", {"team": "sre"}, True),
    ],
)
def test_matchers_follow_alertmanager_semantics(
    text: str, labels: dict[str, str], expected: bool
) -> None:
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host", "must look like name=value"),
        ("=db1", "no label name"),
        ("host=~(", "invalid regular expression"),
        ("1host=a", "is not a label name"),
        ("status=paused", "cannot be matched"),
        ('host="db1', "unterminated quote"),
    ],
)
def test_bad_matchers_are_validation_errors_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_matcher(text, field="matchers.2")
    assert message in caught.value.message
    assert caught.value.field == "matchers.2"


def test_matchers_are_anded() -> None:
    w = window("host=db1", "env=prod")
    assert covers(w, job(host="db1", labels={"env": "prod"}), T0)
    assert not covers(w, job(host="db1", labels={"env": "stage"}), T0)


def test_a_window_covers_from_its_start_until_just_before_its_end() -> None:
    w = window("host=db1")
    d = job(host="db1")
    assert not covers(w, d, T0 - 1)
    assert covers(w, d, T0)
    assert covers(w, d, T0 + 2 * HOUR - 0.001)
    assert not covers(w, d, T0 + 2 * HOUR)
    assert [w.state(t) for t in (T0 - 1, T0, T0 + 2 * HOUR)] == ["pending", "active", "expired"]


def test_a_window_survives_its_record_round_trip() -> None:
    w = Window("abc", (parse_matcher("host=~db.*"),), T0, T0 + 60, "disk swap", "ops", T0 - 5)
    assert Window.from_record(w.to_record()) == w


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200), ("90", 90), ("1h30m", 5400)])
def test_durations_read_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "h", "1.5s", "-2h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# -- evaluation ----------------------------------------------------------------------------


def test_a_covered_job_is_maintenance_until_the_window_ends() -> None:
    d = job(host="db1")
    e = evaluate(d, fresh(T0 - HOUR), T0 + HOUR, [window("host=db1")])
    assert (e.lifecycle, e.value, e.reason) == ("maintenance", -1, "maintenance")
    assert e.deadline is None
    assert e.next_change == e.maintenance_end == T0 + 2 * HOUR
    assert e.windows == ("w1",)


def test_no_deadline_fires_inside_a_window_and_deadlines_count_afresh_from_its_end() -> None:
    d = job(host="db1", automatic_failure_threshold=600)
    state = fresh(T0 - 10 * HOUR)  # silent for ten hours: long overdue
    w = [window("host=db1")]
    assert evaluate(d, state, T0 - 1, w).reason == "never reported"
    assert evaluate(d, state, T0 + HOUR, w).value == -1
    after = evaluate(d, state, T0 + 2 * HOUR + 1, w)
    assert (after.value, after.reason, after.deadline) == (1, "pending", T0 + 2 * HOUR + 600)
    assert evaluate(d, state, T0 + 2 * HOUR + 601, w).reason == "never reported"


def test_an_active_job_changes_by_itself_when_a_pending_window_starts() -> None:
    d = job(host="db1", automatic_failure_threshold=10 * 3600)
    e = evaluate(d, fresh(T0 - HOUR), T0 - HOUR, [window("host=db1")])
    assert (e.value, e.next_change) == (1, T0)


def test_back_to_back_windows_are_one_stretch_of_maintenance() -> None:
    d = job(host="db1")
    ws = [
        window("host=db1", wid="a"),
        window("job_name=backup", start=T0 + 2 * HOUR, end=T0 + 5 * HOUR, wid="b"),
    ]
    e = evaluate(d, fresh(T0), T0 + HOUR, ws)
    assert e.maintenance_end == T0 + 5 * HOUR
    assert e.windows == ("a",)


def test_paused_and_retired_win_over_windows() -> None:
    w = [window("host=db1")]
    assert evaluate(job(host="db1", status="paused"), fresh(), T0 + 1, w).lifecycle == "paused"
    assert not evaluate(job(host="db1", status="retired"), fresh(), T0 + 1, w).exported


def test_file_maintenance_until_ends_with_the_later_window() -> None:
    until = dt.datetime.fromtimestamp(T0 + HOUR, dt.UTC)
    d = job(host="db1", status="maintenance", maintenance_until=until)
    e = evaluate(d, fresh(T0 - HOUR), T0 + 1, [window("host=db1")])
    assert (e.lifecycle, e.maintenance_end, e.next_change) == (
        "maintenance",
        T0 + 2 * HOUR,
        T0 + HOUR,
    )


# -- recurring windows (job files) ---------------------------------------------------------


def berlin_job(**fields: Any) -> JobDefinition:
    return job(
        maintenance_windows=[
            {"schedule": "0 2 * * SUN", "duration": 7200, "timezone": "Europe/Berlin"}
        ],
        **fields,
    )


def test_a_recurring_window_covers_each_fire_for_its_duration_in_its_time_zone() -> None:
    d = berlin_job()
    sunday_2am_berlin = dt.datetime(2026, 1, 11, 1, 0, tzinfo=dt.UTC).timestamp()  # CET = UTC+1
    state = fresh(T0)
    inside = evaluate(d, state, sunday_2am_berlin + 60, [])
    assert (inside.value, inside.reason) == (-1, "maintenance")
    assert inside.maintenance_end == sunday_2am_berlin + 7200
    before = evaluate(d, state, sunday_2am_berlin - 60, [])
    assert before.next_change == sunday_2am_berlin or before.value == 0
    after = evaluate(d, state, sunday_2am_berlin + 7200, [])
    assert after.lifecycle == "active"
    assert after.deadline == sunday_2am_berlin + 7200 + 600


def test_a_recurring_window_across_the_spring_dst_change_lasts_its_elapsed_duration() -> None:
    # 2026-03-29: Berlin skips 02:00-03:00; cron fires at the jump (03:00 CEST = 01:00 UTC)
    d = berlin_job()
    fire = dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC).timestamp()
    cover = coverage(d.maintenance_windows, d.timezone, [], fire + 1)
    assert cover.until == fire + 7200
    assert cover.recurring


def test_a_recurring_window_defaults_to_the_jobs_time_zone() -> None:
    d = job(timezone="Asia/Tokyo", maintenance_windows=[{"schedule": "0 3 * * *", "duration": 60}])
    three_am_tokyo = dt.datetime(2026, 1, 5, 18, 0, tzinfo=dt.UTC).timestamp()
    assert (
        coverage(d.maintenance_windows, d.timezone, [], three_am_tokyo + 1).until
        == three_am_tokyo + 60
    )


def test_recurring_windows_in_a_job_file_are_validated_with_their_place() -> None:
    text = (
        "job_name: a\nautomatic_failure_threshold: 60\nmaintenance_windows:\n"
        "  - {schedule: '0 2 * * SUN', duration: 7200}\n"
        "  - {schedule: '0 25 * * *', duration: 0, tz: UTC}\n"
    )
    from cronmetrics.jobs.yamlio import load_fast

    with pytest.raises(ValidationError) as caught:
        parse_job(load_fast(text), path="a.yaml", text=text)
    found = {(p.field, p.line) for p in caught.value.problems}
    assert ("maintenance_windows.1.schedule", 5) in found
    assert ("maintenance_windows.1.duration", 5) in found
    assert ("maintenance_windows.1.tz", 5) in found


# -- the monitor ---------------------------------------------------------------------------


def test_monitor_applies_windows_to_matching_jobs_and_to_jobs_added_later() -> None:
    m = Monitor()
    m.apply_definitions(
        {"a@db1": job(job_name="a", host="db1"), "b@web1": job(job_name="b", host="web1")}, T0
    )
    changed = m.set_windows([window("host=db1", start=T0, end=T0 + HOUR)], T0)
    assert changed == ["a@db1"]
    assert m.evaluations["a@db1"].value == -1
    assert m.evaluations["b@web1"].value == 1
    m.apply_definitions(
        {
            "a@db1": job(job_name="a", host="db1"),
            "b@web1": job(job_name="b", host="web1"),
            "c@db1": job(job_name="c", host="db1"),
        },
        T0 + 60,
    )
    assert m.evaluations["c@db1"].reason == "maintenance"
    assert m.selected_by(m.windows["w1"]) == ["a@db1", "c@db1"]
    assert m.window_counts(T0 + 60) == {"active": 1, "pending": 0, "expired": 0}


def test_monitor_brings_jobs_back_by_itself_at_the_windows_end() -> None:
    m = Monitor()
    m.apply_definitions({"a@db1": job(job_name="a", host="db1")}, T0)
    m.set_windows([window("host=db1", start=T0, end=T0 + HOUR)], T0)
    assert m.next_wakeup() == T0 + HOUR
    assert m.tick(T0 + HOUR) == ["a@db1"]
    e = m.evaluations["a@db1"]
    assert (e.value, e.reason, e.deadline) == (1, "pending", T0 + HOUR + 600)


def test_results_still_arrive_and_are_kept_inside_a_window() -> None:
    m = Monitor()
    m.apply_definitions({"a@db1": job(job_name="a", host="db1")}, T0)
    m.set_windows([window("host=db1", start=T0, end=T0 + HOUR)], T0)
    m.submit(
        [ResultIn.model_validate({"job_name": "a", "host": "db1", "status": "failure"})], T0 + 5
    )
    view = m.view("a@db1")
    assert view.state.last_status == "failure"
    assert view.evaluation.value == -1
    assert m.tick(T0 + HOUR) == ["a@db1"]
    assert m.evaluations["a@db1"].reason == "failed"


def test_ending_a_window_early_brings_its_jobs_back_at_once() -> None:
    m = Monitor()
    m.apply_definitions({"a@db1": job(job_name="a", host="db1")}, T0)
    w = window("host=db1", start=T0, end=T0 + HOUR)
    m.set_windows([w], T0)
    ended = Window(w.id, w.matchers, w.start, T0 + 60, ended_by="ops")
    assert m.set_windows([ended], T0 + 60) == ["a@db1"]
    assert m.evaluations["a@db1"].value == 1
