"""A running run's output (the execution log of ``/ping/<key>/<id>/log``) in both engines:
appended while the run runs, taken by its finish, bounded to its tail, durable."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redisserver import RedisServer

from cronmetrics.errors import Conflict, StorageError
from cronmetrics.monitor import Monitor
from cronmetrics.storage.interface import Result, Store
from cronmetrics.storage.persistence import open_store
from cronmetrics.storage.redisstore import RedisStore
from cronmetrics.storage.store import EmbeddedStore

T0 = 1_767_571_200.0
JOB = "backup"


def result(status: str, at: float, **extra: object) -> Result:
    return Result(JOB, status, at, at, **extra)  # type: ignore[arg-type]


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "embedded":
        embedded, _ = open_store(tmp_path, 100, durable=True, now=T0)
        yield embedded
        embedded.close()
        return
    server: RedisServer = request.getfixturevalue("redis")
    engine = RedisStore(server.url)
    assert engine.mirror.wait_loaded(10)
    yield engine
    engine.close()


def append(store: Store, text: str, run_id: str | None = None, limit: int = 1000) -> str:
    return store.append_output(JOB, text, run_id=run_id, limit=limit, now=T0 + 1).text


def test_appends_go_to_the_running_run_and_its_finish_takes_them(store: Store) -> None:
    store.record([result("start", T0, run_id="r1")], T0)
    assert append(store, "step 1\n") == "step 1\n"
    assert append(store, "step 2\n", run_id="r1") == "step 1\nstep 2\n"
    seen = store.run_output(JOB)
    assert seen is not None and (seen.run_id, seen.started) == ("r1", T0)
    assert seen.text == "step 1\nstep 2\n"
    finish = result("success", T0 + 5, run_id="r1")
    taken = store.take_outputs([finish])
    assert taken[JOB].text == "step 1\nstep 2\n"
    with pytest.raises(Conflict, match="finishing"):
        append(store, "too late")  # the finish took it: refused, not left behind
    store.record([finish], T0 + 5)
    assert store.run_output(JOB) is None
    with pytest.raises(Conflict, match="no run of 'backup' is running"):
        append(store, "after the run")


def test_without_a_running_run_or_with_another_run_id_nothing_is_kept(store: Store) -> None:
    with pytest.raises(Conflict, match="no run of 'backup' is running"):
        append(store, "never started")
    store.record([result("start", T0, run_id="r1")], T0)
    with pytest.raises(Conflict, match=r"run 'r9' of 'backup' is not running.*'r1'"):
        append(store, "wrong run", run_id="r9")
    assert store.run_output(JOB) is None


def test_a_new_run_starts_with_an_empty_output(store: Store) -> None:
    store.record([result("start", T0, run_id="r1")], T0)
    append(store, "of run 1")
    store.record([result("start", T0 + 60, run_id="r2")], T0 + 60)  # r1 never finished
    assert store.run_output(JOB) is None
    assert append(store, "of run 2") == "of run 2"
    assert store.take_outputs([result("success", T0 + 70)])[JOB].text == "of run 2"


def test_a_finish_of_another_run_or_an_old_result_takes_nothing(store: Store) -> None:
    store.record([result("start", T0 + 10, run_id="r1")], T0 + 10)
    append(store, "kept")
    assert store.take_outputs([result("success", T0 + 20, run_id="other")]) == {}
    assert store.take_outputs([result("failure", T0 + 5)]) == {}  # older than the start
    assert append(store, "!") == "kept!"


def test_the_output_keeps_its_last_bytes_at_a_character_boundary(store: Store) -> None:
    store.record([result("start", T0)], T0)
    append(store, "x" * 50, limit=64)
    text = append(store, "é" * 20, limit=64)  # 40 bytes
    assert text.encode() == b"x" * 24 + "é".encode() * 20
    text = append(store, "€", limit=64)  # 3 bytes: the cut lands inside no character
    assert len(text.encode()) <= 64 and text.endswith("é€")


def test_a_restored_output_comes_back_in_front(store: Store) -> None:
    store.record([result("start", T0, run_id="r1")], T0)
    append(store, "first\n")
    taken = store.take_outputs([result("success", T0 + 1, run_id="r1")])[JOB]
    store.restore_output(taken)  # recording the finish failed
    assert append(store, "second\n") == "first\nsecond\n"


def test_two_appends_at_once_lose_nothing(store: Store) -> None:
    store.record([result("start", T0)], T0)
    lines = [f"thread {t} line {i}\n" for t in range(4) for i in range(25)]
    barrier = threading.Barrier(4)

    def writer(t: int) -> None:
        barrier.wait()
        for i in range(25):
            append(store, f"thread {t} line {i}\n", limit=100_000)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    output = store.run_output(JOB)
    assert output is not None
    assert sorted(output.text.splitlines(keepends=True)) == sorted(lines)


def test_the_embedded_output_survives_a_restart(tmp_path: Path) -> None:
    first, _ = open_store(tmp_path, 100, durable=False, now=T0)
    first.record([result("start", T0, run_id="r1")], T0)
    first.append_output(JOB, "before the restart\n", run_id=None, limit=100, now=T0)
    first.close()
    again, _ = open_store(tmp_path, 100, durable=False, now=T0)
    output = again.run_output(JOB)
    assert output is not None and output.text == "before the restart\n"
    assert again.list_records("run-output") == []  # not mixed with runtime records
    assert again.drop(JOB)
    again.close()
    third, _ = open_store(tmp_path, 100, durable=False, now=T0)
    assert third.run_output(JOB) is None and third.take_outputs([result("success", T0)]) == {}
    third.close()


def test_the_monitor_puts_the_log_in_front_of_the_finish_redacted_and_bounded() -> None:
    from cronmetrics.jobs.model import JobDefinition, ResultIn
    from cronmetrics.web.redaction import make_redactor

    store = EmbeddedStore()
    monitor = Monitor(store, max_output_bytes=80, redact=make_redactor([r"(?i)password=\S+"]))
    monitor.apply_definitions(
        {JOB: JobDefinition(job_name=JOB, automatic_failure_threshold=60)}, T0
    )
    monitor.submit([ResultIn(job_name=JOB, status="start")], T0)
    monitor.append_output(JOB, None, "password=hunter2 ok\n", run_id=None, now=T0 + 1)
    monitor.append_output(JOB, None, "y" * 70, run_id=None, now=T0 + 2)
    assert "hunter2" not in (store.run_output(JOB) or pytest.fail()).text
    monitor.submit([ResultIn(job_name=JOB, status="success", output="done")], T0 + 3)
    (last, _) = store.history(JOB, limit=2)
    assert last.output is not None and last.output.endswith("y" * 70 + "\ndone")
    assert len(last.output.encode()) <= 80 and "hunter2" not in last.output


def test_a_secret_split_over_two_appends_stays_hidden_where_the_tail_cuts_it() -> None:
    from cronmetrics.config import DEFAULT_REDACT
    from cronmetrics.jobs.model import JobDefinition, ResultIn
    from cronmetrics.web.redaction import make_redactor

    store = EmbeddedStore()
    monitor = Monitor(store, max_output_bytes=80, redact=make_redactor(DEFAULT_REDACT))
    monitor.apply_definitions(
        {JOB: JobDefinition(job_name=JOB, automatic_failure_threshold=60)}, T0
    )
    monitor.submit([ResultIn(job_name=JOB, status="start")], T0)
    # neither piece matches alone; joined, the last 80 bytes start inside 'DB_PASSWORD'
    monitor.append_output(JOB, None, "x" * 60 + " DB_PASSWORD=", run_id=None, now=T0 + 1)
    monitor.append_output(JOB, None, "hunter2 " + "y" * 70, run_id=None, now=T0 + 2)
    shown = monitor.run_output(JOB)
    assert shown is not None and shown.endswith("y" * 70)
    assert "hunter2" not in shown and len(shown.encode()) <= 80
    monitor.submit([ResultIn(job_name=JOB, status="success")], T0 + 3)
    (last, _) = store.history(JOB, limit=2)
    assert last.output is not None and last.output.endswith("y" * 70)
    assert "hunter2" not in last.output and len(last.output.encode()) <= 80
    assert monitor.run_output(JOB) is None


def test_a_log_sent_to_one_replica_goes_with_the_finish_sent_to_the_other(
    redis: RedisServer,
) -> None:
    from liveserver import wait_for

    a, b = RedisStore(redis.url), RedisStore(redis.url)
    try:
        for engine in (a, b):
            assert engine.mirror.wait_loaded(10)
        a.record([result("start", T0, run_id="r1")], T0)
        append(a, "from replica A\n")  # reads the state in Redis, not A's mirror
        wait_for(lambda: b.state(JOB), "B to mirror the start", timeout=5)
        assert (b.run_output(JOB) or pytest.fail()).text == "from replica A\n"
        assert append(b, "from replica B\n", run_id="r1").endswith("B\n")
        taken = b.take_outputs([result("success", T0 + 9, run_id="r1")])
        assert taken[JOB].text == "from replica A\nfrom replica B\n"
        with pytest.raises(Conflict, match="finishing"):
            append(a, "late")
    finally:
        a.close()
        b.close()


def test_a_finish_is_recorded_in_one_step_only_when_its_run_logged_nothing(
    store: Store,
) -> None:
    """``record_unlogged`` refuses (None, nothing recorded) a finish whose run has open
    output, which must be taken first; any engine may refuse every finish."""
    store.record([result("start", T0, run_id="r1")], T0)
    append(store, "step 1\n")
    finish = result("success", T0 + 5, run_id="r1")
    assert store.record_unlogged([finish], T0 + 5) is None
    state = store.state(JOB)
    assert state is not None and state.running  # nothing was recorded
    assert store.take_outputs([finish])[JOB].text == "step 1\n"
    recorded = store.record_unlogged([finish], T0 + 5)
    if recorded is None:  # the embedded engine: take first, then record
        recorded = store.record([finish], T0 + 5)
    assert [r.state.running for r in recorded] == [False]


def test_on_redis_a_finish_without_a_log_is_one_script_call(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RECORD call checks for open output itself: no TAKE_OUTPUT round trip (each
    one waits for an AOF fsync under ``appendfsync always``) unless the run logged."""
    engine = RedisStore(redis.url)
    assert engine.mirror.wait_loaded(10)
    monitor = Monitor(store=engine)
    calls: list[str] = []
    real = engine._call

    def counted(what: str, fn: Callable[[], object]) -> object:
        calls.append(what)
        return real(what, fn)

    monkeypatch.setattr(engine, "_call", counted)
    try:
        engine.record([result("start", T0, run_id="r1")], T0)
        calls.clear()
        monitor._record_with_output([result("success", T0 + 5, run_id="r1")], T0 + 5)
        assert calls == ["record"]
        engine.record([result("start", T0 + 60, run_id="r2")], T0 + 60)
        engine.append_output(JOB, "logged\n", run_id="r2", limit=1000, now=T0 + 61)
        calls.clear()
        recorded = monitor._record_with_output([result("success", T0 + 65, run_id="r2")], T0 + 65)
        assert calls == ["record", "take output", "record"]  # refused, taken, recorded
        assert recorded[0].result.output == "logged\n"
    finally:
        engine.close()


def test_on_redis_every_log_answered_ok_is_in_the_finish_that_ends_its_run(
    redis: RedisServer,
) -> None:
    """Appends race the finish, from the run's first log on: each one is either refused
    or in the stored output (the check and the record are one script call, so none can
    land in between)."""
    engine = RedisStore(redis.url)
    assert engine.mirror.wait_loaded(10)
    monitor = Monitor(store=engine)
    try:
        for run in range(20):
            at = T0 + 100 * run
            rid = f"r{run}"
            engine.record([result("start", at, run_id=rid)], at)
            accepted: list[str] = []

            def log(rid: str = rid, at: float = at, accepted: list[str] = accepted) -> None:
                for i in range(300):  # the stored output keeps all of them (<10 kB)
                    try:
                        engine.append_output(JOB, f"<{i}>", run_id=rid, limit=1_000_000, now=at + 1)
                    except Conflict:
                        return
                    accepted.append(f"<{i}>")

            thread = threading.Thread(target=log)
            thread.start()
            finish = result("success", at + 5, run_id=rid)
            (recorded,) = monitor._record_with_output([finish], at + 5)
            thread.join(10)
            assert (recorded.result.output or "") == "".join(accepted)
    finally:
        engine.close()


def test_on_redis_a_first_log_between_the_take_and_the_record_is_refused(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two finishes in one batch, one of a run that logged: the batch falls back to take,
    then record. The take closes the other run too, so its first log, sent to another
    replica in between, is refused rather than answered OK and lost."""
    a, b = RedisStore(redis.url), RedisStore(redis.url)
    try:
        for engine in (a, b):
            assert engine.mirror.wait_loaded(10)
        starts = [Result(j, "start", T0, T0, run_id=f"r{j}") for j in ("A", "B")]
        a.record(starts, T0)
        a.append_output("A", "a logged\n", run_id="rA", limit=1000, now=T0 + 1)
        accepted: list[str] = []
        real_take = a.take_outputs

        def take_then_b_logs(finishes: list[Result]) -> dict[str, object]:
            taken = real_take(finishes)
            try:  # replica b: B's first log, between the take and the record
                b.append_output("B", "b logged\n", run_id="rB", limit=1000, now=T0 + 2)
                accepted.append("b logged\n")
            except Conflict:
                pass
            return taken  # type: ignore[return-value]

        monkeypatch.setattr(a, "take_outputs", take_then_b_logs)
        finishes = [Result(j, "success", T0 + 5, T0 + 5, run_id=f"r{j}") for j in ("A", "B")]
        recorded = Monitor(store=a)._record_with_output(finishes, T0 + 5)
        by_job = {r.result.job_id: r.result.output for r in recorded}
        assert by_job["A"] == "a logged\n"
        assert accepted == []  # refused: the run is finishing
        assert by_job["B"] is None
    finally:
        a.close()
        b.close()


def test_a_finish_after_a_start_in_the_same_batch_takes_no_earlier_output(store: Store) -> None:
    """``[start, success]`` without run ids in one batch is a new run of its own: the log
    of the run before (never finished) must not go with its finish."""
    monitor = Monitor(store=store)
    store.record([result("start", T0)], T0)
    append(store, "of the old run\n")
    recorded = monitor._record_with_output(
        [result("start", T0 + 60), result("success", T0 + 61)], T0 + 61
    )
    assert [r.result.output for r in recorded] == [None, None]


def test_an_append_the_state_dir_guard_refuses_is_not_kept(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 100, durable=False, now=T0)
    store.record([result("start", T0, run_id="r1")], T0)
    store.append_output(JOB, "kept\n", run_id=None, limit=100, now=T0)

    def refuse() -> None:
        raise StorageError("the state dir is gone (test)")

    store.before_write = refuse  # what the state dir's guard does when it cannot re-lock
    with pytest.raises(StorageError, match="state dir is gone"):
        store.append_output(JOB, "lost\n", run_id=None, limit=100, now=T0 + 1)
    store.before_write = None
    assert store.run_output(JOB).text == "kept\n"  # type: ignore[union-attr]
    store.close()


def test_an_append_racing_a_drop_of_its_job_leaves_no_output_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The append is held just before it takes the writer lock, the drop runs, then the
    append goes on: it must find no running run then, not write a record of a job the
    drop deleted (records of a dropped job would come back at the next start)."""
    store, _ = open_store(tmp_path, 100, durable=False, now=T0)
    store.record([result("start", T0, run_id="r1")], T0)
    store.append_output(JOB, "first\n", run_id=None, limit=100, now=T0)
    writer = store._writer
    entering, go = threading.Event(), threading.Event()

    class HeldAppender:
        def __enter__(self) -> None:
            if threading.current_thread().name == "appender":
                entering.set()
                go.wait(10)
            writer.acquire()

        def __exit__(self, *exc: object) -> None:
            writer.release()

    monkeypatch.setattr(store, "_writer", HeldAppender())
    outcome: list[object] = []

    def appender() -> None:
        try:
            outcome.append(append(store, "second\n"))
        except Conflict as exc:
            outcome.append(exc)

    thread = threading.Thread(target=appender, name="appender")
    thread.start()
    assert entering.wait(10)
    assert store.drop(JOB)
    go.set()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict)
    monkeypatch.undo()
    store.close()
    again, _ = open_store(tmp_path, 100, durable=False, now=T0)
    assert again.database is not None
    assert again.database.records("run-output") == []
    assert again.run_output(JOB) is None
    again.close()
