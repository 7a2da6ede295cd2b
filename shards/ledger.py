"""The money-moving steps: every change to balances goes through one of these calls, each one round trip.

The steps of transfers (an idempotency key's claim on its home shard, leg 1 or a same-shard transfer, leg 2,
leg 3, and the destination check of a cross-shard transfer) are all one SQL function, ``sp_tick``: a
group-committed batch per shard may carry any mix of them (``shards.tick``), and a single step is a tick of
one. Keep callers going through this module only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Applied:
    """What a money transaction decided: ``outcome`` plus the stored response (for stored outcomes)."""

    outcome: str
    status: int | None
    body: str | None


@dataclass(frozen=True)
class OpenTransfer:
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    transfer_id: str
    source: str
    destination: str
    amount: int
    currency: str
    description: str | None
    request_id: str
    created: int
    cross_shard: bool
    ok_body: str
    fail_body: str
    event_id: str
    event_body: str


@dataclass(frozen=True)
class CreateWallet:
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    wallet_id: str
    currency: str
    reference: str | None
    metadata: str | None
    created: int
    body: str
    event_id: str
    event_body: str


async def create_wallet(pool: asyncpg.Pool, w: CreateWallet) -> Applied:
    row = await pool.fetchrow(
        "SELECT * FROM sp_create_wallet($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, 'wallet.created', $11)",
        w.merchant_id, w.idempotency_key, w.fingerprint, w.wallet_id, w.currency, w.reference, w.metadata,
        w.created, w.body, w.event_id, w.event_body,
    )  # fmt: skip
    assert row is not None
    return Applied(row["outcome"], row["status"], row["body"])


async def replay(pool: asyncpg.Pool, merchant_id: str, key: str, fingerprint: str) -> Applied:
    """The stored response for a key (after a concurrent duplicate won the race to store it): outcome 'replay',
    'key_reused', 'claimed' (the key's claim, whose response lives elsewhere) or 'missing'."""
    row = await pool.fetchrow("SELECT * FROM sp_idempotent_replay($1, $2, $3)", merchant_id, key, fingerprint)
    assert row is not None
    return Applied(row["outcome"] or "missing", row["status"], row["body"])


@dataclass(frozen=True)
class CreditWallet:
    """An operator's adjustment, idempotent under ``scope`` and ``idempotency_key``."""

    scope: str
    idempotency_key: str
    fingerprint: str
    wallet_id: str
    amount: int
    ref: str
    memo: str
    body: str
    event_id: str
    event_body: str


async def credit_wallet(pool: asyncpg.Pool, c: CreditWallet) -> Applied:
    """Funding -> wallet: 'applied' or 'replay' with the stored response (the wallet's new balance in it),
    'key_reused', 'claimed', or 'wallet_missing'."""
    row = await pool.fetchrow(
        "SELECT * FROM sp_credit_wallet($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        c.scope, c.idempotency_key, c.fingerprint, c.wallet_id, c.amount, c.ref, c.memo, c.body, c.event_id,
        c.event_body,
    )  # fmt: skip
    assert row is not None
    return Applied(row["outcome"], row["status"], row["body"])


@dataclass(frozen=True)
class Claim:
    """Take an idempotency key on its home shard before a write whose effect lives on another shard."""

    merchant_id: str
    idempotency_key: str
    fingerprint: str


@dataclass(frozen=True)
class Lookup:
    """Read a wallet's owner and currency (a cross-shard transfer checks its destination before leg 1)."""

    wallet_id: str


@dataclass(frozen=True)
class Found:
    """A lookup's answer: both None when there is no such wallet."""

    merchant_id: str | None
    currency: str | None


@dataclass(frozen=True)
class Inbound:
    """Leg 2 on the destination shard."""

    transfer_id: str
    merchant_id: str
    destination: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Finish:
    """Leg 3 on the source shard: ``inbound`` is what leg 2 answered ('applied' settles, anything else refunds)."""

    transfer_id: str
    inbound: str
    body: str
    event_id: str
    event_body: str


Step = Claim | Lookup | Finish | Inbound | OpenTransfer
Done = Found | str | Applied
# sp_tick's parameter groups, in its order, with the kind letter its rows answer with.
_KINDS: tuple[tuple[type[Any], str], ...] = (
    (Claim, "k"), (Lookup, "l"), (Finish, "f"), (Inbound, "c"), (OpenTransfer, "o"),
)  # fmt: skip
_COLUMNS = {cls: (len(fields(cls)), attrgetter(*(f.name for f in fields(cls)))) for cls, _ in _KINDS}
_CLASS = {letter: cls for cls, letter in _KINDS}
_TICK = "SELECT * FROM sp_tick({})".format(", ".join(f"${i + 1}" for i in range(sum(n for n, _ in _COLUMNS.values()))))


def _arguments(groups: dict[type[Any], list[Any]]) -> list[Sequence[Any]]:
    """One array per field of each kind, in sp_tick's order (attrgetter and zip keep this loop out of Python)."""
    args: list[Sequence[Any]] = []
    for cls, _ in _KINDS:
        width, row_of = _COLUMNS[cls]
        members = groups[cls]
        if width == 1:
            args.append([row_of(m) for m in members])
        else:
            args.extend(zip(*map(row_of, members), strict=True) if members else [()] * width)
    return args


def _done(cls: type[Any], row: asyncpg.Record) -> Done:
    if cls is Lookup:
        return Found(row["r_outcome"], row["r_body"])
    if cls is OpenTransfer:
        return Applied(row["r_outcome"], row["r_status"], row["r_body"])
    result: str = row["r_outcome"]
    return result


async def tick(pool: asyncpg.Pool, steps: Sequence[Step]) -> list[Done]:
    """Apply every step in one transaction on one shard; each gets its own answer, in order."""
    groups: dict[type[Any], list[Any]] = {cls: [] for cls, _ in _KINDS}
    places: dict[type[Any], list[int]] = {cls: [] for cls, _ in _KINDS}
    for place, step in enumerate(steps):
        groups[type(step)].append(step)
        places[type(step)].append(place)
    answers: list[Done | None] = [None] * len(steps)
    for row in await pool.fetch(_TICK, *_arguments(groups)):
        cls = _CLASS[row["r_kind"]]
        answers[places[cls][row["r_idx"]]] = _done(cls, row)
    missing = [steps[i] for i, answer in enumerate(answers) if answer is None]
    assert not missing, f"sp_tick left steps unanswered: {missing}"
    return answers  # type: ignore[return-value]  # every slot was filled (asserted)


async def open_transfers(pool: asyncpg.Pool, batch: Sequence[OpenTransfer]) -> list[Applied]:
    """Open every transfer of ``batch`` in one transaction; each gets its own outcome."""
    results = [r for r in await tick(pool, batch) if isinstance(r, Applied)]
    assert len(results) == len(batch)
    return results


async def open_transfer(pool: asyncpg.Pool, t: OpenTransfer) -> Applied:
    return (await open_transfers(pool, [t]))[0]


def _results(done: Sequence[Done]) -> list[str]:
    results = [r for r in done if isinstance(r, str)]
    assert len(results) == len(done)
    return results


async def credit_inbounds(pool: asyncpg.Pool, batch: Sequence[Inbound]) -> list[str]:
    """Leg 2 for many transfers on their destination shard: 'applied' or 'aborted', at most one credit each."""
    return _results(await tick(pool, batch))


async def credit_inbound(pool: asyncpg.Pool, leg: Inbound) -> str:
    return (await credit_inbounds(pool, [leg]))[0]


async def finish_transfers(pool: asyncpg.Pool, batch: Sequence[Finish]) -> list[str]:
    """Leg 3 for many transfers on their source shard: settle or compensate; each transfer's final status."""
    return _results(await tick(pool, batch))


async def fence_inbound(pool: asyncpg.Pool, leg: Inbound) -> str:
    """Recovery's fence on the destination shard: returns 'applied' (too late to abort) or 'aborted'."""
    result: str = await pool.fetchval(
        "SELECT sp_fence_inbound($1, $2, $3, $4, $5)",
        leg.transfer_id, leg.merchant_id, leg.destination, leg.amount, leg.currency,
    )  # fmt: skip
    return result
