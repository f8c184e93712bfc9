"""The jobs directory: find job files, load and validate them, write them back.

Reading is the hot path of ``cronmetrics validate`` and of every reload, so files are
parsed with the libyaml reader and re-parsed only when their content hash changes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Problem, ValidationError
from .model import JobDefinition, parse_job
from .yamlio import YamlSyntaxError, load_fast

__all__ = ["JobFile", "LoadResult", "iter_job_files", "load_directory", "load_paths"]

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 256 * 1024


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
            st = os.stat(dirpath)
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


def load_paths(
    paths: Iterable[tuple[Path, str]],
    *,
    previous: LoadResult | None = None,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Load ``(path, display)`` pairs; reuse ``previous`` definitions whose hash is unchanged."""
    result = LoadResult()
    cached: dict[str, JobFile] = {}
    if previous is not None:
        cached = {jf.display: jf for jf in previous.jobs.values()}
    owners: dict[str, JobFile] = {}
    for path, display in paths:
        result.files += 1
        if progress is not None:
            progress(1)
        try:
            text, digest = _read(path, display)
            result.digests[display] = digest
            old = cached.get(display)
            if old is not None and old.digest == digest:
                job = JobFile(path, display, old.definition, digest)
            else:
                job = JobFile(path, display, parse_text(text, display), digest)
        except ValidationError as exc:
            result.invalid[display] = exc.problems
            continue
        other = owners.get(job.definition.id)
        if other is not None:
            result.invalid[display] = [
                Problem(
                    f"duplicate job id {job.definition.id!r}: already defined in {other.display}",
                    display,
                    1,
                    1,
                    "job_name",
                )
            ]
            continue
        owners[job.definition.id] = job
    result.jobs = owners
    return result


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
