"""What the cron host's flags and environment ask for, checked before anything is sent.

``--url``, ``--token``/``--token-file``, ``--cacert`` and ``--job`` are read the same way by
every cron host command (``run``, ``result submit``, ``ingest``) and by the full CLI's
commands that talk to a server: flags win over ``CRONMETRICS_*``, which win over the
defaults, and a value that cannot work is a :class:`~cronmetrics.client.failures.UsageError`
(exit 2) naming its flag, not a failed request later.

Standard library only, and Python 3.9-compatible: the one-file client ships it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from cronmetrics.client.failures import UsageError
from cronmetrics.client.http import Client

#: typing costs a cron run ~3 ms to import: its names are for the type checker only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFAULT_URL", "ClientSettings", "split_job_id"]

DEFAULT_URL = "http://127.0.0.1:9479"
#: The server's id patterns (``cronmetrics.jobs.model``; a test keeps them equal).
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
HOST_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_NAME_RE = re.compile(NAME_PATTERN)
_HOST_RE = re.compile(HOST_PATTERN)


def split_job_id(job_id: str) -> tuple[str, str | None]:
    """``name@host`` -> ``(name, host)``; :class:`UsageError` naming ``--job`` if malformed."""
    name, _, host = job_id.partition("@")
    if not _NAME_RE.match(name):
        raise UsageError(
            f"--job {job_id!r}: the name must start with a letter or '_' and hold only"
            " letters, digits, '_', '.', '-' (name or name@host)"
        )
    if host and not _HOST_RE.match(host):
        raise UsageError(f"--job {job_id!r}: the host part holds only letters, digits, '_.-'")
    return name, host or None


class ClientSettings:
    """What ``--url/--token/--token-file/--insecure/--cacert`` said (flags win over env)."""

    __slots__ = ("cacert", "explicit_url", "insecure", "token", "url")

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        insecure: bool = False,
        cacert: str | None = None,
        explicit_url: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token or None
        self.insecure = insecure
        self.cacert = cacert
        #: True when the URL came from a flag or CRONMETRICS_URL rather than the default
        self.explicit_url = explicit_url

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        token_file: str | None = None,
        insecure: bool = False,
        cacert: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ClientSettings:
        """Flags, then ``CRONMETRICS_URL/_TOKEN/_TOKEN_FILE/_CACERT``, then defaults."""
        env = os.environ if environ is None else environ
        url = url or env.get("CRONMETRICS_URL") or None
        explicit = url is not None
        url = url or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--url {url!r} must start with http:// or https://")
        token = token or None
        if token is None and not token_file:
            token = env.get("CRONMETRICS_TOKEN") or None
        token_file = token_file or (env.get("CRONMETRICS_TOKEN_FILE") if token is None else None)
        if token is None and token_file:
            try:
                with open(token_file, encoding="utf-8") as handle:
                    token = handle.read().strip() or None
            except OSError as exc:
                raise UsageError(f"--token-file {token_file}: {exc.strerror or exc}") from None
        cacert = cacert or env.get("CRONMETRICS_CACERT") or None
        if cacert is not None and not os.path.isfile(cacert):  # noqa: PTH113 (pathlib: ~1 ms)
            raise UsageError(f"--cacert {cacert}: no such file")
        return cls(url, token, insecure=insecure, cacert=cacert, explicit_url=explicit)

    def client(self, **kwargs: Any) -> Client:
        """A :class:`Client` that talks as these settings say (``kwargs``: its own knobs)."""
        return Client(self.url, self.token, cacert=self.cacert, insecure=self.insecure, **kwargs)
