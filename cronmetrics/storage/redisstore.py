"""The Redis engine: every replica's state lives in one Redis, which holds the truth.

What Redis holds, and how, is drawn in :mod:`cronmetrics.storage.redis_lua`. Recording
works like this::

    replica                                   Redis
    -------                                   -----
    base = mirrored state (version v)
    new  = apply_result(base, result)  ──────▶ RECORD script: run-id keys unseen?
                                               every version still v?
                                               yes: state, history, counters, run-id
                                               keys, change event, all at once
           ◀── ok / dup keys / conflict + current states
    conflict: rebase on the current state and try again (a few times)

The state transition stays one Python function (:mod:`cronmetrics.storage.transitions`)
shared with the embedded engine; the script is a compare-and-set on the version, so two
replicas that record for the same job at once both count, in some order, and neither is
lost. Every call carries an operation id the script remembers for a minute, so a retry
of a call whose reply was lost (a reconnect) does not apply it twice; the retry comes
within about two seconds (below), and at 1,000 results/s a minute of ids is 60,000 small
keys, not the 600,000 that ten minutes would hold.

Timeouts are short and retries few (connect 0.5 s, reply 1 s, one retry) so that an
unreachable Redis turns into ``503 STORE_UNAVAILABLE`` within about two seconds: the
client retries, which is what it does with any 503.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from cronmetrics.config import Config
from cronmetrics.errors import Conflict, StorageError, StoreUnavailable
from cronmetrics.logs import get_logger
from cronmetrics.storage import redis_lua
from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import (
    JobState,
    JSONValue,
    Recorded,
    RunOutput,
    RuntimeRecord,
    StoreHealth,
    new_state,
)
from cronmetrics.storage.redismirror import Mirror, decode_state, encode_state, reason
from cronmetrics.storage.transitions import apply_result, running_finishes
from cronmetrics.storeurl import mask_url_password, parse_sentinel_url

__all__ = ["RedisStore", "open_redis_store", "read_password"]

log = get_logger("store")
T = TypeVar("T")

#: recording rebases on a newer state at most this often before it gives up (503)
MAX_ATTEMPTS = 64
#: writers of one process take a lock per job (striped), so compare-and-set conflicts
#: only happen between processes
STRIPES = 64
#: the newest results across all jobs kept for ``GET /api/job-result``
RECENT_MAX = 1000
#: the change stream's approximate length (``XADD MAXLEN ~``): a replica further behind
#: than this reloads every state, which it does after any reconnect anyway
STREAM_MAXLEN = 10_000
#: new job states written per RECORD call by :meth:`RedisStore.ensure_many`
ENSURE_BATCH = 500
SEP = "\x1f"
_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(Result) if f.name != "job_id")


def read_password(path: Path | None) -> str | None:
    """The first line of a password file (a mounted secret), or None without one."""
    if path is None:
        return None
    return path.read_text(encoding="utf-8").splitlines()[0].strip() if path.stat().st_size else ""


def _connect(
    url: str, *, socket_timeout: float, sentinel_password: str | None = None, **options: Any
) -> Any:
    """A client of the Redis at ``url``; with ``redis+sentinel://``, of the master the
    sentinels name now (``rediss+sentinel://``: both over TLS): after a failover its
    connections fail (or the demoted master answers READONLY), and the next connection
    asks the sentinels again."""
    spec = parse_sentinel_url(url)
    if spec is None:
        return redis.Redis.from_url(url, socket_timeout=socket_timeout, **options)
    from redis.sentinel import Sentinel, SentinelManagedSSLConnection

    # options in the URL win, as redis-py's from_url does with a redis:// URL
    timeouts = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": options["socket_connect_timeout"],
        **spec.options,
    }
    # no retry of a sentinel: the next one is asked at once (redis-py's default retries
    # with a backoff of seconds, for each sentinel, on each connection)
    asked: dict[str, Any] = {**timeouts, "retry": Retry(NoBackoff(), 0)}
    if sentinel_password is not None:
        asked["password"] = sentinel_password
    kwargs = {**options, **timeouts, "db": spec.db}
    if spec.tls:  # the sentinels and the primary alike
        asked.update(ssl=True, **spec.ssl)
        kwargs.update(connection_class=SentinelManagedSSLConnection, **spec.ssl)
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=asked)
    if spec.password is not None and "password" not in options:
        kwargs["password"] = spec.password
    if spec.username is not None:
        kwargs["username"] = spec.username
    return sentinel.master_for(spec.service, **kwargs)


def _encode_result(result: Result, version: int) -> str:
    body = orjson.dumps({name: getattr(result, name) for name in _RESULT_FIELDS}).decode()
    return f"{version:012d}|{body}"


def _decode_result(job_id: str, member: str) -> Result:
    return Result(job_id=job_id, **orjson.loads(member.partition("|")[2]))


class RedisStore:
    """A :class:`~cronmetrics.storage.interface.Store` whose truth is one Redis database."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        max_results_per_job: int = 100,
        run_id_ttl: float = 30 * 86400,
        prefix: str = "cm:",
        on_change: Callable[[], None] | None = None,
        socket_timeout: float = 1.0,
        connect_timeout: float = 0.5,
        start: bool = True,
    ) -> None:
        self.url = url
        self.display = mask_url_password(url)
        self.max_results = max_results_per_job
        self.run_id_ttl = max(1, int(run_id_ttl))
        self.prefix = prefix
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": connect_timeout,
            "socket_keepalive": True,
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
            "health_check_interval": 10,
        }
        if password is not None:
            options["password"] = password
        if sentinel_password is not None:
            options["sentinel_password"] = sentinel_password
        # Any: redis-py's reply types are unions of every possible reply shape
        self.client: Any = _connect(url, socket_timeout=socket_timeout, **options)
        # the tail blocks up to 1 s in XREAD: its reply timeout must be longer
        tail = _connect(url, socket_timeout=socket_timeout + 2.0, **options)
        self._scripts = {
            name: self.client.register_script(getattr(redis_lua, name))
            for name in ("RECORD", "PURGE", "DROP", "OUTPUT", "TAKE_OUTPUT")
        }
        self.mirror = Mirror(tail, prefix, on_change=on_change, on_reload=self._after_reload)
        self._pending: set[str] = set()  # ensured while Redis was down: written on reload
        self._stripes = [threading.Lock() for _ in range(STRIPES)]
        self._op_prefix = uuid.uuid4().hex
        self._ops = itertools.count()
        if start:
            self.mirror.start()

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; a Redis that cannot be reached becomes :class:`StoreUnavailable`."""
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(
                f"the Redis store {self.display} is unreachable ({what}): {reason(exc)}"
            ) from None
        except redis.AuthenticationError as exc:
            raise StoreUnavailable(
                f"the Redis store {self.display} refused us: {reason(exc)}"
            ) from None
        except redis.RedisError as exc:
            raise StorageError(
                f"the Redis store {self.display} failed ({what}): {reason(exc)}"
            ) from None

    def _op_id(self) -> str:
        """Unique per call across processes: a random prefix per engine and a counter
        (uuid4 per call read /dev/urandom on every submission)."""
        return f"{self._op_prefix}{next(self._ops)}"

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _write_states(
        self,
        op: str,
        writes: Sequence[tuple[JobState, int, Sequence[tuple[float, str]]]],
        rid_keys: Sequence[str] = (),
        finishes: Sequence[Result] = (),
    ) -> list[Any]:
        """One RECORD call: ``writes`` are (new state, expected version, history entries);
        it refuses (``"logged"``) if one of ``finishes`` ends a run with open output."""
        args: list[Any] = [
            self.prefix,
            op,
            self.run_id_ttl,
            self.max_results,
            RECENT_MAX,
            STREAM_MAXLEN,
            len(writes),
        ]
        for state, expected, entries in writes:
            args += [state.job_id, expected, state.version, encode_state(state), len(entries)]
            for score, member in entries:
                args += [repr(score), member]
        args.append(len(finishes))
        for r in finishes:
            args += [r.job_id, r.run_id or "", repr(r.timestamp)]
        args += rid_keys
        script = self._scripts["RECORD"]
        reply: list[Any] = self._call("record", lambda: script(args=args))
        return reply

    def _locked(self, job_ids: Iterable[str]) -> ExitStack:
        """Hold the stripes of ``job_ids`` (in index order: no deadlock)."""
        stack = ExitStack()
        for index in sorted({hash(j) % STRIPES for j in job_ids}):
            stack.enter_context(self._stripes[index])
        return stack

    def _rebase(self, reply: list[Any], attempt: int) -> None:
        """Take the current states a conflicting RECORD returned into the mirror; after a
        few conflicts in a row, wait a little (jittered) so racing replicas spread out."""
        if attempt >= 2:
            time.sleep(random.uniform(0, 0.002 * min(attempt, 25)))  # noqa: S311 (not crypto)
        pairs = reply[1:]
        for job_id, raw in zip(pairs[::2], pairs[1::2], strict=True):
            if raw:
                self.mirror.put([decode_state(job_id, raw)])
            else:
                self.mirror.remove(job_id)

    def _fetch(self, ids: list[str]) -> dict[str, JobState | None]:
        """The states of ``ids`` as Redis has them now (the mirror may be a moment behind:
        a decision to do nothing must not rest on it)."""
        raws = self._call("read states", lambda: self.client.hmget(self._key("states"), ids))
        fresh = {j: decode_state(j, raw) if raw else None for j, raw in zip(ids, raws, strict=True)}
        self.mirror.put(s for s in fresh.values() if s is not None)
        return fresh

    def _cas(
        self,
        job_ids: Iterable[str],
        change: Callable[[str, JobState | None], JobState | None],
        *,
        fresh: bool = False,
    ) -> dict[str, JobState]:
        """Apply ``change(job id, state)`` (None: leave alone) to each job's state with
        compare-and-set, in one RECORD call;
        ``fresh`` reads the states from Redis first instead of the mirror."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        with self._locked(ids):
            return self._cas_locked(ids, change, fresh)

    def _cas_locked(
        self, ids: list[str], change: Callable[[str, JobState | None], JobState | None], fresh: bool
    ) -> dict[str, JobState]:
        op = self._op_id()
        for attempt in range(MAX_ATTEMPTS):
            if fresh and attempt == 0:
                current = self._fetch(ids)
            else:
                current = {j: self.mirror.get(j) for j in ids}
            writes = []
            out: dict[str, JobState] = {}
            for job_id, state in current.items():
                new = change(job_id, state)
                if new is None:
                    if state is not None:
                        out[job_id] = state
                    continue
                writes.append((new, state.version if state is not None else -1, ()))
                out[job_id] = new
            if not writes:
                return out
            reply = self._write_states(op, writes)
            if reply[0] in ("ok", "applied"):
                self.mirror.put(out.values())
                return out
            self._rebase(reply, attempt)
        raise StorageError("the job's state kept changing while we wrote it; try again")

    # -- results and states --------------------------------------------------------------

    def record(self, results: Sequence[Result], now: float) -> list[Recorded]:
        if not results:
            return []
        with self._locked(r.job_id for r in results):
            recorded = self._record_locked(results, now, check_logs=False)
        assert recorded is not None  # only a check refuses
        return recorded

    def record_unlogged(self, results: Sequence[Result], now: float) -> list[Recorded] | None:
        """The RECORD call itself looks for open output of the runs the finishes end,
        so that TAKE_OUTPUT (a second round trip, and a wait for an AOF fsync under
        ``appendfsync always``) is only made for a run that logged something."""
        if not results:
            return []
        with self._locked(r.job_id for r in results):
            return self._record_locked(results, now, check_logs=True)

    def _record_locked(
        self, results: Sequence[Result], now: float, *, check_logs: bool
    ) -> list[Recorded] | None:
        op = self._op_id()
        finishes = running_finishes(results) if check_logs else []
        known_dups: set[str] = set()
        for attempt in range(MAX_ATTEMPTS):
            base: dict[str, JobState] = {}
            expected: dict[str, int] = {}
            for result in results:
                job_id = result.job_id
                if job_id not in base:
                    state = self.mirror.get(job_id)
                    expected[job_id] = state.version if state is not None else -1
                    base[job_id] = state if state is not None else new_state(job_id, now)
            entries: dict[str, list[tuple[float, str]]] = {}
            rid_keys: list[str] = []
            plan: list[tuple[Result, JobState | None, bool]] = []
            for result in results:
                job_id = result.job_id
                if result.run_id is not None:
                    rid = SEP.join((job_id, result.status, result.run_id))
                    if rid in known_dups or rid in rid_keys:
                        plan.append((result, None, False))
                        continue
                    rid_keys.append(rid)
                state, changed = apply_result(base[job_id], result)
                base[job_id] = state
                entries.setdefault(job_id, []).append(
                    (result.timestamp, _encode_result(result, state.version))
                )
                plan.append((result, state, changed))
            writes = [(base[j], expected[j], e) for j, e in entries.items()]
            reply = self._write_states(op, writes, rid_keys, finishes) if writes else ["ok"]
            if reply[0] in ("ok", "applied"):
                self.mirror.put(base[j] for j in entries)
                return [
                    Recorded(r, s, changed)
                    if s is not None
                    else Recorded(r, base[r.job_id], False, duplicate=True)
                    for r, s, changed in plan
                ]
            if reply[0] == "logged":
                return None
            if reply[0] == "dup":
                known_dups.update(reply[1:])
            else:
                self._rebase(reply, attempt)
        raise StorageError("the job's state kept changing while we recorded; try again")

    def ensure(self, job_id: str, now: float) -> JobState:
        return self.ensure_many([job_id], now)[job_id]

    def ensure_many(self, job_ids: Sequence[str], now: float) -> dict[str, JobState]:
        """Jobs the mirror holds attached cost nothing; the others are written
        ``ENSURE_BATCH`` to a RECORD call (a first start with 10,000 new jobs: 20 calls)."""

        def attach(job_id: str, state: JobState | None) -> JobState | None:
            if state is None:
                return new_state(job_id, now)
            if state.detached_since is not None:
                return dataclasses.replace(state, detached_since=None, version=state.version + 1)
            return None

        out: dict[str, JobState] = {}
        todo = []
        for job_id in job_ids:
            held = self.mirror.get(job_id)
            if held is not None and held.detached_since is None:
                out[job_id] = held
            else:
                todo.append(job_id)
        for start in range(0, len(todo), ENSURE_BATCH):
            chunk = todo[start : start + ENSURE_BATCH]
            try:
                out.update(self._cas(chunk, attach))
            except StoreUnavailable:
                # Redis is down (at start, say): serve the jobs as new until it is back,
                # then write them (unless another replica did); the mirror's reload
                # calls us back
                self._pending.update(chunk)
                for job_id in chunk:
                    out[job_id] = self.mirror.get(job_id) or new_state(job_id, now)
        return out

    def _after_reload(self) -> None:
        pending, self._pending = self._pending, set()
        try:
            self.ensure_many(sorted(pending), time.time())  # still down: pending again
        except StorageError:
            self._pending.update(pending)

    def activate(self, job_id: str, now: float) -> JobState:
        def restart(job_id: str, state: JobState | None) -> JobState:
            base = state if state is not None else new_state(job_id, now)
            return dataclasses.replace(base, active_since=now, version=base.version + 1)

        return self._cas([job_id], restart)[job_id]

    def state(self, job_id: str) -> JobState | None:
        return self.mirror.get(job_id)

    def states(self, job_ids: Iterable[str] | None = None) -> dict[str, JobState]:
        return self.mirror.many(job_ids)

    def ids(self) -> list[str]:
        return self.mirror.ids()

    def history(
        self, job_id: str, limit: int | None = None, before: float | None = None
    ) -> list[Result]:
        top = f"({before!r}" if before is not None else "+inf"
        key = self._key(f"hist:{job_id}")
        members = self._call(
            "history",
            lambda: self.client.zrevrangebyscore(
                key, top, "-inf", start=0 if limit else None, num=limit or None
            ),
        )
        return [_decode_result(job_id, m) for m in members]

    def recent(self, job_ids: Iterable[str] | None, limit: int) -> list[Result]:
        if job_ids is None:
            members = self._call(
                "recent", lambda: self.client.zrevrange(self._key("recent"), 0, limit - 1)
            )
            out = []
            for member in members:
                job_id, _, rest = member.partition(SEP)
                out.append(_decode_result(job_id, rest))
            return out
        merged = [r for job_id in job_ids for r in self.history(job_id, limit)]
        merged.sort(key=lambda r: r.timestamp, reverse=True)  # stable: arrival within a job
        return merged[:limit]

    def changes(self, cursor: str) -> tuple[list[str], str]:
        return self.mirror.changes(cursor)

    # -- run output (the execution log) --------------------------------------------------

    def _output(self, job_id: str, fields: Sequence[str], updated: float) -> RunOutput:
        run, started, text = fields
        return RunOutput(
            job_id, run or None, None if started == "null" else float(started), text, updated
        )

    def append_output(
        self, job_id: str, text: str, *, run_id: str | None, limit: int, now: float
    ) -> RunOutput:
        script = self._scripts["OUTPUT"]
        args: list[str | int] = [self.prefix, job_id, run_id or "", text, limit, repr(now)]
        args.append("append")
        reply = self._call("append output", lambda: script(args=args))
        if reply[0] == "ok":
            return self._output(job_id, reply[1:], now)
        if reply[0] == "other":
            running = f" (the running one is {reply[1]!r})" if reply[1] else ""
            raise Conflict(f"run {run_id!r} of {job_id!r} is not running{running}")
        if reply[0] == "closed":
            raise Conflict(f"the running run of {job_id!r} is finishing")
        raise Conflict(f"no run of {job_id!r} is running: send its start first")

    def run_output(self, job_id: str) -> RunOutput | None:
        raw = self._call("output", lambda: self.client.hgetall(self._key(f"out:{job_id}")))
        state = self.mirror.get(job_id)
        if not raw or raw.get("closed") == "1" or state is None or not state.running:
            return None
        output = self._output(job_id, (raw["run"], raw["started"], raw["text"]), 0.0)
        if (output.run_id, output.started) != (state.run_id, state.run_started):
            return None
        return dataclasses.replace(output, updated=float(raw["updated"]))

    def take_outputs(self, finishes: Sequence[Result]) -> dict[str, RunOutput]:
        if not finishes:
            return {}
        args: list[str] = [self.prefix]
        for r in finishes:
            args += [r.job_id, r.run_id or "", repr(r.timestamp)]
        script = self._scripts["TAKE_OUTPUT"]
        reply = self._call("take output", lambda: script(args=args))
        taken = {}
        for k in range(0, len(reply), 5):
            job_id = reply[k]
            taken[job_id] = self._output(job_id, reply[k + 1 : k + 4], float(reply[k + 4]))
        return taken

    def restore_output(self, output: RunOutput) -> None:
        started = "null" if output.started is None else orjson.dumps(output.started).decode()
        args: list[str | int] = [self.prefix, output.job_id, output.run_id or "", output.text]
        args += [2**53, repr(output.updated), "restore", started]
        script = self._scripts["OUTPUT"]
        self._call("restore output", lambda: script(args=args))

    # -- removal -------------------------------------------------------------------------

    def purge(self, before: float, job_ids: Iterable[str] | None = None) -> int:
        ids = list(job_ids) if job_ids is not None else []
        if job_ids is not None and not ids:
            return 0
        args: list[str | int] = [self.prefix, repr(before), STREAM_MAXLEN, *ids]
        script = self._scripts["PURGE"]
        removed = int(self._call("purge", lambda: script(args=args)))
        if removed:
            # purged output must leave the append-only file too: rewrite it (Redis 7
            # deletes the old files once the rewrite is done)
            with contextlib.suppress(redis.ResponseError):  # one running already covers ours
                self.client.bgrewriteaof()
        return removed

    def detach(self, job_ids: Iterable[str], now: float) -> None:
        def mark(_job_id: str, state: JobState | None) -> JobState | None:
            if state is None or state.detached_since is not None:
                return None
            return dataclasses.replace(state, detached_since=now, version=state.version + 1)

        try:
            self._cas(job_ids, mark, fresh=True)
        except StoreUnavailable as exc:  # at start with Redis down: the next start redoes it
            log.error("cannot detach jobs no longer defined", extra={"error": exc.message})

    def expire_detached(self, before: float) -> list[str]:
        def expired(states: Iterable[JobState | None]) -> list[str]:
            return [
                s.job_id
                for s in states
                if s is not None and s.detached_since is not None and s.detached_since < before
            ]

        candidates = expired(self.mirror.many(None).values())
        if not candidates:
            return []
        gone = expired(self._fetch(candidates).values())  # re-attached meanwhile: kept
        for job_id in gone:
            self.drop(job_id)
        return gone

    def drop(self, job_id: str) -> bool:
        script = self._scripts["DROP"]
        event = self._call("drop", lambda: script(args=[self.prefix, job_id, STREAM_MAXLEN]))
        self._call("drop", lambda: self.client.delete(self._key(f"out:{job_id}")))
        self.mirror.remove(job_id, event or None)
        return bool(event)

    # -- last good definitions -----------------------------------------------------------

    def put_definitions(self, definitions: Mapping[str, Mapping[str, JSONValue]]) -> None:
        if definitions:
            mapping = {k: orjson.dumps(dict(v)).decode() for k, v in definitions.items()}
            self._call("definitions", lambda: self.client.hset(self._key("defs"), mapping=mapping))

    def definitions(self) -> dict[str, dict[str, JSONValue]]:
        """The last good definitions; none (the files decide) while Redis is unreachable."""
        try:
            raw = self._call("definitions", lambda: self.client.hgetall(self._key("defs")))
        except StoreUnavailable as exc:
            log.error("cannot read the last good definitions", extra={"error": exc.message})
            return {}
        return {k: orjson.loads(v) for k, v in raw.items()}

    # -- runtime records -----------------------------------------------------------------

    def _record_key(self, kind: str) -> str:
        return self._key(f"rec:{kind}")

    def put_record(
        self, kind: str, key: str, value: Mapping[str, JSONValue], now: float
    ) -> RuntimeRecord:
        record = RuntimeRecord(kind, key, dict(value), now)
        doc = orjson.dumps({"value": dict(value), "updated": now}).decode()

        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._record_key(kind), key, doc)
            pipe.xadd(self._key("changes"), {"r": kind}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.execute()

        self._call("runtime record", write)
        return record

    def get_record(self, kind: str, key: str) -> RuntimeRecord | None:
        raw = self._call("runtime record", lambda: self.client.hget(self._record_key(kind), key))
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return RuntimeRecord(kind, key, doc["value"], doc["updated"])

    def list_records(self, kind: str) -> list[RuntimeRecord]:
        raw = self._call("runtime records", lambda: self.client.hgetall(self._record_key(kind)))
        out = []
        for key in sorted(raw):
            doc = orjson.loads(raw[key])
            out.append(RuntimeRecord(kind, key, doc["value"], doc["updated"]))
        return out

    def delete_record(self, kind: str, key: str) -> bool:
        def delete() -> bool:
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self._record_key(kind), key)
            pipe.xadd(self._key("changes"), {"r": kind}, maxlen=STREAM_MAXLEN, approximate=True)
            return bool(pipe.execute()[0])

        return self._call("runtime record", delete)

    # -- lifecycle -----------------------------------------------------------------------

    def flush(self) -> None:
        """Nothing to do: a result is in Redis (and its AOF) before record() returns."""

    def set_max_results(self, max_results_per_job: int) -> list[str]:
        """The next RECORD of each job trims to the new limit; a smaller one also cuts
        every history in Redis now (pipelined, ``ENSURE_BATCH`` jobs a round trip), so
        that ``GET .../results`` shows the new limit at once on every replica. Each replica
        trims to its own config's limit when it records: give them all the same."""
        if max_results_per_job == self.max_results:
            return []
        shrunk = max_results_per_job < self.max_results
        self.max_results = max_results_per_job
        if not shrunk:
            return []
        ids = self.mirror.ids()
        cut: list[str] = []

        def trim(chunk: list[str]) -> list[int]:
            pipe = self.client.pipeline(transaction=False)
            for job_id in chunk:
                pipe.zremrangebyrank(self._key(f"hist:{job_id}"), 0, -(max_results_per_job + 1))
            return pipe.execute()  # type: ignore[no-any-return]

        for start in range(0, len(ids), ENSURE_BATCH):
            chunk = ids[start : start + ENSURE_BATCH]
            try:
                removed = self._call("trim history", functools.partial(trim, chunk))
            except StorageError as exc:  # each job's next result trims it still
                log.error(
                    "cannot cut the histories to the new retention.max_results_per_job now",
                    extra={"error": exc.message},
                )
                break
            cut += [job_id for job_id, n in zip(chunk, removed, strict=True) if n]
        return cut

    def health(self) -> StoreHealth:
        mirror = self.mirror
        if mirror.up and mirror.loaded:
            return StoreHealth(True, f"redis {self.display}: {len(mirror.ids())} jobs mirrored")
        if mirror.error is None:
            return StoreHealth(False, f"redis {self.display}: connecting")
        return StoreHealth(False, f"redis {self.display} unreachable: {mirror.error}")

    def close(self) -> None:
        self.mirror.stop()
        self.client.close()

    def _ask_sentinels(self) -> tuple[bool, str]:
        """Why no sentinel named a primary, asking each one again: redis-py's own error
        keeps only each failure's class (``network:ConnectionError`` for a refused
        connection and a certificate it cannot verify alike). Whether one refused the
        password, and the reasons, one per sentinel."""
        manager = getattr(self.client.connection_pool, "sentinel_manager", None)
        refused, reasons = False, []
        for sentinel in getattr(manager, "sentinels", ()):
            where = sentinel.connection_pool.connection_kwargs
            name = f"sentinel {where.get('host')}:{where.get('port')}"
            try:
                sentinel.ping()
            except redis.AuthenticationError as exc:
                refused = True
                reasons.append(f"{name}: {reason(exc)}")
            except redis.RedisError as exc:
                reasons.append(f"{name}: {reason(exc)}")
            else:
                reasons.append(f"{name} knows no primary for the service")
        return refused, "; ".join(reasons)

    def problems(self) -> list[str]:
        """What is wrong with this Redis for us, one line each (logged at start): it
        cannot be reached, refuses the password, may evict our keys, or keeps no AOF."""
        try:
            self.client.ping()
            memory = self.client.info("memory")
            persistence = self.client.info("persistence")
        except redis.AuthenticationError as exc:
            return [f"the Redis store {self.display} refused the password: {reason(exc)}"]
        except MasterNotFoundError as exc:
            refused, why = self._ask_sentinels()
            if refused:
                return [
                    f"the sentinels of the Redis store {self.display} refused the password "
                    f"(store_sentinel_password_file): {why}"
                ]
            return [f"the Redis store {self.display} cannot be reached: {why or reason(exc)}"]
        except redis.RedisError as exc:
            return [f"the Redis store {self.display} cannot be reached: {reason(exc)}"]
        out = []
        policy = str(memory.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            out.append(
                f"the Redis store {self.display} has maxmemory-policy {policy}: it may "
                "evict cronmetrics keys (states, history, run ids); set noeviction"
            )
        if not persistence.get("aof_enabled"):
            out.append(
                f"the Redis store {self.display} has appendonly off: a Redis restart loses "
                "what it held since its last RDB save; set appendonly yes"
            )
        return out


def open_redis_store(
    config: Config, *, on_change: Callable[[], None] | None = None, wait: float = 5.0
) -> RedisStore:
    """The engine of ``config.store``, its problems logged (one line each), its mirror
    loaded (up to ``wait`` seconds: a Redis down at start is no reason not to start; the
    mirror loads when it comes, and /health/deep says so meanwhile)."""
    store = RedisStore(
        config.store,
        password=read_password(config.store_password_file),
        sentinel_password=read_password(config.store_sentinel_password_file),
        max_results_per_job=config.retention.max_results_per_job,
        run_id_ttl=config.retention.days * 86400,
        on_change=on_change,
    )
    for problem in store.problems():
        log.error(problem)
    if store.mirror.wait_loaded(wait):
        log.info("redis store loaded", extra={"store": store.display, "jobs": len(store.ids())})
    return store
