"""Running one queue consumer: manual acks, a prefetch window, batches, reconnection, and a graceful stop.

A message holds one event or a pack of them (``events.pack``). Each event's envelope is parsed as it arrives;
then the events of the prefetch window go to the handler in batches, the way ``shards.batcher`` groups money
steps: events that find the handler idle go at once, the ones that arrive while a batch is being handled go
together in the next. The handler gives each event its own outcome, so one bad event never fails its
neighbours: an event that can never be processed is dead-lettered alone (a single-event message is rejected
to the queue's ``.dead`` queue; one out of a pack is copied there, confirmed). A message is acked only after
all its events were handled; if any must be tried again, the whole message goes back, so a crash at any
point leaves it unacked and the broker delivers it again. Handlers therefore must be idempotent by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, ConsumerTag

from events import broker, pack, queue_types, topology
from events.backoff import Backoff, sleep_or_stop
from events.envelope import Event, InvalidEvent, parse
from events.logs import emit
from shardpay import tracing
from shardpay.config import Settings
from shards.batcher import Batcher


@dataclass(frozen=True)
class Incoming:
    """One event: its exact bytes, what they say, and the message that brought it (alone or in a pack)."""

    message: AbstractIncomingMessage
    body: bytes
    event: Event


# A batch handler: one outcome per message, in order. None means done (ack); InvalidEvent means it can never
# be processed (dead-letter); any other exception means try again later (nack). Raising fails the whole batch.
Outcome = BaseException | None
MAX_BATCH = 1000  # events per handler call
Handler = Callable[[Sequence[Incoming], AbstractChannel], Awaitable[Sequence[Outcome]]]


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    queue: str
    prefetch: int  # messages; a pack holds up to the relay's batch size of events
    batches_in_flight: int = 1  # batches handled at once; more than one lets a slow batch not stall the rest
    grace: float = 8.0  # for in-flight messages on SIGTERM; below the supervisor's 10 s before SIGKILL
    retry_pause: float = 1.0  # before a failed message goes back, so an outage does not become a hot loop
    report_every: float = 60.0  # seconds between two "consumer.tally" lines


class Tally:
    """How many messages were acked, dead-lettered and sent back, logged as one line now and then."""

    def __init__(self, spec: ConsumerSpec) -> None:
        self._spec = spec
        self._counts: Counter[str] = Counter()
        self._due = time.monotonic() + spec.report_every

    def add(self, outcome: str) -> None:
        self._counts[outcome] += 1
        if time.monotonic() >= self._due:
            self.report()

    def report(self) -> None:
        if self._counts:
            emit("consumer.tally", consumer=self._spec.name, **self._counts)
        self._counts.clear()
        self._due = time.monotonic() + self._spec.report_every


async def run_consumer(settings: Settings, spec: ConsumerSpec, handler: Handler, stop: asyncio.Event) -> None:
    """Consume ``spec.queue`` with ``handler`` until ``stop`` is set, reconnecting after any broker failure."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            await _session(settings, spec, handler, stop, backoff)
        except broker.TRANSIENT as exc:
            emit("consumer.broker_unavailable", consumer=spec.name, error=type(exc).__name__)
        if not stop.is_set():
            await sleep_or_stop(stop, backoff.next())
    emit("consumer.stopped", consumer=spec.name)


async def _session(
    settings: Settings, spec: ConsumerSpec, handler: Handler, stop: asyncio.Event, backoff: Backoff
) -> None:
    connection = await broker.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=spec.prefetch)
        delays = topology.delays(settings)
        await topology.declare(channel, delays, await queue_types.resolve(connection, delays, settings.amqp_queue_type))
        queue = await channel.get_queue(spec.queue, ensure=False)
        inflight, tally = Inflight(), Tally(spec)
        batcher = _batcher(spec, handler, channel)
        tag = await queue.consume(inflight.track(partial(_process, spec, batcher, channel, tally)))
        backoff.reset()
        emit("consumer.started", consumer=spec.name, queue=spec.queue, prefetch=spec.prefetch)
        lost = await _stop_or_lost(stop, channel)
        await _wind_down(spec, queue, tag, inflight, lost)
        tally.report()
    finally:
        await broker.close_quietly(connection)


def _batcher(spec: ConsumerSpec, handler: Handler, channel: AbstractChannel) -> Batcher[Incoming, Outcome]:
    async def many(batch: Sequence[Incoming]) -> list[Outcome]:
        outcomes = list(await handler(batch, channel))
        if len(outcomes) != len(batch):
            raise RuntimeError(f"{spec.name}: {len(outcomes)} outcomes for a batch of {len(batch)}")
        return outcomes

    async def one(item: Incoming) -> Outcome:
        return (await many([item]))[0]

    # No queue limit: the prefetch window bounds what can wait.
    return Batcher(many, one, None, MAX_BATCH, spec.batches_in_flight, queue_limit=None)


async def _process(
    spec: ConsumerSpec, batcher: Batcher[Incoming, Outcome], channel: AbstractChannel, tally: Tally,
    message: AbstractIncomingMessage,
) -> None:  # fmt: skip
    bodies = pack.unpack(message)
    started = time.time_ns()
    outcomes = await _submit(batcher, message, bodies)
    _trace(spec, message, bodies, outcomes, started)
    retry = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, InvalidEvent)]
    if retry:  # the whole message goes again; its other events are idempotent
        emit("consumer.retry_later", consumer=spec.name, message_id=message.message_id, error=type(retry[0]).__name__)
        await asyncio.sleep(spec.retry_pause)
        await _settle(message.nack(requeue=True), tally, "requeued")
        return
    invalid = [(body, o) for body, o in zip(bodies, outcomes, strict=True) if isinstance(o, InvalidEvent)]
    for _, error in invalid:
        emit("consumer.invalid_event", consumer=spec.name, message_id=message.message_id, error=str(error))
    if invalid and len(bodies) == 1:
        await _settle(message.reject(requeue=False), tally, "dead_lettered")  # to the queue's .dead queue
        return
    try:
        for body, error in invalid:
            await _bury(channel, spec, body, error)
    except broker.TRANSIENT:
        tally.add("unsettled")  # the channel is gone: the broker gives the whole pack again
        return
    await _settle(message.ack(), tally, "acked")


def _trace(spec: ConsumerSpec, message: AbstractIncomingMessage, bodies: list[bytes], outcomes: list[Outcome],
           started: int) -> None:  # fmt: skip
    """A span per event, in its request's trace, linked to the relay's publish of the message."""
    if not tracing.enabled():
        return
    ended, links = time.time_ns(), tracing.link_from(message.headers)
    for body, outcome in zip(bodies, outcomes, strict=True):
        try:
            event = parse(body)
        except InvalidEvent:
            continue
        tracing.record(f"consume {spec.name}", event.request_id, started, ended, links, **{
            "event.id": event.id, "event.type": event.type,
            "outcome": "done" if outcome is None else type(outcome).__name__})  # fmt: skip


async def _submit(
    batcher: Batcher[Incoming, Outcome], message: AbstractIncomingMessage, bodies: list[bytes]
) -> list[Outcome]:
    """Every event of a message, queued together so that they go in one batch (one at a time, the first of a
    pack left alone and the rest in the next batch: batches of two to four events, each a transaction, measured
    under cProfile in make bench). An unreadable event is its own outcome and goes nowhere."""
    outcomes: list[Outcome] = [None] * len(bodies)
    readable: list[tuple[int, Incoming]] = []
    for i, body in enumerate(bodies):
        try:
            readable.append((i, Incoming(message, body, parse(body))))
        except InvalidEvent as error:
            outcomes[i] = error
    handled = await batcher.submit_many([item for _, item in readable])
    for (i, _), outcome in zip(readable, handled, strict=True):
        outcomes[i] = outcome
    return outcomes


async def _bury(channel: AbstractChannel, spec: ConsumerSpec, body: bytes, error: InvalidEvent) -> None:
    """One unreadable event out of a pack, to the queue's dead-letter queue, confirmed."""
    copy = broker.event_message(body, "", "invalid", {"x-invalid": str(error)[:200]})
    await channel.default_exchange.publish(copy, routing_key=topology.dead_queue(spec.queue), mandatory=True)


async def _settle(outcome: Awaitable[None], tally: Tally, name: str) -> None:
    try:
        await outcome
    except broker.TRANSIENT:
        # The channel is gone, so the broker has requeued the message itself: nothing is lost.
        tally.add("unsettled")
    else:
        tally.add(name)


async def _stop_or_lost(stop: asyncio.Event, channel: AbstractChannel) -> bool:
    """Wait for a stop request or the channel's loss; True if the channel was lost."""
    stopping = asyncio.ensure_future(stop.wait())
    closing = asyncio.ensure_future(channel.closed())
    await asyncio.wait({stopping, closing}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    closing.cancel()
    return not stop.is_set()


async def _wind_down(
    spec: ConsumerSpec, queue: AbstractQueue, tag: ConsumerTag, inflight: Inflight, lost: bool
) -> None:
    if lost:
        emit("consumer.connection_lost", consumer=spec.name, inflight=len(inflight))
        await inflight.drain(0)  # their acks could not reach the broker any more: it redelivers them
        return
    with contextlib.suppress(*broker.TRANSIENT):
        await queue.cancel(tag)  # no new deliveries; the prefetched ones are already in flight
    await inflight.drain(spec.grace)


class Inflight:
    """The handler tasks still running, so a stop can wait for them (and cancel what outlives the grace)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def track(
        self, fn: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def tracked(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await fn(message)
            finally:
                self._tasks.discard(task)

        return tracked

    async def drain(self, grace: float) -> None:
        pending = set(self._tasks)
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
