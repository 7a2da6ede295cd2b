"""The control database's merchants (their API keys: ``shards.keys``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from shardpay import ids


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str
    rate: int
    burst: int
    webhook_url: str | None


@dataclass(frozen=True)
class NewMerchant:
    merchant: Merchant
    api_key: str
    webhook_secret: str
    key_id: str


async def create_merchant(
    control: asyncpg.Pool | asyncpg.Connection, name: str, webhook_url: str | None, rate: int, burst: int
) -> NewMerchant:
    from shards import keys  # keys imports Merchant from here

    merchant = Merchant(ids.new_id("mer", ids.slot_for(name, secrets.token_hex(8))), name, rate, burst, webhook_url)
    webhook_secret = "whsec_" + secrets.token_urlsafe(32)
    async with connection(control) as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO merchants (id, name, webhook_url, webhook_secret, rate, burst) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            merchant.id, name, webhook_url, webhook_secret, rate, burst,
        )  # fmt: skip
        first = await keys.insert(conn, merchant.id, None)
    return NewMerchant(merchant, first.api_key, webhook_secret, first.id)


class connection:
    """Use a pool's connection or a given connection alike."""

    def __init__(self, source: asyncpg.Pool | asyncpg.Connection) -> None:
        self._source = source
        self._acquired: asyncpg.pool.PoolConnectionProxy | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self._source, asyncpg.Pool):
            self._acquired = await self._source.acquire()
            return self._acquired  # type: ignore[return-value]
        return self._source

    async def __aexit__(self, *exc: object) -> None:
        if self._acquired is not None and isinstance(self._source, asyncpg.Pool):
            await self._source.release(self._acquired)
