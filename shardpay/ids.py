"""Opaque object ids that carry their hash slot, so any id routes to its shard without a scan.

An id is ``<prefix>_<4 hex digits of slot><20 hex digits of randomness>``: ``wal_00a3f1c2...``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading

SLOTS = 4096
PREFIXES = frozenset({"mer", "wal", "tr", "trb", "pay", "po", "out", "re", "evt", "cs"})
_ID = re.compile(r"^([a-z]{2,3})_([0-9a-f]{4})([0-9a-f]{20})$")


def slot_for(*parts: str) -> int:
    """A stable slot for any text, used when a new object has no parent to follow."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SLOTS


# Randomness from the OS's CSPRNG, read 4 KiB at a time: a transfer takes several ids (the transfer, its events,
# a batch's items), and one getrandom() call per id was 5% of a gateway worker's CPU on a bulk load. A forked
# child starts with an empty buffer, so no two processes ever hand out the same bytes.
_POOL_SIZE = 4096
_pool = b""
_at = 0
_lock = threading.Lock()  # a thread (asyncio.to_thread, a driver's) must never get the bytes another got


def _reset_pool() -> None:
    global _pool, _at, _lock
    _pool, _at, _lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_reset_pool)


def random_hex(nbytes: int) -> str:
    """``nbytes`` of the OS's CSPRNG, as hex (what ``secrets.token_hex`` gives, with one system call per 4 KiB)."""
    global _pool, _at
    with _lock:
        if _at + nbytes > len(_pool):
            _pool, _at = os.urandom(max(_POOL_SIZE, nbytes)), 0
        start, _at = _at, _at + nbytes
        return _pool[start:_at].hex()


def new_id(prefix: str, slot: int) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot {slot} outside 0..{SLOTS - 1}")
    return f"{prefix}_{slot:04x}{random_hex(10)}"


def parse(object_id: str, prefix: str) -> int | None:
    """The slot of a well-formed id with this prefix, or None: callers answer 404 for None."""
    match = _ID.fullmatch(object_id)
    if match is None or match.group(1) != prefix:
        return None
    slot = int(match.group(2), 16)
    return slot if slot < SLOTS else None
