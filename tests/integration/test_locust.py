"""The Locust file runs headless against a real gateway: no failed request, transfers flowing, a clean audit.

A short, bounded run (8 s, 20 users) of ``loadtest/locustfile.py`` exactly as an operator would start it
(``python -m locust -f loadtest/locustfile.py --headless ... --csv ...``), over wallets funded the way the
seed helper funds them (an operator credit through the services layer).
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from pathlib import Path

import httpx
import pytest

from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import StackMerchant, audit_clean, new_wallet

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

pytestmark = pytest.mark.slow


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


async def test_locustfile_headless_run(
    gateway: str, merchant: StackMerchant, client: httpx.AsyncClient, shards: Shards, migrated: Settings,
    tmp_path: Path,
) -> None:  # fmt: skip
    funded = [await new_wallet(client, shards, funds=1_000_000) for _ in range(10)]
    wallets_file = tmp_path / "funded_wallets.txt"
    wallets_file.write_text("".join(f"{wallet_id}\n" for wallet_id in funded))
    prefix = tmp_path / "locust"

    # Only this run's settings reach the load generator, whatever the developer's shell exports.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHARDPAY_", "LOCUST_"))}
    env |= {
        "SHARDPAY_API_KEY": merchant.api_key,
        "SHARDPAY_FUNDED_WALLETS": str(wallets_file),
        "SHARDPAY_LOCUST_WAIT": "0.05,0.3",
    }
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", gateway,
        "-u", "20", "-r", "20", "--run-time", "8s", "--stop-timeout", "5", "--only-summary", "--csv", str(prefix),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    log = output.decode(errors="replace")

    # Locust exits 0 when no request failed and nothing raised (--exit-code-on-error, default 1, otherwise).
    assert proc.returncode == 0, log

    stats = {(row["Type"], row["Name"]): row for row in read_csv(Path(f"{prefix}_stats.csv"))}
    transfers = stats[("POST", "/v1/transfers")]
    assert int(transfers["Request Count"]) > 0, log
    assert int(transfers["Failure Count"]) == 0, log
    assert int(stats[("", "Aggregated")]["Failure Count"]) == 0, log
    assert read_csv(Path(f"{prefix}_failures.csv")) == [], log

    outcomes = {row["Outcome"]: int(row["Count"]) for row in read_csv(Path(f"{prefix}_outcomes.csv"))}
    assert outcomes.get("transfer.succeeded", 0) + outcomes.get("transfer.processing", 0) > 0, outcomes
    # A double-submitted transfer is answered with the stored response, marked as a replay.
    assert outcomes.get("transfer.resend_replayed", 0) > 0, outcomes

    await audit_clean(migrated)
