"""Job definitions: model, cron math, YAML I/O, loading, writing, watching."""
