"""Snapshots and the journal, in process: round trips, damaged files, a full disk."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, FakeClock
from flask.testing import FlaskClient

from cronmetrics.storage import generations as generations_mod
from cronmetrics.storage import journal as journal_mod
from cronmetrics.storage.history import History, Result
from cronmetrics.storage.snapshot import FORMAT_VERSION, SnapshotError, Snapshotter, decode
from cronmetrics.web.app import Services, services

JOBS = {
    "backup.yaml": "job_name: backup\nautomatic_failure_threshold: 3600\n",
    "sync.yaml": "job_name: sync\nhost: db1\nautomatic_failure_threshold: 600\n",
}


def svc_of(client: FlaskClient) -> Services:
    return services(client.application)


def snapshotter(client: FlaskClient) -> Snapshotter:
    snap: Snapshotter = svc_of(client).extras["snapshotter"]
    return snap


def submit(client: FlaskClient, body: Any) -> None:
    response = client.post("/api/job-result", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)


def history(client: FlaskClient, job_id: str) -> list[str | None]:
    """run_ids of the job's results, oldest first."""
    response = client.get(f"/api/job/{job_id}/results?limit=200")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["run_id"] for r in reversed(response.get_json()["results"])]


def state(client: FlaskClient, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/job/{job_id}").get_json()["state"]
    return data


def metric(client: FlaskClient, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def deep_check(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/health/deep")
    check: dict[str, Any] = response.get_json()["checks"]["snapshot"]
    return response.status_code, check


def run(client: FlaskClient, fake_clock: FakeClock, run_id: str, status: str = "success") -> None:
    fake_clock.advance(60)
    submit(
        client,
        {"job_name": "backup", "status": status, "run_id": run_id, "duration": 5, "output": run_id},
    )


def two_generations(client: FlaskClient, fake_clock: FakeClock) -> None:
    """r1 in state.snapshot.1, r1 and r2 in state.snapshot."""
    for run_id in ("r1", "r2"):
        run(client, fake_clock, run_id)
        snapshotter(client).write()


@pytest.fixture
def client(make_client: Any) -> FlaskClient:
    c: FlaskClient = make_client(JOBS)
    return c


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Log records of the ``cronmetrics`` logger (which does not propagate to the root)."""
    logger = logging.getLogger("cronmetrics")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


# -- round trip --------------------------------------------------------------------------


def test_restart_restores_state_history_and_counters(
    client: FlaskClient, make_client: Any, fake_clock: FakeClock
) -> None:
    run(client, fake_clock, "r1")
    run(client, fake_clock, "r2", "failure")
    submit(client, {"job_name": "sync", "host": "db1", "status": "start", "run_id": "s1"})
    before = {job: state(client, job) for job in ("backup", "sync@db1")}
    assert snapshotter(client).write()

    again = make_client(JOBS)
    assert history(again, "backup") == ["r1", "r2"]
    assert history(again, "sync@db1") == ["s1"]
    assert {job: state(again, job) for job in ("backup", "sync@db1")} == before
    assert again.get("/api/job/backup/results").get_json()["results"][0]["output"] == "r2"
    assert metric(again, "cronmetrics_snapshot_restore_fallback") == 0


def test_restored_job_keeps_its_first_seen_so_deadlines_do_not_restart(
    client: FlaskClient, make_client: Any, fake_clock: FakeClock
) -> None:
    assert snapshotter(client).write()
    fake_clock.advance(3600)  # backup has been silent for its whole threshold
    again = make_client(JOBS)
    assert state(again, "backup")["reason"] == "never reported"


def test_snapshot_is_written_only_when_something_changed(
    client: FlaskClient, fake_clock: FakeClock, state_dir: Path
) -> None:
    snap = snapshotter(client)
    assert snap.write()
    first = (state_dir / "state.snapshot").stat().st_ino
    assert not snap.write()
    assert (state_dir / "state.snapshot").stat().st_ino == first
    run(client, fake_clock, "r1")
    assert snap.write()
    assert (state_dir / "state.snapshot").stat().st_ino != first
    assert metric(client, "cronmetrics_snapshot_last_success_timestamp_seconds") == fake_clock.now
    assert metric(client, "cronmetrics_snapshot_last_write_successful") == 1


def test_previous_generation_is_kept(
    client: FlaskClient, fake_clock: FakeClock, state_dir: Path
) -> None:
    two_generations(client, fake_clock)
    newest = decode((state_dir / "state.snapshot").read_bytes())
    previous = decode((state_dir / "state.snapshot.1").read_bytes())
    assert [r.run_id for r in newest.jobs["backup"][1]] == ["r1", "r2"]
    assert [r.run_id for r in previous.jobs["backup"][1]] == ["r1"]
    assert oct((state_dir / "state.snapshot").stat().st_mode & 0o777) == "0o600"


def test_deleted_job_state_is_dropped_at_restart(
    client: FlaskClient, make_client: Any, fake_clock: FakeClock, tmp_path: Path
) -> None:
    run(client, fake_clock, "r1")
    snapshotter(client).write()
    (tmp_path / "jobs.d" / "backup.yaml").unlink()
    again = make_client()
    assert again.get("/api/job/backup").status_code == 404
    assert svc_of(again).monitor.store.get("backup") is None


def test_unmanaged_jobs_survive_a_restart(make_client: Any, fake_clock: FakeClock) -> None:
    client = make_client(JOBS, unknown_jobs="accept")
    submit(client, {"job_name": "adhoc", "host": "h1", "status": "failure", "run_id": "x"})
    snapshotter(client).write()
    again = make_client(JOBS, unknown_jobs="accept")
    job = again.get("/api/job/adhoc@h1").get_json()
    assert job["unmanaged"] is True
    assert job["state"]["reason"] == "failed"


# -- damaged snapshots -------------------------------------------------------------------


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def _wrong_version(path: Path) -> None:
    data = path.read_bytes()
    header, _, payload = data.partition(b"\n")
    parts = header.split(b" ")
    parts[1] = str(FORMAT_VERSION + 1).encode()
    path.write_bytes(b" ".join(parts) + b"\n" + payload)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGES = {"corrupt": _flip_byte, "truncated": _truncate, "wrong_version": _wrong_version}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_damaged_snapshot_falls_back_to_the_previous_generation(
    client: FlaskClient,
    make_client: Any,
    fake_clock: FakeClock,
    state_dir: Path,
    damage: Any,
    logs: pytest.LogCaptureFixture,
) -> None:
    two_generations(client, fake_clock)
    damage(state_dir / "state.snapshot")
    with pytest.raises(SnapshotError):
        decode((state_dir / "state.snapshot").read_bytes())

    again = make_client(JOBS)
    assert history(again, "backup") == ["r1"]
    assert metric(again, "cronmetrics_snapshot_restore_fallback") == 1
    status, check = deep_check(again)
    assert status == 200  # it serves what it restored: a warning, still ready
    assert (check["ok"], check["critical"]) == (False, False)
    assert "state.snapshot.1" in check["detail"]
    assert "restored the previous generation state.snapshot.1" in logs.text


@pytest.mark.parametrize("damage", [*DAMAGES.values(), _empty], ids=[*DAMAGES.keys(), "empty"])
def test_both_generations_damaged_starts_empty_and_says_so(
    client: FlaskClient,
    make_client: Any,
    fake_clock: FakeClock,
    state_dir: Path,
    damage: Any,
    logs: pytest.LogCaptureFixture,
) -> None:
    two_generations(client, fake_clock)
    damage(state_dir / "state.snapshot")
    damage(state_dir / "state.snapshot.1")

    again = make_client(JOBS)
    assert history(again, "backup") == []
    assert metric(again, "cronmetrics_snapshot_restore_fallback") == 1
    status, check = deep_check(again)
    assert (status, check["ok"], check["critical"]) == (200, False, False)
    assert "EMPTY" in check["detail"]
    assert "restored EMPTY state" in logs.text


def test_fallback_does_not_rotate_the_damaged_file_into_the_previous_generation(
    client: FlaskClient, make_client: Any, fake_clock: FakeClock, state_dir: Path
) -> None:
    two_generations(client, fake_clock)
    _flip_byte(state_dir / "state.snapshot")
    again = make_client(JOBS)
    run(again, fake_clock, "r3")
    assert snapshotter(again).write()
    status, check = deep_check(again)
    assert (status, check["ok"]) == (200, True)
    previous = decode((state_dir / "state.snapshot.1").read_bytes())
    assert [r.run_id for r in previous.jobs["backup"][1]] == ["r1"]


def test_missing_state_dir_is_a_fresh_start_not_a_fallback(
    make_client: Any, tmp_path: Path
) -> None:
    client = make_client(JOBS, state_dir=tmp_path / "new" / "state")
    assert metric(client, "cronmetrics_snapshot_restore_fallback") == 0
    assert snapshotter(client).write()
    assert (tmp_path / "new" / "state" / "state.snapshot").is_file()


# -- a full disk -------------------------------------------------------------------------


def test_full_disk_keeps_the_old_snapshot_and_reports_it(
    client: FlaskClient,
    fake_clock: FakeClock,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.LogCaptureFixture,
) -> None:
    run(client, fake_clock, "r1")
    snap = snapshotter(client)
    assert snap.write()
    good = (state_dir / "state.snapshot").read_bytes()
    real_write = generations_mod.atomic_write

    def disk_full(path: Path, data: bytes, *, mode: int | None = None) -> None:
        path.write_bytes(data[:100])  # a partial temp file, as a real ENOSPC leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(generations_mod, "atomic_write", disk_full)
    run(client, fake_clock, "r2")
    assert not snap.write()
    assert (state_dir / "state.snapshot").read_bytes() == good
    assert sorted(p.name for p in state_dir.iterdir()) == ["state.snapshot"]
    assert metric(client, "cronmetrics_snapshot_last_write_successful") == 0
    status, check = deep_check(client)
    assert (status, check["ok"]) == (503, False)
    assert "No space left" in check["detail"]
    assert "snapshot write failed" in logs.text

    monkeypatch.setattr(generations_mod, "atomic_write", real_write)
    assert snap.write()  # space again: the pending change is written, the check clears
    assert metric(client, "cronmetrics_snapshot_last_write_successful") == 1
    assert deep_check(client)[1]["ok"] is True
    assert [
        r.run_id for r in decode((state_dir / "state.snapshot").read_bytes()).jobs["backup"][1]
    ] == [
        "r1",
        "r2",
    ]


def test_writing_a_snapshot_does_not_hold_the_monitor_lock(
    client: FlaskClient, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real_write = generations_mod.atomic_write

    def slow_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
        entered.set()
        assert release.wait(10)
        real_write(path, data, mode=mode)

    monkeypatch.setattr(generations_mod, "atomic_write", slow_write)
    writer = threading.Thread(target=snapshotter(client).write)
    writer.start()
    try:
        assert entered.wait(10)
        run(client, fake_clock, "during")  # would deadlock if the lock were held
        assert history(client, "backup") == ["during"]
    finally:
        release.set()
        writer.join(10)


# -- journal -----------------------------------------------------------------------------


def test_journal_replays_results_newer_than_the_snapshot(
    make_client: Any, fake_clock: FakeClock
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})
    run(client, fake_clock, "r1")
    snapshotter(client).write()
    run(client, fake_clock, "r2")
    submit(
        client,
        [
            {"job_name": "backup", "status": "failure", "run_id": "b1"},
            {"job_name": "sync", "host": "db1", "status": "success", "run_id": "b2"},
        ],
    )
    expected = state(client, "backup")
    again = make_client(JOBS, snapshot={"journal": True})  # no snapshot since r1: a crash
    assert history(again, "backup") == ["r1", "r2", "b1"]
    assert history(again, "sync@db1") == ["b2"]
    assert state(again, "backup") == expected


def test_journal_without_any_snapshot_restores_everything(
    make_client: Any, fake_clock: FakeClock
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})
    for i in range(5):
        run(client, fake_clock, f"r{i}")
    again = make_client(JOBS)  # journal switched off since: still replayed
    assert history(again, "backup") == [f"r{i}" for i in range(5)]


def test_journal_torn_tail_is_tolerated(
    make_client: Any, fake_clock: FakeClock, state_dir: Path
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})
    run(client, fake_clock, "r1")
    run(client, fake_clock, "r2")
    (segment,) = [p for p in state_dir.iterdir() if p.name.startswith("journal.")]
    data = segment.read_bytes()
    segment.write_bytes(data + data.splitlines(keepends=True)[0][:25])  # a half-written line
    again = make_client(JOBS, snapshot={"journal": True})
    assert history(again, "backup") == ["r1", "r2"]
    assert metric(again, "cronmetrics_snapshot_restore_fallback") == 0
    run(again, fake_clock, "r3")  # appended to a fresh segment, never after the torn bytes
    third = make_client(JOBS)
    assert history(third, "backup") == ["r1", "r2", "r3"]


def test_journal_line_with_a_bad_checksum_is_skipped_alone(
    make_client: Any, fake_clock: FakeClock, state_dir: Path
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})
    for i in range(3):
        run(client, fake_clock, f"r{i}")
    (segment,) = [p for p in state_dir.iterdir() if p.name.startswith("journal.")]
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"r1"', b'"rX"', 1)
    segment.write_bytes(b"".join(lines))
    again = make_client(JOBS)
    assert history(again, "backup") == ["r0", "r2"]


def test_journal_line_with_a_good_checksum_but_a_bad_value_is_skipped_alone(
    make_client: Any, fake_clock: FakeClock, state_dir: Path
) -> None:
    """A line written wrong (a bug, a hand edit) passes its CRC; it must cost that line,
    not the whole restore."""
    import zlib

    import orjson

    client = make_client(JOBS, snapshot={"journal": True})
    for i in range(3):
        run(client, fake_clock, f"r{i}")
    (segment,) = [p for p in state_dir.iterdir() if p.name.startswith("journal.")]
    lines = segment.read_bytes().splitlines(keepends=True)
    body = orjson.loads(lines[1].split(b" ", 1)[1])
    body["r"]["timestamp"] = "yesterday"
    raw = orjson.dumps(body)
    lines[1] = b"%08x %s\n" % (zlib.crc32(raw), raw)
    segment.write_bytes(b"".join(lines))
    again = make_client(JOBS)
    assert history(again, "backup") == ["r0", "r2"]
    assert metric(again, "cronmetrics_snapshot_restore_fallback") == 0


def test_journal_is_compacted_at_each_snapshot(
    make_client: Any, fake_clock: FakeClock, state_dir: Path
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})
    snap = snapshotter(client)
    for i in range(4):
        run(client, fake_clock, f"r{i}")
        assert snap.write()
    segments = sorted(p.name for p in state_dir.iterdir() if p.name.startswith("journal."))
    assert len(segments) <= 3  # the current one plus those the previous generation needs
    again = make_client(JOBS)
    assert history(again, "backup") == ["r0", "r1", "r2", "r3"]  # nothing replayed twice
    assert state(again, "backup")["runs_total"] == 4


def test_fallback_to_the_previous_generation_loses_nothing_with_the_journal(
    make_client: Any, fake_clock: FakeClock, state_dir: Path
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})
    snap = snapshotter(client)
    run(client, fake_clock, "r1")
    snap.write()
    run(client, fake_clock, "r2")
    snap.write()
    run(client, fake_clock, "r3")
    _flip_byte(state_dir / "state.snapshot")
    again = make_client(JOBS, snapshot={"journal": True})
    assert history(again, "backup") == ["r1", "r2", "r3"]
    assert state(again, "backup")["runs_total"] == 3
    assert metric(again, "cronmetrics_snapshot_restore_fallback") == 1


def test_failed_journal_write_refuses_the_submission(
    make_client: Any, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod.os, "write", disk_full)
    response = client.post("/api/job-result", json={"job_name": "backup", "status": "success"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "STORAGE_ERROR"
    monkeypatch.undo()
    assert history(client, "backup") == []
    assert state(client, "backup")["runs_total"] == 0


def test_an_upgrade_restores_a_format_2_snapshot_and_writes_the_current_format(
    make_client: Any, state_dir: Path
) -> None:
    state_dir.mkdir()
    old = (Path(__file__).parent / "data" / "snapshot-v2.bin").read_bytes()
    (state_dir / "state.snapshot").write_bytes(old)
    client = make_client(JOBS)
    assert metric(client, "cronmetrics_snapshot_restore_fallback") == 0
    assert history(client, "backup") == ["r1", "r1", None]
    assert state(client, "backup")["runs_total"] == 2
    assert snapshotter(client).write()  # the version 2 chunks are not reused as they are
    data = (state_dir / "state.snapshot").read_bytes()
    assert data.startswith(b"CRONMETRICS-SNAPSHOT %d " % FORMAT_VERSION)
    assert (state_dir / "state.snapshot.1").read_bytes() == old
    again = make_client(JOBS)
    assert history(again, "backup") == ["r1", "r1", None]
    assert [r["duration"] for r in again.get("/api/job/backup/results").get_json()["results"]] == [
        None,
        3.5,
        None,
    ]


def test_results_written_with_another_field_layout_are_read_by_name(
    client: FlaskClient, fake_clock: FakeClock, state_dir: Path
) -> None:
    import orjson

    from cronmetrics.storage.snapshot_format import RESULT_FIELDS, STATE_FIELDS, decode_job

    run(client, fake_clock, "r1")
    run(client, fake_clock, "r2", "failure")
    snapshotter(client).write()
    data = (state_dir / "state.snapshot").read_bytes()
    decoded = decode(data)
    state_before, history_before = decoded.jobs["backup"]
    chunk, _ = decoded.chunks["backup"]
    meta, _, packed = chunk.partition(b"\n")
    values, count, columns = orjson.loads(meta)
    # written by a later version: an extra state field and an extra result field...
    state_fields = [*STATE_FIELDS, "state_from_the_future"]
    values.append("ignored")
    result_fields = ["extra_from_the_future", *RESULT_FIELDS]
    columns.insert(0, {"all": "ignored"})
    # ...and by an earlier one: results without labels
    del columns[result_fields.index("labels")]
    result_fields.remove("labels")
    rebuilt = orjson.dumps([values, count, columns]) + b"\n" + packed
    state, history = decode_job("backup", rebuilt, state_fields, result_fields)
    assert state == state_before
    assert list(history) == list(history_before)
    assert [r.run_id for r in history] == ["r1", "r2"]
    assert history[0].timestamp > T0


def test_corrupt_index_is_detected(
    client: FlaskClient, fake_clock: FakeClock, state_dir: Path
) -> None:
    run(client, fake_clock, "r1")
    snapshotter(client).write()
    path = state_dir / "state.snapshot"
    data = bytearray(path.read_bytes())
    data[data.index(b"\n") + 5] ^= 0x01
    with pytest.raises(SnapshotError, match="checksum mismatch in the index"):
        decode(bytes(data))


def test_corrupt_chunk_names_the_job(
    client: FlaskClient, fake_clock: FakeClock, state_dir: Path
) -> None:
    run(client, fake_clock, "r1")
    submit(client, {"job_name": "sync", "host": "db1", "status": "success"})
    snapshotter(client).write()
    data = (state_dir / "state.snapshot").read_bytes()
    chunk, _ = decode(data).chunks["backup"]
    at = data.index(chunk) + len(chunk) // 2
    damaged = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    with pytest.raises(SnapshotError, match="state of backup"):
        decode(damaged)


def test_any_flipped_bit_or_cut_anywhere_in_the_file_is_detected() -> None:
    from cronmetrics.storage.snapshot_format import encode, state_values
    from cronmetrics.storage.store import JobState

    history = History.of(
        "a",
        [
            Result("a", "start", T0, T0 + 0.5, None, None, None, "r1", None, {}),
            Result("a", "success", T0 + 9, T0 + 9.5, None, 3.5, 0, "r1", "x\ny", {"k": "v"}),
            Result("a", "failure", T0 + 60, T0 + 61, None, None, 2, None, "err", {}),
        ],
    )
    values = state_values(JobState(first_seen=T0, active_since=T0))
    data = encode(
        [("a", values, history), ("b", values, History("b"))],
        written_at=T0,
        journal_seq=0,
        unmanaged={},
    )
    assert decode(data).jobs["a"][1] == history
    for at in range(len(data)):
        for bit in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[at] ^= bit
            with pytest.raises(SnapshotError):
                decode(bytes(damaged))
        with pytest.raises(SnapshotError):
            decode(data[:at])


def test_column_encoding_keeps_each_value_and_its_type() -> None:
    """The fast paths (packed floats with NaN for None, status letters, constant columns)
    and the plain lists round-trip every value: None durations, mixed exit codes, a
    constant dict of labels that must not come back shared between results."""
    from cronmetrics.storage.snapshot_format import encode, state_values
    from cronmetrics.storage.store import JobState

    varied = [
        Result("a", "success", T0, T0 + 1, "h", 2.5, 0, None, None, {}),
        Result("a", "success", T0 + 1, T0 + 2, "h", None, None, "r", "out", {}),
        Result("a", "start", T0 + 3.5, T0 + 4, "h", 0.0, -1, None, "", {"k": "v"}),
        Result("a", "failure", T0 - 5, T0 + 5, "h", 1e9, 1024, "r", None, {}),
    ]
    same = [Result("b", "failure", T0, T0, None, 1.0, 1, "r", "out", {"k": "v"})] * 2
    values = state_values(JobState(first_seen=T0, active_since=T0))
    data = encode(
        [("a", values, History.of("a", varied)), ("b", values, History.of("b", same))],
        written_at=T0,
        journal_seq=0,
        unmanaged={},
    )
    jobs = decode(data).jobs
    for job_id, expected in (("a", varied), ("b", same)):
        restored = list(jobs[job_id][1])
        assert restored == expected
        for got, want in zip(restored, expected, strict=True):
            for name in Result.__dataclass_fields__:
                assert type(getattr(got, name)) is type(getattr(want, name)), (job_id, name)
    labels = [r.labels for r in jobs["b"][1]]
    assert labels[0] == {"k": "v"}
    assert labels[0] is not labels[1]  # a constant dict is not shared between results


@pytest.mark.parametrize(
    ("field", "value"),
    [("running", None), ("runs_total", "3"), ("last_run", "yesterday"), ("first_seen", None)],
)
def test_a_state_value_of_the_wrong_type_makes_the_snapshot_unusable(
    field: str, value: Any
) -> None:
    """Checksums cannot catch a file written wrong (a bug, a hand edit); a None where
    /metrics does arithmetic must fall back like corruption, not break every scrape."""
    from cronmetrics.storage.snapshot_format import STATE_FIELDS, encode, state_values
    from cronmetrics.storage.store import JobState

    values = list(state_values(JobState(first_seen=T0, active_since=T0)))
    values[STATE_FIELDS.index(field)] = value
    data = encode([("a", tuple(values), History("a"))], written_at=T0, journal_seq=0, unmanaged={})
    with pytest.raises(SnapshotError, match=f"state of a: {field} is"):
        decode(data)


@pytest.mark.parametrize(
    ("column", "value"), [("host", 7), ("output", ["x"]), ("exit_code", "1"), ("labels", "k=v")]
)
def test_a_history_column_of_the_wrong_type_makes_the_snapshot_unusable(
    column: str, value: Any
) -> None:
    """Like a state value: what the history API and stats read as text or numbers must be
    text or numbers, whether the column is constant or not."""
    from cronmetrics.storage.snapshot_format import encode, state_values
    from cronmetrics.storage.store import JobState

    good = History.of("a", [Result("a", "success", T0, T0), Result("a", "failure", T0, T0)])
    for varied in (False, True):
        columns = good.columns()
        columns[column] = [value, None if varied else value]
        bad = History.from_columns("a", columns)
        values = state_values(JobState(first_seen=T0, active_since=T0))
        data = encode([("a", values, bad)], written_at=T0, journal_seq=0, unmanaged={})
        with pytest.raises(SnapshotError, match=f"column {column} of a holds"):
            decode(data)


def test_a_format_2_snapshot_is_still_read() -> None:
    """Written by the previous release (tests/data/snapshot-v2.bin, made with the
    snapshot_format of commit b37d7a5): its None durations are listed indices, constant
    columns hold {} labels and None durations."""
    decoded = decode((Path(__file__).parent / "data" / "snapshot-v2.bin").read_bytes())
    assert decoded.journal_seq == 7
    assert decoded.unmanaged == {"sync@db1": ("sync", "db1")}
    assert decoded.chunks == {}  # version 2 chunks are re-encoded at the next write
    state, backup = decoded.jobs["backup"]
    assert state["runs_total"] == 2
    assert [(r.status, r.duration, r.exit_code, r.output, r.labels) for r in backup] == [
        ("start", None, None, None, {}),
        ("success", 3.5, 0, "x\ny", {"k": "v"}),
        ("failure", None, 2, "err", {}),
    ]
    sync = decoded.jobs["sync@db1"][1]
    assert [(r.host, r.duration, r.timestamp) for r in sync] == [
        ("db1", None, T0),
        ("db1", None, T0 + 5),
    ]
    assert len(decoded.jobs["idle"][1]) == 0


@pytest.mark.parametrize("before", ["all", "2026-01-05T00:03:30Z"])
def test_an_acknowledged_purge_is_not_undone_by_a_crash(
    make_client: Any, fake_clock: FakeClock, before: str
) -> None:
    """A purge (say, of output that leaked a secret) must not come back after kill -9: it
    is on disk when answered (see the next test), the journal holds what came after."""
    client = make_client(JOBS, snapshot={"journal": True})
    for i in range(5):
        run(client, fake_clock, f"r{i}")  # T0 + 60 .. T0 + 300
    snapshotter(client).write()  # the results are in the snapshot, the purge comes after
    response = client.delete(f"/api/job/backup/results?before={before}")
    assert response.status_code == 200, response.get_data(as_text=True)
    kept = history(client, "backup")
    assert kept == ([] if before == "all" else ["r3", "r4"])
    run(client, fake_clock, "r5")
    again = make_client(JOBS, snapshot={"journal": True})  # no snapshot since r5: a crash
    assert history(again, "backup") == [*kept, "r5"]


def state_files(state_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in state_dir.iterdir() if p.is_file()}


@pytest.mark.parametrize("journal", [False, True])
def test_a_manual_purge_takes_the_results_off_the_disk_too(
    make_client: Any, fake_clock: FakeClock, state_dir: Path, journal: bool
) -> None:
    """Purging is how an operator removes a secret a job printed: when the DELETE is
    answered, no snapshot generation and no journal segment may still hold it."""
    client = make_client(JOBS, snapshot={"journal": journal})
    submit(client, {"job_name": "backup", "status": "failure", "output": "pw=hunter2"})
    snapshotter(client).write()
    run(client, fake_clock, "r1")
    snapshotter(client).write()
    run(client, fake_clock, "r2")  # in memory (and the journal) only
    files = state_files(state_dir)
    assert {"state.snapshot", "state.snapshot.1"} <= set(files)
    assert all(b"hunter2" in files[n] for n in ("state.snapshot", "state.snapshot.1"))
    response = client.delete("/api/job/backup/results?before=2026-01-05T00:00:30Z")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["removed"] == 1
    leftovers = [name for name, data in state_files(state_dir).items() if b"hunter2" in data]
    assert leftovers == []
    again = make_client(JOBS, snapshot={"journal": journal})
    assert history(again, "backup") == ["r1", "r2"]


def test_a_purge_that_cannot_reach_the_disk_says_so(
    client: FlaskClient, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(client, fake_clock, "r1")
    snapshotter(client).write()

    def disk_full(path: Path, data: bytes, *, mode: int | None = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(generations_mod, "atomic_write", disk_full)
    response = client.delete("/api/job/backup/results")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "STORAGE_ERROR"
    assert "purged in memory" in error["message"]
    assert "still holds the purged results" in error["message"]
    assert history(client, "backup") == []


def test_a_claimed_state_dir_cannot_be_claimed_twice(tmp_path: Path) -> None:
    from cronmetrics.errors import Conflict

    held = generations_mod.claim_state_dir(tmp_path / "state", "the first")
    assert held is not None
    try:
        with pytest.raises(Conflict, match=r"in use by the first \(pid \d+\)"):
            generations_mod.claim_state_dir(tmp_path / "state", "the second")
    finally:
        os.close(held)
    again = generations_mod.claim_state_dir(tmp_path / "state", "the second")
    assert again is not None
    os.close(again)


def test_a_state_dir_that_cannot_be_locked_is_used_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    """Some NFS mounts have no flock: running unguarded beats not running."""

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(generations_mod.fcntl, "flock", no_locks)
    assert generations_mod.claim_state_dir(tmp_path / "state", "x") is None
    assert "cannot lock the state dir" in logs.text
