"""The cron host's commands: ``run``, ``result submit``, ``ingest`` (argparse, stdlib only).

This is the zipapp's whole command line, and the full ``cronmetrics`` CLI dispatches these
three commands here before it imports click or pydantic (:mod:`cronmetrics.cli.entry`), so
a cron run costs what a Python start-up costs. Every error is one line on stderr with an
exit code (:attr:`CronmetricsError.exit_code`); no traceback ever reaches a user, and
``run`` exits with the wrapped command's code whatever the server answered.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from cronmetrics import __version__
from cronmetrics.client.failures import UsageError, advice
from cronmetrics.client.http import Client
from cronmetrics.client.settings import DEFAULT_URL, ClientSettings, split_job_id
from cronmetrics.errors import CronmetricsError, ServerUnavailable

#: typing costs a cron run ~3 ms to import: its names are for the type checker only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["COMMANDS", "main", "parse_duration"]

#: argv prefixes handled here (the full CLI routes them without loading click).
COMMANDS = (("run",), ("result", "submit"), ("ingest",))
DEFAULT_OUTPUT_LIMIT = 10_000
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EPILOG = """\
Exit codes: run exits with the command's own code (128+N when signal N killed it, 127 not
found, 126 not executable), whatever the server answers. result submit and ingest: 0 ok,
1 refused or lines skipped, 2 usage, 3 server unavailable, 4 unknown job, 6 bad token.
Environment: CRONMETRICS_URL, CRONMETRICS_TOKEN, CRONMETRICS_TOKEN_FILE, CRONMETRICS_CACERT.
"""


def parse_duration(text: str, *, what: str) -> int:
    """``600``, ``10m``, ``1h30m``, ``2d`` -> whole seconds; :class:`UsageError` otherwise."""
    raw = text.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_RE.finditer(raw):
        if match.start() != pos or (not match.group(2) and match.end() != len(raw)):
            break
        total += float(match.group(1)) * _UNITS[match.group(2).lower()]
        pos = match.end()
        while pos < len(raw) and raw[pos] == " ":
            pos += 1
    if not raw or pos != len(raw) or not total.is_integer():
        raise UsageError(
            f"{what} {text!r} is not a duration: use seconds (600) or units like 10m, 1h30m, 2d"
        )
    return int(total)


def note(message: str) -> None:
    """One line on stderr; a closed stderr is no reason to fail (or change an exit code)."""
    try:
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def warn(message: str) -> None:
    """A warning line (cron mails it; it never changes an exit code)."""
    note(f"cronmetrics: warning: {message}")


class _Parser(argparse.ArgumentParser):
    """argparse that says what to do: exit 2 with one line plus the usage."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse builds a formatter for every add_argument (to check metavars); left to
        # find the width itself, each one imports shutil (and zlib, bz2, lzma): ~3 ms a run
        return self.formatter_class(prog=self.prog, width=_help_width())  # type: ignore[call-arg]


_WIDTH: list[int] = []


def _help_width() -> int:
    """What ``shutil.get_terminal_size`` would say, minus argparse's margin of 2 (found
    once: argparse asks at every add_argument)."""
    if not _WIDTH:
        _WIDTH.append(_terminal_width())
    return _WIDTH[0]


def _terminal_width() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        stream = sys.__stdout__
        try:
            columns = os.get_terminal_size(stream.fileno()).columns if stream else 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(columns - 2, 20)


def _bounded(kind: type, low: float, high: float, name: str) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be between {low:g} and {high:g}")
        return value

    return convert


def _connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument(
        "--url", metavar="URL", help=f"server base URL [env CRONMETRICS_URL; {DEFAULT_URL}]"
    )
    group.add_argument("--token", metavar="TOKEN", help="bearer token [env CRONMETRICS_TOKEN]")
    group.add_argument(
        "--token-file",
        metavar="FILE",
        help="read the token from FILE, keeps it out of ps [env CRONMETRICS_TOKEN_FILE]",
    )
    group.add_argument(
        "--cacert",
        metavar="FILE",
        help="CA bundle for the server's certificate [env CRONMETRICS_CACERT]",
    )
    group.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")


def _common(
    parser: argparse.ArgumentParser, budget: str, default: float, low: float, what: str
) -> None:
    """The flags every cron host command takes: server, job, output limit, time budget."""
    _connection(parser)
    parser.add_argument("--job", required=True, metavar="ID", help="name or name@host")
    parser.add_argument(
        "--output-limit",
        type=_bounded(int, 0, 1_048_576, "--output-limit"),
        default=DEFAULT_OUTPUT_LIMIT,
        metavar="BYTES",
        help="bytes of output tail to report (default 10000)",
    )
    parser.add_argument(
        budget,
        type=_bounded(float, low, 3600, budget),
        default=default,
        metavar="SECONDS",
        help=f"{what} (default {default:g})",
    )


def build_parser(prog: str = "cronmetrics", only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only`` (``run``, ``result`` or ``ingest``), that command's
    parser alone: building all three cost every cron run ~3 ms."""
    parser = _Parser(
        prog=prog,
        description="Report cron jobs to a cronmetrics server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cronmetrics {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if only in (None, "run"):
        _run_parser(commands)
    if only in (None, "result"):
        _submit_parser(commands)
    if only in (None, "ingest"):
        _ingest_parser(commands)
    return parser


def _run_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run a command and report its start, exit code, duration and output tail",
        description=(
            "Run CMD and report its start, exit code, duration and output tail. Exits with"
            " CMD's own code; an unreachable or refusing server costs at most"
            " --report-timeout seconds (both reports, every retry) and a warning line per report"
            " it could not make (start, result)."
            "\n\ncrontab:  30 2 * * *  cronmetrics run --job backup@db1 -- /usr/local/bin/backup.sh"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(
        run, "--report-timeout", 10.0, 0.1, "at most this long spent reporting, retries included"
    )
    run.add_argument("--timeout", metavar="DURATION", help="kill the command after this (10m)")
    run.add_argument(
        "--kill-after",
        default="10s",
        metavar="DURATION",
        help="after --timeout's SIGTERM, SIGKILL this much later (default 10s)",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")


def _submit_parser(commands: Any) -> None:
    result = commands.add_parser("result", help="submit one result by hand")
    result_commands = result.add_subparsers(dest="result_command", metavar="submit")
    submit = result_commands.add_parser(
        "submit",
        help="submit one result (POST /api/job-result)",
        description="Submit one result (POST /api/job-result). Silent unless on a terminal.",
    )
    _common(submit, "--retry-timeout", 10.0, 0, "retry an unreachable or busy server this long")
    submit.add_argument("--status", required=True, choices=["start", "success", "failure"])
    submit.add_argument(
        "--duration", type=_bounded(float, 0, 10 * 366 * 86400, "--duration"), help="seconds"
    )
    submit.add_argument("--exit-code", type=int)
    submit.add_argument(
        "--output-file", metavar="FILE", help="log to attach (tail kept); - is stdin"
    )
    # the old spelling, kept working: -o/--output is an output format in every other command
    submit.add_argument("--output", dest="old_output", help=argparse.SUPPRESS)
    submit.add_argument("--run-id", help="pairs a start with its finish")
    submit.add_argument("--timestamp", metavar="RFC3339", help="default: now")
    submit.add_argument("--label", action="append", default=[], metavar="K=V")
    submit.add_argument("-q", "--quiet", action="store_true", help="no confirmation")


def _ingest_parser(commands: Any) -> None:
    ingest = commands.add_parser(
        "ingest",
        help='submit JSONL lines {"ts", "exit", "msg"} from a log file',
        description=(
            'Submit JSONL lines {"ts": RFC3339|epoch, "exit": N, "msg": "..."} from FILE,'
            " resuming where the last run stopped. Malformed lines are reported as"
            " FILE:LINE and skipped; exit 1 if any were."
        ),
    )
    ingest.add_argument("file", metavar="FILE")
    _common(
        ingest,
        "--retry-timeout",
        30.0,
        0.1,
        "give up (exit 3) after this long unreachable (not -f)",
    )
    ingest.add_argument("-f", "--follow", action="store_true", help="keep reading (rotation ok)")
    ingest.add_argument(
        "--batch",
        type=_bounded(int, 1, 1000, "--batch"),
        default=500,
        help="results per request (default 500)",
    )
    ingest.add_argument(
        "--state", metavar="PATH", help="offset file [default: .FILE.cronmetrics-offset]"
    )
    ingest.add_argument(
        "--poll",
        type=_bounded(float, 0.05, 60, "--poll"),
        default=1.0,
        metavar="SECONDS",
        help="with -f, how often to look for new lines (default 1)",
    )


def _settings(args: argparse.Namespace) -> ClientSettings:
    return ClientSettings.resolve(
        url=args.url,
        token=args.token,
        token_file=args.token_file,
        insecure=args.insecure,
        cacert=args.cacert,
    )


def _run(args: argparse.Namespace) -> int:
    from cronmetrics.client.runner import run

    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("give the command to run after --, e.g. run --job ID -- backup.sh")
    limit = parse_duration(args.timeout, what="--timeout") if args.timeout is not None else None
    grace = parse_duration(args.kill_after, what="--kill-after")
    connect: Callable[[], Client]
    try:
        split_job_id(args.job)
        connect = _settings(args).client
    except CronmetricsError as exc:  # a typo in --job or --cacert must not skip the job
        problem = exc

        def connect() -> Client:
            raise problem

    return run(
        connect,
        args.job,
        command,
        timeout=limit,
        kill_after=float(grace),
        output_limit=args.output_limit,
        report_timeout=args.report_timeout,
        warn=warn,
    )


def read_tail(stream: Any, limit: int) -> str:
    """The last ``limit`` bytes of a stream, read in bounded memory."""
    from cronmetrics.client.runner import OutputTail

    tail = OutputTail(limit)
    while chunk := stream.read(65536):
        tail.feed(chunk)
    return tail.text()


def _labels(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--label {raw!r} must be KEY=VALUE")
        out[key.strip()] = value
    return out


def _submit(args: argparse.Namespace) -> int:
    name, host = split_job_id(args.job)
    result: dict[str, Any] = {"job_name": name, "status": args.status}
    optional = {
        "host": host,
        "duration": args.duration,
        "exit_code": args.exit_code,
        "run_id": args.run_id,
        "timestamp": args.timestamp,
    }
    result.update({k: v for k, v in optional.items() if v is not None})
    if args.old_output is not None:
        if args.output_file is not None:
            raise UsageError("give --output-file only (--output is its old name)")
        warn("--output FILE is deprecated: use --output-file FILE")
        args.output_file = args.old_output
    if args.output_file is not None:
        if args.output_file == "-":
            result["output"] = read_tail(sys.stdin.buffer, args.output_limit)
        else:
            try:
                with open(args.output_file, "rb") as handle:
                    result["output"] = read_tail(handle, args.output_limit)
            except OSError as exc:
                raise UsageError(f"{args.output_file}: {exc.strerror or exc}") from None
    labels = _labels(args.label)
    if labels:
        result["labels"] = labels
    settings = _settings(args)
    with settings.client() as client:
        body = client.submit(result, budget=args.retry_timeout)
    if not args.quiet and sys.stdout.isatty():  # silent under cron, which mails any output
        jobs = body.get("jobs") if isinstance(body, dict) else None
        target = jobs[0] if jobs else args.job
        print(f"recorded {args.status} for {target}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from cronmetrics.client.ingest import Ingester, follow, ingest_once
    from cronmetrics.client.signals import handling
    from cronmetrics.client.tailing import default_state_path

    split_job_id(args.job)
    from pathlib import Path

    file = Path(args.file)
    if not file.exists() and not args.follow:
        raise UsageError(f"{file}: no such file")
    settings = _settings(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    with handling(signals, on_signal, enabled=args.follow), settings.client() as client:
        ingester = Ingester(
            file,
            args.job,
            client,
            state_path=Path(args.state) if args.state else default_state_path(file),
            batch=args.batch,
            output_limit=args.output_limit,
            warn=note,
            stop=stop,
            retry_budget=args.retry_timeout,
        )
        if args.follow:
            ingester.retry_forever = True
            follow(ingester, args.poll)
        else:
            ingest_once(ingester)
    stats = ingester.stats
    note(
        f"{file}: {stats.submitted} results submitted, {stats.rejected} lines skipped"
        f" (line {ingester.state.line}, byte {ingester.state.offset})"
    )
    if stats.expired:
        days = f"{stats.retention_days} days" if stats.retention_days else "retention.days"
        warn(
            f"{stats.expired} results are older than the server keeps history ({days}):"
            " they count now but are purged at its next retention pass"
        )
    return 1 if stats.rejected and not args.follow else 0


def main(argv: Sequence[str] | None = None, *, prog: str = "cronmetrics") -> int:
    """Run one command; the exit code. Never raises, never prints a traceback."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        first = args_list[0] if args_list else None
        parser = build_parser(prog, first if first in ("run", "result", "ingest") else None)
        args = parser.parse_args(args_list)
        if args.command == "run":
            return _run(args)
        if args.command == "result" and getattr(args, "result_command", None) == "submit":
            return _submit(args)
        if args.command == "ingest":
            return _ingest(args)
        parser.print_help(sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except ServerUnavailable as exc:
        note(f"error: {advice(exc)}")
        return exc.exit_code
    except CronmetricsError as exc:
        note(f"error: {advice(exc)}")
        for problem in getattr(exc, "problems", [])[1:]:
            note(f"error: {problem}")
        return exc.exit_code
    except KeyboardInterrupt:
        note("aborted")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # never a traceback for a user; say what broke, in one line
        note(f"error: internal error ({type(exc).__name__}: {exc}); please report it")
        return 1
