"""The probe's rules, on fake pools: single-flight, cached for its period, bounded in time, and a client that
hangs up does not cancel the probe its neighbours wait for. (tests/integration/test_probes.py runs the real thing.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any, cast

import asyncpg
import orjson
import pytest

from gateway.probes import OutboxLag, Probe, ProbePools


class FakePool:
    """Answers the probe's queries after ``delay`` seconds (forever if None), or raises ``error``."""

    def __init__(self, delay: float | None = 0.01, error: BaseException | None = None) -> None:
        self.delay = delay
        self.error = error
        self.calls = 0

    @contextlib.asynccontextmanager
    async def acquire(self, **options: float) -> AsyncIterator[FakePool]:
        yield self  # a connection answers the same queries

    async def _answer(self) -> None:
        self.calls += 1
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay or 0)
        if self.error is not None:
            raise self.error

    run: dict[str, Any] | None = None  # the control database's last reconciliation run (none by default)

    async def fetchrow(self, query: str) -> dict[str, Any] | None:
        await self._answer()
        if "reconcile_runs" in query:
            return self.run
        return {"last_seq": 12, "first_seq": 3, "oldest_age": 4.5, "dead_letters": 0}

    async def fetchval(self, query: str) -> bool:
        await self._answer()
        return True


async def redis_ok() -> bool:
    return True


def probe(*shards: FakePool, control: FakePool | None = None, period: float = 0.3, timeout: float = 0.2) -> Probe:
    pools = ProbePools(cast(asyncpg.Pool, control or FakePool()), tuple(cast(asyncpg.Pool, p) for p in shards))
    return Probe(pools, redis_ok, lambda: True, period=period, timeout=timeout)


async def test_concurrent_requests_share_one_probe_and_its_answer_is_kept_for_the_period() -> None:
    shards = FakePool(), FakePool()
    subject = probe(*shards, period=0.3)
    answers = await asyncio.gather(*(subject.snapshot() for _ in range(100)))
    assert [s.calls for s in shards] == [1, 1]
    assert all(a is answers[0] for a in answers)
    assert answers[0].lags == (OutboxLag(10, 4.5), OutboxLag(10, 4.5))
    assert answers[0].checks() == dict.fromkeys(("shard_0", "shard_1", "control", "redis", "rabbitmq"), True)
    await asyncio.sleep(0.1)
    await subject.snapshot()
    assert [s.calls for s in shards] == [1, 1]  # still fresh
    await asyncio.sleep(0.25)
    await asyncio.gather(*(subject.snapshot() for _ in range(10)))
    assert [s.calls for s in shards] == [2, 2]  # expired: one more probe for all ten


async def test_a_hung_or_failing_shard_is_down_and_answered_within_the_timeout() -> None:
    subject = probe(FakePool(), FakePool(delay=None), FakePool(error=ConnectionRefusedError()), timeout=0.2)
    started = time.monotonic()
    found = await subject.snapshot()
    assert time.monotonic() - started < 0.4
    assert found.checks() == {"shard_0": True, "shard_1": False, "shard_2": False, "control": True,
                              "redis": True, "rabbitmq": True}  # fmt: skip


async def test_a_client_hanging_up_does_not_cancel_the_shared_probe() -> None:
    shard = FakePool(delay=0.1)
    subject = probe(shard)
    leaving, staying = asyncio.create_task(subject.snapshot()), asyncio.create_task(subject.snapshot())
    await asyncio.sleep(0.02)
    leaving.cancel()
    assert (await staying).lags == (OutboxLag(10, 4.5),)
    assert leaving.cancelled() and shard.calls == 1


async def test_an_unexpected_error_answers_down_and_is_logged(capsys: pytest.CaptureFixture[str]) -> None:
    found = await probe(FakePool(error=ZeroDivisionError())).snapshot()
    assert found.checks()["shard_0"] is False
    logged = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["event"], line["error"]) for line in logged] == [("probe.error", "ZeroDivisionError")]


async def test_the_last_reconciliation_run_comes_with_the_same_probe() -> None:
    control = FakePool()
    assert (await probe(FakePool(), control=control).snapshot()).reconcile is None
    control.run = {"id": 7, "day": date(2026, 12, 2), "trigger": "daily", "finished_at": datetime(2026, 12, 3, 1),
                   "counts": '{"matched": 9, "missing_at_psp": 1}', "fixed": 2, "needs_review": 1,
                   "exit_status": 1}  # fmt: skip
    found = (await probe(FakePool(), control=control).snapshot()).reconcile
    assert found is not None and (found.id, found.counts["missing_at_psp"], found.exit_status) == (7, 1, 1)
