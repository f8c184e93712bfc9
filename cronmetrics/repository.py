"""The jobs directory: find job files, load and validate them, write them back.

Reading is the hot path of ``cronmetrics validate`` and of every reload, so files are
parsed with the libyaml reader and re-parsed only when their content hash changes.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Problem, ValidationError
from .model import JobDefinition, parse_job
from .yamlio import YamlSyntaxError, load_fast, locate

__all__ = ["JobFile", "LoadResult", "iter_job_files", "load_directory", "load_paths"]

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 256 * 1024
#: Below this many files to parse, a process pool costs more than it saves.
PARALLEL_MIN_FILES = 2000
MAX_WORKERS = 8


@dataclass(frozen=True, slots=True)
class JobFile:
    """A valid job file: where it is, what it says, and the hash of its bytes."""

    path: Path
    display: str
    definition: JobDefinition
    digest: str


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


def iter_job_files(root: Path) -> Iterator[Path]:
    """Every ``*.yaml``/``*.yml`` below ``root``; dot entries skipped, symlinks followed."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = Path(dirpath).stat()
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:  # a symlink loop, or the same folder linked twice
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.endswith(SUFFIXES):
                yield Path(dirpath) / name


def _read(path: Path, display: str) -> tuple[str, str]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValidationError(
                [Problem(f"file is too large ({size} bytes, limit {MAX_FILE_BYTES})", display)]
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationError([Problem(f"cannot read file: {exc.strerror}", display)]) from None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        return raw.decode("utf-8"), digest
    except UnicodeDecodeError as exc:
        raise ValidationError(
            [Problem(f"file is not UTF-8 text (byte {exc.start})", display)]
        ) from None


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
    todo: list[tuple[Path, str, str | None]], progress: Callable[[int], None] | None
) -> Iterator[_Loaded]:
    """Load every file; in a process pool when there are many.

    YAML construction is pure Python even with libyaml, so 10,000 files take seconds on
    one core; the pool spreads them over the machine's cores (``fork``: no re-import).
    """
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if len(todo) < PARALLEL_MIN_FILES or workers < 2 or "fork" not in mp.get_all_start_methods():
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


def load_paths(
    paths: Iterable[tuple[Path, str]],
    *,
    previous: LoadResult | None = None,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Load ``(path, display)`` pairs; reuse ``previous`` definitions whose hash is unchanged.

    ``progress`` is called with the number of files done since the last call. Duplicate
    job ids are reported on every file after the first (in the given order) that claims one.
    """
    result = LoadResult()
    cached: dict[str, JobFile] = {}
    if previous is not None:
        cached = {jf.display: jf for jf in previous.jobs.values()}
    todo: list[tuple[Path, str, str | None]] = []
    for path, display in paths:
        old = cached.get(display)
        todo.append((path, display, old.digest if old is not None else None))
    result.files = len(todo)
    owners: dict[str, JobFile] = {}
    for (path, display, _), (digest, loaded) in zip(todo, _load_all(todo, progress), strict=True):
        if digest is not None:
            result.digests[display] = digest
        if isinstance(loaded, list):
            result.invalid[display] = loaded
            continue
        definition = loaded if loaded is not None else cached[display].definition
        other = owners.get(definition.id)
        if other is not None:
            result.invalid[display] = [_duplicate(path, display, definition.id, other.display)]
            continue
        owners[definition.id] = JobFile(path, display, definition, digest or "")
    result.jobs = owners
    return result


def _duplicate(path: Path, display: str, job: str, first: str) -> Problem:
    try:
        where = locate(path.read_text(encoding="utf-8"), ("job_name",))
    except (OSError, UnicodeDecodeError):
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
    root: Path, *, previous: LoadResult | None = None, relative: bool = True
) -> LoadResult:
    """Load every job file under ``root`` (display paths relative to it by default)."""
    files = iter_job_files(root)
    pairs = ((p, display_path(p, root) if relative else str(p)) for p in files)
    return load_paths(pairs, previous=previous)


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

    def __init__(self, root: Path) -> None:
        self.root = root
        self._last: LoadResult | None = None
        self._effective: dict[str, JobFile] = {}  # display -> file in force
        self._by_id: dict[str, JobFile] = {}

    def reload(self) -> ReloadReport:
        result = load_directory(self.root, previous=self._last)
        effective = {jf.display: jf for jf in result.jobs.values()}
        taken = set(result.jobs)
        kept = []
        for display in result.invalid:
            old = self._effective.get(display)
            if old is not None and old.definition.id not in taken:
                effective[display] = old
                taken.add(old.definition.id)
                kept.append(display)
        self._last = result
        self._effective = effective
        jobs = {jf.definition.id: jf for jf in effective.values()}
        self._by_id = jobs
        return ReloadReport(jobs, dict(result.invalid), kept, result.files)

    def file_of(self, job_id: str) -> JobFile | None:
        return self._by_id.get(job_id)
