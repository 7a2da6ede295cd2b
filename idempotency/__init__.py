"""Idempotency: the Redis lock and response cache (fast path) and the request fingerprint.

The guarantee lives in PostgreSQL: each shard's ``idempotency_keys`` row is written in the same transaction
as the money movement, so a retry never moves money twice even if Redis has forgotten every key; and every key
has a home shard where its record, or a claim on it, is found from the merchant and the key alone
(``shardpay.services.idempotent``), so the same key with other parameters is refused wherever its money is.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

LUA = (importlib.resources.files("idempotency") / "lock.lua").read_text()
MAX_KEY_LENGTH = 255


class State(Enum):
    ACQUIRED = "acquired"
    LOCKED = "locked"
    CACHED = "cached"
    # The call failed (a timeout, an error reply): it may or may not have taken the lock. PostgreSQL alone decides
    # this request, and the lock is given back afterwards in case it was taken.
    UNKNOWN = "unknown"
    # The request's own call ran after the request gave up on it (a tombstone says so): nobody is waiting.
    GONE = "gone"


@dataclass(frozen=True)
class Stored:
    fingerprint: str
    status: int
    body: bytes

    def encode(self) -> bytes:
        return b"R:" + self.fingerprint.encode() + b"\n" + str(self.status).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, value: bytes) -> Stored:
        fingerprint, status, body = value[2:].split(b"\n", 2)
        return cls(fingerprint.decode(), int(status), body)


@dataclass(frozen=True)
class Begin:
    state: State
    token: str
    stored: Stored | None = None

    @classmethod
    def from_reply(cls, reply: list[Any], token: str) -> Begin:
        state = State(reply[0].decode() if isinstance(reply[0], bytes) else reply[0])
        return cls(state, token, Stored.decode(reply[1]) if state is State.CACHED else None)


def new_token() -> str:
    return secrets.token_hex(16)


def redis_key(merchant_id: str, key: str) -> str:
    return f"idem:{merchant_id}:{key}"


def tombstone(token: str) -> str:
    """Where a request that gave up on Redis leaves word, so that its late call takes no lock."""
    return f"idem-gone:{token}"


def valid_key(key: str | None) -> bool:
    """1..255 printable ASCII characters."""
    return key is not None and 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def fingerprint(method: str, path: str, params: Any) -> str:
    """Same parameters, same fingerprint, whatever the key order or whitespace of the JSON sent."""
    canonical = orjson.dumps([method, path, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()
