"""Slow and greedy clients: headers and bodies have deadlines, a slow body holds no lock and no rate token, and
each worker caps its connections and its requests in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from shardpay.config import Settings
from tests.conftest import StackMerchant, free_port, key, start_gateway, stop_process


@pytest.fixture(scope="module")
def strict_gateway(migrated: Settings, env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    proc = start_gateway({**env, "SHARDPAY_PORT": str(port), "SHARDPAY_HEADER_TIMEOUT": "1",
                          "SHARDPAY_BODY_TIMEOUT": "1", "SHARDPAY_MAX_CONNECTIONS": "20",
                          "SHARDPAY_MAX_REQUESTS": "3"})  # fmt: skip
    yield port
    stop_process(proc)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection, which it must do within ``seconds``."""
    async with asyncio.timeout(seconds):
        return await reader.read()


def _head(merchant: StackMerchant, idem: str, length: int) -> bytes:
    return (
        f"POST /v1/wallets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {merchant.api_key}\r\n"
        f"Idempotency-Key: {idem}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def test_headers_sent_a_byte_at_a_time_get_408_and_the_connection_closed(strict_gateway: int) -> None:
    reader, writer = await _connect(strict_gateway)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def dribble() -> None:
        for byte in b"X-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.2)

    dribbling = asyncio.create_task(dribble())
    answer = await _closed_within(reader, 5)
    dribbling.cancel()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer
    assert time.monotonic() - started < 3


async def test_a_connection_that_never_speaks_is_closed(strict_gateway: int) -> None:
    reader, _ = await _connect(strict_gateway)
    assert (await _closed_within(reader, 5)).startswith(b"HTTP/1.1 408")


async def test_keep_alive_requests_each_get_their_own_header_deadline(strict_gateway: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{strict_gateway}") as http:
        for _ in range(3):  # one connection, each request well inside the deadline though together past it
            assert (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(0.6)


async def test_a_slow_body_gets_408_and_holds_no_lock_and_no_rate_token(
    strict_gateway: int, migrated: Settings
) -> None:
    from shards.control import create_merchant
    from shards.pools import open_shards

    async with open_shards(migrated, pool_max=2) as shards:
        made = await create_merchant(shards.control, "one request a second", None, rate=1, burst=1)
    merchant = StackMerchant(made.merchant.id, made.api_key, made.webhook_secret)
    body = b'{"currency": "USD"}'
    idem = key()
    reader, writer = await _connect(strict_gateway)
    writer.write(_head(merchant, idem, len(body)) + body[:5])  # ... and the rest never comes
    answer = await _closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer and b"connection: close" in answer.lower()
    # The same key at once: no lock was taken (no 409), no rate token either (burst 1: no 429).
    headers = {"Authorization": f"Bearer {merchant.api_key}", "Idempotency-Key": idem}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{strict_gateway}") as http:
        response = await http.post("/v1/wallets", content=body, headers=headers)
    assert response.status_code == 201, response.text


async def test_connections_past_the_cap_are_closed(strict_gateway: int) -> None:
    held = [await _connect(strict_gateway) for _ in range(20)]
    extra_reader, _ = await _connect(strict_gateway)
    assert await _closed_within(extra_reader, 2) == b""  # closed before a byte was read or written
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{strict_gateway}") as http:
        assert (await http.get("/healthz")).status_code == 200  # room again


async def test_requests_past_the_cap_get_503_at_once(strict_gateway: int, merchant: StackMerchant) -> None:
    stalled = []
    for _ in range(3):  # three requests in flight, each waiting for a body that comes late
        reader, writer = await _connect(strict_gateway)
        writer.write(_head(merchant, key(), 100) + b"{")
        stalled.append((reader, writer))
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{strict_gateway}") as http:
        started = time.monotonic()
        busy = await http.get("/v1/currencies", headers={"Authorization": f"Bearer {merchant.api_key}"})
        assert time.monotonic() - started < 0.5
        assert (await http.get("/healthz")).status_code == 200  # alive, only busy
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "server_overloaded" and busy.headers["Retry-After"] == "1"
    for reader, _ in stalled:
        assert (await _closed_within(reader, 5)).startswith(b"HTTP/1.1 408")
