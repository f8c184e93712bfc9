"""What a jobs.d change would do to a running server: a plan, like ``terraform plan``.

A pull request to jobs.d shows a YAML diff; reviewers need the effect instead: which jobs
appear or vanish, whose deadline or lifecycle moves, and above all whose *labels* change,
because a label change starts new Prometheus series (alert history and ``for:`` timers
start over, dashboards split). :func:`compare` is a pure function of two sets of
definitions; ``cronmetrics diff`` (``cli/diff.py``) feeds it the server's definitions
and a local directory and renders the result.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cronmetrics.jobs.model import JobDefinition

__all__ = ["Action", "FieldChange", "JobChange", "Plan", "compare", "definitions_from_api"]

#: Field -> category, in the order changes are listed. Fields not named here (added to
#: the model later) are compared too and land in "other".
CATEGORIES: dict[str, str] = {
    "automatic_failure_threshold": "deadline",
    "schedule": "deadline",
    "timezone": "deadline",
    "grace": "deadline",
    "max_runtime": "runtime",
    "status": "lifecycle",
    "maintenance_until": "lifecycle",
    "maintenance_windows": "lifecycle",
    "labels": "labels",
    "description": "other",
}
#: Parts of the id, not compared field by field (a new host is a new job id).
_IDENTITY = ("job_name", "host")
#: Keys of ``GET /api/job`` entries that are not part of the definition.
_API_EXTRAS = ("id", "file", "unmanaged", "state")


class Action(enum.StrEnum):
    ADD = "add"
    REMOVE = "remove"
    CHANGE = "change"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field (or one label, ``labels.env``) going from ``old`` to ``new``.

    ``None`` means absent: a label added has ``old=None``, a max_runtime removed ``new=None``.
    """

    field: str
    category: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class JobChange:
    """What happens to one job id."""

    id: str
    action: Action
    #: the changed fields (CHANGE), or the definition's own fields (ADD / REMOVE)
    fields: tuple[FieldChange, ...] = ()
    #: its Prometheus series change identity: a label set change, or the id appears or
    #: vanishes while exported (retired jobs are not exported)
    new_series: bool = False
    #: where the new definition lives (ADD / CHANGE), relative to the proposed jobs dir
    file: str | None = None
    #: effects a reviewer should read, in plain words
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": str(self.action),
            "file": self.file,
            "new_series": self.new_series,
            "fields": [
                {
                    "field": f.field,
                    "category": f.category,
                    "old": _plain(f.old),
                    "new": _plain(f.new),
                }
                for f in self.fields
            ],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes, ordered by id, and how many jobs stay as they are."""

    changes: tuple[JobChange, ...] = ()
    unchanged: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.changes

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": {**self.counts, "unchanged": self.unchanged},
            "changes": [c.as_dict() for c in self.changes],
        }


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "model_dump"):  # a nested model (a maintenance window)
        return value.model_dump(mode="json")
    return value


def _compared_fields() -> list[str]:
    names = [n for n in JobDefinition.model_fields if n not in _IDENTITY]
    order = list(CATEGORIES)
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def _category(name: str) -> str:
    return CATEGORIES.get(name, "other")


def _exported(definition: JobDefinition) -> bool:
    return definition.status != "retired"


def _fields_of(definition: JobDefinition) -> tuple[FieldChange, ...]:
    """The non-default fields of a definition, for an ADD or a REMOVE."""
    doc = definition.model_dump(exclude_defaults=True)
    out = []
    for name in _compared_fields():
        if name in doc:
            value = getattr(definition, name)
            out.append(FieldChange(name, _category(name), None, value))
    return tuple(out)


def _label_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[FieldChange]:
    return [
        FieldChange(f"labels.{key}", "labels", old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _notes(old: JobDefinition, new: JobDefinition, labels: bool) -> list[str]:
    notes = []
    if labels and _exported(old) and _exported(new):
        notes.append(
            "labels change: new Prometheus series; alert history and `for:` timers "
            "start over, dashboards show two lines"
        )
    if old.status != new.status:
        if new.status == "retired":
            notes.append("retired: its series disappear and its alerts resolve")
        elif old.status == "retired":
            notes.append("back from retired: its series reappear")
        elif new.status in ("paused", "maintenance"):
            notes.append(f"{new.status}: exports -1 and never fails while {new.status}")
        elif new.status == "active":
            notes.append("active again: deadlines apply from now on")
    if (old.automatic_failure_threshold, old.schedule, old.timezone, old.grace) != (
        new.automatic_failure_threshold,
        new.schedule,
        new.timezone,
        new.grace,
    ):
        notes.append("deadline moves: the next deadline is computed with the new rule")
    return notes


def _change(old: JobDefinition, new: JobDefinition, file: str | None) -> JobChange | None:
    fields: list[FieldChange] = []
    labels = False
    for name in _compared_fields():
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if name == "labels":
            labels = True
            fields.extend(_label_changes(before, after))
        else:
            fields.append(FieldChange(name, _category(name), before, after))
    if not fields:
        return None
    new_series = (labels and _exported(old) and _exported(new)) or (
        _exported(old) != _exported(new)
    )
    notes = _notes(old, new, labels)
    return JobChange(new.id, Action.CHANGE, tuple(fields), new_series, file, tuple(notes))


def _moved_hint(job: JobDefinition, others: Mapping[str, JobDefinition], verb: str) -> list[str]:
    """A host change is a new job id: say so on the add and on the remove."""
    twins = sorted(d.id for d in others.values() if d.job_name == job.job_name)
    if not twins:
        return []
    return [f"same job_name as {', '.join(twins)} {verb}: a new id keeps no history or state"]


def compare(
    current: Mapping[str, JobDefinition],
    proposed: Mapping[str, JobDefinition],
    *,
    files: Mapping[str, str] | None = None,
) -> Plan:
    """The plan that turns ``current`` (id -> definition) into ``proposed``.

    ``files`` maps proposed ids to their file, for display. Pure: no I/O, no clock.
    """
    files = files or {}
    added = {i: d for i, d in proposed.items() if i not in current}
    removed = {i: d for i, d in current.items() if i not in proposed}
    changes: list[JobChange] = []
    unchanged = 0
    for job_id in sorted(set(current) | set(proposed)):
        if job_id in added:
            new = added[job_id]
            notes = ["new job: 'never reported' once its first deadline passes"]
            notes += _moved_hint(new, removed, "is removed")
            change = JobChange(
                job_id, Action.ADD, _fields_of(new), _exported(new), files.get(job_id), tuple(notes)
            )
        elif job_id in removed:
            old = removed[job_id]
            notes = ["removed: its series disappear and its alerts resolve"]
            notes += _moved_hint(old, added, "is added")
            change = JobChange(
                job_id, Action.REMOVE, _fields_of(old), _exported(old), None, tuple(notes)
            )
        else:
            found = _change(current[job_id], proposed[job_id], files.get(job_id))
            if found is None:
                unchanged += 1
                continue
            change = found
        changes.append(change)
    counts = {a.value: sum(1 for c in changes if c.action == a) for a in Action}
    return Plan(tuple(changes), unchanged, counts)


def definitions_from_api(jobs: Sequence[Mapping[str, Any]]) -> dict[str, JobDefinition]:
    """The definitions in a ``GET /api/job`` answer (unmanaged jobs have no file: skipped).

    Raises ``pydantic.ValidationError`` if an entry is not a definition this version
    understands (a newer server with new fields): the caller says which one.
    """
    out: dict[str, JobDefinition] = {}
    for entry in jobs:
        if entry.get("unmanaged"):
            continue
        doc = {k: v for k, v in entry.items() if k not in _API_EXTRAS}
        definition = JobDefinition.model_validate(doc)
        out[definition.id] = definition
    return out
