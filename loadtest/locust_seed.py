"""``python -m loadtest.locustfile seed``: create N wallets through the API and fund them with operator
credits, for the Locust run's ``SHARDPAY_FUNDED_WALLETS`` file."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from loadtest.locust_config import DEFAULT_HOST, api_key


async def seed(host: str, key: str, wallets: int, amount: int, currency: str, concurrency: int) -> list[str]:
    import httpx

    from shardpay.config import Settings
    from shardpay.domain.errors import ApiError
    from shardpay.services import wallets as wallet_service
    from shards.pools import open_shards

    settings = Settings.from_env()
    run = uuid.uuid4().hex[:12]
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {key}"}

    async def create(http: httpx.AsyncClient, n: int) -> str:
        idempotency_key = f"locust-seed-{run}-{n}"
        body = {"currency": currency, "reference": f"locust-funded-{run}-{n}"}
        for attempt in range(10):
            try:
                response = await http.post("/v1/wallets", json=body, headers={"Idempotency-Key": idempotency_key})
            except httpx.TransportError:
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status_code == 201:
                wallet_id: str = response.json()["id"]
                return wallet_id
            if response.status_code in (409, 429, 503):
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            raise SystemExit(f"POST /v1/wallets answered {response.status_code}: {response.text}")
        raise SystemExit("POST /v1/wallets kept failing; is the gateway up?")

    async def one(http: httpx.AsyncClient, shards: Any, n: int) -> str:
        async with gate:
            wallet_id = await create(http, n)
            try:
                await wallet_service.credit(shards, wallet_id, amount, "locust load test funding")
            except ApiError:
                raise SystemExit(
                    f"{wallet_id} was created by {host} but is not in the databases of "
                    f"SHARDPAY_DB_PREFIX={settings.db_prefix!r}: run the seed with the gateway's SHARDPAY_* settings"
                ) from None
            return wallet_id

    async with (
        httpx.AsyncClient(base_url=host, headers=headers, timeout=30) as http,
        open_shards(settings, pool_max=max(2, min(concurrency, 8))) as shards,
    ):
        return list(await asyncio.gather(*(one(http, shards, n) for n in range(wallets))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.locustfile", description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("seed", help="create and fund wallets, write their ids to a file")
    cmd.add_argument("--wallets", type=int, default=200, help="how many wallets (default 200)")
    cmd.add_argument("--amount", type=int, default=1_000_000, help="credit per wallet, minor units (default 10^6)")
    cmd.add_argument("--currency", default=os.environ.get("SHARDPAY_CURRENCY", "USD"))
    cmd.add_argument("--host", default=DEFAULT_HOST, help=f"the gateway (default {DEFAULT_HOST})")
    cmd.add_argument("--out", default="loadtest/results/funded_wallets.txt", help="file to write (overwritten)")
    cmd.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if args.wallets < 2 or not 1 <= args.amount <= 10**15:
        parser.error("need --wallets >= 2 and 1 <= --amount <= 10^15")
    started = time.monotonic()
    ids = asyncio.run(
        seed(args.host.rstrip("/"), api_key(), args.wallets, args.amount, args.currency.upper(), args.concurrency)
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{wallet_id}\n" for wallet_id in ids))
    summary = {
        "file": str(out),
        "wallets": len(ids),
        "amount": args.amount,
        "currency": args.currency.upper(),
        "seconds": round(time.monotonic() - started, 2),
        "next": f"export SHARDPAY_FUNDED_WALLETS={out}",
    }
    print(json.dumps(summary, indent=2))
