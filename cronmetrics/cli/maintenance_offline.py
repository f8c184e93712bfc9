"""``cronmetrics maintenance --state-dir``: windows written into the state store of a
*stopped* server, which finds them at its next start.

A running server owns its state dir (``state.lock``); writing under it would race its
own writes, so the command refuses (exit 5) and says to go through the server instead.
Jobs covered are counted from the config's jobs dir, as the server will see them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from cronmetrics.config import Config
from cronmetrics.errors import Conflict, NotFound, StorageError
from cronmetrics.maintenance import KIND, STATES, build_window, ended_now, window_json
from cronmetrics.windows import Window, job_labels

__all__ = ["offline"]


def _who() -> str:
    """Who made an offline change, as ``created_by`` / ``ended_by`` show it."""
    return f"{os.environ.get('USER') or 'offline'} (offline)"


class _Offline:
    def __init__(self, config: Config, store: Any) -> None:
        self.config = config
        self.store = store
        self.labels = self._labels()

    def _labels(self) -> dict[str, dict[str, str]]:
        from cronmetrics.jobs.repository import load_directory

        if not self.config.jobs_dir.is_dir():
            return {}
        loaded = load_directory(self.config.jobs_dir)
        return {job_id: job_labels(jf.definition) for job_id, jf in loaded.jobs.items()}

    def _json(self, window: Window, now: float) -> dict[str, Any]:
        jobs = sorted(j for j, labels in self.labels.items() if window.selects(labels))
        return window_json(window, now, jobs)

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        now = time.time()
        window = build_window(
            body,
            now=now,
            created_by=_who(),
            max_duration=self.config.maintenance.max_duration,
        )
        self.store.put_record(KIND, window.id, window.to_record(), now)
        return self._json(window, now)

    def list(self, state: str) -> list[dict[str, Any]]:
        now = time.time()
        wanted = set(STATES) if state == "all" else set(state.split(","))
        windows = [Window.from_record(r.value) for r in self.store.list_records(KIND)]
        chosen = sorted((w for w in windows if w.state(now) in wanted), key=lambda w: (w.end, w.id))
        return [self._json(w, now) for w in chosen]

    def end(self, wid: str) -> dict[str, Any]:
        record = self.store.get_record(KIND, wid)
        if record is None:
            raise NotFound(f"no maintenance window {wid!r}", field="id")
        now = time.time()
        ended = ended_now(
            Window.from_record(record.value),
            now,
            f"{os.environ.get('USER') or 'offline'} (offline)",
        )
        self.store.put_record(KIND, wid, ended.to_record(), now)
        return self._json(ended, now)


@contextlib.contextmanager
def offline(config: Config) -> Iterator[_Offline]:
    from cronmetrics.storage.persistence import open_store
    from cronmetrics.storage.statedir import claim_state_dir

    try:
        claimed = claim_state_dir(config.state_dir, "cronmetrics maintenance")
    except Conflict as exc:
        raise Conflict(
            f"{exc.message}; manage windows through the running server instead "
            "(--url, a token with the maintenance scope)"
        ) from None
    try:
        store, report = open_store(
            config.state_dir, config.retention.max_results_per_job, durable=True, now=time.time()
        )
        try:
            if report.fallback or report.unavailable:
                raise StorageError(
                    f"the state in {config.state_dir} is unusable "
                    f"({report.fallback or report.unavailable}); not writing to it"
                )
            yield _Offline(config, store)
        finally:
            store.close()
    finally:
        if claimed is not None:
            os.close(claimed)
