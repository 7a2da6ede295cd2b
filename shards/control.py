"""The control database's merchants and API keys."""

from __future__ import annotations

import hashlib
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


def hash_key(api_key: str) -> bytes:
    # API keys carry 256 bits of randomness, so a plain digest is as strong as a slow hash here.
    return hashlib.sha256(api_key.encode()).digest()


async def create_merchant(
    control: asyncpg.Pool | asyncpg.Connection, name: str, webhook_url: str | None, rate: int, burst: int
) -> NewMerchant:
    merchant = Merchant(ids.new_id("mer", ids.slot_for(name, secrets.token_hex(8))), name, rate, burst, webhook_url)
    api_key = "sk_" + secrets.token_urlsafe(32)
    webhook_secret = "whsec_" + secrets.token_urlsafe(32)
    async with _connection(control) as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO merchants (id, name, webhook_url, webhook_secret, rate, burst) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            merchant.id, name, webhook_url, webhook_secret, rate, burst,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO api_keys (key_hash, merchant_id, key_prefix) VALUES ($1, $2, $3)",
            hash_key(api_key), merchant.id, api_key[:10],
        )  # fmt: skip
    return NewMerchant(merchant, api_key, webhook_secret)


async def merchant_for_key(control: asyncpg.Pool, api_key: str) -> Merchant | None:
    row = await control.fetchrow(
        "SELECT m.id, m.name, m.rate, m.burst, m.webhook_url "
        "FROM api_keys k JOIN merchants m ON m.id = k.merchant_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        hash_key(api_key),
    )
    return None if row is None else Merchant(row["id"], row["name"], row["rate"], row["burst"], row["webhook_url"])


class _connection:
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
