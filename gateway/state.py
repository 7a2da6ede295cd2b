"""Long-lived clients, made once in the lifespan and handed to requests through typed state."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.auth import KeyCache
from gateway.broker import BrokerProbe
from gateway.edge import Edge
from gateway.probes import Probe
from shardpay.config import Settings
from shards.pools import Shards


@dataclass(frozen=True)
class Resources:
    settings: Settings
    shards: Shards
    edge: Edge
    keys: KeyCache
    amqp: BrokerProbe  # only /readyz looks at it
    probe: Probe  # /readyz and /metrics, on pools of its own (gateway.probes)


def resources(request: Request) -> Resources:
    res: Resources = request.state.resources
    return res
