"""Which reads may go to a shard's read replica (README, "Read replicas: the rule").

A replica is behind its primary by however much it has not replayed yet, so only reads whose caller can live
with an answer from a moment ago go there: a wallet's list of ledger entries (``GET /v1/wallets/{id}/entries``)
and the analytics (``shardpay analytics``, on the control database's replica). Everything a caller may read
right after writing, and expect to see its write in, stays on the primary: a wallet's balance, a transfer, a
payment, a payout, a refund, and every read a write makes. With no replica configured, everything is read
from the primary, as on one server.

Two things keep a replica's lag from turning into a wrong answer: a replica that cannot answer (down, failing
over) is skipped for the primary; and a replica that finds nothing is not believed, since the object may be
too new for it, so the primary is asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from shards.errors import TRANSIENT, on_shard
from shards.pools import Shards

T = TypeVar("T")


async def lag_tolerant(
    shards: Shards, shard: int, query: Callable[[asyncpg.Pool], Awaitable[T]], found: Callable[[T], bool] = bool
) -> T:
    """``query`` on the shard's replica when it has one and can answer with something ``found``; else on the
    primary (where "unreachable" is a 503, as for any read)."""
    replica = shards.replica(shard)
    if replica is not None:
        try:
            answer = await query(replica)
        except TRANSIENT:
            pass
        else:
            if found(answer):
                return answer
    return await on_shard(shard, query(shards.pool(shard)))
