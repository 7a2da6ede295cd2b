"""Long-lived clients, made once in the lifespan and handed to requests through typed state."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

import psp
from gateway.auth import KeyCache
from gateway.broker import BrokerProbe
from gateway.edge import Edge
from gateway.probes import Probe
from shardpay.config import Settings
from shardpay.resilience import Breaker
from shardpay.services.methods import PaymentMethods
from shards.pools import Shards


@dataclass(frozen=True)
class Resources:
    settings: Settings
    shards: Shards
    edge: Edge
    keys: KeyCache
    amqp: BrokerProbe  # only /readyz looks at it
    probe: Probe  # /readyz and /metrics, on pools of their own (gateway.probes)
    psp: psp.Psp  # checkout sessions and the PSP's webhooks; the executors make every other call
    psp_breakers: dict[str, Breaker]  # this process's own calls to the PSP, by operation
    payment_methods: PaymentMethods  # whose pm_ token is whose


def resources(request: Request) -> Resources:
    res: Resources = request.state.resources
    return res
