"""Which addresses a webhook may reach, judged on the address (and the resolver's reading of numeric forms)."""

from __future__ import annotations

import ipaddress

import pytest

from events.addresses import judge, resolve, screen

ALWAYS_REFUSED = [
    "0.0.0.0", "0.1.2.3", "169.254.169.254", "169.254.0.1", "224.0.0.1", "239.255.255.250", "255.255.255.255",
    "240.0.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "192.0.0.8",
    "::", "fe80::1", "febf::1", "fec0::1", "ff02::1", "2001:db8::1", "2001:0:4136:e378::1", "100::1", "::1.2.3.4",
    "::ffff:169.254.169.254", "::ffff:0.0.0.0", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "4000::1",
]  # fmt: skip
PRIVATE = [
    "127.0.0.1", "127.255.255.254", "::1", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "100.64.0.1", "100.127.255.255", "fc00::1", "fd12:3456::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "64:ff9b::7f00:1", "2002:7f00:1::1",
]  # fmt: skip
PUBLIC = [
    "93.184.215.14", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
]  # fmt: skip


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
def test_refused_whatever_the_setting(address: str) -> None:
    for allow_private in (False, True):
        refusal = judge(ipaddress.ip_address(address), allow_private)
        assert refusal is not None and refusal.always, (address, allow_private)


@pytest.mark.parametrize("address", PRIVATE)
def test_private_and_loopback_refused_unless_allowed(address: str) -> None:
    refusal = judge(ipaddress.ip_address(address), allow_private=False)
    assert refusal is not None and not refusal.always
    assert "SHARDPAY_WEBHOOK_ALLOW_PRIVATE=true" in str(refusal)
    assert judge(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert judge(ipaddress.ip_address(address), allow_private=False) is None


def test_the_reason_names_the_address_and_what_it_carries() -> None:
    assert str(judge(ipaddress.ip_address("169.254.169.254"), True)).startswith("169.254.169.254 is link-local")
    mapped = judge(ipaddress.ip_address("::ffff:127.0.0.1"), False)
    assert mapped is not None and "loopback (it carries 127.0.0.1)" in str(mapped)


def test_screen_keeps_the_allowed_in_order_and_explains_the_rest() -> None:
    found = [ipaddress.ip_address(a) for a in ("169.254.169.254", "127.0.0.1", "93.184.215.14")]
    allowed, refused = screen(found, allow_private=True)
    assert allowed == found[1:] and [r.address for r in refused] == ["169.254.169.254"]


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "017700000001", "0x7f000001", "localhost"])
async def test_numeric_tricks_resolve_to_the_address_they_reach(host: str) -> None:
    found = await resolve(host, 80)
    assert ipaddress.ip_address("127.0.0.1") in found
    assert all(judge(address, allow_private=False) is not None for address in found)


async def test_zero_resolves_to_the_unspecified_address() -> None:
    assert await resolve("0", 80) == [ipaddress.ip_address("0.0.0.0")]
