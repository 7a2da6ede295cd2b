"""The simulator's webhooks: signed, durable, retried on anything but a 2xx, and unreliable on demand (dropped,
sent twice, late, out of order), as a real PSP's are."""

from __future__ import annotations

import asyncio
import time

import httpx

from events.signing import verify
from psp.base import Psp
from tests.conftest import key
from tests.integration.psp.conftest import Receiver, SimProcess
from tests.integration.psp.flows import eventually, pay, set_faults, sim_events


async def _charges(adapter: Psp, count: int) -> list[str]:
    payment_method = await pay(adapter)
    return [(await adapter.charge(payment_method, 100 + n, "USD", f"po_{n}", key())).id for n in range(count)]


async def test_every_webhook_is_signed_with_the_shared_secret(adapter: Psp, receiver: Receiver) -> None:
    [charge_id] = await _charges(adapter, 1)
    await receiver.wait_for(1, "charge.succeeded")
    for raw in receiver.received:
        assert verify("whsec_sim_test", raw.headers["psp-signature"], raw.body, time.time())
        assert raw.event["id"].startswith("pspevt_") and isinstance(raw.event["created"], int)
    assert receiver.events("charge.succeeded")[0]["data"]["object"]["id"] == charge_id


async def test_dropped_webhooks_are_never_sent_and_recorded_as_dropped(
    adapter: Psp, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    payment_method = await pay(adapter)
    await receiver.wait_for(1, "hosted_session.completed")
    await set_faults(http, webhook_drop_rate=1)
    await adapter.charge(payment_method, 100, "USD", "po_drop", key())
    [event] = await sim_events(http, "charge.succeeded")
    assert event["state"] == "dropped"
    await asyncio.sleep(0.5)
    assert receiver.events("charge.succeeded") == []


async def test_duplicated_webhooks_arrive_twice_with_one_id(
    adapter: Psp, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, webhook_duplicate_rate=1)
    await adapter.charge(payment_method, 100, "USD", "po_dup", key())
    first, second = await receiver.wait_for(2, "charge.succeeded")
    assert first["id"] == second["id"]


async def test_delayed_webhooks_arrive_late(adapter: Psp, http: httpx.AsyncClient, receiver: Receiver) -> None:
    payment_method = await pay(adapter)
    await set_faults(http, webhook_delay_ms=800)
    sent = time.time()
    await adapter.charge(payment_method, 100, "USD", "po_late", key())
    await receiver.wait_for(1, "charge.succeeded")
    [raw] = [r for r in receiver.received if r.event["type"] == "charge.succeeded"]
    assert raw.at - sent >= 0.8


async def test_reordered_webhooks_arrive_shuffled(adapter: Psp, http: httpx.AsyncClient, receiver: Receiver) -> None:
    payment_method = await pay(adapter)
    await receiver.wait_for(1, "hosted_session.completed")
    await set_faults(http, webhook_reorder=True, webhook_reorder_window_ms=1500)
    made = [(await adapter.charge(payment_method, 100, "USD", f"po_{n}", key())).id for n in range(10)]
    hooks = await receiver.wait_for(10, "charge.succeeded")
    got = [h["data"]["object"]["id"] for h in hooks]
    assert sorted(got) == sorted(made) and got != made  # 1 in 10! of a false failure


async def test_a_failing_receiver_is_retried_until_it_answers_2xx(
    adapter: Psp, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.fail_first = 3  # the session's webhook and two tries of the charge's; the backoff is 0.2, 0.4, 0.8
    await _charges(adapter, 1)
    await receiver.wait_for(1, "charge.succeeded")
    await receiver.wait_for(1, "hosted_session.completed")

    async def delivered() -> bool:
        return all(e["state"] == "delivered" for e in await sim_events(http))

    await eventually(delivered)
    assert [e for e in await sim_events(http) if e["attempts"] > 1]
    assert len([r for r in receiver.received if r.status == 500]) == 3


async def test_after_the_last_try_an_event_is_given_up(
    adapter: Psp, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.always_fail = True
    await _charges(adapter, 1)

    async def dead() -> bool:
        return all(e["state"] == "dead" for e in await sim_events(http))

    await eventually(dead, within=15)
    attempts = {e["attempts"] for e in await sim_events(http)}
    assert attempts == {4}  # the first try and one after each of the three backoffs


async def test_a_restart_of_the_simulator_loses_no_webhook(
    adapter: Psp, http: httpx.AsyncClient, receiver: Receiver, sim: SimProcess
) -> None:
    receiver.always_fail = True
    await set_faults(http, webhook_delay_ms=3000)
    made = await _charges(adapter, 3)
    await asyncio.to_thread(sim.stop)
    receiver.always_fail = False
    await asyncio.to_thread(sim.start)
    # Faults live in the simulator's database too: the delay is still in force after the restart.
    assert (await http.get("/sim/faults")).json()["webhook_delay_ms"] == 3000
    hooks = await receiver.wait_for(3, "charge.succeeded", within=20)
    assert sorted(h["data"]["object"]["id"] for h in hooks) == sorted(made)


async def test_webhooks_in_flight_when_the_simulator_stops_go_out_after_its_restart(
    adapter: Psp, http: httpx.AsyncClient, receiver: Receiver, sim: SimProcess
) -> None:
    receiver.hang()
    made = await _charges(adapter, 2)

    async def in_flight() -> bool:
        return sum(1 for r in await sim_events(http) if r["type"] == "charge.succeeded") == 2

    await eventually(in_flight)
    await asyncio.sleep(0.5)  # the sender is waiting on the receiver now
    assert all(e["attempts"] == 0 and e["state"] == "pending" for e in await sim_events(http))
    await asyncio.to_thread(sim.stop)
    receiver.unhang()
    await asyncio.to_thread(sim.start)
    # Released at shutdown rather than left to their lease (minutes): they go out at once.
    hooks = await receiver.wait_for(2, "charge.succeeded", within=5)
    assert sorted(h["data"]["object"]["id"] for h in hooks) == sorted(made)
    await receiver.wait_for(1, "hosted_session.completed", within=5)
