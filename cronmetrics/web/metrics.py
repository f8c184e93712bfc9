"""The exporter's own metrics, kept in a per-app prometheus_client registry.

These are few and small, so prometheus_client renders them at the end of each scrape; the
per-job series (the large part) come from :mod:`cronmetrics.web.exposition`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from cronmetrics import __version__
from cronmetrics.jobs.model import JobDefinition

__all__ = ["SelfMetrics"]

OUTCOMES = (
    "accepted",
    "invalid",
    "unknown_job",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "too_large",
)


class _JobCounts(Collector):
    def __init__(self, counts: Callable[[], dict[str, Any]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        jobs = GaugeMetricFamily(
            "cronjobs", "Defined jobs per lifecycle status.", labels=["status"]
        )
        for status, n in sorted(counts["by_status"].items()):
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily(
            "cronjobs_failing", "Jobs whose cronjob_status is 0.", value=counts["failing"]
        )


class _WindowCounts(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        family = GaugeMetricFamily(
            "cronmetrics_maintenance_windows",
            "Runtime maintenance windows by state (active: in force now; pending: not started).",
            labels=["state"],
        )
        for state in ("active", "pending"):
            family.add_metric([state], counts.get(state, 0))
        yield family


class SelfMetrics:
    def __init__(
        self,
        counts: Callable[[], dict[str, Any]],
        windows: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_JobCounts(counts))
        if windows is not None:
            r.register(_WindowCounts(windows))
        self.submissions = Counter(
            "cronmetrics_submissions",
            "Results received, by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.submissions.labels(outcome)
        self.reload_ok = Gauge(
            "cronmetrics_config_last_reload_successful",
            "1 if the last reload of jobs.d found no invalid file.",
            registry=r,
        )
        self.reload_ts = Gauge(
            "cronmetrics_config_last_reload_success_timestamp_seconds",
            "When jobs.d was last reloaded without problems.",
            registry=r,
        )
        self.reload_duration = Gauge(
            "cronmetrics_config_last_reload_duration_seconds",
            "How long the last reload of jobs.d took.",
            registry=r,
        )
        self.reload_overruns = Counter(
            "cronmetrics_config_reload_overruns",
            "Reloads of jobs.d that took longer than watch.reload_budget.",
            registry=r,
        )
        self.invalid_files = Gauge(
            "cronmetrics_config_invalid_files",
            "Job files that failed validation in the last reload (their last good version stays).",
            registry=r,
        )
        self.config_file_ok = Gauge(
            "cronmetrics_config_file_last_reload_successful",
            "1 if the last reload of the config file (SIGHUP or a change on disk) was valid; "
            "0 while an invalid one is refused and the previous config stays in force.",
            registry=r,
        )
        self.config_file_ts = Gauge(
            "cronmetrics_config_file_last_reload_success_timestamp_seconds",
            "When the config file was last reloaded and applied (0 = not since the start).",
            registry=r,
        )
        self.config_file_restart = Gauge(
            "cronmetrics_config_file_restart_required",
            "1 if the config file changes a key that only a restart applies (bind, state_dir...).",
            registry=r,
        )
        self.snapshot_ts = Gauge(
            "cronmetrics_snapshot_last_success_timestamp_seconds",
            "When the state snapshot on disk was last known current: written, or nothing changed "
            "since the last good write (0 = never).",
            registry=r,
        )
        self.snapshot_ok = Gauge(
            "cronmetrics_snapshot_last_write_successful",
            "1 if the last snapshot write succeeded.",
            registry=r,
        )
        self.snapshot_ok.set(1)
        self.restore_fallback = Gauge(
            "cronmetrics_snapshot_restore_fallback",
            "1 if the state was restored from an older snapshot or started empty after an error.",
            registry=r,
        )
        self.store_up = Gauge(
            "cronmetrics_store_up",
            "1 while the store holding the job states answers (always 1 on the embedded "
            "engine; the Redis engine's connection on replicas).",
            registry=r,
        )
        self.store_up.set(1)
        self.definitions_hash = Gauge(
            "cronmetrics_definitions_hash_info",
            "A hash of the job definitions in force: replicas on different jobs.d differ.",
            ["hash"],
            registry=r,
        )
        build = Gauge("cronmetrics_build_info", "Build information.", ["version"], registry=r)
        build.labels(__version__).set(1)
        ProcessCollector(registry=r)

    def set_definitions(self, definitions: Mapping[str, JobDefinition]) -> str:
        """Export the hash of ``definitions`` (ids and their normalized content), so that
        replicas whose jobs.d differ show it; return the hash."""
        digest = hashlib.sha256()
        for job_id in sorted(definitions):
            digest.update(job_id.encode())
            digest.update(b"\0")
            digest.update(definitions[job_id].model_dump_json().encode())
            digest.update(b"\0")
        value = digest.hexdigest()[:16]
        self.definitions_hash.clear()
        self.definitions_hash.labels(value).set(1)
        return value

    def render(self) -> bytes:
        return generate_latest(self.registry)
