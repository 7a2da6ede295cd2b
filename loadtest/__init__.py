"""Benchmarks: ``python -m loadtest.bench`` (``make bench``) drives the whole stack over HTTP with wrk."""
