"""Webhooks reach only allowed addresses: judged on the address connected to, never through a proxy or a redirect.

The deliveries run the real notifications consumer on the real broker; the receivers are real HTTP(S) servers on
127.0.0.1, so "refused" is told apart from "tried and failed": a refused POST never reaches them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from events_support import Runner, WebhookReceiver, insert_events, running, transfer_event, wait_until

from events import egress
from events.addresses import IPAddress, WebhookAddressRefused
from events.notifications import run_notifications
from events.relay import run_relay
from shardpay.config import Settings
from shards.control import NewMerchant

pytestmark = pytest.mark.usefixtures("clean")
MakeMerchant = Callable[[str, str | None], Awaitable[NewMerchant]]
REFUSED = "WebhookAddressRefused"


def stack(settings: Settings, allow_private: bool) -> tuple[Runner, Runner]:
    """The relay and a notifications consumer with one retry 0.2 s after the first try, then dead."""
    notify = dataclasses.replace(settings, webhook_allow_private=allow_private, webhook_backoff=(0.2,))
    return (lambda stop: run_relay(settings, stop)), (lambda stop: run_notifications(notify, stop))


async def deliver(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool, make_merchant: MakeMerchant,
    urls: list[str], allow_private: bool,
) -> dict[str, asyncpg.Record]:  # fmt: skip
    """One event to a merchant per URL, until every row is final (delivered or dead); the rows by URL."""
    merchants = {url: (await make_merchant(f"m{i}", url)).merchant.id for i, url in enumerate(urls)}
    events = {url: transfer_event(merchant, 100) for url, merchant in merchants.items()}
    await insert_events(shard_pools[0], list(events.values()))
    async with running(*stack(settings, allow_private)) as group:
        await wait_until(_all_final(control, [e.event_id for e in events.values()]), 20, "final deliveries", group)
    rows = {r["event_id"]: r for r in await control.fetch("SELECT * FROM webhook_deliveries")}
    return {url: rows[event.event_id] for url, event in events.items()}


def _all_final(control: asyncpg.Pool, event_ids: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await control.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE event_id = ANY($1) AND status IN ('delivered', 'dead')",
            event_ids,
        )
        return bool(found == len(event_ids))

    return check


async def test_loopback_and_private_targets_are_refused_at_delivery_unless_allowed(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    port = receiver.port
    # Every spelling of the receiver's own 127.0.0.1, and private ranges nobody listens on here (a refusal is
    # told from a failed connection by its error class).
    urls = [
        receiver.url, f"http://localhost:{port}/hooks", f"http://2130706433:{port}/hooks",
        f"http://0x7f.1:{port}/hooks", f"http://127.1:{port}/hooks", f"http://[::ffff:127.0.0.1]:{port}/hooks",
        "http://10.255.255.1:9/hooks", "http://100.64.0.1:9/hooks", "http://[fd00::1]:9/hooks",
    ]  # fmt: skip
    rows = await deliver(settings, shard_pools, control, make_merchant, urls, allow_private=False)
    assert receiver.received == []
    for url, row in rows.items():
        assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 2, REFUSED), url
    logged = capsys.readouterr().err
    assert f'"error":"{REFUSED}"' in logged
    assert "127.0.0.1 is loopback" in logged and "10.255.255.1 is private" in logged
    # The same receiver with the setting on (a local stack, these tests): delivered.
    rows = await deliver(settings, shard_pools, control, make_merchant, [receiver.url], allow_private=True)
    assert rows[receiver.url]["status"] == "delivered" and len(receiver.received) == 1


async def test_link_local_unspecified_and_multicast_are_refused_even_when_private_is_allowed(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant,
) -> None:  # fmt: skip
    # On Linux a connection to 0.0.0.0 reaches the local host: this one would land on the receiver.
    urls = [
        f"http://0.0.0.0:{receiver.port}/hooks", f"http://0:{receiver.port}/hooks",
        f"http://[::ffff:0.0.0.0]:{receiver.port}/hooks", "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]:9/hooks", "http://224.0.0.1:9/hooks", "http://255.255.255.255:9/hooks",
    ]  # fmt: skip
    rows = await deliver(settings, shard_pools, control, make_merchant, urls, allow_private=True)
    assert receiver.received == []
    for url, row in rows.items():
        assert (row["status"], row["last_error"]) == ("dead", REFUSED), url


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant,
) -> None:  # fmt: skip
    redirecting = WebhookReceiver(redirect_to=receiver.url)
    await redirecting.start()
    try:
        rows = await deliver(settings, shard_pools, control, make_merchant, [redirecting.url], allow_private=True)
    finally:
        await redirecting.close()
    assert (rows[redirecting.url]["status"], rows[redirecting.url]["last_status"]) == ("dead", 307)
    assert len(redirecting.received) == 2 and receiver.received == []


async def test_proxies_from_the_environment_are_not_used(
    settings: Settings, shard_pools: list[asyncpg.Pool], control: asyncpg.Pool,
    receiver: WebhookReceiver, make_merchant: MakeMerchant, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    proxy = WebhookReceiver()  # answers 200 to anything: a proxy that would swallow the webhook
    await proxy.start()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        rows = await deliver(settings, shard_pools, control, make_merchant, [receiver.url], allow_private=True)
    finally:
        await proxy.close()
    assert rows[receiver.url]["status"] == "delivered"
    assert len(receiver.received) == 1 and proxy.received == []


def resolving(answers: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[IPAddress]]]:
    """A resolver for names no real DNS knows: a connection that succeeds went to the address it was given."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve


async def post(client: httpx.AsyncClient, url: str) -> httpx.Response:
    async with client:
        return await client.post(url, content=b"{}")


async def test_the_connection_goes_to_the_address_checked_and_host_and_tls_keep_the_name(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    tls = egress.tls_context()
    # hooks.test resolves (here) to a refused link-local address and to the receiver's loopback one: the first
    # is skipped, the second connected to by address, while the request still names hooks.test.
    resolve = resolving({"hooks.test": ["169.254.169.254", "127.0.0.1"]})
    response = await post(egress.open_client(True, 1, 2.0, tls, resolve), f"http://hooks.test:{receiver.port}/h")
    assert response.status_code == 200 and receiver.received[0].headers["host"] == f"hooks.test:{receiver.port}"
    with pytest.raises(WebhookAddressRefused, match=r"127\.0\.0\.1 is loopback"):
        await post(egress.open_client(False, 1, 2.0, tls, resolve), f"http://hooks.test:{receiver.port}/h")
    assert len(receiver.received) == 1
    # HTTPS: the certificate is checked against the name, and SNI carries it, though the socket went to an address.
    async with _tls_receiver(tmp_path) as (secure, ca, names):
        client = egress.open_client(True, 1, 2.0, ca, resolving({"hooks.test": ["127.0.0.1"]}))
        response = await post(client, f"https://hooks.test:{secure.port}/h")
    assert response.status_code == 200 and names == ["hooks.test"] and len(secure.received) == 1


def _certificate(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for hooks.test only: the server's context, and a client's that trusts it alone."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=hooks.test",
         "-addext", "subjectAltName=DNS:hooks.test"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


@contextlib.asynccontextmanager
async def _tls_receiver(directory: Path) -> AsyncIterator[tuple[WebhookReceiver, ssl.SSLContext, list[str]]]:
    """An HTTPS receiver for hooks.test: (the receiver, a client context that trusts it, the SNI names it saw)."""
    server, client = _certificate(directory)
    names: list[str] = []

    def note(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name or "")

    server.sni_callback = note
    receiver = WebhookReceiver(tls=server)
    await receiver.start()
    try:
        yield receiver, client, names
    finally:
        await receiver.close()
