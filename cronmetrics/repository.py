"""The jobs directory: find job files, load and validate them, write them back.

Reading is the hot path of ``cronmetrics validate`` and of every reload, so files are
parsed with the libyaml reader and re-parsed only when their content hash changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fileio
from .errors import (
    Conflict,
    CronmetricsError,
    InvalidRequest,
    NotFound,
    Problem,
    ReadOnly,
    ValidationError,
)
from .logging import get_logger
from .model import JobDefinition, check_host, check_job_name, parse_job
from .model import job_id as make_job_id
from .yamlio import (
    YamlSyntaxError,
    dump_roundtrip,
    load_fast,
    load_roundtrip,
    locate,
    to_plain,
    update_roundtrip,
)

__all__ = [
    "JobFile",
    "JobWriter",
    "JobsDir",
    "LoadResult",
    "check_job_id",
    "iter_job_files",
    "load_directory",
    "load_paths",
]

log = get_logger("repository")

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 256 * 1024
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


def iter_job_files(root: Path) -> Iterator[Path]:
    """Every ``*.yaml``/``*.yml`` below ``root``; dot entries skipped, symlinks followed."""
    for path, _ in _walk(root):
        yield Path(path)


def _walk(root: Path) -> Iterator[tuple[str, str]]:
    """``(path, path relative to root)`` of every job file, as strings.

    Strings because a rescan of 10,000 files is otherwise dominated by pathlib parsing.
    """
    top = os.fspath(root)
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)  # noqa: PTH116 - strings on purpose (see above)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:  # a symlink loop, or the same folder linked twice
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, top)
        prefix = "" if rel == os.curdir else rel + os.sep
        for name in sorted(filenames):
            if not name.startswith(".") and name.endswith(SUFFIXES):
                yield os.path.join(dirpath, name), prefix + name  # noqa: PTH118


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
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start]
        raise ValidationError(
            [Problem(f"file is not UTF-8 text (byte 0x{bad:02x})", display, line, column)]
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
    root: Path,
    *,
    previous: LoadResult | None = None,
    relative: bool = True,
    trust_stat: bool = False,
) -> LoadResult:
    """Load every job file under ``root`` (display paths relative to it by default)."""
    pairs = ((p, display if relative else p) for p, display in _walk(root))
    return load_paths(pairs, previous=previous, trust_stat=trust_stat)


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
        self._lock = threading.Lock()
        #: how many rescans ran (tests and benchmarks count reloads with it)
        self.reloads = 0

    @property
    def last(self) -> LoadResult | None:
        """The most recent scan (lets a :class:`JobWriter` start from warm caches)."""
        return self._last

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
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return known is None and display not in (last.invalid if last else {})
            except OSError:
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
        result = load_directory(self.root, previous=self._last, trust_stat=not full)
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


# -- writing -------------------------------------------------------------------------------

#: Fields of the API's job representation that are not part of a job file; a PUT of what
#: GET returned drops them instead of failing on "unknown key".
READ_ONLY_FIELDS = frozenset({"id", "file", "unmanaged", "state"})


def check_job_id(value: str) -> str:
    """A job id from a URL: ``name`` or ``name@host``, never a path (no ``/``, ``..``, NUL)."""
    name, sep, host = value.partition("@")
    try:
        if not value or "/" in value or "\0" in value or ".." in value:
            raise ValueError(f"{value!r} is not a job id")
        check_job_name(name)
        if sep:
            check_host(host)
    except ValueError as exc:
        raise InvalidRequest(f"invalid job id: {exc}", field="id") from None
    return value


def _read_only(root: Path) -> ReadOnly:
    return ReadOnly(
        f"the jobs directory {root} is read-only (a ConfigMap volume or a git-sync "
        "checkout?): change jobs through git instead"
    )


class JobWriter:
    """Create, replace, update and delete job files, safely.

    Every change is validated with the same rules as ``cronmetrics validate`` (model and
    unique ids) before anything touches the disk, written atomically (:mod:`.fileio`), and
    serialized with a lock file in the jobs directory, so the server and an offline
    ``cronmetrics job --jobs-dir`` never interleave. Edits are round-trip: comments, key
    order and quoting of the parts that did not change are kept.

    ``job_name`` and ``host`` make up the id, which names the job everywhere (metrics,
    results, tokens' job globs): a PUT or PATCH that would change them is rejected (400,
    naming the field); rename by creating the new job and deleting the old one.
    """

    def __init__(self, root: Path, *, jobs: JobsDir | None = None) -> None:
        self.root = root
        self._jobs = jobs
        self._index: LoadResult | None = None

    # -- public --------------------------------------------------------------------------

    def create(self, doc: dict[str, Any]) -> JobFile:
        definition = parse_job(self._clean(doc))
        if len(f"{definition.id}.yaml".encode()) > 255:  # NAME_MAX of every common filesystem
            field_name = "host" if definition.host else "job_name"
            message = f"job id {definition.id!r} is too long for a file name (max 250 bytes)"
            raise ValidationError([Problem(message, field=field_name)])
        with self._locked():
            index = self._scan()
            new_id = definition.id
            owner = self._find(new_id, index)
            if owner is not None:
                shown = display_path(owner, self.root)
                raise Conflict(f"job {new_id!r} already exists (in {shown})", field="job_name")
            path = self.root / f"{new_id}.yaml"
            if path.exists() or path.is_symlink():
                raise Conflict(f"file {path.name} already exists in the jobs directory")
            canonical = definition.model_dump(mode="json")
            values = {k: v for k, v in canonical.items() if k in doc and doc[k] is not None}
            return self._write(path, update_roundtrip(None, values), definition)

    def replace(self, job_id: str, doc: dict[str, Any]) -> JobFile:
        """PUT: the document becomes the job's file (keys it leaves out are removed)."""
        return self._edit(job_id, lambda _: self._clean(doc))

    def patch(self, job_id: str, changes: dict[str, Any]) -> JobFile:
        """PATCH: merge ``changes``; ``None`` removes a key (also inside ``labels``)."""

        def merged(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise Conflict(
                    f"the file of job {job_id!r} is not a YAML mapping; replace it with PUT",
                )
            out = dict(current)
            for key, value in changes.items():
                if key in READ_ONLY_FIELDS:
                    continue
                if value is None:
                    out.pop(key, None)
                elif key == "labels" and isinstance(value, dict):
                    old = out.get("labels")
                    labels = dict(old) if isinstance(old, dict) else {}
                    for name, label in value.items():
                        if label is None:
                            labels.pop(name, None)
                        else:
                            labels[name] = label
                    out["labels"] = labels
                else:
                    out[key] = value
            return out

        return self._edit(job_id, merged)

    def delete(self, job_id: str) -> None:
        check_job_id(job_id)
        with self._locked():
            path = self._require(job_id, self._scan())
            try:
                fileio.remove(path)
            except OSError as exc:
                if fileio.is_read_only_error(exc):
                    raise _read_only(self.root) from None
                raise
            log.info("job file deleted", extra={"job": job_id, "file": str(path)})

    # -- internal ------------------------------------------------------------------------

    @staticmethod
    def _clean(doc: dict[str, Any]) -> dict[str, Any]:
        """``null`` means "not set"; the API's read-only fields are not file content."""
        return {k: v for k, v in doc.items() if v is not None and k not in READ_ONLY_FIELDS}

    def _edit(
        self, job_id: str, build: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> JobFile:
        check_job_id(job_id)
        with self._locked():
            path = self._require(job_id, self._scan())
            display = display_path(path, self.root)
            try:
                text = path.read_text(encoding="utf-8")
                node = load_roundtrip(text)
            except (OSError, UnicodeDecodeError, YamlSyntaxError):
                node = None  # unreadable: PUT rewrites it whole, PATCH refuses
            current = to_plain(node) if isinstance(node, dict) else None
            wanted = build(current)
            definition = parse_job(wanted)
            if definition.id != job_id:
                old_name = job_id.partition("@")[0]
                field_name = "job_name" if definition.job_name != old_name else "host"
                raise ValidationError(
                    [
                        Problem(
                            f"{field_name} would change the job id from {job_id!r} to "
                            f"{definition.id!r}; create the new job and delete the old one "
                            "instead",
                            field=field_name,
                        )
                    ]
                )
            try:
                old = parse_job(current) if current is not None else None
            except ValidationError:
                old = None
            canonical = definition.model_dump(mode="json")
            values = {k: v for k, v in canonical.items() if k in wanted}

            def same(key: str) -> bool:
                return old is not None and getattr(old, key) == getattr(definition, key)

            updated = update_roundtrip(node, values, keep=same)
            log.info("job file written", extra={"job": job_id, "file": display})
            return self._write(path, updated, definition)

    def _write(self, path: Path, node: Any, definition: JobDefinition) -> JobFile:
        text = dump_roundtrip(node)
        display = display_path(path, self.root)
        written = parse_text(text, display)  # what lands on disk must read back the same
        if written != definition:
            raise CronmetricsError(f"internal error: {display} would not read back as sent")
        data = text.encode("utf-8")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise _read_only(self.root)
        try:
            fileio.atomic_write(path, data)
        except OSError as exc:
            if fileio.is_read_only_error(exc):
                raise _read_only(self.root) from None
            raise
        digest = hashlib.sha256(data).hexdigest()
        return JobFile(path, display, definition, digest, None, definition.id)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.root.is_dir():
            raise NotFound(f"jobs directory {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise _read_only(self.root)
        try:
            lock = fileio.locked(self.root)
            lock.__enter__()
        except OSError as exc:
            if fileio.is_read_only_error(exc):
                raise _read_only(self.root) from None
            raise
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    def _scan(self) -> LoadResult:
        previous = self._index or (self._jobs.last if self._jobs is not None else None)
        self._index = load_directory(self.root, previous=previous, trust_stat=True)
        return self._index

    def _find(self, wanted: str, index: LoadResult) -> Path | None:
        """The file that defines ``wanted``, valid or not (a broken file can be fixed)."""
        found = index.jobs.get(wanted)
        if found is not None:
            return found.path
        for display in sorted(index.invalid):
            path = self.root / display
            try:
                data = load_fast(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, YamlSyntaxError):
                continue
            if not isinstance(data, dict):
                continue
            name, host = data.get("job_name"), data.get("host")
            if (
                isinstance(name, str)
                and (host is None or isinstance(host, str))
                and make_job_id(name, host) == wanted
            ):
                return path
        return None

    def _require(self, wanted: str, index: LoadResult) -> Path:
        path = self._find(wanted, index)
        if path is None:
            raise NotFound(f"job {wanted!r} has no file in the jobs directory")
        return path
