"""The jobs.d plan: what a set of definitions changes against another (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cronmetrics.cli.diff import render_markdown, render_text
from cronmetrics.jobs.model import JobDefinition
from cronmetrics.jobs.plan import Action, compare, definitions_from_api


def job(**fields: Any) -> JobDefinition:
    fields.setdefault("job_name", "backup")
    if "schedule" not in fields:
        fields.setdefault("automatic_failure_threshold", 3600)
    return JobDefinition.model_validate(fields)


def by_id(*jobs: JobDefinition) -> dict[str, JobDefinition]:
    return {j.id: j for j in jobs}


def test_identical_sets_make_an_empty_plan() -> None:
    jobs = by_id(job(), job(job_name="report", schedule="30 2 * * *"))
    plan = compare(jobs, dict(jobs))
    assert plan.empty
    assert plan.unchanged == 2
    assert plan.counts == {"add": 0, "remove": 0, "change": 0}


def test_added_and_removed_jobs_are_listed_with_their_fields() -> None:
    plan = compare(by_id(job(job_name="old")), by_id(job(job_name="new", labels={"env": "a"})))
    actions = {c.id: c.action for c in plan.changes}
    assert actions == {"new": Action.ADD, "old": Action.REMOVE}
    added = next(c for c in plan.changes if c.id == "new")
    assert {f.field for f in added.fields} == {"automatic_failure_threshold", "labels"}
    assert added.new_series


def test_deadline_changes_are_named_with_old_and_new_values() -> None:
    old = job(schedule="30 2 * * *", timezone="UTC", grace=300)
    new = job(schedule="0 3 * * *", timezone="Europe/Berlin", grace=900)
    (change,) = compare(by_id(old), by_id(new)).changes
    assert change.action == Action.CHANGE
    fields = {f.field: (f.old, f.new, f.category) for f in change.fields}
    assert fields == {
        "schedule": ("30 2 * * *", "0 3 * * *", "deadline"),
        "timezone": ("UTC", "Europe/Berlin", "deadline"),
        "grace": (300, 900, "deadline"),
    }
    assert not change.new_series
    assert any("deadline moves" in n for n in change.notes)


def test_a_label_change_is_flagged_as_new_series_per_label() -> None:
    old = job(labels={"env": "stage", "team": "db"})
    new = job(labels={"env": "prod", "tier": "1"})
    (change,) = compare(by_id(old), by_id(new)).changes
    assert change.new_series
    fields = {f.field: (f.old, f.new) for f in change.fields}
    assert fields == {
        "labels.env": ("stage", "prod"),
        "labels.team": ("db", None),
        "labels.tier": (None, "1"),
    }


def test_description_only_change_is_not_new_series() -> None:
    (change,) = compare(by_id(job()), by_id(job(description="hello"))).changes
    assert not change.new_series
    assert [f.category for f in change.fields] == ["other"]


def test_retiring_a_job_ends_its_series_rather_than_starting_new_ones() -> None:
    old = job(labels={"env": "a"})
    new = job(labels={"env": "b"}, status="retired")
    (change,) = compare(by_id(old), by_id(new)).changes
    assert change.new_series  # exported -> not exported
    assert any("retired" in n for n in change.notes)
    assert not any("labels change" in n for n in change.notes)


def test_lifecycle_and_max_runtime_changes() -> None:
    until = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    old = job(max_runtime=600)
    new = job(status="maintenance", maintenance_until=until)
    (change,) = compare(by_id(old), by_id(new)).changes
    fields = {f.field: (f.old, f.new, f.category) for f in change.fields}
    assert fields["max_runtime"] == (600, None, "runtime")
    assert fields["status"][2] == "lifecycle"
    assert fields["maintenance_until"] == (None, until, "lifecycle")
    doc = change.as_dict()
    assert {"field": "maintenance_until", "category": "lifecycle", "old": None,
            "new": "2026-12-01T00:00:00Z"} in doc["fields"]  # fmt: skip


def test_a_host_change_is_a_new_id_and_says_so() -> None:
    plan = compare(by_id(job(host="db1")), by_id(job(host="db2")))
    assert [(c.id, c.action) for c in plan.changes] == [
        ("backup@db1", Action.REMOVE),
        ("backup@db2", Action.ADD),
    ]
    assert all(any("new id keeps no history" in n for n in c.notes) for c in plan.changes)


def test_files_are_attached_to_the_proposed_side() -> None:
    plan = compare({}, by_id(job()), files={"backup": "team/backup.yaml"})
    assert plan.changes[0].file == "team/backup.yaml"


def test_definitions_from_api_skip_unmanaged_and_state() -> None:
    entries = [
        {"id": "a", "job_name": "a", "automatic_failure_threshold": 60, "grace": 300,
         "timezone": "UTC", "labels": {}, "status": "active", "file": "a.yaml",
         "unmanaged": False, "state": {"status": "active"}},
        {"id": "ghost", "job_name": "ghost", "automatic_failure_threshold": 60,
         "unmanaged": True, "state": {}},
    ]  # fmt: skip
    defs = definitions_from_api(entries)
    assert list(defs) == ["a"]
    assert defs["a"] == job(job_name="a", automatic_failure_threshold=60)


def test_text_rendering_marks_actions_and_new_series() -> None:
    plan = compare(
        by_id(job(labels={"env": "a"}), job(job_name="gone")),
        by_id(job(labels={"env": "b"}), job(job_name="fresh")),
        files={"backup": "backup.yaml", "fresh": "fresh.yaml"},
    )
    text = render_text(plan, server="http://s", path="jobs.d")
    assert text.splitlines()[0] == (
        "Plan for http://s from jobs.d: 1 to add, 1 to remove, 1 to change, 0 unchanged."
    )
    assert "~ backup  (backup.yaml)  [new series]" in text
    assert "    labels.env: a -> b" in text
    assert "+ fresh  (fresh.yaml)" in text
    assert "    automatic_failure_threshold: 3600 (1h)" in text
    assert "- gone" in text


def test_text_rendering_of_no_changes() -> None:
    plan = compare(by_id(job()), by_id(job()))
    assert render_text(plan, server="http://s", path="jobs.d") == (
        "No changes: http://s already runs the 1 definitions in jobs.d."
    )


@pytest.mark.parametrize("hostile", ["a|b", "x`y", "line\nbreak"])
def test_markdown_table_survives_hostile_values(hostile: str) -> None:
    plan = compare(by_id(job()), by_id(job(description=hostile)))
    md = render_markdown(plan, server="http://s", path="jobs.d")
    rows = [line for line in md.splitlines() if line.startswith("| **change**")]
    assert len(rows) == 1
    # five cells: the pipe in the value is escaped, the newline folded
    assert rows[0].replace("\\|", "").count("|") == 6


def test_markdown_warns_about_new_series_by_id() -> None:
    plan = compare(by_id(job(labels={"env": "a"})), by_id(job(labels={"env": "b"})))
    md = render_markdown(plan, server="http://s", path="jobs.d")
    assert "**Warning: new series.** The labels of `backup` change" in md
    assert "| `labels.env` (new series) | `a` | `b` |" in md
