"""Saga recovery is isolated per transfer and per shard: a transfer whose recovery fails unexpectedly (a malformed
row), or a shard whose pass does (a broken table), is logged and counted, and every other stuck transfer, on the
same shard and on the others, is still settled, by one pass and by the long-running ``shardpay recover``.

Poisoned rows and broken tables need databases of their own: a scratch set (``<prefix>_recovery_*``, three
shards) that this module creates and drops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson
import pytest
import pytest_asyncio

from shardpay.config import Settings
from shardpay.services.recovery import recover_once
from shards.migrate import migrate
from shards.pools import Shards, open_shards
from tests.conftest import TEST_PREFIX, audit_clean, drop_databases, stack_env, stop_process
from tests.integration.test_audit import leg_one, shard_of, wallet

SCRATCH = {"SHARDPAY_DB_PREFIX": f"{TEST_PREFIX}_recovery", "SHARDPAY_SHARDS": "3"}
MALFORMED = "wal_not-a-wallet-id"  # no slot to route it by: settling it fails an assertion in the saga
BROKEN = "ALTER TABLE transfers RENAME COLUMN saga_state TO saga_state_renamed"  # every pass on it fails
REPAIRED = "ALTER TABLE transfers RENAME COLUMN saga_state_renamed TO saga_state"


@dataclass(frozen=True)
class Scratch:
    env: dict[str, str]
    settings: Settings
    shards: Shards
    wallets: dict[int, list[str]]  # shard -> two funded wallets there


@pytest_asyncio.fixture(scope="module")
async def scratch() -> AsyncIterator[Scratch]:
    env = stack_env(**SCRATCH, SHARDPAY_SAGA_RECOVERY_AFTER="0")
    settings = Settings.from_env(env)
    await drop_databases(settings)
    await migrate(settings)
    async with open_shards(settings, pool_max=4) as shards:
        funded = {n: [await wallet(shards, n, funds=10_000) for _ in range(2)] for n in range(3)}
        yield Scratch(env, settings, shards, funded)
    await drop_databases(settings)


async def stuck(scratch: Scratch, source: int, destination: int, amount: int = 10) -> str:
    """Leg 1 of a cross-shard transfer, as a gateway that died right after it leaves it."""
    return await leg_one(scratch.shards, scratch.wallets[source][0], scratch.wallets[destination][1], amount)


async def poison(scratch: Scratch, source: int) -> tuple[str, str]:
    """A stuck transfer whose destination id is malformed; returns (its id, the destination it had)."""
    destination = scratch.wallets[(source + 1) % 2][1]
    transfer_id = await leg_one(scratch.shards, scratch.wallets[source][0], destination, 7)
    await scratch.shards.pool(source).execute(
        "UPDATE transfers SET destination = $2 WHERE id = $1", transfer_id, MALFORMED
    )
    return transfer_id, destination


async def cure(scratch: Scratch, source: int, transfer_id: str, destination: str) -> None:
    await scratch.shards.pool(source).execute(
        "UPDATE transfers SET destination = $2 WHERE id = $1", transfer_id, destination
    )


async def saga_state(scratch: Scratch, transfer_id: str) -> str:
    pool = scratch.shards.pool(shard_of(scratch.shards, transfer_id, "tr"))
    state: str = await pool.fetchval("SELECT saga_state FROM transfers WHERE id = $1", transfer_id)
    return state


def errors(stderr: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == "saga_recovery.error"]


def recover_now(scratch: Scratch) -> Settings:
    return dataclasses.replace(scratch.settings, saga_recovery_after=0.0)


async def test_a_poison_transfer_is_logged_and_counted_and_the_pass_settles_the_others(
    scratch: Scratch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, destination = await poison(scratch, 0)
    good = [await stuck(scratch, 0, 1), await stuck(scratch, 0, 1), await stuck(scratch, 1, 0)]  # same and other
    counts = await recover_once(scratch.shards, recover_now(scratch))

    assert counts["error"] == 1 and counts["succeeded"] == 3, counts
    assert [await saga_state(scratch, t) for t in good] == ["done"] * 3
    assert await saga_state(scratch, bad) == "debited"  # left for a later pass, once the row is put right
    [logged] = errors(capsys.readouterr().err)
    assert (logged["shard"], logged["transfer"], logged["error"]) == (0, bad, "AssertionError")
    assert logged["traceback"].startswith("Traceback") and "AssertionError" in logged["traceback"]

    await cure(scratch, 0, bad, destination)
    assert (await recover_once(scratch.shards, recover_now(scratch)))["succeeded"] == 1
    assert await saga_state(scratch, bad) == "done"
    await audit_clean(scratch.settings)


async def test_a_shard_whose_pass_fails_is_logged_and_the_other_shards_are_recovered(
    scratch: Scratch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [await stuck(scratch, 0, 1), await stuck(scratch, 1, 0)]
    await scratch.shards.pool(2).execute(BROKEN)
    try:
        counts = await recover_once(scratch.shards, recover_now(scratch))
    finally:
        await scratch.shards.pool(2).execute(REPAIRED)
    assert counts["error"] == 1 and counts["succeeded"] == 2, counts
    assert [await saga_state(scratch, t) for t in good] == ["done"] * 2
    [logged] = errors(capsys.readouterr().err)
    assert (logged["shard"], logged["transfer"], logged["error"]) == (2, None, "UndefinedColumnError")


async def test_cancelling_a_pass_cancels_it_and_is_not_counted_as_an_error(
    scratch: Scratch, capsys: pytest.CaptureFixture[str]
) -> None:
    transfer = await stuck(scratch, 0, 1)
    destination = scratch.wallets[1][1]
    async with scratch.shards.pool(1).acquire() as holder, scratch.shards.pool(1).acquire() as watcher:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", destination)
        recovery = asyncio.create_task(recover_once(scratch.shards, recover_now(scratch)))
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )

        async def leg_two_waits() -> bool:
            return bool(await watcher.fetchval(waiting))

        await until(leg_two_waits, "leg 2 waiting on the destination wallet's lock")
        recovery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await recovery
        await lock.rollback()
    assert errors(capsys.readouterr().err) == []
    await recover_once(scratch.shards, recover_now(scratch))
    assert await saga_state(scratch, transfer) == "done"
    await audit_clean(scratch.settings)


@pytest.fixture
def recovering(scratch: Scratch) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """``shardpay recover`` on the scratch set, as ``shardpay run`` starts it, with its stderr to read."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "shardpay", "recover"], env=scratch.env, stderr=stderr)
        try:
            yield proc, stderr
        finally:
            stop_process(proc)


def logged(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode()


async def until(condition: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.1)


async def test_the_long_running_recovery_outlives_a_poison_transfer_and_a_broken_shard(
    scratch: Scratch, recovering: tuple[subprocess.Popen[bytes], IO[bytes]]
) -> None:
    proc, stderr = recovering
    bad, destination = await poison(scratch, 0)
    await scratch.shards.pool(2).execute(BROKEN)
    first = [await stuck(scratch, 0, 1), await stuck(scratch, 1, 0)]

    async def done(transfers: list[str]) -> bool:
        return all([await saga_state(scratch, t) == "done" for t in transfers])

    async def failed_twice() -> bool:  # the poison's pass on shard 0, and shard 2's, each failed twice or more
        shards = [line["shard"] for line in errors(logged(stderr))]
        return shards.count(0) >= 2 and shards.count(2) >= 2

    await until(lambda: done(first), "the first stuck transfers settled")
    await until(failed_twice, "two failed passes on shards 0 and 2")
    later = [await stuck(scratch, 0, 1), await stuck(scratch, 1, 0)]  # after the errors: the loops went on
    await until(lambda: done(later), "the later stuck transfers settled")
    await scratch.shards.pool(2).execute(REPAIRED)
    await cure(scratch, 0, bad, destination)
    on_two = await stuck(scratch, 2, 0)  # shard 2's own loop, failing until now, settles it
    await until(lambda: done([on_two, bad]), "shard 2's transfer and the cured one settled")

    assert proc.poll() is None, logged(stderr)[-3000:]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0 and time.monotonic() - started < 3  # SIGTERM still stops it promptly
    poisoned = [line for line in errors(logged(stderr)) if line["transfer"] == bad]
    assert poisoned and all((e["shard"], e["error"]) == (0, "AssertionError") for e in poisoned)
    await audit_clean(scratch.settings)
