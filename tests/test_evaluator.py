"""The status evaluator: a pure function of (definition, state, now)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from cronmetrics.evaluator import deadline, evaluate
from cronmetrics.jobs import schedule as cron
from cronmetrics.jobs.model import JobDefinition
from cronmetrics.storage.interface import JobState, Result, new_state
from cronmetrics.storage.transitions import apply_result

T0 = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC).timestamp()  # a Monday
HOUR = 3600.0


def job(**fields: Any) -> JobDefinition:
    fields.setdefault("job_name", "backup")
    return JobDefinition.model_validate(fields)


def fresh(at: float = T0) -> JobState:
    return new_state("backup", at)


def report(state: JobState, status: str, at: float, **extra: Any) -> JobState:
    result = Result(job_id="backup", status=status, timestamp=at, received=at, **extra)
    return apply_result(state, result)[0]


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


# -- lifecycle -----------------------------------------------------------------------------


def test_retired_job_is_not_exported() -> None:
    e = evaluate(job(automatic_failure_threshold=60, status="retired"), fresh(), T0 + 10 * HOUR)
    assert not e.exported
    assert e.lifecycle == "retired"


@pytest.mark.parametrize("status", ["paused", "maintenance"])
def test_paused_and_maintenance_are_minus_one_with_their_reason(status: str) -> None:
    state = report(fresh(), "failure", T0)
    e = evaluate(job(automatic_failure_threshold=60, status=status), state, T0 + 10 * HOUR)
    assert (e.value, e.reason, e.lifecycle) == (-1, status, status)
    assert e.exported
    assert e.next_change is None
    assert not e.failing


def test_maintenance_until_in_the_future_is_maintenance_and_changes_at_its_end() -> None:
    until = T0 + 5 * HOUR
    d = job(
        automatic_failure_threshold=60,
        status="maintenance",
        maintenance_until=dt.datetime.fromtimestamp(until, dt.UTC),
    )
    e = evaluate(d, fresh(), until - 1)
    assert (e.value, e.reason) == (-1, "maintenance")
    assert e.next_change == until


def test_maintenance_until_ends_by_itself_with_a_fresh_window_from_its_end() -> None:
    until = T0 + 5 * HOUR
    d = job(
        automatic_failure_threshold=600,
        status="maintenance",
        maintenance_until=dt.datetime.fromtimestamp(until, dt.UTC),
    )
    state = report(fresh(), "success", T0)  # last heard long before the window ends
    at_end = evaluate(d, state, until)
    assert (at_end.lifecycle, at_end.value, at_end.reason) == ("active", 1, "ok")
    assert at_end.deadline == until + 600
    assert at_end.next_change == until + 600
    late = evaluate(d, state, until + 600)
    assert (late.value, late.reason) == (0, "missed deadline")


def test_maintenance_until_ending_for_a_never_reported_job_counts_from_its_end() -> None:
    until = T0 + 5 * HOUR
    d = job(
        automatic_failure_threshold=600,
        status="maintenance",
        maintenance_until=dt.datetime.fromtimestamp(until, dt.UTC),
    )
    assert evaluate(d, fresh(), until + 599).reason == "pending"
    assert evaluate(d, fresh(), until + 600).reason == "never reported"


def test_resume_from_paused_counts_silence_from_active_since() -> None:
    d = job(automatic_failure_threshold=600)
    state = report(fresh(), "success", T0)
    # resumed then, long after the last report
    state = dataclasses.replace(state, active_since=T0 + 10 * HOUR)
    e = evaluate(d, state, T0 + 10 * HOUR + 599)
    assert (e.value, e.reason, e.deadline) == (1, "ok", T0 + 10 * HOUR + 600)
    assert evaluate(d, state, T0 + 10 * HOUR + 600).reason == "missed deadline"


# -- active rows ---------------------------------------------------------------------------


def test_started_run_past_max_runtime_is_timeout() -> None:
    d = job(automatic_failure_threshold=10 * HOUR, max_runtime=1800)
    state = report(fresh(), "start", T0 + 60)
    running = evaluate(d, state, T0 + 60 + 1799)
    assert (running.value, running.reason) == (1, "running")
    assert running.next_change == T0 + 60 + 1800
    e = evaluate(d, state, T0 + 60 + 1800)
    assert (e.value, e.reason) == (0, "timeout")


def test_finish_with_another_run_id_does_not_end_the_current_run() -> None:
    d = job(automatic_failure_threshold=10 * HOUR, max_runtime=1800)
    state = report(fresh(), "start", T0, run_id="a")
    state = report(state, "success", T0 + 60, run_id="b")
    assert state.running
    assert evaluate(d, state, T0 + 1800).reason == "timeout"
    state = report(state, "success", T0 + 1900, run_id="a")
    assert not state.running
    assert evaluate(d, state, T0 + 1901).reason == "ok"


def test_finish_with_matching_run_id_ends_the_run_and_computes_duration() -> None:
    state = report(fresh(), "start", T0, run_id="a")
    state = report(state, "success", T0 + 42, run_id="a")
    assert not state.running
    assert state.last_duration == 42


def test_finish_with_run_id_ends_a_start_that_had_none() -> None:
    state = report(fresh(), "start", T0)
    state = report(state, "success", T0 + 5, run_id="x")
    assert not state.running


def test_last_result_failure_is_failed() -> None:
    d = job(automatic_failure_threshold=HOUR)
    state = report(fresh(), "failure", T0 + 10)
    e = evaluate(d, state, T0 + 20)
    assert (e.value, e.reason) == (0, "failed")
    assert e.failing


def test_failed_job_that_starts_again_is_running() -> None:
    d = job(automatic_failure_threshold=HOUR)
    state = report(fresh(), "failure", T0 + 10)
    state = report(state, "start", T0 + 20)
    assert evaluate(d, state, T0 + 30).reason == "running"


def test_silence_past_threshold_is_missed_deadline() -> None:
    d = job(automatic_failure_threshold=600)
    state = report(fresh(), "success", T0 + 100)
    ok = evaluate(d, state, T0 + 699)
    assert (ok.value, ok.reason, ok.deadline, ok.next_change) == (1, "ok", T0 + 700, T0 + 700)
    e = evaluate(d, state, T0 + 700)
    assert (e.value, e.reason) == (0, "missed deadline")


def test_silence_past_schedule_plus_grace_is_missed_deadline() -> None:
    d = job(schedule="30 2 * * *", grace=900)
    state = report(fresh(), "success", utc(2026, 1, 5, 2, 40))
    due = utc(2026, 1, 6, 2, 45)
    assert evaluate(d, state, due - 1).deadline == due
    assert evaluate(d, state, due - 1).reason == "ok"
    assert evaluate(d, state, due).reason == "missed deadline"


def test_schedule_uses_the_job_timezone() -> None:
    d = job(schedule="30 2 * * *", timezone="America/New_York", grace=0)
    e = evaluate(d, fresh(utc(2026, 1, 5, 12, 0)), utc(2026, 1, 5, 12, 0))
    assert e.deadline == utc(2026, 1, 6, 7, 30)  # 02:30 EST is 07:30 UTC


def test_never_reported_counts_the_first_deadline_from_first_seen() -> None:
    d = job(automatic_failure_threshold=600)
    state = fresh(T0 + 1000)
    pending = evaluate(d, state, T0 + 1599)
    assert (pending.value, pending.reason, pending.deadline) == (1, "pending", T0 + 1600)
    e = evaluate(d, state, T0 + 1600)
    assert (e.value, e.reason) == (0, "never reported")


def test_ok_running_pending() -> None:
    d = job(automatic_failure_threshold=HOUR)
    assert evaluate(d, fresh(), T0 + 1).reason == "pending"
    state = report(fresh(), "start", T0 + 1)
    assert evaluate(d, state, T0 + 2).reason == "running"
    state = report(state, "success", T0 + 3)
    e = evaluate(d, state, T0 + 4)
    assert (e.value, e.reason, e.lifecycle) == (1, "ok", "active")


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (HOUR, T0 + HOUR),  # threshold first
        (10 * HOUR, utc(2026, 1, 5, 2, 30) + 300),  # schedule + grace first
    ],
)
def test_threshold_and_schedule_together_earliest_wins(threshold: float, expected: float) -> None:
    d = job(automatic_failure_threshold=int(threshold), schedule="30 2 * * *", grace=300)
    state = report(fresh(), "success", T0)
    e = evaluate(d, state, T0 + 1)
    assert e.deadline == expected
    assert evaluate(d, state, expected).reason == "missed deadline"
    assert evaluate(d, state, expected - 1).reason == "ok"


def test_timeout_wins_over_missed_deadline_and_next_change_points_at_it() -> None:
    d = job(automatic_failure_threshold=600, max_runtime=1800)
    state = report(fresh(), "start", T0)
    missed = evaluate(d, state, T0 + 600)
    assert missed.reason == "missed deadline"
    assert missed.next_change == T0 + 1800
    assert evaluate(d, state, T0 + 1800).reason == "timeout"


def test_next_change_is_none_when_nothing_changes_by_itself() -> None:
    d = job(automatic_failure_threshold=600)
    assert evaluate(d, report(fresh(), "failure", T0), T0 + 1).next_change is None
    assert (
        evaluate(job(automatic_failure_threshold=600, status="paused"), fresh(), T0).next_change
        is None
    )


def test_late_result_does_not_move_the_deadline_back() -> None:
    d = job(automatic_failure_threshold=600)
    state = report(fresh(), "success", T0 + 500)
    state = report(state, "failure", T0 + 100)  # arrived late, older than the last one
    e = evaluate(d, state, T0 + 600)
    assert (e.reason, e.deadline) == ("ok", T0 + 1100)


# -- cron semantics (Debian cron) ----------------------------------------------------------

BERLIN = cron.parse_timezone("Europe/Berlin")


def fires(expr: str, tz: dt.tzinfo, after: float, n: int) -> list[dt.datetime]:
    schedule = cron.parse(expr)
    out = []
    for _ in range(n):
        after = cron.next_fire(schedule, tz, after)
        out.append(dt.datetime.fromtimestamp(after, tz))
    return out


def test_spring_forward_skipped_time_fires_right_after_the_jump() -> None:
    first, second = fires("30 2 * * *", BERLIN, utc(2026, 3, 28, 12, 0), 2)
    assert first.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC)
    assert (first.hour, first.minute) == (3, 0)  # 03:00 CEST, right after 02:00 -> 03:00
    assert second.astimezone(dt.UTC) == dt.datetime(2026, 3, 30, 0, 30, tzinfo=dt.UTC)


def test_spring_forward_deadline_of_a_berlin_job() -> None:
    d = job(schedule="30 2 * * *", timezone="Europe/Berlin", grace=900)
    state = report(fresh(), "success", utc(2026, 3, 28, 1, 40))  # 02:40 CET
    assert evaluate(d, state, utc(2026, 3, 28, 12)).deadline == utc(2026, 3, 29, 1, 15)


def test_autumn_doubled_hour_fires_once() -> None:
    got = fires("30 2 * * *", BERLIN, utc(2026, 10, 24, 12, 0), 2)
    assert [f.astimezone(dt.UTC) for f in got] == [
        dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC),  # 02:30 CEST, the first pass
        dt.datetime(2026, 10, 26, 1, 30, tzinfo=dt.UTC),  # next day 02:30 CET
    ]


@pytest.mark.parametrize("minute", [0, 10, 30, 45])
def test_report_during_the_second_pass_of_the_doubled_hour_has_a_future_deadline(
    minute: int,
) -> None:
    # 01:MM UTC on 2026-10-25 is 02:MM CET, the repeated hour; 02:30 already fired (CEST).
    at = utc(2026, 10, 25, 1, minute)
    assert cron.next_fire(cron.parse("30 2 * * *"), BERLIN, at) == utc(2026, 10, 26, 1, 30)
    d = job(schedule="30 2 * * *", timezone="Europe/Berlin", grace=900)
    state = report(fresh(), "success", at)
    e = evaluate(d, state, at + 1)
    assert (e.reason, e.deadline) == ("ok", utc(2026, 10, 26, 1, 45))


@pytest.mark.parametrize("expr", ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN"])
def test_sunday_is_0_and_7(expr: str) -> None:
    got = fires(expr, dt.UTC, utc(2026, 2, 2), 3)
    assert [f.strftime("%a %d") for f in got] == ["Sun 08", "Sun 15", "Sun 22"]


def test_day_of_month_and_day_of_week_are_ored() -> None:
    got = fires("0 0 13 * FRI", dt.UTC, utc(2026, 1, 31), 6)
    days = [f.strftime("%a %d %b") for f in got]
    # every Friday, and the 13th whatever weekday it is (Fri 13 Feb, Fri 13 Mar... Mon 13 Apr)
    assert days == [
        "Fri 06 Feb",
        "Fri 13 Feb",
        "Fri 20 Feb",
        "Fri 27 Feb",
        "Fri 06 Mar",
        "Fri 13 Mar",
    ]
    april = fires("0 0 13 * FRI", dt.UTC, utc(2026, 4, 11), 2)
    assert [f.strftime("%a %d") for f in april] == ["Mon 13", "Fri 17"]


def test_deadline_helper_without_any_rule_is_none() -> None:
    d = JobDefinition.model_construct(
        job_name="x", automatic_failure_threshold=None, schedule=None, grace=300
    )
    assert deadline(d, T0) is None
