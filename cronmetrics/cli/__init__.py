"""Click commands."""
