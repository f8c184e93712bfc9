"""The one-file client: this subpackage as a zipapp (``cronmetrics client-bundle PATH``,
``GET /client.pyz``).

The archive holds ``cronmetrics/__init__.py`` (the version), ``cronmetrics/errors.py`` (the
one exception hierarchy, standard library only) and the cron host modules of
``cronmetrics/client/``; it runs with nothing but Python >= 3.9's standard library. It is
deterministic: the same sources give the same bytes (fixed timestamps and modes, sorted
entries), so a fleet can pin its checksum.

Beside each module it holds that module compiled (``name.pyc``, the name ``zipimport``
looks for; an unchecked hash-based pyc, so no timestamp enters it) by the Python that
builds the bundle: a zip cannot cache bytecode, and compiling the client at every start
cost a cron run about 30 ms. A host whose Python is another version finds a foreign
magic number, and ``zipimport`` compiles the source instead, as before. So the bytes
depend on the builder's Python version too: replicas on the same version serve the same
file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import marshal
import zipfile
from pathlib import Path

__all__ = ["MODULES", "bundle_bytes", "bundle_digest", "compiled"]

PACKAGE = Path(__file__).resolve().parent.parent
#: What a cron host needs, relative to the ``cronmetrics`` package directory.
MODULES = (
    "__init__.py",
    "errors.py",
    "client/__init__.py",
    "client/cli.py",
    "client/failures.py",
    "client/http.py",
    "client/ingest.py",
    "client/proxy.py",
    "client/retry.py",
    "client/runner.py",
    "client/settings.py",
    "client/signals.py",
    "client/tailing.py",
    "client/wire.py",
)
INTERPRETER = "/usr/bin/env python3"
#: Any fixed time makes the bytes reproducible (the zip format starts in 1980).
FIXED_DATE = (1980, 1, 2, 0, 0, 0)
MAIN = '''\
"""cronmetrics one-file client: python3 cronmetrics.pyz run --url URL --job ID -- CMD."""
import sys

if sys.version_info < (3, 9):
    sys.stderr.write("cronmetrics: this client needs Python 3.9 or newer\\n")
    sys.exit(2)

from cronmetrics.client.cli import main  # noqa: E402

sys.exit(main(prog="cronmetrics.pyz"))
'''


def compiled(name: str, source: bytes) -> bytes:
    """``source`` as an unchecked hash-based pyc of this interpreter (PEP 552): magic,
    flags 0b01, the source's hash, the marshalled code; no timestamp and no reference
    counts in it, so the same source gives the same bytes in any process."""
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    flags = (0b01).to_bytes(4, "little")
    digest = importlib.util.source_hash(source)
    # marshal version 2 has no back-references: version 3+ marks an object shared only
    # when its reference count says so, which differs from one process to the next
    return importlib.util.MAGIC_NUMBER + flags + digest + marshal.dumps(code, 2)


def _entries() -> list[tuple[str, bytes]]:
    files = [("__main__.py", MAIN.encode("utf-8"))]
    for name in MODULES:
        source = (PACKAGE / name).read_bytes()
        files.append((f"cronmetrics/{name}", source))
        files.append((f"cronmetrics/{name[:-3]}.pyc", compiled(f"cronmetrics/{name}", source)))
    return sorted(files)


@functools.lru_cache(maxsize=1)
def bundle_bytes() -> bytes:
    """The zipapp's bytes, built once per process (the server answers from this cache).

    Written with :mod:`zipfile` rather than :func:`zipapp.create_archive`, which takes
    each file's mtime and the directory's listing order: the same sources must give the
    same bytes on every server replica. The layout is the zipapp one (shebang line, then
    a zip with ``__main__.py`` at its root); ``python3 FILE`` runs it.
    """
    out = io.BytesIO()
    out.write(f"#!{INTERPRETER}\n".encode())
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in _entries():
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # unix, whatever the building host
            archive.writestr(info, data, compresslevel=9)
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def bundle_digest() -> str:
    """SHA-256 of :func:`bundle_bytes` (the ``ETag`` of ``GET /client.pyz``)."""
    return hashlib.sha256(bundle_bytes()).hexdigest()
