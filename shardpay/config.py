"""Settings, read once from ``SHARDPAY_*`` environment variables into a typed, frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Any

PREFIX = "SHARDPAY_"


class ConfigError(ValueError):
    """A setting is present but unusable; the message names the variable and the value."""


def _raw(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(PREFIX + name, default)


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """``SHARDPAY_<name>`` as an int >= ``minimum`` (also read by the load tools in ``loadtest/``)."""
    raw = _raw(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Not a valid int.") from None
    if value < minimum:
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Must be >= {minimum}.")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """``SHARDPAY_<name>`` as a float."""
    raw = _raw(env, name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Not a valid number.") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _raw(env, name, "true" if default else "false").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Not a valid bool.")


def _floats(env: Mapping[str, str], name: str, default: str) -> tuple[float, ...]:
    raw = _raw(env, name, default)
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Not a list of numbers.") from None
    if not values:
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Needs at least one number.")
    return values


def _shard_dsns(env: Mapping[str, str], pg: str, db_prefix: str) -> tuple[str, ...]:
    explicit = _raw(env, "SHARD_DSNS", "")
    if explicit.strip():
        return tuple(part.strip() for part in explicit.split(",") if part.strip())
    count = env_int(env, "SHARDS", 4, minimum=1)
    return tuple(f"{pg}/{db_prefix}_shard_{n}" for n in range(count))


# A day and a half of retries: 10 s, 1 min, 5 min, 30 min, 2 h, 6 h, 12 h, 24 h.
DEFAULT_WEBHOOK_BACKOFF = "10,60,300,1800,7200,21600,43200,86400"
# The PSP simulator's webhook retries, as a real PSP's: three days in all (258,160 s, before jitter), then given up.
DEFAULT_PSP_WEBHOOK_BACKOFF = "10,30,120,600,1800,3600,7200,14400,28800,43200,86400,72000"
# Development-only shared secrets between shardpay and the PSP simulator (what `make run` uses). A real PSP's
# key and webhook secret come from its dashboard and are set in the environment, never left at these.
DEV_PSP_SECRET_KEY = "sk_sim_development_only"
DEV_PSP_WEBHOOK_SECRET = "whsec_sim_development_only"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with local defaults that work on a developer machine."""

    host: str = "127.0.0.1"
    port: int = 8000
    # One: a gateway process keeps its own tick per shard, so each more process halves every tick and pays a
    # tick's fixed cost again (README, performance round 2); scale out with instances behind HAProxy.
    workers: int = 1
    pg_server: str = "postgresql://postgres@127.0.0.1:5432"
    db_prefix: str = "shardpay"
    control_dsn: str = "postgresql://postgres@127.0.0.1:5432/shardpay_control"
    shard_dsns: tuple[str, ...] = ()
    pool_min: int = 2
    pool_max: int = 8
    db_timeout: float = 5.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout: float = 0.25
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    ratelimit_fail_open: bool = True
    default_rate: int = 1000
    default_burst: int = 2000
    idempotency_lock_ms: int = 30_000
    idempotency_cache_s: int = 600
    request_timeout: float = 10.0
    body_timeout: float = 5.0
    header_timeout: float = 10.0
    max_connections: int = 4096
    max_requests: int = 2048
    saga_inline_timeout: float = 1.0
    saga_recovery_after: float = 5.0
    saga_abort_after: float = 300.0
    webhook_backoff: tuple[float, ...] = field(default_factory=lambda: _floats({}, "X", DEFAULT_WEBHOOK_BACKOFF))
    webhook_timeout: float = 5.0
    webhook_concurrency: int = 4
    webhook_allow_private: bool = False
    relay_linger: float = 0.2
    tick_linger: float = 0.01
    log_requests: bool = True
    # The PSP: where shardpay reaches it, which adapter speaks to it, and the shared secrets.
    psp_adapter: str = "simulator"
    psp_url: str = "http://127.0.0.1:8100"
    psp_timeout: float = 5.0
    psp_secret_key: str = DEV_PSP_SECRET_KEY
    psp_webhook_secret: str = DEV_PSP_WEBHOOK_SECRET
    # The PSP simulator's own side: where it listens, its database, and where it sends its webhooks.
    psp_host: str = "127.0.0.1"
    psp_port: int = 8100
    psp_public_url: str = "http://127.0.0.1:8100"
    psp_dsn: str = "postgresql://postgres@127.0.0.1:5432/shardpay_psp"
    psp_webhook_url: str = "http://127.0.0.1:8000/v1/webhooks/psp"
    psp_webhook_backoff: tuple[float, ...] = field(
        default_factory=lambda: _floats({}, "X", DEFAULT_PSP_WEBHOOK_BACKOFF)
    )
    psp_webhook_timeout: float = 5.0
    executor_poll: float = 1.0
    otlp_endpoint: str | None = None
    psp_lease: float = 30.0
    psp_sweep_after: float = 60.0
    psp_sweep_grace: float = 5.0
    psp_max_attempts: int = 30
    psp_retry_base: float = 0.5
    psp_retry_cap: float = 60.0
    psp_breaker_cooldown: float = 5.0
    # The daily reconciliation that `shardpay run` schedules: on or off, at what UTC time, how soon a run that
    # could not happen (the PSP or a database down) is tried again.
    reconcile_daily: bool = True
    reconcile_at: time = time(1, 0)
    reconcile_retry: float = 300.0
    # High availability (README, "High availability"): read replicas, Redis through Sentinel, draining, queues.
    shard_replica_dsns: tuple[str | None, ...] = ()
    control_replica_dsn: str | None = None
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_master: str = "shardpay"
    drain_seconds: float = 0.0
    amqp_queue_type: str = "auto"

    @property
    def shard_count(self) -> int:
        return len(self.shard_dsns)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        pg = _raw(e, "PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
        db_prefix = _raw(e, "DB_PREFIX", "shardpay")
        shard_dsns = _shard_dsns(e, pg, db_prefix)
        shard_count = len(shard_dsns)
        workers = env_int(e, "WORKERS", 1, minimum=1)
        return cls(
            host=_raw(e, "HOST", "127.0.0.1"),
            port=env_int(e, "PORT", 8000, minimum=1),
            workers=workers,
            pg_server=pg,
            db_prefix=db_prefix,
            control_dsn=_raw(e, "CONTROL_DSN", f"{pg}/{db_prefix}_control"),
            shard_dsns=shard_dsns,
            pool_min=env_int(e, "POOL_MIN", 2, minimum=1),
            pool_max=env_int(e, "POOL_MAX", 8, minimum=1),
            db_timeout=env_float(e, "DB_TIMEOUT", 5.0),
            redis_url=_raw(e, "REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_timeout=env_float(e, "REDIS_TIMEOUT", 0.25),
            amqp_url=_raw(e, "AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            ratelimit_fail_open=_bool(e, "RATELIMIT_FAIL_OPEN", True),
            default_rate=env_int(e, "DEFAULT_RATE", 1000, minimum=1),
            default_burst=env_int(e, "DEFAULT_BURST", 2000, minimum=1),
            idempotency_lock_ms=env_int(e, "IDEMPOTENCY_LOCK_MS", 30_000, minimum=100),
            idempotency_cache_s=env_int(e, "IDEMPOTENCY_CACHE_S", 600, minimum=1),
            request_timeout=env_float(e, "REQUEST_TIMEOUT", 10.0),
            body_timeout=env_float(e, "BODY_TIMEOUT", 5.0),
            header_timeout=env_float(e, "HEADER_TIMEOUT", 10.0),
            max_connections=env_int(e, "MAX_CONNECTIONS", 4096, minimum=1),
            max_requests=env_int(e, "MAX_REQUESTS", 2048, minimum=1),
            saga_inline_timeout=env_float(e, "SAGA_INLINE_TIMEOUT", 1.0),
            saga_recovery_after=env_float(e, "SAGA_RECOVERY_AFTER", 5.0),
            saga_abort_after=env_float(e, "SAGA_ABORT_AFTER", 300.0),
            webhook_backoff=_floats(e, "WEBHOOK_BACKOFF", DEFAULT_WEBHOOK_BACKOFF),
            webhook_timeout=env_float(e, "WEBHOOK_TIMEOUT", 5.0),
            webhook_concurrency=env_int(e, "WEBHOOK_CONCURRENCY", 4, minimum=1),
            webhook_allow_private=_bool(e, "WEBHOOK_ALLOW_PRIVATE", False),
            relay_linger=env_float(e, "RELAY_LINGER", 0.2),
            tick_linger=env_float(e, "TICK_LINGER", 0.01),
            log_requests=_bool(e, "LOG_REQUESTS", True),
            **_psp(e, pg, db_prefix),
            executor_poll=env_float(e, "EXECUTOR_POLL", 1.0),
            otlp_endpoint=_raw(e, "OTLP_ENDPOINT", "").strip() or None,
            psp_lease=env_float(e, "PSP_LEASE", 30.0),
            psp_sweep_after=env_float(e, "PSP_SWEEP_AFTER", 60.0),
            psp_sweep_grace=env_float(e, "PSP_SWEEP_GRACE", 5.0),
            psp_max_attempts=env_int(e, "PSP_MAX_ATTEMPTS", 30, minimum=1),
            psp_retry_base=env_float(e, "PSP_RETRY_BASE", 0.5),
            psp_retry_cap=env_float(e, "PSP_RETRY_CAP", 60.0),
            psp_breaker_cooldown=env_float(e, "PSP_BREAKER_COOLDOWN", 5.0),
            reconcile_daily=_bool(e, "RECONCILE_DAILY", True),
            reconcile_at=_time_of_day(e, "RECONCILE_AT", "01:00"),
            reconcile_retry=_positive(e, "RECONCILE_RETRY", 300.0),
            **_ha(e, shard_count, workers),
        )


def _psp(e: Mapping[str, str], pg: str, db_prefix: str) -> dict[str, Any]:
    """The ``SHARDPAY_PSP_*`` settings, shardpay's side and the simulator's."""
    host = _raw(e, "PSP_HOST", "127.0.0.1")
    port = env_int(e, "PSP_PORT", 8100, minimum=1)
    return {
        "psp_adapter": _raw(e, "PSP_ADAPTER", "simulator"),
        "psp_url": _url(e, "PSP_URL", "http://127.0.0.1:8100"),
        "psp_timeout": _positive(e, "PSP_TIMEOUT", 5.0),
        "psp_secret_key": _secret(e, "PSP_SECRET_KEY", DEV_PSP_SECRET_KEY),
        "psp_webhook_secret": _secret(e, "PSP_WEBHOOK_SECRET", DEV_PSP_WEBHOOK_SECRET),
        "psp_host": host,
        "psp_port": port,
        "psp_public_url": _url(e, "PSP_PUBLIC_URL", f"http://{host}:{port}"),
        "psp_dsn": _raw(e, "PSP_DSN", f"{pg}/{db_prefix}_psp"),
        "psp_webhook_url": _url(e, "PSP_WEBHOOK_URL", "http://127.0.0.1:8000/v1/webhooks/psp"),
        "psp_webhook_backoff": _floats(e, "PSP_WEBHOOK_BACKOFF", DEFAULT_PSP_WEBHOOK_BACKOFF),
        "psp_webhook_timeout": _positive(e, "PSP_WEBHOOK_TIMEOUT", 5.0),
    }


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _raw(env, name, default).rstrip("/")
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Not an http(s) URL.")
    return raw


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(env, name, default)
    if value <= 0:
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{value}'. Must be > 0.")
    return value


def _time_of_day(env: Mapping[str, str], name: str, default: str) -> time:
    raw = _raw(env, name, default)
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", raw.strip())
    if match is None:
        raise ConfigError(f"Config '{PREFIX}{name}' has value '{raw}'. Not a UTC time of day HH:MM.")
    return time(int(match.group(1)), int(match.group(2)))


def _secret(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _raw(env, name, default)
    if not raw:
        # The value itself is never echoed: it is a secret.
        raise ConfigError(f"Config '{PREFIX}{name}' is empty. It must be set to a non-empty secret.")
    return raw


QUEUE_TYPES = ("auto", "quorum", "classic")


def _ha(e: Mapping[str, str], shard_count: int, workers: int) -> dict[str, Any]:
    """The high-availability settings: each optional, and without them everything is as on one server."""
    drain = env_float(e, "DRAIN_SECONDS", 0.0)
    if drain > 0 and workers > 1:
        # uvicorn's worker processes take SIGTERM from their parent: one instance per process drains cleanly.
        raise ConfigError(
            f"Config '{PREFIX}DRAIN_SECONDS' has value '{drain:g}'. Needs {PREFIX}WORKERS=1 (has {workers})."
        )
    queue_type = _raw(e, "AMQP_QUEUE_TYPE", "auto")
    if queue_type not in QUEUE_TYPES:
        raise ConfigError(
            f"Config '{PREFIX}AMQP_QUEUE_TYPE' has value '{queue_type}'. Not one of {', '.join(QUEUE_TYPES)}."
        )
    return {
        "shard_replica_dsns": _replica_dsns(e, shard_count),
        "control_replica_dsn": _raw(e, "CONTROL_REPLICA_DSN", "").strip() or None,
        "redis_sentinels": _sentinels(e),
        "redis_master": _raw(e, "REDIS_MASTER", "shardpay"),
        "drain_seconds": drain,
        "amqp_queue_type": queue_type,
    }


def _replica_dsns(e: Mapping[str, str], shard_count: int) -> tuple[str | None, ...]:
    """Shard n's read replica is the n-th entry (empty: none), or none at all when the setting is absent."""
    raw = _raw(e, "SHARD_REPLICA_DSNS", "")
    if not raw.strip():
        return ()
    parts = [part.strip() or None for part in raw.split(",")]
    if len(parts) != shard_count:
        raise ConfigError(
            f"Config '{PREFIX}SHARD_REPLICA_DSNS' has value '{raw}'. Needs {shard_count} entries, one per shard "
            "(an empty entry for a shard without a replica)."
        )
    return tuple(parts)


def _sentinels(e: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    raw = _raw(e, "REDIS_SENTINELS", "")
    found: list[tuple[str, int]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"Config '{PREFIX}REDIS_SENTINELS' has value '{raw}'. '{part}' is not host:port.")
        found.append((host, int(port)))
    return tuple(found)
