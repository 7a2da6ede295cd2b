"""Merchants' lanes: the cap per merchant, the short wait then None, merchants apart, the process ceiling,
and idle lanes closed. The clients are real but never used; no POST is made here."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx

from events.lanes import Lanes


def lanes(cap: int = 2, total: int = 100, keep: int = 100) -> tuple[Lanes, list[httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []

    def open_client(connections: int) -> httpx.AsyncClient:
        opened.append(httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)))
        return opened[-1]

    return Lanes(cap, open_client, total=total, keep=keep), opened


@contextlib.asynccontextmanager
async def holding(pool: Lanes, merchant: str, count: int) -> AsyncIterator[None]:
    """``count`` slots of ``merchant`` held until exit."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            assert await stack.enter_async_context(pool.slot(merchant, 0.0)) is not None
        yield


async def test_a_merchant_at_its_cap_waits_briefly_then_gets_none() -> None:
    pool, _ = lanes(cap=2)
    async with holding(pool, "mer_a", 2):
        started = time.monotonic()
        async with pool.slot("mer_a", 0.2) as client:
            assert client is None
        assert 0.15 <= time.monotonic() - started < 1.0
    await pool.aclose()


async def test_a_slot_freed_within_the_wait_is_taken() -> None:
    pool, _ = lanes(cap=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with pool.slot("mer_a", 0.0):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    asyncio.get_running_loop().call_later(0.05, release.set)
    async with pool.slot("mer_a", 1.0) as client:
        assert client is not None
    await holder
    await pool.aclose()


async def test_another_merchant_is_not_held_up_and_has_its_own_client() -> None:
    pool, opened = lanes(cap=2)
    async with holding(pool, "mer_a", 2), pool.slot("mer_b", 0.0) as client:
        assert client is not None and client is opened[1]
    assert len(opened) == 2
    await pool.aclose()


async def test_after_slow_posts_a_merchant_at_its_cap_gets_none_at_once() -> None:
    pool, _ = lanes(cap=1)
    async with pool.slot("mer_a", 0.0):
        await asyncio.sleep(0.3)  # its POSTs take 0.3 s: with one slot, the one in use cannot free it in 0.2 s
    async with holding(pool, "mer_a", 1):
        started = time.monotonic()
        async with pool.slot("mer_a", 0.2) as client:
            assert client is None
        assert time.monotonic() - started < 0.05
    await pool.aclose()


async def test_the_process_ceiling_holds_across_merchants() -> None:
    pool, _ = lanes(cap=4, total=2)
    async with holding(pool, "mer_a", 1), holding(pool, "mer_b", 1), pool.slot("mer_c", 0.05) as client:
        assert client is None
    async with pool.slot("mer_c", 0.0) as client:  # and the lane's own slot was given back
        assert client is not None
    await pool.aclose()


async def test_idle_lanes_past_the_bound_are_closed_least_recent_first() -> None:
    pool, opened = lanes(keep=2)
    for merchant in ("mer_a", "mer_b", "mer_c"):
        async with pool.slot(merchant, 0.0):
            pass
    assert len(pool) == 2 and opened[0].is_closed and not opened[1].is_closed and not opened[2].is_closed
    async with holding(pool, "mer_b", 1), holding(pool, "mer_c", 1), holding(pool, "mer_d", 1):
        assert len(pool) == 3  # a lane in use is never closed
    await pool.aclose()
    assert all(client.is_closed for client in opened)
