"""The thin HTTP edge: request ids, logs, metrics, auth, rate limits and idempotency around the handlers."""
