"""Handlers: each takes a command and the shards, decides, and returns an outcome. No HTTP here."""
