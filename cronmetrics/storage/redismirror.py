"""A replica's copy of every job state in Redis, kept current by tailing the change stream.

Reads that every scrape makes (states, ids) are answered from this copy, in memory, as
fast as the embedded engine; only history reads go to Redis. A background thread loads
all states (HSCAN, in batches) and then follows the ``changes`` stream with a blocking
``XREAD`` from the stream id it read *before* the load, so nothing written during the
load is missed (an event older than the copy is ignored by its version). Pub/sub would
drop what a disconnected replica misses; a stream does not. After any error the thread
waits (backoff up to 2 s), reconnects and loads everything again, which also covers a
Redis that restarted with fewer entries (or none) in its stream.

Change cursors (:meth:`Mirror.changes`) are ``"<epoch>:<n>"`` with ``n`` a local counter:
a cursor of another process or another epoch is answered with every id (over-reporting,
which the interface allows), never with too little.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

import orjson
import redis

from cronmetrics.logs import get_logger
from cronmetrics.storage.interface import JobState

__all__ = ["Mirror", "decode_state", "encode_state", "reason"]

log = get_logger("store")
_FIELDS = tuple(f.name for f in fields(JobState) if f.name not in ("job_id", "version"))
LOAD_BATCH = 2000


def _entry_id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def encode_state(state: JobState) -> str:
    """``"<version>|<JSON>"``: the scripts read the version without decoding the JSON."""
    body = orjson.dumps({name: getattr(state, name) for name in _FIELDS}).decode()
    return f"{state.version}|{body}"


def _version(raw: str) -> int:
    return int(raw[: raw.index("|")])


def decode_state(job_id: str, raw: str) -> JobState:
    version, _, body = raw.partition("|")
    return JobState(job_id=job_id, version=int(version), **orjson.loads(body))


#: how redis-py names a client in an error (a sentinel it asked): its whole repr
_NOT_NEXT = r"(?:(?!<redis\.client\.Redis\().)*?"  # within one client's repr
_CLIENT_REPR = re.compile(
    rf"<redis\.client\.Redis\({_NOT_NEXT}[(,]host=([^,)]+),port=(\d+){_NOT_NEXT}\)>\)>\)>"
)


def reason(exc: BaseException) -> str:
    """``exc`` as one line for a log or a 503: redis-py's errors from Sentinel name each
    sentinel by its client's repr (a kilobyte of connection settings); here by host:port."""
    message = str(exc) or type(exc).__name__
    return _CLIENT_REPR.sub(r"sentinel \1:\2", message)


class Mirror:
    """The states of every job, the local change log, and the thread that follows Redis."""

    def __init__(
        self,
        client: Any,  # redis.Redis; Any: its reply types are unions of every shape
        prefix: str,
        *,
        on_change: Callable[[], None] | None = None,
        on_reload: Callable[[], None] | None = None,
        block_ms: int = 1000,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._stream = f"{prefix}changes"
        self._on_change = on_change
        self._on_reload = on_reload
        self._block_ms = block_ms
        self._lock = threading.Lock()
        self._states: dict[str, JobState] = {}
        self._log: dict[str, int] = {}  # id -> counter of its last change, oldest first
        self._counter = 0
        self._tombstones: dict[str, tuple[int, int]] = {}  # dropped id -> its drop event
        self._epoch = uuid.uuid4().hex[:12]
        self._last_id = "0-0"
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.up = False
        self.error: str | None = None
        self.down_since: float | None = None
        self.records_version = 0

    # -- reading -------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self, timeout: float) -> bool:
        return self._loaded.wait(timeout)

    def get(self, job_id: str) -> JobState | None:
        with self._lock:
            return self._states.get(job_id)

    def many(self, job_ids: Iterable[str] | None) -> dict[str, JobState]:
        with self._lock:
            if job_ids is None:
                return dict(self._states)
            states = self._states
            return {j: s for j in job_ids if (s := states.get(j)) is not None}

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._states)

    def changes(self, cursor: str) -> tuple[list[str], str]:
        with self._lock:
            now = f"{self._epoch}:{self._counter}"
            epoch, _, n = cursor.partition(":")
            if epoch != self._epoch or not n.isdigit():
                return list(self._log), now
            since = int(n)
            out = []
            for job_id in reversed(self._log):
                if self._log[job_id] <= since:
                    break
                out.append(job_id)
            return out, now

    # -- updating ------------------------------------------------------------------------

    def _logged(self, job_id: str) -> None:
        self._counter += 1
        self._log.pop(job_id, None)
        self._log[job_id] = self._counter

    def put(self, states: Iterable[JobState]) -> bool:
        """Keep each state unless the copy already has a newer one; True if any changed."""
        changed = False
        with self._lock:
            for state in states:
                old = self._states.get(state.job_id)
                if old is None or state.version > old.version:
                    self._states[state.job_id] = state
                    self._logged(state.job_id)
                    changed = True
        return changed

    def remove(self, job_id: str, event: str | None = None) -> None:
        """Forget a dropped job; with the drop's stream ``event`` id, stream entries of the
        job older than it (still on their way to us) do not bring it back."""
        with self._lock:
            if event is not None:
                self._tombstones[job_id] = _entry_id(event)
            if self._states.pop(job_id, None) is not None:
                self._logged(job_id)

    def replace_all(self, states: Mapping[str, JobState]) -> None:
        """A full load: the copy becomes ``states``; every id that differs is logged."""
        with self._lock:
            for job_id in list(self._states):
                if job_id not in states:
                    del self._states[job_id]
                    self._logged(job_id)
            for job_id, state in states.items():
                if self._states.get(job_id) != state:
                    self._states[job_id] = state
                    self._logged(job_id)

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cronmetrics-redis-tail")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._block_ms / 1000 + 5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def load(self) -> None:
        """Read the stream's last id, then every state in batches; tail from that id."""
        last = self._client.xrevrange(self._stream, count=1)
        last_id = last[0][0] if last else "0-0"
        states: dict[str, JobState] = {}
        for job_id, raw in self._client.hscan_iter(f"{self._prefix}states", count=LOAD_BATCH):
            states[job_id] = decode_state(job_id, raw)
        self.replace_all(states)
        self._last_id = last_id
        self._loaded.set()

    def _run(self) -> None:
        backoff = 0.1
        need_load = True
        while not self._stop.is_set():
            try:
                if need_load:
                    self.load()
                    need_load = False
                    self._set_up()
                    if self._on_reload is not None:
                        self._on_reload()
                    self._notify()
                reply = self._client.xread(
                    {self._stream: self._last_id}, count=1000, block=self._block_ms
                )
                self._set_up()
                backoff = 0.1
                if reply:
                    self._apply(reply[0][1])
            except redis.RedisError as exc:
                self._set_down(exc)
                need_load = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:  # a bug must not end the thread: log it, then start over
                log.exception("redis change stream: unexpected error")
                need_load = True
                self._stop.wait(1.0)

    def _apply(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        latest: dict[str, str] = {}  # job id -> its newest encoded state in the batch
        records = dropped = False
        for entry_id, data in entries:
            self._last_id = entry_id
            job_id = data.get("j")
            if job_id is None:
                records = records or "r" in data
                continue
            if not self._after_drop(job_id, entry_id):
                continue  # from before the job was dropped here
            raw = data.get("s", "")
            if raw:
                latest[job_id] = raw
            else:
                latest.pop(job_id, None)
                self.remove(job_id)
                dropped = True
        if records:
            self.records_version += 1
        with self._lock:  # what this process wrote itself is here already: not decoded
            states = self._states
            fresh = [
                (job_id, raw)
                for job_id, raw in latest.items()
                if (held := states.get(job_id)) is None or _version(raw) > held.version
            ]
        if self.put(decode_state(job_id, raw) for job_id, raw in fresh) or records or dropped:
            self._notify()

    def _after_drop(self, job_id: str, entry_id: str) -> bool:
        """False for an entry older than the job's drop on this replica."""
        with self._lock:
            tomb = self._tombstones.get(job_id)
            if tomb is None:
                return True
            if _entry_id(entry_id) < tomb:
                return False
            del self._tombstones[job_id]
            return True

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the tail thread) after the copy took in changes."""
        self._on_change = callback

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _set_up(self) -> None:
        if not self.up:
            if self.down_since is not None:
                log.info(
                    "redis store reachable again",
                    extra={"down_for": round(time.time() - self.down_since, 3)},
                )
            self.up, self.error, self.down_since = True, None, None

    def _set_down(self, exc: Exception) -> None:
        message = reason(exc)
        if self.up or self.down_since is None:
            log.error("redis store unreachable", extra={"error": message})
            self.down_since = time.time()
        self.up, self.error = False, message
