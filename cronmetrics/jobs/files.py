"""Which paths are job files, and reading one without trusting it.

A jobs directory comes from a git repository, a ConfigMap or a shared volume: anyone who
can merge a pull request can put a FIFO, a device node or a symlink there. So a job file
must be a regular file (opened non-blocking, checked again after the open, read to at
most the limit + 1 byte: ``st_size`` is 0 for a device), and a symlink must stay inside
the jobs directory unless ``follow_external_symlinks`` allows more. Links that stay
inside are followed: git-sync's worktree link and a ConfigMap's ``..data`` are links.
"""

# ruff: noqa: PTH114, PTH116, PTH118 - str paths on purpose: a rescan of 10,000 files is
# otherwise dominated by pathlib parsing

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cronmetrics.errors import Problem, ValidationError

__all__ = [
    "MAX_FILE_BYTES",
    "SUFFIXES",
    "Scan",
    "read_job_bytes",
    "scan",
    "scan_file",
]

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 256 * 1024

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


def _not_regular(mode: int, display: str) -> ValidationError:
    kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
    return ValidationError(
        [Problem(f"not a regular file ({kind}); job files must be regular files", display)]
    )


def read_job_bytes(path: Path | str, display: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or a located problem.

    Never blocks on a FIFO and never reads more than ``limit + 1`` bytes, whatever the
    path is: the type is checked before the open (so a device is not even opened) and
    again on the open descriptor (the path may have been swapped in between).
    """
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            raise _not_regular(before.st_mode, display)
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise ValidationError([Problem(f"cannot read file: {exc.strerror}", display)]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(st.st_mode, display)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ValidationError([Problem(f"cannot read file: {exc.strerror}", display)]) from None
    finally:
        os.close(fd)
    if size > limit:
        raise ValidationError(
            [Problem(f"file is too large (more than {limit} bytes, the limit)", display)]
        )
    return b"".join(chunks)


@dataclass(slots=True)
class Scan:
    """The job files under a root, and the links that were not followed."""

    #: ``(path, path relative to the root)``, as strings (10,000 Paths cost more)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    #: display path -> why it was not read
    refused: dict[str, list[Problem]] = field(default_factory=dict)
    #: display paths of files read through a link that leaves the root (allowed)
    external: set[str] = field(default_factory=set)

    def add(self, other: Scan) -> None:
        self.pairs.extend(other.pairs)
        self.refused.update(other.refused)
        self.external.update(other.external)

    def under(self, root: Path | str) -> Scan:
        """The same scan with display paths prefixed by ``root`` (as given)."""

        def shown(display: str) -> str:
            return os.path.join(root, display)

        return Scan(
            [(path, path) for path, _ in self.pairs],
            {
                shown(d): [Problem(p.message, shown(d)) for p in problems]
                for d, problems in self.refused.items()
            },
            {shown(d) for d in self.external},
        )


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def scan(root: Path, *, follow_external_symlinks: bool = False) -> Scan:
    """Every ``*.yaml``/``*.yml`` below ``root``; dot entries skipped, symlinks followed
    while they stay inside ``root`` (all of them with ``follow_external_symlinks``).

    A refused link is reported once, at the link: a link to ``/usr`` costs one
    ``realpath``, not a walk of ``/usr``.
    """
    out = Scan()
    top = os.fspath(root)
    real_top = os.path.realpath(top)
    for path, display, outside in _walk(top, real_top, follow_external_symlinks):
        if outside is None:
            out.pairs.append((path, display))
        elif follow_external_symlinks:
            out.pairs.append((path, display))
            out.external.add(display)
        else:
            out.refused[display] = [_refusal(outside, display)]
    return out


def _walk(top: str, real_top: str, follow: bool) -> Iterator[tuple[str, str, str | None]]:
    """``(path, display, where it leads if outside the root, else None)``, depth first
    in sorted order (which file of two claims an id first depends on it). Without
    ``follow``, links out are not entered: a directory link yields once, as itself.

    ``os.scandir`` rather than ``os.walk``: its entries know whether they are links
    without another system call per file.
    """
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, str, str | None]] = [(top, "", None)]
    while stack:
        dirpath, prefix, here = stack.pop()
        try:
            st = os.stat(dirpath)
            with os.scandir(dirpath) as listing:
                entries = sorted((e for e in listing if not e.name.startswith(".")), key=_name)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:  # a symlink loop, or the same folder linked twice
            continue
        seen.add(key)
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            outside = here
            if outside is None and entry.is_symlink():
                outside = _leaves(entry.path, real_top)
            if is_dir:
                if outside is not None and not follow:
                    yield entry.path, prefix + entry.name, outside
                else:
                    subdirs.append((entry.path, prefix + entry.name + os.sep, outside))
            elif entry.name.endswith(SUFFIXES):
                yield entry.path, prefix + entry.name, outside
        stack.extend(reversed(subdirs))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _leaves(path: str, *real_roots: str) -> str | None:
    """Where ``path`` leads if that is outside every root; ``None`` if it stays (or is no
    link: a plain entry of a folder inside the root is inside)."""
    if not os.path.islink(path):
        return None
    real = os.path.realpath(path)
    return None if any(_inside(real, root) for root in real_roots) else real


def scan_file(path: Path, *, follow_external_symlinks: bool = False) -> Scan:
    """One file named on a command line: a symlink in it may lead anywhere inside the
    current directory or the link's own directory. ``cronmetrics validate $(git diff
    --name-only)`` in CI must not print ``/etc/shadow`` because a pull request linked it.
    """
    out = Scan()
    shown = os.fspath(path)
    outside = _leaves(shown, os.path.realpath(os.curdir), os.path.realpath(path.parent))
    if outside is None or follow_external_symlinks:
        out.pairs.append((shown, shown))
        if outside is not None:
            out.external.add(shown)
    else:
        out.refused[shown] = [_refusal(outside, shown)]
    return out


def _refusal(target: str, display: str) -> Problem:
    message = (
        f"symbolic link to {target} leaves the jobs directory; not read "
        "(set follow_external_symlinks: true to allow links out of it)"
    )
    return Problem(message, display)
