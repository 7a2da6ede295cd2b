"""Idempotency-Key: the first answer under a key is stored with the work, in one transaction, and replayed.

``INSERT .. ON CONFLICT DO UPDATE`` on (endpoint, key) takes the row's lock, so a second call with the key
waits until the first commits (then replays its answer) or rolls back (then does the work itself): the work is
done once however many calls race, across processes too, because the lock is PostgreSQL's. Every call that gets
this far adds one to the key's ``calls``; calls answered by a fault (outage, error, reset) never got here and
did nothing, so they are not counted. A 4xx raised by the work rolls everything back (Stripe does not store an
answer for a request that failed validation), so nothing is stored and the key stays free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from pspsim.db import Conn
from pspsim.http import SimError

Work = Callable[[Conn], Awaitable[dict[str, Any]]]

_CLAIM = """
INSERT INTO idem_keys (endpoint, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (endpoint, key) DO UPDATE SET calls = idem_keys.calls + 1
RETURNING fingerprint, status, body
"""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    replayed: bool


def fingerprint(params: dict[str, Any]) -> bytes:
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).digest()


def reused(endpoint: str) -> SimError:
    return SimError(
        400, "idempotency_error", "idempotency_key_reused",
        f"Keys for idempotent requests can only be used with the same parameters they were first used with "
        f"(endpoint '{endpoint}').",
    )  # fmt: skip


async def once(pool: asyncpg.Pool, endpoint: str, key: str, params: dict[str, Any], work: Work) -> Answer:
    """Run ``work`` (in the same transaction as the key's claim) unless the key already has an answer."""
    wanted = fingerprint(params)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_CLAIM, endpoint, key, wanted)
        assert row is not None  # the upsert always returns its row
        if row["fingerprint"] != wanted:
            mismatch = True
        elif row["status"] is not None:
            return Answer(row["status"], row["body"], True)
        else:
            mismatch = False
            body = orjson.dumps(await work(conn))
            await conn.execute("UPDATE idem_keys SET status = 200, body = $3 WHERE endpoint = $1 AND key = $2",
                               endpoint, key, body)  # fmt: skip
    if mismatch:
        # Raised after the commit, so the call that carried the key is still counted.
        raise reused(endpoint)
    return Answer(200, body, False)
