"""Which addresses a merchant's webhook may reach: the rule, judged on addresses, never on a URL's text.

A name is judged by what it resolves to, and the connection then goes to exactly that address
(``events.egress``), so ``http://2130706433/``, ``http://0x7f.1/``, ``http://127.1/`` and
``http://[::ffff:127.0.0.1]/`` are all judged as the 127.0.0.1 they reach, and a name whose DNS answer
changes between the check and the connection (rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
ALLOW_PRIVATE = "SHARDPAY_WEBHOOK_ALLOW_PRIVATE"


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


# Never a merchant's server, whatever the setting: the cloud metadata service (169.254.169.254) and every other
# link-local host, "this host" (on Linux a connection to 0.0.0.0 or :: reaches the local machine), multicast,
# broadcast, and what IANA reserves or sets aside for documentation and benchmarks. First match wins.
ALWAYS = _networks(
    ("0.0.0.0/8", "unspecified"),
    ("169.254.0.0/16", "link-local (where cloud metadata services answer)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved for documentation"),
    ("198.51.100.0/24", "reserved for documentation"),
    ("203.0.113.0/24", "reserved for documentation"),
    ("198.18.0.0/15", "reserved for benchmarks"),
    ("::/128", "unspecified"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated, internal)"),
    ("ff00::/8", "multicast"),
    ("2001::/32", "a Teredo tunnel"),
    ("2001:db8::/32", "reserved for documentation"),
)
# The operator's own networks: refused unless SHARDPAY_WEBHOOK_ALLOW_PRIVATE=true (a local stack, the tests).
PRIVATE = _networks(
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT (shared)"),
    ("fc00::/7", "unique local (private)"),
)
# Every IPv6 unicast address in use is in 2000::/3 (or one of the ranges above); the rest is unassigned or
# reserved, including the deprecated IPv4-compatible ::a.b.c.d.
GLOBAL_V6 = ipaddress.ip_network("2000::/3")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Refusal:
    """Why one address may not be reached; ``always`` if not even SHARDPAY_WEBHOOK_ALLOW_PRIVATE allows it."""

    address: str
    reason: str
    always: bool

    @property
    def why(self) -> str:
        return self.reason if self.always else f"{self.reason}, refused unless {ALLOW_PRIVATE}=true"

    def __str__(self) -> str:
        return f"{self.address} is {self.why}"


class WebhookAddressRefused(Exception):
    """A webhook's host has no address it may reach; the message names each address and why (no host name:
    it may be logged, and a merchant's URL is not)."""

    def __init__(self, refusals: Iterable[Refusal]) -> None:
        self.refusals = tuple(refusals)
        super().__init__("; ".join(str(r) for r in self.refusals) or "no address")


def judge(address: IPAddress, allow_private: bool) -> Refusal | None:
    """None if a webhook may connect to ``address``, else why not."""
    found = _classify(address)
    if found is None or (allow_private and not found[1]):
        return None
    return Refusal(str(address), *found)


def _classify(address: IPAddress) -> tuple[str, bool] | None:
    """(reason, always) for an address that is not on the public internet, None for one that is."""
    if (inner := _embedded(address)) is not None:
        found = _classify(inner)
        return None if found is None else (f"{found[0]} (it carries {inner})", found[1])
    for network, reason in ALWAYS:
        if address in network:
            return reason, True
    for network, reason in PRIVATE:
        if address in network:
            return reason, False
    if address.version == 6 and address not in GLOBAL_V6:
        return "reserved", True
    return None


def _embedded(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def screen(addresses: Iterable[IPAddress], allow_private: bool) -> tuple[list[IPAddress], list[Refusal]]:
    """The addresses a webhook may connect to, in order, and the refusals of the others."""
    allowed: list[IPAddress] = []
    refused: list[Refusal] = []
    for address in addresses:
        refusal = judge(address, allow_private)
        if refusal is None:
            allowed.append(address)
        else:
            refused.append(refusal)
    return allowed, refused


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` (a name or any numeric form) resolves to, in the resolver's order, each once;
    raises ``OSError`` (``socket.gaierror``) if it does not resolve."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
