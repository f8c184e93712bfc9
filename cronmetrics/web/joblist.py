"""The dashboard's job list: filter, count, sort and page job views (pure).

Everything a list page shows is chosen here from the monitor's views and the query string,
so a shared link shows the same list, and 10,000 jobs cost one pass over plain values.
The order is stable (ties go by id), so rows only move when their status does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlencode

from cronmetrics.errors import InvalidRequest
from cronmetrics.evaluator import Evaluation
from cronmetrics.jobs.model import JobDefinition
from cronmetrics.storage.interface import JobState

__all__ = ["SORTS", "STATE_SORTS", "STATUSES", "Entry", "ListPage", "ListQuery", "select"]

#: status key (in URLs) -> (word on the badge, order in "failing first"); failing ones first
STATUSES: dict[str, tuple[str, int]] = {
    "timeout": ("timeout", 0),
    "failed": ("failed", 1),
    "missed": ("missed deadline", 2),
    "never": ("never reported", 3),
    "running": ("running", 4),
    "pending": ("pending", 5),
    "ok": ("ok", 6),
    "maintenance": ("maintenance", 7),
    "paused": ("paused", 8),
    "retired": ("retired", 9),
}
FAILING = frozenset({"timeout", "failed", "missed", "never"})
_BY_REASON = {word: key for key, (word, _) in STATUSES.items()}
SORTS = ("status", "name", "host", "last_run", "deadline", "duration")
#: sorts that need every job's state, not only its definition and evaluation
STATE_SORTS = frozenset({"last_run", "duration"})
PER_PAGE = 100
MAX_PER_PAGE = 500


class Listed(Protocol):
    """What the list filters and sorts on: a :class:`~cronmetrics.monitor.JobView`, or an
    :class:`Entry` where copying 10,000 states would cost more than the page."""

    @property
    def id(self) -> str: ...
    @property
    def definition(self) -> JobDefinition: ...
    @property
    def evaluation(self) -> Evaluation: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """A job without its state: enough for every filter and for the sorts outside
    :data:`STATE_SORTS`."""

    id: str
    definition: JobDefinition
    evaluation: Evaluation


def status_key(view: Listed) -> str:
    """The status a badge shows: the evaluator's reason, as a URL-safe key."""
    return _BY_REASON.get(view.evaluation.reason, "ok")


def _state(view: Listed) -> JobState:
    state: JobState = getattr(view, "state")  # noqa: B009 - a JobView; see STATE_SORTS
    return state


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The list's filters, sort and page, as read from (and written back to) the URL."""

    status: str | None = None  # a STATUSES key, or "failing"
    host: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    q: str = ""
    sort: str = "status"
    desc: bool = False
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def from_args(cls, args: Mapping[str, str], labels: Iterable[str]) -> ListQuery:
        """Parse the query string; a bad value is a 400 naming the parameter."""
        status = args.get("status") or None
        if status is not None and status != "failing" and status not in STATUSES:
            choices = ", ".join(["failing", *STATUSES])
            raise InvalidRequest(f"status must be one of {choices}", field="status")
        pairs = []
        for raw in labels:
            if not raw:
                continue
            key, sep, value = raw.partition("=")
            if not sep or not key.strip():
                raise InvalidRequest(f"label filter must be key=value, got {raw!r}", field="label")
            pairs.append((key.strip(), value.strip()))
        sort = args.get("sort") or "status"
        if sort not in SORTS:
            raise InvalidRequest(f"sort must be one of {', '.join(SORTS)}", field="sort")
        return cls(
            status=status,
            host=args.get("host") or None,
            labels=tuple(dict.fromkeys(pairs)),
            q=(args.get("q") or "").strip(),
            sort=sort,
            desc=args.get("order") == "desc",
            page=_positive(args.get("page"), "page", 1, 10**9),
            per_page=_positive(args.get("per_page"), "per_page", PER_PAGE, MAX_PER_PAGE),
        )

    def params(self, **changes: object) -> str:
        """The query string of this list with ``changes`` (page resets unless given)."""
        changes.setdefault("page", 1)
        query = replace(self, **changes)  # type: ignore[arg-type]
        items: list[tuple[str, str]] = []
        if query.status:
            items.append(("status", query.status))
        if query.host is not None:
            items.append(("host", query.host))
        items += [("label", f"{k}={v}") for k, v in query.labels]
        if query.q:
            items.append(("q", query.q))
        if query.sort != "status":
            items.append(("sort", query.sort))
        if query.desc:
            items.append(("order", "desc"))
        if query.page != 1:
            items.append(("page", str(query.page)))
        if query.per_page != PER_PAGE:
            items.append(("per_page", str(query.per_page)))
        return "?" + urlencode(items) if items else "?"

    def with_label(self, key: str, value: str) -> str:
        """The link of a label chip: this list narrowed to ``key=value`` too."""
        pair = (key, value)
        return self.params(labels=self.labels if pair in self.labels else (*self.labels, pair))

    def without_label(self, key: str, value: str) -> str:
        return self.params(labels=tuple(p for p in self.labels if p != (key, value)))

    @property
    def filtered(self) -> bool:
        return bool(self.status or self.host is not None or self.labels or self.q)


def _positive(raw: str | None, name: str, default: int, top: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= top:
        raise InvalidRequest(f"{name} must be an integer from 1 to {top}", field=name)
    return int(raw)


@dataclass(frozen=True, slots=True)
class ListPage:
    rows: list[Listed]
    #: jobs matching every filter
    total: int
    #: status key -> jobs matching every filter but the status one
    counts: dict[str, int]
    failing: int
    hosts: list[str]
    page: int
    pages: int


def _matches(view: Listed, query: ListQuery, needle: str) -> bool:
    d = view.definition
    if query.host is not None and (d.host or "") != query.host:
        return False
    if any(d.labels.get(k) != v for k, v in query.labels):
        return False
    if needle:
        text = f"{view.id} {d.description or ''} " + " ".join(
            f"{k}={v}" for k, v in d.labels.items()
        )
        if needle not in text.lower():
            return False
    return True


def _inf(value: float | None) -> float:
    return math.inf if value is None else value


_SORT_KEYS: dict[str, Callable[[Listed], tuple[object, ...]]] = {
    "status": lambda v: (STATUSES[status_key(v)][1], v.id),
    "name": lambda v: (v.definition.job_name, v.definition.host or "", v.id),
    "host": lambda v: (v.definition.host or "", v.id),
    "last_run": lambda v: (-(_state(v).last_run or -math.inf), v.id),  # newest first
    "deadline": lambda v: (_inf(v.evaluation.deadline), v.id),
    "duration": lambda v: (-(_state(v).last_duration or 0.0), v.id),
}


def select(views: Sequence[Listed], query: ListQuery) -> ListPage:
    """The page of ``views`` that ``query`` asks for, with the counts around it."""
    needle = query.q.lower()
    narrowing = query.host is not None or bool(query.labels) or bool(needle)
    narrowed = [v for v in views if _matches(v, query, needle)] if narrowing else list(views)
    keys = [_BY_REASON.get(v.evaluation.reason, "ok") for v in narrowed]
    counts = Counter(keys)
    failing = sum(n for key, n in counts.items() if key in FAILING)
    if query.status == "failing":
        chosen = [v for v, key in zip(narrowed, keys, strict=True) if key in FAILING]
    elif query.status is not None:
        chosen = [v for v, key in zip(narrowed, keys, strict=True) if key == query.status]
    elif query.sort == "status":  # the default page: sort on the keys at hand
        ranked = sorted(
            zip(narrowed, keys, strict=True),
            key=lambda pair: (STATUSES[pair[1]][1], pair[0].id),
            reverse=query.desc,
        )
        chosen = [v for v, _ in ranked]
    else:
        chosen = narrowed
    if query.status is not None or query.sort != "status":
        chosen.sort(key=_SORT_KEYS[query.sort], reverse=query.desc)
    pages = max(1, math.ceil(len(chosen) / query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    hosts = sorted({v.definition.host or "" for v in views})
    return ListPage(
        rows=chosen[start : start + query.per_page],
        total=len(chosen),
        counts={key: counts.get(key, 0) for key in STATUSES},
        failing=failing,
        hosts=hosts,
        page=page,
        pages=pages,
    )
