"""A merchant's API keys in the control database: made, listed, revoked, and looked up by the gateway.

A key is shown once, when it is made; the database keeps its SHA-256 digest (the key carries 256 bits of
randomness, so a plain digest is as strong as a slow hash here), the first characters to recognise it by, and
an id (``key_...``) that names it in the CLI and keys its rate-limit bucket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from shards.control import Merchant

PREFIX = "sk_"
# What ``new_key`` makes: the prefix and 43 URL-safe base64 characters. Anything else is refused unread.
_SHAPE = re.compile(r"sk_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class ApiKey:
    """An authenticated caller: the key (its own rate-limit bucket) and the merchant it acts for."""

    id: str
    merchant: Merchant


@dataclass(frozen=True)
class NewKey:
    id: str
    api_key: str  # shown once


def digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def well_formed(api_key: str) -> bool:
    """Could this be a key of ours? (Cheap: a guess that fails this costs no database lookup.)"""
    return _SHAPE.fullmatch(api_key) is not None


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


async def insert(conn: asyncpg.Connection, merchant_id: str, name: str | None) -> NewKey:
    """A new key for ``merchant_id`` (in the caller's transaction, if any)."""
    made = NewKey("key_" + secrets.token_hex(12), new_key())
    await conn.execute(
        "INSERT INTO api_keys (id, key_hash, merchant_id, key_prefix, name) VALUES ($1, $2, $3, $4, $5)",
        made.id, digest(made.api_key), merchant_id, made.api_key[:10], name,
    )  # fmt: skip
    return made


_LOOKUP = (
    "SELECT k.id AS key_id, m.id, m.name, m.rate, m.burst, m.webhook_url "
    "FROM api_keys k JOIN merchants m ON m.id = k.merchant_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
)


async def lookup(control: asyncpg.Pool, key_digest: bytes) -> ApiKey | None:
    """The live key with this digest and its merchant, or None (unknown or revoked)."""
    row = await control.fetchrow(_LOOKUP, key_digest)
    if row is None:
        return None
    return ApiKey(row["key_id"], Merchant(row["id"], row["name"], row["rate"], row["burst"], row["webhook_url"]))


async def revoked_since(control: asyncpg.Pool, since: dt.datetime | None) -> tuple[dt.datetime, list[bytes]]:
    """The database's clock now, and the digests of keys revoked after ``since`` (None: nothing yet)."""
    row = await control.fetchrow(
        "SELECT now() AS now, ARRAY(SELECT key_hash FROM api_keys WHERE revoked_at > $1) AS digests",
        since or dt.datetime.max.replace(tzinfo=dt.UTC),
    )
    assert row is not None
    return row["now"], list(row["digests"])


def _listed(row: asyncpg.Record) -> dict[str, Any]:
    revoked: dt.datetime | None = row["revoked_at"]
    return {
        "id": row["id"], "object": "api_key", "merchant": row["merchant_id"], "name": row["name"],
        "prefix": row["key_prefix"], "created": int(row["created_at"].timestamp()),
        "revoked": int(revoked.timestamp()) if revoked else None,
    }  # fmt: skip


async def listed(conn: asyncpg.Connection, merchant_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, merchant_id, name, key_prefix, created_at, revoked_at FROM api_keys "
        "WHERE merchant_id = $1 ORDER BY created_at, id",
        merchant_id,
    )
    return [_listed(row) for row in rows]


async def revoke(conn: asyncpg.Connection, key_id: str) -> dict[str, Any] | None:
    """Revoke a key (a key revoked already keeps its first revocation time); None if there is no such key."""
    row = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
        "RETURNING id, merchant_id, name, key_prefix, created_at, revoked_at",
        key_id,
    )
    return None if row is None else _listed(row)
