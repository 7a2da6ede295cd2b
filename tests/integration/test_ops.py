"""Operations: health, readiness with dependencies down, metrics in both prometheus modes, request ids, request logs,
and the JSON 404/405 — each against a real gateway process, some started here with a dependency taken away."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.probes import CACHE_PERIOD
from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import free_port, key, new_wallet, post, stack_env, stop_process

SHARDS = 4


class Merchant(Protocol):
    id: str
    api_key: str


def _spawn(env: dict[str, str], stdout: IO[bytes] | None, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """conftest.start_gateway, but with stdout where the test can read it, and stderr in the error if it fails."""
    proc = subprocess.Popen([sys.executable, "-m", "shardpay", "serve"], env=env, stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{env['SHARDPAY_PORT']}/healthz", timeout=0.5).status_code == 200:
                return proc
        time.sleep(0.1)
    stop_process(proc)
    stderr.seek(0)
    raise RuntimeError(f"gateway did not start (exit {proc.returncode}):\n{stderr.read().decode()[-3000:]}")


@contextlib.contextmanager
def gateway_with(stdout: IO[bytes] | None = None, **overrides: str) -> Iterator[str]:
    """A gateway of its own on the test databases, with these settings. Small pools: it serves a handful of
    requests, and PostgreSQL's connection slots are shared with the session's gateway and fixtures."""
    port = str(free_port())
    settings = {"SHARDPAY_POOL_MIN": "1", "SHARDPAY_POOL_MAX": "4", **overrides}
    with tempfile.TemporaryFile() as stderr:
        proc = _spawn(stack_env(SHARDPAY_PORT=port, **settings), stdout, stderr)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)


def authed(url: str, merchant: Merchant) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {merchant.api_key}"}, timeout=30)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus exposition -> sample name -> [(labels, value)]; the parser also proves the text well formed."""
    result: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result.setdefault(sample.name, []).append((sample.labels, sample.value))
    return result


def by_shard(found: dict[str, list[tuple[dict[str, str], float]]], name: str) -> dict[str, float]:
    return {labels["shard"]: value for labels, value in found.get(name, [])}


# --- the normal stack -------------------------------------------------------------------------------------------


async def test_healthz_and_readyz_on_the_normal_stack(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        health, ready = await http.get("/healthz"), await http.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200, ready.text
    expected = {*(f"shard_{n}" for n in range(SHARDS)), "control", "redis", "rabbitmq"}
    body = ready.json()
    assert (body["status"], body["checks"]) == ("ready", dict.fromkeys(expected, True))
    # The PSP's breakers: this process's own, and the executors' if any runs; all closed.
    assert {"hosted_session", "payment_method"} <= set(body["details"]["psp"])
    assert set(body["details"]["psp"].values()) == {"closed"}


async def test_request_ids_are_echoed_or_made(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/v1/currencies"), ("GET", "/nowhere"), ("DELETE", "/v1/currencies"),
                         ("GET", "/healthz"), ("POST", "/v1/wallets")):  # fmt: skip
        sent = await client.request(method, path, headers={"X-Request-Id": "trace-42"})
        assert sent.headers["x-request-id"] == "trace-42", (method, path)
        made = await client.request(method, path)
        assert made.headers["x-request-id"].startswith("req_") and len(made.headers["x-request-id"]) == 28
    # Too long to be a request id: replaced, not echoed into logs and events.
    assert (await client.get("/healthz", headers={"X-Request-Id": "x" * 129})).headers["x-request-id"] != "x" * 129
    unauthenticated = await client.get("/v1/currencies", headers={"Authorization": "Bearer nope", "X-Request-Id": "t"})
    assert unauthenticated.status_code == 401 and unauthenticated.headers["x-request-id"] == "t"


async def test_unknown_path_and_wrong_method_are_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    assert missing.json()["error"] == {
        "type": "invalid_request_error", "code": "resource_missing", "param": None,
        "message": "Unrecognized request URL: /v1/nothing-here.", "request_id": missing.headers["x-request-id"],
    }  # fmt: skip
    wrong = await client.delete("/v1/wallets")
    assert wrong.status_code == 405 and wrong.headers["content-type"] == "application/json"
    error = wrong.json()["error"]
    assert (error["type"], error["code"], error["request_id"]) == (
        "invalid_request_error", "method_not_allowed", wrong.headers["x-request-id"],
    )  # fmt: skip


async def test_wrong_method_names_the_allowed_ones(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/v1/wallets")).headers.get("allow") == "POST"  # RFC 9110, 15.5.6


async def test_metrics_by_route_template_pools_and_outbox_lag(
    gateway: str, client: httpx.AsyncClient, shards: Shards
) -> None:
    wallet = await new_wallet(client, shards, shard=2)  # its wallet.created event waits in shard 2's outbox
    assert (await client.get(f"/v1/wallets/{wallet}")).status_code == 200
    await asyncio.sleep(CACHE_PERIOD)  # the outbox figures are the last probe's, which may predate the wallet
    async with httpx.AsyncClient(base_url=gateway) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    by_route = {(s["method"], s["route"], s["status"]) for s, _ in found["shardpay_http_requests_total"]}
    assert {("GET", "/v1/wallets/{id}", "200"), ("POST", "/v1/wallets", "201")} <= by_route
    assert not any(wallet in s["route"] for s, _ in found["shardpay_http_requests_total"])  # templates, not ids
    buckets = found["shardpay_http_request_duration_seconds_bucket"]
    assert any(s["route"] == "/v1/wallets/{id}" and s["le"] == "+Inf" and v >= 1 for s, v in buckets)
    everyone = {str(n) for n in range(SHARDS)}
    assert set(by_shard(found, "shardpay_shard_pool_connections")) == everyone
    assert set(by_shard(found, "shardpay_shard_pool_in_use")) == everyone
    assert by_shard(found, "shardpay_shard_up") == dict.fromkeys(everyone, 1.0)
    unpublished = by_shard(found, "shardpay_outbox_unpublished")
    ages = by_shard(found, "shardpay_outbox_oldest_unpublished_age_seconds")
    assert set(unpublished) == set(ages) == everyone
    assert unpublished["2"] >= 1 and ages["2"] >= 0
    assert all(ages[s] == 0 for s in everyone if unpublished[s] == 0)


# --- a gateway with several workers: prometheus multiprocess mode --------------------------------------------------


async def test_metrics_in_multiprocess_mode(migrated: Settings, merchant: Merchant) -> None:
    with gateway_with(SHARDPAY_WORKERS="2") as url:
        async with authed(url, merchant) as http:
            for _ in range(20):  # enough that both workers most likely answer some
                assert (await http.get("/v1/currencies")).status_code == 200
            found = samples((await http.get("/metrics")).text)
    counted = sum(v for s, v in found["shardpay_http_requests_total"] if s["route"] == "/v1/currencies")
    assert counted == 20
    everyone = {str(n) for n in range(SHARDS)}
    assert by_shard(found, "shardpay_shard_up") == dict.fromkeys(everyone, 1.0)
    assert set(by_shard(found, "shardpay_outbox_unpublished")) == everyone
    assert set(by_shard(found, "shardpay_shard_pool_connections")) == everyone


# --- request logs ----------------------------------------------------------------------------------------------


async def test_one_json_log_line_per_request_without_the_key(
    migrated: Settings, merchant: Merchant, tmp_path: Path
) -> None:
    log_path = tmp_path / "gateway.out"
    bogus = "sk_not_a_real_key_but_still_secret"
    with log_path.open("wb") as out, gateway_with(out, SHARDPAY_LOG_REQUESTS="true", PYTHONUNBUFFERED="1") as url:
        async with authed(url, merchant) as http:
            created = await http.post("/v1/wallets", json={"currency": "USD"},
                                      headers={"Idempotency-Key": key(), "X-Request-Id": "log-1"})  # fmt: skip
            wallet = created.json()["id"]
            await http.get(f"/v1/wallets/{wallet}", headers={"X-Request-Id": "log-2"})
            await http.get("/nowhere", headers={"X-Request-Id": "log-3"})
            await http.get("/v1/currencies", headers={"X-Request-Id": "log-4", "Authorization": f"Bearer {bogus}"})
    text = log_path.read_text()
    assert merchant.api_key not in text and bogus not in text
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "request"]  # /healthz polls at start-up too
    assert all(set(line) == {"ts", "event", "request_id", "merchant", "method", "route", "status", "duration_ms"}
               for line in requests)  # fmt: skip
    ids = [line["request_id"] for line in requests]
    expected = {
        "log-1": (merchant.id, "POST", "/v1/wallets", 201),
        "log-2": (merchant.id, "GET", "/v1/wallets/{id}", 200),
        "log-3": (None, "GET", "unmatched", 404),
        "log-4": (None, "GET", "/v1/currencies", 401),
    }
    for rid, (who, method, route, status) in expected.items():
        assert ids.count(rid) == 1, rid
        line = requests[ids.index(rid)]
        assert (line["merchant"], line["method"], line["route"], line["status"]) == (who, method, route, status)
        assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0


# --- Redis down ------------------------------------------------------------------------------------------------

NO_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def redis_down(migrated: Settings) -> Iterator[str]:
    """A gateway whose Redis never answers. That it starts at all shows the Redis client connects lazily."""
    with gateway_with(SHARDPAY_REDIS_URL=NO_REDIS) as url:
        yield url


async def test_readyz_is_503_with_retry_after_when_redis_is_down(redis_down: str) -> None:
    async with httpx.AsyncClient(base_url=redis_down) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["redis"] is False
    assert all(ok for name, ok in body["checks"].items() if name != "redis")


async def test_transfers_work_without_redis_and_stay_idempotent(
    redis_down: str, merchant: Merchant, shards: Shards
) -> None:
    async with authed(redis_down, merchant) as http:
        source = await new_wallet(http, shards, funds=1_000)
        destination = await new_wallet(http, shards)
        body = {"source": source, "destination": destination, "amount": 300, "currency": "USD"}
        idem = key()
        first = await post(http, "/v1/transfers", body, idem)
        assert first.status_code == 201, first.text
        assert first.json()["status"] in ("succeeded", "processing")
        assert first.headers["ratelimit-limit"] == first.headers["ratelimit-remaining"]  # fail open: not limited
        # No Redis lock or cache: PostgreSQL's idempotency record alone replays the answer.
        again = await post(http, "/v1/transfers", body, idem)
        assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert (await post(http, "/v1/transfers", {**body, "amount": 301}, idem)).status_code == 422
        assert (await http.get(f"/v1/wallets/{source}")).json()["available"] == 700  # moved once


async def test_writes_are_503_without_redis_when_rate_limiting_fails_closed(
    migrated: Settings, merchant: Merchant
) -> None:
    with gateway_with(SHARDPAY_REDIS_URL=NO_REDIS, SHARDPAY_RATELIMIT_FAIL_OPEN="false") as url:
        async with authed(url, merchant) as http:
            write = await post(http, "/v1/wallets", {"currency": "USD"})
            read = await http.get("/v1/currencies")
    for response in (write, read):
        assert response.status_code == 503 and response.headers["retry-after"] == "1", response.text
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("api_error", "dependency_unavailable")


# --- a shard down ----------------------------------------------------------------------------------------------


class Cuttable:
    """A TCP forwarder to PostgreSQL in front of one shard: cutting it takes that shard down under a running
    gateway (which refuses to start without every shard) without touching the shared test databases."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.cut_off = threading.Event()
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_off.is_set():
            try:
                downstream, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # cut: the listener is closed
                return
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                if self.cut_off.is_set():  # accepted just as the cut happened: it must not get through
                    downstream.close()
                    upstream.close()
                    return
                self.open += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.cut_off.set()
            self.listener.close()  # from now on, connecting is refused
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


async def test_a_shard_down_is_503_not_ready_and_shard_up_0(
    migrated: Settings, merchant: Merchant, client: httpx.AsyncClient, shards: Shards
) -> None:
    wallet = await new_wallet(client, shards, funds=11, shard=3)
    proxy = Cuttable(("127.0.0.1", 5432))
    dsns = [*migrated.shard_dsns[:3], migrated.shard_dsns[3].replace(":5432/", f":{proxy.port}/")]
    with gateway_with(SHARDPAY_SHARD_DSNS=",".join(dsns)) as url:
        async with authed(url, merchant) as http:
            assert (await http.get(f"/v1/wallets/{wallet}")).json()["available"] == 11
            proxy.cut()
            fetched = await http.get(f"/v1/wallets/{wallet}")
            ready = await http.get("/readyz")
            found = samples((await http.get("/metrics")).text)
    assert fetched.status_code == 503 and fetched.headers["retry-after"] == "1", fetched.text
    assert fetched.json()["error"]["code"] == "shard_unavailable"
    assert ready.status_code == 503 and ready.json()["checks"]["shard_3"] is False, ready.text
    assert by_shard(found, "shardpay_shard_up") == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 0.0}
    assert set(by_shard(found, "shardpay_outbox_unpublished")) == {"0", "1", "2"}


async def test_readyz_notices_rabbitmq_going_away(migrated: Settings) -> None:
    proxy = Cuttable(("127.0.0.1", 5672))
    with gateway_with(SHARDPAY_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(50):  # the broker probe connects in the background after start-up
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get("/readyz")).status_code == 200
            proxy.cut()
            for _ in range(50):  # the client notices the lost socket within moments, not at once
                ready = await http.get("/readyz")
                if ready.status_code != 200:
                    break
                await asyncio.sleep(0.1)
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1", ready.text
    assert ready.json()["checks"]["rabbitmq"] is False


async def test_the_gateway_starts_without_rabbitmq(migrated: Settings) -> None:
    # Nothing on the request path publishes (the outbox does), so only readiness should suffer.
    with gateway_with(SHARDPAY_AMQP_URL="amqp://guest:guest@127.0.0.1:1/") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/readyz")).json()["checks"]["rabbitmq"] is False
