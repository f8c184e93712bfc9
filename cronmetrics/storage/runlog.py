"""Running runs' output for the embedded engine: what ``/ping/<id>/log`` appends to.

A run's output is kept per job (one :class:`~cronmetrics.storage.interface.RunOutput`,
the tail of what its run sent so far) and made durable by the store before each call
returns, as a ``run-output`` runtime record. Which run is running is the store's to say
(it holds the states), so :class:`RunLog` asks it through ``running`` and ``ended``;
how records reach the database is the store's too (``writing``). The rules it keeps (the
interface's docstring draws them):

- an append goes to the running run only (the one of its ``run_id``, if given);
- a finish takes its run's output (:meth:`RunLog.take`) before it is recorded; from
  then on appends to that run are refused, so none is left behind the finish;
- a finish that could not be recorded puts the output back (:meth:`RunLog.restore`).

Each change is decided, written and kept in memory inside one ``writing()`` block, which
the store runs under its writer lock: a drop of the job, or the database written anew
from memory (the state dir was lost), comes wholly before or wholly after it. A take
writes its deletions in one transaction: all of its outputs are taken, or none.

Locks, in the store's order: ``_serial`` (every change, also without a database), then
the store's (writer, memory), then ``_mem``, which guards the two dictionaries for
microseconds and is innermost: the store calls :meth:`forget` and :meth:`records` under
its own memory lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from cronmetrics.errors import Conflict
from cronmetrics.storage.history import Result, tail
from cronmetrics.storage.interface import RunOutput, RuntimeRecord

__all__ = ["OUTPUT_KIND", "Run", "RunLog", "Save", "output_of", "record_of"]

#: the runtime-record kind that keeps running runs' output in ``state.db``
OUTPUT_KIND = "run-output"

#: a run: its run id (None: the start named none) and its start timestamp
Run = tuple[str | None, float | None]
#: writes outputs in one transaction (None: delete the job's), or raises
Save = Callable[[Mapping[str, RunOutput | None]], None]


def record_of(output: RunOutput) -> RuntimeRecord:
    """The runtime record that keeps ``output`` in the database."""
    value = {"run_id": output.run_id, "started": output.started, "text": output.text}
    return RuntimeRecord(OUTPUT_KIND, output.job_id, value, output.updated)


def output_of(record: RuntimeRecord) -> RunOutput:
    """The output a ``run-output`` record keeps."""
    v = record.value
    return RunOutput(
        record.key, v.get("run_id"), v.get("started"), v.get("text", ""), record.updated
    )


def _run(output: RunOutput) -> Run:
    return output.run_id, output.started


class RunLog:
    """Each job's running run's output (module docstring).

    ``running(job_id)``: the job's running run, or None. ``ended(finishes)``: for each
    job some of ``finishes`` ends the running run of, that run. ``writing()``: a block
    within which no other write of the store happens, yielding the function that writes
    outputs; it may raise StorageError on entry (the database refuses writes).
    """

    def __init__(
        self,
        running: Callable[[str], Run | None],
        ended: Callable[[Sequence[Result]], dict[str, Run]],
        writing: Callable[[], contextlib.AbstractContextManager[Save]],
    ) -> None:
        self._running = running
        self._ended = ended
        self._writing = writing
        self._serial = threading.Lock()
        self._mem = threading.Lock()
        self._outputs: dict[str, RunOutput] = {}
        #: the runs whose finish took their output: appends to those are refused
        self._taken: dict[str, Run] = {}

    def load(self, outputs: Iterable[RunOutput]) -> None:
        """The outputs the database held at start."""
        with self._mem:
            self._outputs.update((o.job_id, o) for o in outputs)

    def append(
        self, job_id: str, text: str, *, run_id: str | None, limit: int, now: float
    ) -> RunOutput:
        """Add ``text`` to the running run's output, kept to its last ``limit``
        characters; Conflict when no run (or not ``run_id``) is running, or its finish
        has taken the output."""
        with self._serial:
            self._appendable(job_id, run_id)  # refused as such even if writes are too
            with self._writing() as save:
                run = self._appendable(job_id, run_id)  # a drop may have come between
                with self._mem:
                    before = self._outputs.get(job_id)
                kept = before.text if before and _run(before) == run else ""
                output = RunOutput(job_id, run[0], run[1], tail(kept + text, limit), now)
                save({job_id: output})
                with self._mem:
                    self._outputs[job_id] = output
                return output

    def _appendable(self, job_id: str, run_id: str | None) -> Run:
        """The run an append of ``run_id`` goes to, or Conflict."""
        run = self._running(job_id)
        if run is None:
            raise Conflict(f"no run of {job_id!r} is running: send its start first")
        if run_id is not None and run[0] != run_id:
            running = "" if run[0] is None else f" (the running one is {run[0]!r})"
            raise Conflict(f"run {run_id!r} of {job_id!r} is not running{running}")
        with self._mem:
            if self._taken.get(job_id) == run:
                raise Conflict(f"the running run of {job_id!r} is finishing")
        return run

    def current(self, job_id: str) -> RunOutput | None:
        """The running run's output so far, or None."""
        with self._mem:
            output = self._outputs.get(job_id)
        if output is None or _run(output) != self._running(job_id):
            return None
        return output

    def take(self, finishes: Sequence[Result]) -> dict[str, RunOutput]:
        """The output of each run ``finishes`` end, taken out (all or none); every run
        they end is marked finishing, logged or not, so that a later append to it is
        refused. A failed take changes nothing (the finish is to be sent again)."""
        with self._serial:
            ended = self._ended(finishes)
            with self._mem:
                taken = {
                    job_id: output
                    for job_id, run in ended.items()
                    if (output := self._outputs.get(job_id)) is not None and _run(output) == run
                }
            if taken:  # nothing to write otherwise: the store may refuse writes now
                with self._writing() as save:
                    save(dict.fromkeys(taken))
                    with self._mem:
                        for job_id in taken:  # (gone already if dropped meanwhile)
                            self._outputs.pop(job_id, None)
            with self._mem:
                self._taken.update(ended)
        return taken

    def restore(self, output: RunOutput) -> None:
        """Put back an output :meth:`take` took (its finish was not recorded), if its run
        is still running. Appends to it are accepted again, even if the output could
        not be written back (then it is lost, and the error raised)."""
        job_id, run = output.job_id, _run(output)
        with self._serial:
            if self._running(job_id) != run:
                return
            try:
                with self._writing() as save:
                    if self._running(job_id) != run:
                        return
                    save({job_id: output})
                    with self._mem:
                        self._outputs[job_id] = output
            finally:
                with self._mem:
                    if self._taken.get(job_id) == run:
                        del self._taken[job_id]

    def forget(self, job_id: str) -> None:
        """The job was dropped (its record deleted with it)."""
        with self._mem:
            self._outputs.pop(job_id, None)
            self._taken.pop(job_id, None)

    def records(self) -> list[RuntimeRecord]:
        """Every output as the record that keeps it (a database written anew)."""
        with self._mem:
            return [record_of(o) for o in self._outputs.values()]
