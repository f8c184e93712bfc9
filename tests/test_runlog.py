"""The embedded engine's run log on its own: the store's side (which run is running,
the durable write) is played by plain functions, so that a failing write and the order
of a take, an append and a restore can be set up exactly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from cronmetrics.errors import Conflict, StorageError
from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import RunOutput
from cronmetrics.storage.runlog import OUTPUT_KIND, Run, RunLog, Save, output_of, record_of

T0 = 1_767_571_200.0


@dataclass
class Side:
    """What the store would answer: the running run of each job, and the writes."""

    running: dict[str, Run] = field(default_factory=dict)
    saved: list[dict[str, RunOutput | None]] = field(default_factory=list)
    #: the write fails, or (``refuse``) the store refuses writes before any
    fail: bool = False
    refuse: bool = False

    def run_of(self, job_id: str) -> Run | None:
        return self.running.get(job_id)

    def ended(self, finishes: Sequence[Result]) -> dict[str, Run]:
        return {r.job_id: self.running[r.job_id] for r in finishes if r.job_id in self.running}

    @contextlib.contextmanager
    def writing(self) -> Iterator[Save]:
        if self.refuse:
            raise StorageError("the state dir is gone")

        def save(outputs: Mapping[str, RunOutput | None]) -> None:
            if self.fail:
                raise StorageError("cannot write state.db: disk full")
            self.saved.append(dict(outputs))

        yield save


@pytest.fixture
def side() -> Side:
    return Side(running={"backup": ("r1", T0)})


@pytest.fixture
def log(side: Side) -> RunLog:
    return RunLog(side.run_of, side.ended, side.writing)


def finish(job_id: str = "backup") -> Result:
    return Result(job_id, "success", T0 + 60, T0 + 60, run_id="r1")


def test_each_append_is_saved_before_it_is_kept(side: Side, log: RunLog) -> None:
    log.append("backup", "one\n", run_id="r1", limit=100, now=T0)
    out = log.append("backup", "two\n", run_id=None, limit=100, now=T0 + 1)
    assert out.text == "one\ntwo\n"
    assert side.saved[-1] == {"backup": out}
    assert log.current("backup") == out


def test_a_failed_save_leaves_the_output_as_it_was(side: Side, log: RunLog) -> None:
    before = log.append("backup", "kept\n", run_id="r1", limit=100, now=T0)
    side.fail = True
    with pytest.raises(StorageError, match="disk full"):
        log.append("backup", "lost\n", run_id="r1", limit=100, now=T0 + 1)
    assert log.current("backup") == before
    with pytest.raises(StorageError):
        log.take([finish()])
    side.fail = False
    assert log.take([finish()]) == {"backup": before}  # the finish sent again


def test_after_a_take_appends_to_that_run_are_refused_until_it_is_restored(
    side: Side, log: RunLog
) -> None:
    log.append("backup", "first\n", run_id="r1", limit=100, now=T0)
    taken = log.take([finish()])
    assert side.saved[-1] == {"backup": None}
    with pytest.raises(Conflict, match="is finishing"):
        log.append("backup", "late\n", run_id="r1", limit=100, now=T0 + 1)
    assert log.current("backup") is None
    log.restore(taken["backup"])  # recording the finish failed
    out = log.append("backup", "after\n", run_id="r1", limit=100, now=T0 + 2)
    assert out.text == "first\nafter\n"


def test_a_finish_of_a_run_that_logged_nothing_still_refuses_later_appends(
    log: RunLog,
) -> None:
    assert log.take([finish()]) == {}
    with pytest.raises(Conflict, match="is finishing"):
        log.append("backup", "late\n", run_id="r1", limit=100, now=T0)


def test_a_restore_of_a_run_no_longer_running_does_nothing(side: Side, log: RunLog) -> None:
    log.append("backup", "first\n", run_id="r1", limit=100, now=T0)
    taken = log.take([finish()])["backup"]
    side.running["backup"] = ("r2", T0 + 120)  # the next run started meanwhile
    writes = len(side.saved)
    log.restore(taken)
    assert len(side.saved) == writes
    assert log.current("backup") is None


def test_an_append_to_no_run_or_another_run_is_refused_with_the_running_one_named(
    side: Side, log: RunLog
) -> None:
    with pytest.raises(Conflict, match="no run of 'deploy' is running"):
        log.append("deploy", "x", run_id=None, limit=100, now=T0)
    with pytest.raises(Conflict, match="the running one is 'r1'"):
        log.append("backup", "x", run_id="r0", limit=100, now=T0)
    assert side.saved == []


def test_forget_and_records_and_the_record_round_trip(side: Side, log: RunLog) -> None:
    out = log.append("backup", "text\n", run_id="r1", limit=100, now=T0)
    [record] = log.records()
    assert record.kind == OUTPUT_KIND
    assert output_of(record) == out == output_of(record_of(out))
    log.forget("backup")
    assert log.records() == []
    fresh = RunLog(side.run_of, side.ended, side.writing)
    fresh.load([out])
    assert fresh.current("backup") == out


def test_a_take_of_several_outputs_is_one_write_and_a_failed_one_changes_nothing(
    side: Side, log: RunLog
) -> None:
    side.running["deploy"] = ("d1", T0)
    backup = log.append("backup", "b\n", run_id="r1", limit=100, now=T0)
    deploy = log.append("deploy", "d\n", run_id="d1", limit=100, now=T0)
    finishes = [finish(), Result("deploy", "success", T0 + 60, T0 + 60, run_id="d1")]
    side.fail = True
    with pytest.raises(StorageError):
        log.take(finishes)
    side.fail = False
    assert (log.current("backup"), log.current("deploy")) == (backup, deploy)
    log.append("backup", "more\n", run_id="r1", limit=100, now=T0 + 1)  # not finishing
    writes = len(side.saved)
    assert set(log.take(finishes)) == {"backup", "deploy"}
    assert side.saved[writes:] == [{"backup": None, "deploy": None}]


def test_a_finish_with_nothing_to_take_writes_nothing_even_when_writes_are_refused(
    side: Side, log: RunLog
) -> None:
    side.refuse = True  # a server without its disk keeps recording finishes in memory
    assert log.take([finish()]) == {}
    side.refuse = False
    with pytest.raises(Conflict, match="is finishing"):
        log.append("backup", "late\n", run_id="r1", limit=100, now=T0)


def test_a_finish_of_the_next_run_takes_no_output_of_the_one_before(
    side: Side, log: RunLog
) -> None:
    log.append("backup", "of r1\n", run_id="r1", limit=100, now=T0)
    side.running["backup"] = ("r2", T0 + 120)  # r1 never finished; r2 started
    r2 = Result("backup", "success", T0 + 180, T0 + 180, run_id="r2")
    assert log.take([r2]) == {}


def test_a_forgotten_job_keeps_no_mark_and_no_output(side: Side, log: RunLog) -> None:
    log.append("backup", "text\n", run_id="r1", limit=100, now=T0)
    log.take([finish()])
    log.forget("backup")
    assert log.records() == []
    log.append("backup", "again\n", run_id="r1", limit=100, now=T0 + 1)  # same run id
    assert log.current("backup").text == "again\n"  # type: ignore[union-attr]


def test_a_restore_that_cannot_write_still_lets_appends_in(side: Side, log: RunLog) -> None:
    log.append("backup", "first\n", run_id="r1", limit=100, now=T0)
    taken = log.take([finish()])["backup"]
    side.fail = True  # the finish failed to record, and so does putting the output back
    with pytest.raises(StorageError):
        log.restore(taken)
    side.fail = False
    out = log.append("backup", "after\n", run_id="r1", limit=100, now=T0 + 1)
    assert out.text == "after\n"  # what could not be written back is lost, said so


def test_an_append_to_no_running_run_is_a_conflict_even_when_writes_are_refused(
    side: Side, log: RunLog
) -> None:
    side.refuse = True
    with pytest.raises(Conflict, match="no run of 'deploy'"):
        log.append("deploy", "x", run_id=None, limit=100, now=T0)
    with pytest.raises(Conflict, match="the running one is 'r1'"):
        log.append("backup", "x", run_id="r0", limit=100, now=T0)
    with pytest.raises(StorageError):  # a valid one is refused for the disk
        log.append("backup", "x", run_id="r1", limit=100, now=T0)
