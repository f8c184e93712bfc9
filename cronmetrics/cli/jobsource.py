"""Where the job commands find jobs: the API (online) or a jobs directory (offline).

``cronmetrics job ...`` takes one set of flags for both; :func:`job_source_options` picks
the side from them (``--url`` or ``--jobs-dir``, never both). Offline writes go through
:class:`cronmetrics.jobs.writer.JobWriter`, the same validating, atomic, comment-keeping writer
the API uses, so both sides produce identical files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import click
from click.core import ParameterSource

from cronmetrics.cli.connect import client_options
from cronmetrics.client.http import Client
from cronmetrics.client.settings import ClientSettings
from cronmetrics.errors import NotFound

__all__ = ["LIFECYCLES", "JobSource", "OfflineJobs", "OnlineJobs", "job_source_options"]

LIFECYCLES = ("active", "maintenance", "paused", "retired")


class JobSource(Protocol):
    """What the job commands need, whichever side of the API the jobs are on."""

    online: bool

    def list(
        self, status: str | None, host: str | None, labels: dict[str, str]
    ) -> list[dict[str, Any]]: ...
    def get(self, job_id: str) -> dict[str, Any]: ...
    def create(self, doc: dict[str, Any]) -> dict[str, Any]: ...
    def patch(self, job_id: str, changes: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, job_id: str) -> dict[str, Any]: ...
    def stats(self, job_id: str) -> Any: ...


class OnlineJobs:
    """The API: state included, writes land in the server's jobs.d."""

    online = True

    def __init__(self, client: Client) -> None:
        self.client = client

    def list(
        self, status: str | None, host: str | None, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        return self.client.list_jobs(status=status, host=host, labels=list(labels.items()))

    def get(self, job_id: str) -> dict[str, Any]:
        return self.client.get_job(job_id)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        return _as_job(self.client.create_job(doc), doc)

    def patch(self, job_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return _as_job(self.client.patch_job(job_id, changes), {"id": job_id})

    def delete(self, job_id: str) -> dict[str, Any]:
        body = self.client.delete_job(job_id)
        return body if isinstance(body, dict) else {"id": job_id, "deleted": True}

    def stats(self, job_id: str) -> Any:
        return self.client.job_stats(job_id)


def _as_job(body: Any, fallback: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(body, dict) and isinstance(body.get("job"), dict):
        return dict(body["job"])
    return dict(body) if isinstance(body, dict) else dict(fallback)


class OfflineJobs:
    """A jobs directory on disk: definitions only (state lives in the server)."""

    online = False

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise click.BadParameter(f"{root}: no such directory", param_hint="'--jobs-dir'")
        self.root = root

    def _load(self) -> dict[str, Any]:
        from cronmetrics.jobs.repository import load_directory

        result = load_directory(self.root)
        if result.invalid:
            click.echo(
                f"warning: {len(result.invalid)} invalid job files in {self.root} are skipped"
                " (run `cronmetrics validate` to see why)",
                err=True,
            )
        return dict(result.jobs)

    @staticmethod
    def _job(jf: Any) -> dict[str, Any]:
        return {
            "id": jf.definition.id,
            **jf.definition.model_dump(mode="json"),
            "file": jf.display,
            "state": None,
        }

    def list(
        self, status: str | None, host: str | None, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        if status is not None and status not in LIFECYCLES:
            raise click.UsageError(
                f"--status {status} needs the server (offline, jobs have no state);"
                f" use one of {', '.join(LIFECYCLES)}"
            )
        jobs = []
        for _, jf in sorted(self._load().items()):
            d = jf.definition
            if status is not None and d.status != status:
                continue
            if host is not None and (d.host or "") != host:
                continue
            if any(d.labels.get(k) != v for k, v in labels.items()):
                continue
            jobs.append(self._job(jf))
        return jobs

    def get(self, job_id: str) -> dict[str, Any]:
        jf = self._load().get(job_id)
        if jf is None:
            raise NotFound(f"no job {job_id!r} in {self.root}")
        return self._job(jf)

    def _writer(self) -> Any:
        from cronmetrics.jobs.writer import JobWriter

        return JobWriter(self.root)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self._job(self._writer().create(doc))

    def patch(self, job_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._job(self._writer().patch(job_id, changes))

    def delete(self, job_id: str) -> dict[str, Any]:
        self._writer().delete(job_id)
        return {"id": job_id, "deleted": True}

    def stats(self, job_id: str) -> Any:
        raise click.UsageError("job stats needs the server: use --url, not --jobs-dir")


def job_source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--jobs-dir`` plus the client flags; the command receives ``source``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings: ClientSettings = kwargs.pop("settings")
        jobs_dir: Path | None = kwargs.pop("jobs_dir")
        ctx = click.get_current_context()
        dir_source = ctx.get_parameter_source("jobs_dir")
        url_source = ctx.get_parameter_source("url")
        dir_flag = dir_source == ParameterSource.COMMANDLINE
        url_flag = url_source == ParameterSource.COMMANDLINE
        if dir_flag and url_flag:
            raise click.UsageError("use either --url (online) or --jobs-dir (offline), not both")
        offline = jobs_dir is not None and (dir_flag or not settings.explicit_url)
        source: JobSource
        if offline:
            assert jobs_dir is not None
            source = OfflineJobs(jobs_dir)
            kwargs["source"] = source
            return func(*args, **kwargs)
        with settings.client() as client:
            kwargs["source"] = OnlineJobs(client)
            return func(*args, **kwargs)

    decorated = click.option(
        "--jobs-dir",
        envvar="CRONMETRICS_JOBS_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Work offline on this jobs directory (to prepare a PR) instead of the API.",
    )(wrapper)
    return client_options(decorated)
