"""The Flask app, API routes, auth, rate limits, /metrics, gunicorn."""
