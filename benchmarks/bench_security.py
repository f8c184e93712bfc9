"""Issue #5 cost checks: output redaction on hostile 1 MiB outputs, token lookup per request.

Redaction runs on every submitted output before it is stored, over at most
``limits.max_body_bytes`` (1 MiB by default) per request, so its worst case is bounded by
what one request can carry. The default patterns start with a literal keyword and use
possessive, bounded quantifiers; this script feeds them inputs built to make a
backtracking regex engine go quadratic and prints the time per MiB.

Token lookup hashes the presented token once and compares it with every configured hash
in constant time (no early exit), so its cost grows with the number of tokens.

    python3 benchmarks/bench_security.py
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

from cronmetrics.config import DEFAULT_REDACT, TokenConfig
from cronmetrics.web.app import make_redactor
from cronmetrics.web.auth import TokenAuth, hash_token

MIB = 1024 * 1024


def hostile_outputs() -> dict[str, str]:
    def fill(unit: str) -> str:
        return (unit * (MIB // len(unit) + 1))[:MIB]

    log = "".join(
        f"2025-10-30T19:56:{i % 60:02d}Z rsync: sent {i * 37} bytes to backup3:/srv/{i}\n"
        for i in range(20_000)
    )
    return {
        "plain log lines": (log * (MIB // len(log) + 1))[:MIB],
        "one long word": fill("x"),
        "keyword repeated": fill("token"),
        "keyword + separator repeated": fill("password="),
        "header name repeated": fill("authorization: "),
        "AKIA prefix repeated": fill("AKIA"),
        "URL scheme repeated": fill("a://b:"),
        "PEM header repeated": fill("-----BEGIN PRIVATE KEY-----"),
        "many real secrets": fill("DB_PASSWORD=hunter2 Authorization: Bearer abc.def "),
    }


def timed(func: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--by-pattern", action="store_true", help="time each pattern alone")
    args = parser.parse_args()
    redact = make_redactor(DEFAULT_REDACT)
    assert redact is not None
    print("redaction with the default patterns, 1 MiB of output, median of", args.runs)
    worst = 0.0
    for name, text in hostile_outputs().items():
        seconds = timed(functools.partial(redact, text), args.runs)
        worst = max(worst, seconds)
        print(f"  {name:<30} {seconds * 1000:8.1f} ms")
    print(f"  worst case: {worst * 1000:.0f} ms per MiB")
    if args.by_pattern:
        print("per pattern (ms per MiB, same inputs in the same order):")
        for pattern in DEFAULT_REDACT:
            one = make_redactor([pattern])
            assert one is not None
            row = [
                timed(functools.partial(one, text), 1) * 1000 for text in hostile_outputs().values()
            ]
            print("  " + " ".join(f"{ms:5.0f}" for ms in row), pattern[:40])
    print("token lookup (hash + constant-time compare with every configured hash)")
    for count in (1, 100, 1000):
        tokens = [
            TokenConfig(name=f"t{i}", sha256=hash_token(f"cm_token_{i}"), scopes=["submit"])
            for i in range(count)
        ]
        auth = TokenAuth(tokens)
        header, n = f"Bearer cm_token_{count - 1}", 2000

        def lookups(auth: TokenAuth = auth, header: str = header, n: int = n) -> None:
            for _ in range(n):
                auth.identify(header)

        seconds = timed(lookups, args.runs)
        print(f"  {count:>5} tokens: {seconds / n * 1e6:8.1f} µs per request")


if __name__ == "__main__":
    main()
