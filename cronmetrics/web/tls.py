"""TLS certificates renewed on disk (cert-manager, certbot) take effect without a restart.

gunicorn asks its ``ssl_context`` hook for a context for every new connection; left to
itself it builds a fresh one each time, reading both files, and a renewal caught halfway
(the new certificate written, the key not yet) fails every handshake until the key
lands. :class:`CertificateReloader` keeps one context and rebuilds it only when the stat
of either file (through symlinks, so a swapped Kubernetes secret counts) changes; a pair
that does not load keeps the previous context serving, logged once per change. Connections
already open keep the certificate they were made with; the next one sees the new one.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cronmetrics.logs import get_logger
from cronmetrics.web.health import Check

__all__ = ["CertificateReloader", "fingerprint"]

log = get_logger("tls")


def fingerprint(cert: Path) -> str:
    """SHA-256 of the first certificate in a PEM file, as ``openssl x509 -fingerprint``
    shows it (without colons), so a log line tells which certificate is served."""
    pem = cert.read_text(encoding="ascii", errors="replace")
    end = pem.find("-----END CERTIFICATE-----")
    der = ssl.PEM_cert_to_DER_cert(pem[: end + len("-----END CERTIFICATE-----")])
    return hashlib.sha256(der).hexdigest()


class CertificateReloader:
    """gunicorn's ``ssl_context(config, default_factory)`` hook, caching one context."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._signature: tuple[Any, ...] | None = None
        self.loads = 0
        self.last_error: str | None = None
        self.serving: str | None = None

    def _stat(self) -> tuple[Any, ...]:
        parts: list[Any] = []
        for path in (self.cert, self.key):
            try:
                st = path.stat()
            except OSError as exc:
                parts.append(("missing", exc.errno))
                continue
            parts.append((os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(parts)

    def __call__(self, conf: Any, factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        signature = self._stat()
        with self._lock:
            if self._context is not None and signature == self._signature:
                return self._context
            self._signature = signature
            try:
                context = factory()  # gunicorn's own: cert chain, key, ciphers, ALPN
                serving = fingerprint(self.cert)
            except (OSError, ValueError, ssl.SSLError) as exc:
                if self._context is None:
                    raise  # nothing to fall back on: the handshake fails, gunicorn logs it
                self.last_error = f"{self.cert} / {self.key}: {exc}"
                log.error(
                    "cannot load the new TLS certificate or key; the previous one is served",
                    extra={"cert": str(self.cert), "key": str(self.key), "error": str(exc)},
                )
                return self._context
            first = self._context is None
            self._context, self.serving, self.last_error = context, serving, None
            self.loads += 1
            log.info(
                "TLS certificate loaded" if first else "TLS certificate reloaded",
                extra={"cert": str(self.cert), "sha256": serving},
            )
            return context

    def health(self) -> Check:
        """The ``tls`` check: a renewal that does not load only warns (the old one serves)."""
        if self.last_error is not None:
            return Check(False, f"new certificate not loaded ({self.last_error})", False)
        if self.serving is None:
            return Check(True, f"{self.cert}: not loaded yet (at the first connection)")
        return Check(True, f"serving {self.cert} (sha256 {self.serving[:16]}…)")
