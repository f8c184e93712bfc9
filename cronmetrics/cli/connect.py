"""``--url/--token/--token-file/--insecure/--cacert`` for the click commands that talk to a
server (``job``, ``result list``, ``purge``); they resolve to the same
:class:`~cronmetrics.client.settings.ClientSettings` as the cron host's argparse commands."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from cronmetrics.client.failures import UsageError
from cronmetrics.client.settings import DEFAULT_URL, ClientSettings
from cronmetrics.client.settings import split_job_id as _split_job_id

__all__ = ["client_options", "split_job_id"]


def split_job_id(job_id: str) -> tuple[str, str | None]:
    """``name@host`` -> ``(name, host)``; a click usage error for a malformed id."""
    try:
        return _split_job_id(job_id)
    except UsageError as exc:
        raise click.BadParameter(exc.message.removeprefix("--job "), param_hint="'--job'") from None


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the server connection flags; the command receives ``settings: ClientSettings``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            kwargs["settings"] = ClientSettings.resolve(
                url=kwargs.pop("url"),
                token=kwargs.pop("token"),
                token_file=kwargs.pop("token_file"),
                insecure=kwargs.pop("insecure"),
                cacert=kwargs.pop("cacert"),
            )
        except UsageError as exc:
            flag, _, rest = exc.message.partition(" ")
            raise click.BadParameter(rest, param_hint=f"'{flag}'") from None
        return func(*args, **kwargs)

    options = [
        click.option(
            "--url",
            default=None,
            metavar="URL",
            help=f"Server base URL [env CRONMETRICS_URL; default {DEFAULT_URL}].",
        ),
        click.option(
            "--token", default=None, metavar="TOKEN", help="Bearer token [env CRONMETRICS_TOKEN]."
        ),
        click.option(
            "--token-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Read the token from this file (keeps it out of `ps`)"
            " [env CRONMETRICS_TOKEN_FILE].",
        ),
        click.option(
            "--insecure", is_flag=True, default=False, help="Do not verify the TLS certificate."
        ),
        click.option(
            "--cacert",
            type=click.Path(dir_okay=False),
            default=None,
            help="CA bundle to verify the server's certificate with [env CRONMETRICS_CACERT].",
        ),
    ]
    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def light_command(name: str, words: tuple[str, ...], help_text: str) -> click.Command:
    """A click stand-in for a cron host command: listed in ``--help``, run by argparse.

    The console script routes these before click loads (:mod:`cronmetrics.cli.entry`);
    this keeps ``cronmetrics --help`` complete and ``main([...])`` callers working.
    """

    @click.command(
        name,
        help=help_text,
        short_help=help_text,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.pass_context
    def command(ctx: click.Context) -> None:
        from cronmetrics.client.cli import main

        sys.exit(main([*words, *ctx.args]))

    return command
