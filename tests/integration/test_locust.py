"""The Locust file runs headless against a real gateway: no failed request, transfers flowing, payments,
payouts and refunds going through the PSP simulator to their end, a clean audit.

A short, bounded run (8 s, 20 users) of ``loadtest/locustfile.py`` exactly as an operator would start it
(``python -m locust -f loadtest/locustfile.py --headless ... --csv ...``), over wallets funded the way the
seed helper funds them (an operator credit through the services layer), with the stack's PSP simulator (faults
off) and a running executor, so that payments, payouts and refunds become final.
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
from tests.conftest import Executor, StackMerchant, audit_clean, new_wallet
from tests.integration.payments.flows import FAULTS_OFF
from tests.psp_process import SimProcess

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

pytestmark = pytest.mark.slow
USERS = 20


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


async def test_locustfile_headless_run(
    gateway: str, merchant: StackMerchant, client: httpx.AsyncClient, shards: Shards, migrated: Settings,
    stack_sim: SimProcess, executor: Executor, tmp_path: Path,
) -> None:  # fmt: skip
    async with httpx.AsyncClient(base_url=stack_sim.url, timeout=10) as sim:
        assert (await sim.put("/sim/faults", json=FAULTS_OFF)).status_code == 200
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
        # Every checkout session's hosted page must be on the stack's simulator.
        "SHARDPAY_PSP_PUBLIC_URL": stack_sim.url,
    }
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", gateway,
        "-u", str(USERS), "-r", str(USERS), "--run-time", "8s", "--stop-timeout", "5", "--only-summary",
        "--csv", str(prefix),
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
    # Every user got its card through the hosted page; money came in and went out, and was followed to its end.
    assert outcomes.get("payment_method.created") == USERS and "payment_method.unavailable" not in outcomes, outcomes
    for route in (("GET", "/pay/{token}"), ("POST", "/pay/{token}"), ("POST", "/v1/payments"), ("POST", "/v1/payouts")):
        assert int(stats[route]["Request Count"]) > 0, (route, log)
    assert outcomes.get("payment.succeeded", 0) > 0 and outcomes.get("payout.paid", 0) > 0, outcomes
    assert outcomes.get("refund.created", 0) > 0, outcomes
    # Faults off: nothing failed but payouts to ba_locust_fail, nothing was left processing.
    unexpected = {name for name in outcomes if name.endswith(("still_processing", ".failed"))} - {"payout.failed"}
    assert not unexpected, outcomes

    await audit_clean(migrated)
