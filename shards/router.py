"""Hash slots to shards. The map lives in the control database and is read into memory at start-up."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shardpay.ids import SLOTS


class SlotMap:
    """slot -> shard index, for all ``SLOTS`` slots."""

    def __init__(self, shards: Sequence[int]) -> None:
        if len(shards) != SLOTS:
            raise ValueError(f"slot map has {len(shards)} slots, expected {SLOTS}")
        self._shards = tuple(shards)

    def shard_of(self, slot: int) -> int:
        return self._shards[slot]

    def slots_of(self, shard: int) -> list[int]:
        return [slot for slot, owner in enumerate(self._shards) if owner == shard]

    @property
    def shard_count(self) -> int:
        return max(self._shards) + 1

    @classmethod
    def even(cls, shard_count: int) -> SlotMap:
        return cls([slot % shard_count for slot in range(SLOTS)])

    @classmethod
    async def load(cls, control: asyncpg.Pool | asyncpg.Connection) -> SlotMap:
        rows = await control.fetch("SELECT slot, shard FROM slot_map ORDER BY slot")
        if len(rows) != SLOTS:
            raise RuntimeError(f"slot_map has {len(rows)} rows, expected {SLOTS}: run `shardpay migrate`")
        return cls([row["shard"] for row in rows])


async def store_even_map(control: asyncpg.Connection, shard_count: int) -> None:
    """Fill an empty slot map evenly; an existing map is kept (moving slots is a deliberate operation)."""
    await control.execute(
        "INSERT INTO slot_map (slot, shard) SELECT s, s % $1 FROM generate_series(0, $2 - 1) AS s "
        "ON CONFLICT (slot) DO NOTHING",
        shard_count,
        SLOTS,
    )
