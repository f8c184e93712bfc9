"""``writer.JobWriter`` and ``fileio``: validated, atomic, round-trip job file writes."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cronmetrics import fileio
from cronmetrics.errors import Conflict, InvalidRequest, NotFound, ReadOnly, ValidationError
from cronmetrics.jobs.repository import JobsDir, load_directory
from cronmetrics.jobs.writer import JobWriter, check_job_id

HAND_WRITTEN = """\
# Nightly import -- owned by the data team.
job_name: db_import
host: backup3
schedule: "30 2 * * *"      # Berlin time, see timezone
timezone: Europe/Berlin
grace: 900
labels: {env: 'prod', team: data}   # flow style on purpose
description: Nightly import of the billing DB
"""


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry below ``root`` with its bytes (None for directories)."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.d"
    (jobs / "backup").mkdir(parents=True)
    (jobs / "backup" / "db_import.yaml").write_text(HAND_WRITTEN)
    (jobs / "other.yaml").write_text("job_name: other\nautomatic_failure_threshold: 60\n")
    return jobs


def test_create_writes_id_named_file_in_model_order(root: Path) -> None:
    doc = {
        "labels": {"env": "prod"},
        "automatic_failure_threshold": 3600.0,
        "host": "db1",
        "job_name": "backup",
        "schedule": None,
    }
    written = JobWriter(root).create(doc)
    assert written.path == root / "backup@db1.yaml"
    assert written.path.read_text() == (
        "job_name: backup\nhost: db1\nautomatic_failure_threshold: 3600\nlabels:\n  env: prod\n"
    )
    assert written.definition.id == "backup@db1"
    assert load_directory(root).jobs["backup@db1"].definition == written.definition


def test_create_of_an_existing_id_is_a_conflict_and_writes_nothing(root: Path) -> None:
    before = snapshot(root)
    doc = {"job_name": "db_import", "host": "backup3", "automatic_failure_threshold": 60}
    with pytest.raises(Conflict) as info:
        JobWriter(root).create(doc)
    assert "backup/db_import.yaml" in info.value.message
    assert snapshot(root).keys() - before.keys() <= {fileio.LOCK_NAME}
    assert all(snapshot(root)[k] == v for k, v in before.items())


def test_create_conflicts_with_an_invalid_file_claiming_the_id(root: Path) -> None:
    (root / "broken.yaml").write_text("job_name: broken\nautomatic_failure_threshold: -1\n")
    with pytest.raises(Conflict):
        JobWriter(root).create({"job_name": "broken", "automatic_failure_threshold": 60})


def test_create_validates_before_touching_the_disk(root: Path) -> None:
    before = snapshot(root)
    with pytest.raises(ValidationError) as info:
        JobWriter(root).create({"job_name": "x", "automatic_failure_treshold": 60})
    assert info.value.field == "automatic_failure_treshold"
    assert "did you mean 'automatic_failure_threshold'" in info.value.message
    assert snapshot(root) == before


def test_replace_keeps_comments_order_and_quoting_of_untouched_keys(root: Path) -> None:
    doc = {
        "job_name": "db_import",
        "host": "backup3",
        "schedule": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "grace": 1200,
        "labels": {"env": "prod", "team": "data"},
        "description": "Nightly import of the billing DB",
    }
    JobWriter(root).replace("db_import@backup3", doc)
    assert (root / "backup" / "db_import.yaml").read_text() == HAND_WRITTEN.replace(
        "grace: 900", "grace: 1200"
    )


def test_replace_removes_keys_the_document_leaves_out(root: Path) -> None:
    doc = {"job_name": "db_import", "host": "backup3", "schedule": "30 2 * * *"}
    JobWriter(root).replace("db_import@backup3", doc)
    assert (root / "backup" / "db_import.yaml").read_text() == (
        "# Nightly import -- owned by the data team.\n"
        "job_name: db_import\n"
        "host: backup3\n"
        'schedule: "30 2 * * *"      # Berlin time, see timezone\n'
    )


def test_patch_merges_labels_and_none_removes(root: Path) -> None:
    JobWriter(root).patch(
        "db_import@backup3",
        {"labels": {"team": None, "tier": "1"}, "description": None, "max_runtime": 600},
    )
    text = (root / "backup" / "db_import.yaml").read_text()
    assert text == (
        "# Nightly import -- owned by the data team.\n"
        "job_name: db_import\n"
        "host: backup3\n"
        'schedule: "30 2 * * *"      # Berlin time, see timezone\n'
        "timezone: Europe/Berlin\n"
        "grace: 900\n"
        "labels: {env: 'prod', tier: '1'}    # flow style on purpose\n"  # column kept
        "max_runtime: 600\n"
    )


def test_patch_can_fix_an_invalid_file(root: Path) -> None:
    path = root / "typo.yaml"
    path.write_text("job_name: typo  # keep me\nschedul: '@daily'\n")
    writer = JobWriter(root)
    writer.patch("typo", {"schedul": None, "schedule": "@daily"})
    assert path.read_text() == "job_name: typo  # keep me\nschedule: '@daily'\n"
    assert "typo" in load_directory(root).jobs


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"host": "elsewhere"}, "host"),
        ({"host": None}, "host"),
        ({"job_name": "renamed"}, "job_name"),
        ({"grace": "soon"}, "grace"),
        ({"labels": {"job": "x"}}, "labels.job"),
        ({"schedule": None}, None),  # no deadline left at all
    ],
)
def test_patch_that_breaks_the_job_or_its_id_is_refused(
    root: Path, changes: dict[str, Any], field: str | None
) -> None:
    before = (root / "backup" / "db_import.yaml").read_bytes()
    with pytest.raises(ValidationError) as info:
        JobWriter(root).patch("db_import@backup3", changes)
    assert info.value.field == field
    assert (root / "backup" / "db_import.yaml").read_bytes() == before


def test_edit_and_delete_of_unknown_job_are_not_found(root: Path) -> None:
    writer = JobWriter(root)
    with pytest.raises(NotFound):
        writer.patch("nope", {"grace": 5})
    with pytest.raises(NotFound):
        writer.delete("nope@h")


def test_delete_removes_only_that_file(root: Path) -> None:
    JobWriter(root).delete("other")
    assert not (root / "other.yaml").exists()
    assert (root / "backup" / "db_import.yaml").read_text() == HAND_WRITTEN


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a\0b", "x..y", "a@b@c", "a@", "@h"])
def test_job_ids_from_urls_are_checked(bad: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_job_id(bad)
    assert info.value.field == "id"


def test_write_on_read_only_filesystem_is_read_only_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def erofs(path: Path, data: bytes, *, mode: int | None = None) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(fileio, "atomic_write", erofs)
    with pytest.raises(ReadOnly) as info:
        JobWriter(root).patch("other", {"grace": 5})
    assert "read-only" in info.value.message
    assert "git" in info.value.message
    assert info.value.http_status == 409


def test_unwritable_directory_is_read_only_error(root: Path) -> None:
    """A real 0555 directory. Root ignores directory permissions, so as root the writer
    runs in a child without CAP_DAC_OVERRIDE (util-linux setpriv), like a non-root user."""
    before = snapshot(root)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from cronmetrics.errors import ReadOnly\n"
        "from cronmetrics.jobs.writer import JobWriter\n"
        "try:\n"
        "    JobWriter(Path(sys.argv[1])).create("
        "{'job_name': 'new', 'automatic_failure_threshold': 60})\n"
        "except ReadOnly as exc:\n"
        "    print('READ_ONLY', exc.http_status, exc.message)\n"
    )
    cmd = [sys.executable, "-c", code, str(root)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is needed to test permissions as root")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    root.chmod(0o555)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    finally:
        root.chmod(0o755)
    assert proc.stdout.startswith("READ_ONLY 409"), proc.stdout + proc.stderr
    assert "read-only" in proc.stdout
    assert snapshot(root) == before


def test_concurrent_patches_lose_no_update(root: Path) -> None:
    """Read-modify-write under the lock: every thread's label survives."""
    writer_a, writer_b = JobWriter(root), JobWriter(root)  # as if two processes
    errors: list[BaseException] = []

    def add(index: int) -> None:
        try:
            writer = writer_a if index % 2 else writer_b
            writer.patch("other", {"labels": {f"l{index}": str(index)}})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    labels = load_directory(root).jobs["other"].definition.labels
    assert labels == {f"l{i}": str(i) for i in range(16)}


def test_writer_waits_for_the_lock_file(root: Path) -> None:
    done = threading.Event()

    def write() -> None:
        JobWriter(root).patch("other", {"grace": 7})
        done.set()

    with fileio.locked(root):
        thread = threading.Thread(target=write)
        thread.start()
        assert not done.wait(0.3)  # blocked while another writer holds the lock
    thread.join(10)
    assert done.is_set()
    assert "grace: 7" in (root / "other.yaml").read_text()
    assert (root / fileio.LOCK_NAME).exists()  # the lock is its own file, not the job file


# -- fileio --------------------------------------------------------------------------------


def test_atomic_write_keeps_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "job.yaml"
    target.write_text("old\n")
    target.chmod(0o640)
    fileio.atomic_write(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


def test_atomic_write_new_file_gets_requested_mode(tmp_path: Path) -> None:
    fileio.atomic_write(tmp_path / "a", b"x", mode=0o600)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600


def test_failed_atomic_write_leaves_the_old_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "job.yaml"
    target.write_bytes(b"old\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        fileio.atomic_write(target, b"new\n")
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


def test_atomic_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("old\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    fileio.atomic_write(link, b"new\n")
    assert link.is_symlink()
    assert real.read_text() == "new\n"


# -- rescans -------------------------------------------------------------------------------


def test_rescan_sees_a_same_size_rewrite_in_the_same_second(root: Path) -> None:
    """Recently changed files are re-read even when size and mtime look unchanged."""
    jobs = JobsDir(root)
    path = root / "other.yaml"
    assert jobs.reload().jobs["other"].definition.automatic_failure_threshold == 60
    before = path.stat()
    path.write_text("job_name: other\nautomatic_failure_threshold: 90\n")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert jobs.reload().jobs["other"].definition.automatic_failure_threshold == 90


def test_is_current_tells_applied_changes_from_new_ones(root: Path) -> None:
    jobs = JobsDir(root)
    jobs.reload()
    path = root / "other.yaml"
    assert jobs.is_current(path)
    assert jobs.is_current(root / "gone.yaml")  # absent and unknown: nothing to do
    assert not jobs.is_current(root / "..data")  # dot entries are never vouched for
    path.write_text("job_name: other\nautomatic_failure_threshold: 61\n")
    assert not jobs.is_current(path)
    jobs.reload()
    assert jobs.is_current(path)


def test_vanished_jobs_dir_keeps_the_jobs_and_reports_it(root: Path, tmp_path: Path) -> None:
    jobs = JobsDir(root)
    assert set(jobs.reload().jobs) == {"db_import@backup3", "other"}
    root.rename(tmp_path / "elsewhere")
    report = jobs.reload()
    assert set(report.jobs) == {"db_import@backup3", "other"}
    assert not report.ok
    assert str(root) in report.invalid


# -- directories a sync replaces --------------------------------------------------------

NEW_JOB = {"job_name": "new", "automatic_failure_threshold": 60}


def git(*args: str, cwd: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture
def git_sync_root(tmp_path: Path) -> Path:
    """The layout git-sync v4 publishes: a linked worktree per revision under
    ``.worktrees/<hash>``, reached through the ``--link`` symlink that each sync swaps."""
    repo = tmp_path / "sync" / ".git-repo"
    (repo / "jobs.d").mkdir(parents=True)
    (repo / "jobs.d" / "a.yaml").write_text("job_name: a\nautomatic_failure_threshold: 60\n")
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "jobs", cwd=repo)
    worktree = tmp_path / "sync" / ".worktrees" / "abc123"
    git("worktree", "add", "-q", "--detach", str(worktree), cwd=repo)
    assert (worktree / ".git").is_file()
    (tmp_path / "sync" / "current").symlink_to(worktree)
    return tmp_path / "sync" / "current" / "jobs.d"


def test_a_git_sync_worktree_refuses_writes_that_the_next_sync_would_drop(
    git_sync_root: Path,
) -> None:
    before = snapshot(git_sync_root)
    with pytest.raises(ReadOnly) as info:
        JobWriter(git_sync_root).create(NEW_JOB)
    assert "git-sync" in info.value.message
    assert "job_writes: enabled" in info.value.message
    with pytest.raises(ReadOnly):
        JobWriter(git_sync_root).delete("a")
    assert snapshot(git_sync_root) == before


def test_job_writes_enabled_writes_into_a_synced_worktree_anyway(git_sync_root: Path) -> None:
    JobWriter(git_sync_root, writes="enabled").create(NEW_JOB)
    assert (git_sync_root / "new.yaml").exists()


def test_a_worktree_used_in_place_or_a_plain_checkout_stays_writable(
    git_sync_root: Path, tmp_path: Path
) -> None:
    JobWriter(git_sync_root.resolve()).create(NEW_JOB)  # no symlink swapped in front of it
    checkout = tmp_path / "sync" / ".git-repo"
    (tmp_path / "link").symlink_to(checkout)
    JobWriter(tmp_path / "link" / "jobs.d").create({**NEW_JOB, "job_name": "other"})
    assert (checkout / "jobs.d" / "other.yaml").exists()


def test_a_configmap_volume_refuses_writes(tmp_path: Path) -> None:
    """kubelet's layout: files are symlinks into ``..data``, itself a symlink it swaps."""
    volume = tmp_path / "volume"
    data = volume / "..2026_11_23_00_00_00.1"
    data.mkdir(parents=True)
    (data / "a.yaml").write_text("job_name: a\nautomatic_failure_threshold: 60\n")
    (volume / "..data").symlink_to(data.name)
    (volume / "a.yaml").symlink_to("..data/a.yaml")
    with pytest.raises(ReadOnly, match="ConfigMap"):
        JobWriter(volume).patch("a", {"grace": 5})


def test_job_writes_disabled_refuses_every_write(root: Path) -> None:
    before = snapshot(root)
    writer = JobWriter(root, writes="disabled")
    with pytest.raises(ReadOnly, match="job writes are disabled"):
        writer.create(NEW_JOB)
    with pytest.raises(ReadOnly):
        writer.patch("other", {"grace": 5})
    with pytest.raises(ReadOnly):
        writer.delete("other")
    assert snapshot(root) == before
