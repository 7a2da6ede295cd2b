"""The audit's values: findings as they are reported, slot digests, and one shard's balances."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

CAP = 100  # violations listed per rule; every one is counted

Money = defaultdict[str, int]  # currency -> minor units


@dataclass
class Findings:
    """Violations, counted in full and listed up to CAP per rule."""

    counts: Counter[str] = field(default_factory=Counter)
    listed: list[dict[str, Any]] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    _shown: Counter[str] = field(default_factory=Counter)

    def add(self, rule: str, shard: int | None, detail: Any, count: int = 1) -> None:
        self._list({"rule": rule, "shard": shard, "detail": detail})
        self.counts[rule] += count

    def add_sample(self, rule: str, shard: int, count: int, sample: list[Any]) -> None:
        for detail in sample:
            self._list({"rule": rule, "shard": shard, "detail": detail})
        if count:
            self.counts[rule] += count

    def merge(self, other: Findings) -> None:
        for item in other.listed:
            self._list(item)
        self.counts += other.counts
        self.checked.update(other.checked)

    def _list(self, item: dict[str, Any]) -> None:
        if self._shown[item["rule"]] < CAP:
            self._shown[item["rule"]] += 1
            self.listed.append(item)


@dataclass(frozen=True)
class Digest:
    """Count, amount and hash sum of a set of transfer halves: equal digests, equal sets (barring collisions)."""

    n: int = 0
    amount: int = 0
    hash: int = 0

    def __add__(self, other: Digest) -> Digest:
        return Digest(self.n + other.n, self.amount + other.amount, self.hash + other.hash)

    def __sub__(self, other: Digest) -> Digest:
        return Digest(self.n - other.n, self.amount - other.amount, self.hash - other.hash)


SlotDigests = defaultdict[str, defaultdict[str, Digest]]


def slot_digests() -> SlotDigests:
    return defaultdict(lambda: defaultdict(Digest))


@dataclass
class ShardView:
    """One shard's balances, read from one snapshot: (kind, currency) -> sum of entries, wallets by available."""

    index: int
    entries: dict[tuple[str, str], int]
    wallets: Money
