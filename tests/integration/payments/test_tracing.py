"""One payment, followed across processes in one trace: the gateway's request, the executor's charge at the PSP,
the relay's publish (linked) and a consumer's handling of its events, all exported over OTLP/HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from shardpay import tracing
from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import TEST_PREFIX, Executor, free_port, key, new_wallet, start_gateway, stop_process
from tests.integration.payments.flows import final, order, payment_method
from tests.otlp_receiver import OtlpReceiver

VHOST = f"{TEST_PREFIX}_tracing"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    listening = OtlpReceiver()
    await listening.start()
    yield listening
    listening.close()


def _vhost() -> None:
    listed = subprocess.run(["rabbitmqctl", "list_vhosts", "--quiet", "--no-table-headers"], capture_output=True,
                            text=True, check=True, timeout=60).stdout.split()  # fmt: skip
    if VHOST not in listed:
        subprocess.run(["rabbitmqctl", "add_vhost", VHOST], check=True, capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=60)  # fmt: skip


@pytest.fixture
def traced(env: dict[str, str], receiver: OtlpReceiver, executor: Executor, migrated: Settings) -> Iterator[str]:
    """A gateway, an executor, a relay and an analytics consumer that export their spans to the receiver."""
    _vhost()
    port = free_port()
    traced_env = {
        **env,
        "SHARDPAY_PORT": str(port),
        "SHARDPAY_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SHARDPAY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{VHOST}",
    }
    gateway = start_gateway(traced_env)
    executor.stop()
    others = [subprocess.Popen([sys.executable, "-m", "shardpay", *argv], env=traced_env)
              for argv in (["execute"], ["relay"], ["consume", "analytics"])]  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in [gateway, *others]:
            stop_process(proc)
        executor.start()


async def test_one_payment_is_one_trace_across_processes(
    traced: str, client: httpx.AsyncClient, shards: Shards, receiver: OtlpReceiver
) -> None:
    target = await new_wallet(client, shards)
    method = await payment_method(client)
    request_id = f"trace-test-{key()}"
    async with httpx.AsyncClient(base_url=traced, headers={**client.headers}, timeout=30) as http:
        created = await http.post("/v1/payments", json={"payment_method": method, "orders": [order(target, 5)]},
                                  headers={"Idempotency-Key": key(), "X-Request-Id": request_id})  # fmt: skip
        assert created.status_code == 201, created.text
        await final(http, f"/v1/payments/{created.json()['id']}")
    trace_id = tracing.trace_id_hex(request_id)
    # Generous: in a full suite the relay first publishes every earlier test's events (the outbox of the session's
    # shards), and the consumer handles them, before it reaches this payment's.
    spans = await receiver.wait_for(trace_id, {"shardpay-gateway", "shardpay-executor", "shardpay-analytics"},
                                    within=120)  # fmt: skip
    names = {(s.service, s.name) for s in spans}
    assert ("shardpay-gateway", "POST /v1/payments") in names, names
    assert ("shardpay-executor", "psp work charge") in names and ("shardpay-executor", "psp POST /v1/charges") in names
    assert any(s.service == "shardpay-gateway" and s.name.startswith("redis") for s in spans), names
    assert any(s.service == "shardpay-gateway" and s.name.startswith("tick") for s in spans), names
    assert ("shardpay-analytics", "consume analytics") in names
    # The relay's publish served many requests: it has a trace of its own, which the consumer's span links to (and
    # which links back to up to 64 of the requests it carried).
    consumed = [s for s in spans if s.service == "shardpay-analytics"]
    published = {link for s in consumed for link in s.links}
    assert any(s.service == "shardpay-relay" and s.trace_id in published for s in receiver.spans), published
