"""The jobs directory: find job files, load and validate them, keep the last good ones.

Reading is the hot path of ``cronmetrics validate`` and of every reload, so files are
parsed with the libyaml reader and re-parsed only when their content hash changes.
Writing job files is :mod:`.writer`'s job.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cronmetrics.errors import Problem, ValidationError
from cronmetrics.jobs.files import SUFFIXES, Scan, read_job_bytes, scan
from cronmetrics.jobs.model import JobDefinition, parse_job
from cronmetrics.jobs.yamlio import YamlSyntaxError, load_fast, locate

__all__ = [
    "JobFile",
    "JobsDir",
    "LoadResult",
    "apply_scan",
    "iter_job_files",
    "load_directory",
    "load_paths",
]

#: Below this many files to parse, a process pool costs more than it saves.
PARALLEL_MIN_FILES = 2000
MAX_WORKERS = 8
#: A file changed this recently may change again within the same timestamp tick, so
#: its stat is not trusted to mean "unchanged" (git's "racily clean" rule).
RACY_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class JobFile:
    """A valid job file: where it is, what it says, and the hash of its bytes."""

    path: Path
    display: str
    definition: JobDefinition
    digest: str
    #: ``(dev, inode, size, mtime_ns, ctime_ns)`` when read, if old enough to trust
    stat: tuple[int, ...] | None = None
    #: the job id, computed once (a rescan of 10,000 files asks for it often)
    id: str = ""


@dataclass(slots=True)
class LoadResult:
    jobs: dict[str, JobFile] = field(default_factory=dict)
    #: display path -> problems, for files that could not be loaded
    invalid: dict[str, list[Problem]] = field(default_factory=dict)
    #: display path -> digest for every file read, valid or not
    digests: dict[str, str] = field(default_factory=dict)
    files: int = 0

    @property
    def problems(self) -> list[Problem]:
        out = [p for problems in self.invalid.values() for p in problems]
        return sorted(out, key=lambda p: (p.path or "", p.line or 0, p.column or 0))


def iter_job_files(root: Path, *, follow_external_symlinks: bool = False) -> Iterator[Path]:
    """Every job file below ``root`` that :func:`.files.scan` would read."""
    for path, _ in scan(root, follow_external_symlinks=follow_external_symlinks).pairs:
        yield Path(path)


def _read(path: Path, display: str) -> tuple[str, str]:
    raw = read_job_bytes(path, display)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        return raw.decode("utf-8"), digest
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start]
        raise ValidationError(
            [Problem(f"file is not UTF-8 text (byte 0x{bad:02x})", display, line, column)]
        ) from None


def apply_scan(result: LoadResult, found: Scan) -> None:
    """Add what :func:`.files.scan` refused to ``result`` as invalid files, and reduce
    the problems of files outside the jobs dir to their location: an "unknown key"
    message would quote a line of ``/etc/shadow`` to whoever reads the logs."""
    for display in found.external:
        problems = result.invalid.get(display)
        located = [p for p in problems or () if p.line is not None]  # from the content
        if problems and located:
            first = located[0]
            message = "not a valid job file (outside the jobs directory: details withheld)"
            kept = [p for p in problems if p.line is None]  # about the file, not its text
            result.invalid[display] = [*kept, Problem(message, display, first.line, first.column)]
    result.invalid.update(found.refused)
    result.files += len(found.refused)


def parse_text(text: str, display: str) -> JobDefinition:
    """Parse and validate one job document; raise :class:`ValidationError` if it is bad."""
    if not text.strip():
        raise ValidationError([Problem("file is empty", display, 1, 1)])
    try:
        data = load_fast(text)
    except YamlSyntaxError as exc:
        raise ValidationError([exc.problem(display)]) from None
    return parse_job(data, path=display, text=text)


_Loaded = tuple[str | None, JobDefinition | list[Problem] | None]


def _load_one(path: Path, display: str, known: str | None) -> _Loaded:
    """Read and parse one file: ``(digest, definition or problems)``.

    The definition is ``None`` when the digest equals ``known`` (the caller has it already).
    """
    try:
        text, digest = _read(path, display)
    except ValidationError as exc:
        return None, exc.problems
    if digest == known:
        return digest, None
    try:
        return digest, parse_text(text, display)
    except ValidationError as exc:
        return digest, exc.problems


def _load_chunk(chunk: list[tuple[Path, str, str | None]]) -> list[_Loaded]:
    return [_load_one(*item) for item in chunk]


def _load_all(
    todo: list[tuple[Path, str, str | None]],
    progress: Callable[[int], None] | None,
    parallel: bool,
) -> Iterator[_Loaded]:
    """Load every file; in a process pool when there are many and ``parallel`` allows.

    YAML construction is pure Python even with libyaml, so 10,000 files take seconds on
    one core; the pool spreads them over the machine's cores (``fork``: no re-import).
    Only single-threaded callers (``cronmetrics validate``) may ask for it: forking a
    process that runs other threads (the server) can deadlock the child on their locks.
    """
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if (
        not parallel
        or len(todo) < PARALLEL_MIN_FILES
        or workers < 2
        or "fork" not in mp.get_all_start_methods()
    ):
        for item in todo:
            yield _load_one(*item)
            if progress is not None:
                progress(1)
        return
    size = max(50, len(todo) // (workers * 8))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        for chunk, loaded in zip(chunks, pool.map(_load_chunk, chunks), strict=True):
            yield from loaded
            if progress is not None:
                progress(len(chunk))


def _stat_key(path: Path | str, now_ns: int) -> tuple[int, ...] | None:
    """What identifies a file's bytes without reading them; ``None`` if too fresh to trust."""
    try:
        st = os.stat(path)  # noqa: PTH116 - a str path on the rescan's hot path
    except OSError:
        return None
    if max(st.st_mtime_ns, st.st_ctime_ns) > now_ns - RACY_NS:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def load_paths(
    paths: Iterable[tuple[Path | str, str]],
    *,
    previous: LoadResult | None = None,
    progress: Callable[[int], None] | None = None,
    trust_stat: bool = False,
    parallel: bool = False,
) -> LoadResult:
    """Load ``(path, display)`` pairs; reuse ``previous`` definitions whose hash is unchanged.

    ``parallel`` allows a forked process pool for many files (single-threaded callers only).

    With ``previous``, each file's stat is recorded; with ``trust_stat`` too, a file
    whose inode, size, mtime and ctime equal those recorded by ``previous`` is not read:
    a rescan of 10,000 unchanged files then costs stats, not reads (what makes
    event-driven reloads cheap). ``progress`` is called with the number of files done
    since the last call. Duplicate job ids are reported on every file after the first (in
    the given order) that claims one.
    """
    result = LoadResult()
    cached: dict[str, JobFile] = {}
    if previous is not None:
        cached = {jf.display: jf for jf in previous.jobs.values()}
    todo: list[tuple[Path | str, str, str | None]] = []
    keys: list[tuple[int, ...] | None] = []
    reuse: dict[int, JobFile] = {}
    now_ns = time.time_ns()
    record = previous is not None
    for path, display in paths:
        old = cached.get(display)
        key = _stat_key(path, now_ns) if record else None
        if trust_stat and old is not None and key is not None and key == old.stat:
            reuse[len(todo)] = old
        todo.append((path, display, old.digest if old is not None else None))
        keys.append(key)
    result.files = len(todo)
    need = [(Path(p), d, k) for index, (p, d, k) in enumerate(todo) if index not in reuse]
    fresh = iter(_load_all(need, progress, parallel))
    owners: dict[str, JobFile] = {}
    digest: str | None
    loaded: JobDefinition | list[Problem] | None
    for index, (where, display, _) in enumerate(todo):
        reused = reuse.get(index)
        if reused is not None:
            definition = reused.definition
            new_id = reused.id or definition.id
            if new_id not in owners:
                owners[new_id] = reused
                result.digests[display] = reused.digest
                continue
            digest = reused.digest
        else:
            digest, loaded = next(fresh)
            if isinstance(loaded, list):
                if digest is not None:
                    result.digests[display] = digest
                result.invalid[display] = loaded
                continue
            definition = loaded if loaded is not None else cached[display].definition
            new_id = definition.id
        if digest is not None:
            result.digests[display] = digest
        path = Path(where)
        other = owners.get(new_id)
        if other is not None:
            result.invalid[display] = [_duplicate(path, display, new_id, other.display)]
            continue
        owners[new_id] = JobFile(path, display, definition, digest or "", keys[index], new_id)
    result.jobs = owners
    return result


def _duplicate(path: Path, display: str, job: str, first: str) -> Problem:
    try:
        where = locate(read_job_bytes(path, display).decode("utf-8"), ("job_name",))
    except (ValidationError, UnicodeDecodeError):
        where = None
    line, col = where or (1, 1)
    message = f"duplicate job id {job!r}: already defined in {first}"
    return Problem(message, display, line, col, "job_name")


def display_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def load_directory(
    root: Path,
    *,
    previous: LoadResult | None = None,
    relative: bool = True,
    trust_stat: bool = False,
    follow_external_symlinks: bool = False,
) -> LoadResult:
    """Load every job file under ``root`` (display paths relative to it by default);
    refused symlinks are invalid entries, at the link."""
    found = scan(root, follow_external_symlinks=follow_external_symlinks)
    if not relative:
        found = found.under(root)
    result = load_paths(found.pairs, previous=previous, trust_stat=trust_stat)
    apply_scan(result, found)
    return result


@dataclass(slots=True)
class ReloadReport:
    """What one reload found: the definitions now in force and the files that failed."""

    jobs: dict[str, JobFile]
    invalid: dict[str, list[Problem]]
    kept: list[str]  # display paths whose last good definition stays live
    files: int

    @property
    def ok(self) -> bool:
        return not self.invalid


class JobsDir:
    """The watched jobs directory as the server sees it.

    A file that turns invalid keeps its last good definition live (a typo in a PR must not
    silently drop monitoring); a removed file removes its job.
    """

    def __init__(self, root: Path, *, follow_external_symlinks: bool = False) -> None:
        self.root = root
        self.follow_external_symlinks = follow_external_symlinks
        self._last: LoadResult | None = None
        self._effective: dict[str, JobFile] = {}  # display -> file in force
        self._by_id: dict[str, JobFile] = {}
        self._lock = threading.Lock()
        #: how many rescans ran (tests and benchmarks count reloads with it)
        self.reloads = 0

    @property
    def last(self) -> LoadResult | None:
        """The most recent scan (lets a :class:`.writer.JobWriter` start from warm caches)."""
        return self._last

    def seed(self, last_good: list[JobFile]) -> None:
        """Before the first reload: last good definitions kept from an earlier run (the
        store keeps them), so a file invalid at start still serves its job. A seed only
        stands in for a file that is invalid now; a valid or missing file wins."""
        with self._lock:
            if self._last is None:
                self._effective = {jf.display: jf for jf in last_good}

    def reload(self, *, full: bool = False) -> ReloadReport:
        """Rescan; unless ``full``, files whose stat is unchanged are not read again."""
        with self._lock:
            return self._reload(full)

    def is_current(self, path: Path) -> bool:
        """Whether the last scan already saw ``path`` as it is now (same bytes, or absent).

        The watcher uses this to recognise events caused by writes that were applied
        already (the API reloads right after writing), so they cost no second rescan.
        Anything it cannot vouch for answers ``False``, which only means "rescan".
        """
        try:
            display = str(path.relative_to(self.root))
        except ValueError:
            return False
        parts = Path(display).parts
        if not parts or any(p.startswith(".") for p in parts) or not display.endswith(SUFFIXES):
            return False
        with self._lock:
            last = self._last
            known = last.digests.get(display) if last is not None else None
            if not path.exists():
                return known is None and display not in (last.invalid if last else {})
            try:
                raw = read_job_bytes(path, display)
            except ValidationError:
                return False
            return known is not None and hashlib.sha256(raw).hexdigest() == known

    def _reload(self, full: bool) -> ReloadReport:
        self.reloads += 1
        if not (self.root.is_dir() and os.access(self.root, os.R_OK | os.X_OK)):
            # a missing jobs dir (unmounted volume, dangling git-sync link) is an outage
            # of the source, not an order to forget every job: keep them and say so
            problem = Problem("jobs directory is missing or unreadable; keeping the jobs loaded")
            kept = sorted(self._effective)
            return ReloadReport(dict(self._by_id), {str(self.root): [problem]}, kept, 0)
        result = load_directory(
            self.root,
            previous=self._last,
            trust_stat=not full,
            follow_external_symlinks=self.follow_external_symlinks,
        )
        effective = {jf.display: jf for jf in result.jobs.values()}
        jobs = dict(result.jobs)
        kept = []
        for display in result.invalid:
            old = self._effective.get(display)
            if old is not None and old.definition.id not in jobs:
                effective[display] = old
                jobs[old.definition.id] = old
                kept.append(display)
        self._last = result
        self._effective = effective
        self._by_id = jobs
        return ReloadReport(jobs, dict(result.invalid), kept, result.files)

    def file_of(self, job_id: str) -> JobFile | None:
        return self._by_id.get(job_id)
