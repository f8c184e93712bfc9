"""The atomic round-trip writer of jobs.d: create, replace, patch and delete job files.

Split from :mod:`.repository` (which reads the directory) because writing has its own
concerns: validation before the disk is touched, a lock shared with other processes,
comment-keeping YAML edits, and telling a read-only volume from a real failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cronmetrics import fileio
from cronmetrics.errors import (
    Conflict,
    CronmetricsError,
    InvalidRequest,
    NotFound,
    Problem,
    ReadOnly,
    ValidationError,
)
from cronmetrics.jobs.files import read_job_bytes
from cronmetrics.jobs.model import JobDefinition, check_host, check_job_name, parse_job
from cronmetrics.jobs.model import job_id as make_job_id
from cronmetrics.jobs.repository import (
    JobFile,
    JobsDir,
    LoadResult,
    display_path,
    load_directory,
    parse_text,
)
from cronmetrics.jobs.yamlio import (
    YamlSyntaxError,
    dump_roundtrip,
    load_fast,
    load_roundtrip,
    to_plain,
    update_roundtrip,
)
from cronmetrics.logs import get_logger

__all__ = ["READ_ONLY_FIELDS", "JobWriter", "check_job_id", "replaced_by_sync"]

#: still "repository": the logger name operators filter on predates this module
log = get_logger("repository")

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


def replaced_by_sync(root: Path) -> str | None:
    """Why files written under ``root`` would be lost at the next sync, or None.

    A writable volume is not enough: git-sync checks each revision out as a linked git
    worktree (a ``.git`` *file*) and swaps a symlink to it, and kubelet swaps the
    ``..data`` symlink of a ConfigMap volume; a file the API wrote there disappears
    silently with the next revision. A plain checkout (a ``.git`` directory, ``git
    pull``) is left writable: its owner can commit what the API wrote."""
    if (root / "..data").is_symlink():
        return "a Kubernetes ConfigMap or Secret volume (kubelet replaces it on update)"
    try:
        real = root.resolve(strict=True)
    except OSError:
        return None
    for parent in (real, *real.parents):
        marker = parent / ".git"
        if marker.is_dir():
            return None
        if marker.is_file():
            if real == root.absolute():
                return None  # a worktree used in place, not swapped behind a symlink
            return (
                f"a git worktree reached through a symlink ({parent}), the way git-sync "
                "publishes each revision: the next sync would drop what is written here"
            )
    return None


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

    def __init__(self, root: Path, *, jobs: JobsDir | None = None, writes: str = "auto") -> None:
        self.root = root
        self._jobs = jobs
        self._index: LoadResult | None = None
        #: ``job_writes`` of the config: auto (refuse in a synced copy), enabled, disabled
        self.writes = writes

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
                text = read_job_bytes(path, display).decode("utf-8")
                node = load_roundtrip(text)
            except (ValidationError, UnicodeDecodeError, YamlSyntaxError):
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

    def refusal(self) -> ReadOnly | None:
        """The error every write would raise by configuration or sync layout, if any."""
        if self.writes == "disabled":
            return ReadOnly(
                f"job writes are disabled (job_writes: disabled): change the files in "
                f"{self.root} through git instead"
            )
        if self.writes == "auto" and (why := replaced_by_sync(self.root)) is not None:
            return ReadOnly(
                f"the jobs directory {self.root} is {why}; change jobs through git "
                "instead (or set job_writes: enabled)"
            )
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.root.is_dir():
            raise NotFound(f"jobs directory {self.root} does not exist")
        if (refused := self.refusal()) is not None:
            raise refused
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
                data = load_fast(read_job_bytes(path, display).decode("utf-8"))
            except (ValidationError, UnicodeDecodeError, YamlSyntaxError):
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
