"""cronmetrics: cron-job monitoring exporter for Prometheus."""

#: The one place the version is written (pyproject.toml reads it from here): a constant,
#: because ``importlib.metadata`` costs a cron run ~20 ms and the zipapp has no metadata.
__version__ = "0.2.0"

__all__ = ["__version__"]
