"""The exporter's own metrics, kept in a per-app prometheus_client registry.

These are few and small, so prometheus_client renders them at the end of each scrape; the
per-job series (the large part) come from :mod:`cronmetrics.web.exposition`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from cronmetrics import __version__

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


class SelfMetrics:
    def __init__(self, counts: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_JobCounts(counts))
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
        build = Gauge("cronmetrics_build_info", "Build information.", ["version"], registry=r)
        build.labels(__version__).set(1)
        ProcessCollector(registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
