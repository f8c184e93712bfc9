"""The cron host side: HTTP client, `run`, `ingest`, log tailing, signals."""
