"""The ``shardpay`` command as an operator runs it: a process, JSON on stdout, a clear error and exit 1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
import orjson

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import key, new_wallet


async def shardpay(env: dict[str, str], *args: str) -> tuple[int, Any, str]:
    """(exit status, the JSON it printed or None, stderr)."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "shardpay", *args], env=env, capture_output=True, timeout=60
    )
    out = orjson.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, out, done.stderr.decode()


async def available(client: httpx.AsyncClient, wallet: str) -> int:
    balance: int = (await client.get(f"/v1/wallets/{wallet}")).json()["available"]
    return balance


async def test_wallets_credit_with_a_key_credits_once(
    env: dict[str, str], client: httpx.AsyncClient, shards: Shards
) -> None:
    wallet = await new_wallet(client, shards)
    idem = key()
    credit = ("wallets", "credit", wallet, "250", "--reason", "opening balance", "--idempotency-key", idem)
    status, first, _ = await shardpay(env, *credit)
    assert status == 0 and first["replayed"] is False and first["available"] == 250, first
    # A re-run after, say, a dropped connection: the same answer, credited once.
    status, again, _ = await shardpay(env, *credit)
    assert status == 0 and again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {k: v for k, v in first.items() if k != "replayed"}
    assert await available(client, wallet) == 250
    # Two at once with one key: still one credit.
    racing = await asyncio.gather(*(shardpay(env, *credit[:6], "--idempotency-key", f"{idem}-race") for _ in range(2)))
    assert [s for s, _, _ in racing] == [0, 0] and sorted(o["replayed"] for _, o, _ in racing) == [False, True]
    assert await available(client, wallet) == 500
    # The same key for another amount, or another wallet on any shard: refused, nothing moves.
    other = await new_wallet(client, shards, shard=(shards.index_of(int(wallet[4:8], 16)) + 1) % 4)
    for args in (("wallets", "credit", wallet, "1", "--reason", "opening balance"),
                 ("wallets", "credit", other, "250", "--reason", "opening balance")):  # fmt: skip
        status, out, err = await shardpay(env, *args, "--idempotency-key", idem)
        assert status == 1 and out is None and "Idempotency-Key" in err, err
    assert await available(client, wallet) == 500 and await available(client, other) == 0


async def test_wallets_credit_without_a_key_makes_one_up_and_prints_it(
    env: dict[str, str], client: httpx.AsyncClient, shards: Shards
) -> None:
    wallet = await new_wallet(client, shards)
    status, out, _ = await shardpay(env, "wallets", "credit", wallet, "5", "--reason", "goodwill")
    assert status == 0 and out["idempotency_key"].startswith("credit_")
    status, again, _ = await shardpay(
        env, "wallets", "credit", wallet, "5", "--reason", "goodwill", "--idempotency-key", out["idempotency_key"]
    )
    assert status == 0 and again["replayed"] is True and await available(client, wallet) == 5


async def test_wallets_credit_names_the_key_to_retry_with_when_a_shard_is_down(
    env: dict[str, str], client: httpx.AsyncClient, shards: Shards
) -> None:
    wallet = await new_wallet(client, shards, shard=1)
    dsns = [f"postgresql://postgres@127.0.0.1:{port}/x" for port in (1, 1, 1, 1)]
    dsns[0] = env.get("SHARDPAY_PG", "postgresql://postgres@127.0.0.1:5432") + f"/{env['SHARDPAY_DB_PREFIX']}_shard_0"
    down = {**env, "SHARDPAY_SHARD_DSNS": ",".join(dsns), "SHARDPAY_DB_TIMEOUT": "1"}
    credit = ("wallets", "credit", wallet, "5", "--reason", "r", "--idempotency-key", "k1")
    status, out, err = await shardpay(down, *credit)
    assert status == 1 and out is None
    assert "--idempotency-key k1" in err, err
    assert await available(client, wallet) == 0


async def create_merchant_with(env: dict[str, str], url: str, allow_private: str) -> tuple[int, Any, str]:
    env = {**env, "SHARDPAY_WEBHOOK_ALLOW_PRIVATE": allow_private}
    return await shardpay(env, "merchants", "create", "--name", "hooked", "--webhook-url", url)


async def test_merchants_create_refuses_a_webhook_url_that_reaches_a_private_or_loopback_address(
    env: dict[str, str], migrated: Settings
) -> None:
    # Judged on the address, not the text: every form of 127.0.0.1, a name for it, private ranges.
    refused = {
        "http://127.0.0.1:9000/hook": "127.0.0.1 is loopback",
        "http://localhost:9000/hook": "localhost resolves to 127.0.0.1, which is loopback",
        "http://2130706433/hook": "2130706433 resolves to 127.0.0.1, which is loopback",
        "http://0x7f.1/hook": "0x7f.1 resolves to 127.0.0.1, which is loopback",
        "http://127.1/hook": "127.1 resolves to 127.0.0.1, which is loopback",
        "http://[::ffff:127.0.0.1]/hook": "(it carries 127.0.0.1)",
        "http://[::1]/hook": "::1 is loopback",
        "http://10.1.2.3/hook": "10.1.2.3 is private",
        "http://100.64.0.1/hook": "100.64.0.1 is carrier-grade NAT",
        "https://[fd00::1]/hook": "fd00::1 is unique local (private)",
    }
    outcomes = await asyncio.gather(*(create_merchant_with(env, url, "false") for url in refused))
    for (url, why), (status, out, err) in zip(refused.items(), outcomes, strict=True):
        assert status == 1 and out is None, (url, out)
        assert url in err and why in err and "SHARDPAY_WEBHOOK_ALLOW_PRIVATE=true" in err, err
    # The README's walk-through, as under make run.
    status, out, err = await create_merchant_with(env, "http://127.0.0.1:9000/hook", "true")
    assert status == 0 and out["webhook_url"] == "http://127.0.0.1:9000/hook", err


async def test_merchants_create_refuses_link_local_unspecified_and_multicast_even_when_private_is_allowed(
    env: dict[str, str], migrated: Settings
) -> None:
    refused = {
        "http://169.254.169.254/latest/meta-data": "169.254.169.254 is link-local",
        "http://0.0.0.0:9000/hook": "0.0.0.0 is unspecified",
        "http://0/hook": "0 resolves to 0.0.0.0, which is unspecified",
        "http://[::]:9000/hook": ":: is unspecified",
        "http://[fe80::1]/hook": "fe80::1 is link-local",
        "http://224.0.0.1/hook": "224.0.0.1 is multicast",
        "http://255.255.255.255/hook": "255.255.255.255 is broadcast",
        "http://[::ffff:169.254.169.254]/hook": "link-local",
    }
    outcomes = await asyncio.gather(*(create_merchant_with(env, url, "true") for url in refused))
    for (url, why), (status, out, err) in zip(refused.items(), outcomes, strict=True):
        assert status == 1 and out is None, (url, out)
        assert url in err and why in err and "unless" not in err, err


async def test_merchants_create_takes_a_public_address_and_warns_about_a_name_that_does_not_resolve(
    env: dict[str, str], migrated: Settings
) -> None:
    status, out, err = await create_merchant_with(env, "https://93.184.215.14/hook", "false")
    assert status == 0 and "webhook_warning" not in out, err
    # .invalid never resolves (RFC 6761): taken, since every delivery checks the address it connects to.
    status, out, err = await create_merchant_with(env, "https://hooks.example.invalid/hook", "false")
    assert status == 0 and "does not resolve" in out["webhook_warning"], err
    for bad in ("ftp://example.com/hook", "http://[::1", "not a url"):
        status, out, err = await create_merchant_with(env, bad, "false")
        assert status == 1 and "must be an http(s) URL" in err, (bad, err)
