"""Outcomes of the Locust run that are not requests (replays, 402s, retries, 429s, give-ups): counted per
process, sent to the master with each worker report, summed there, printed at the end and written to
``<csv prefix>_outcomes.csv``. Importing this module registers its Locust event listeners."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest.locust_config import config

log = logging.getLogger("shardpay.locust")

OUTCOMES: Counter[str] = Counter()
_ENVIRONMENT: Environment | None = None
OUTCOME_HELP = {
    "transfer.succeeded": "transfers answered 201 succeeded",
    "transfer.processing": "transfers answered 201 processing (cross-shard, second leg pending)",
    "transfer.insufficient_funds": "transfers answered 402 insufficient_funds (business outcome, not a failure)",
    "transfer.resend_replayed": "double-submitted transfers answered with the stored response",
    "wallet.created": "wallets created",
    "replayed": "responses with Idempotent-Replayed: true (all routes)",
    "replayed.after_retry": "replays that answered a retry after a timeout/503/409",
    "rate_limited": "429 answers (slept Retry-After, then retried)",
    "rate_limited.gave_up": "requests abandoned after SHARDPAY_LOCUST_MAX_RATE_LIMITED 429s",
    "retry.timeout": "timeouts retried (same Idempotency-Key)",
    "retry.connection_error": "connection errors retried (same Idempotency-Key)",
    "retry.503": "503 answers retried (same Idempotency-Key)",
    "retry.409": "409 idempotency_key_in_use answers retried",
    "gave_up": "requests abandoned after SHARDPAY_LOCUST_MAX_ATTEMPTS tries",
    "retry.hosted_page": "hosted page steps retried after a connection error or a 503",
    "payment_method.created": "pm_ tokens got through a checkout session and the PSP's hosted page (one per user)",
    "payment_method.unavailable": "users left without a pm_ token (the session or the hosted page failed)",
    "payment.created": "payments answered 201",
    "payment.succeeded": "payments seen final: every order succeeded",
    "payment.partially_failed": "payments seen final: some orders failed",
    "payment.failed": "payments seen final: every order failed",
    "payment.still_processing": "payments still processing after SHARDPAY_LOCUST_FOLLOW_FOR seconds",
    "payout.created": "payouts answered 201 processing",
    "payout.insufficient_funds": "payouts answered 402 insufficient_funds (business outcome)",
    "payout.paid": "payouts seen final: paid (to ba_locust)",
    "payout.failed": "payouts seen final: failed (to ba_locust_fail, as the PSP fails that account)",
    "payout.still_processing": "payouts still processing after SHARDPAY_LOCUST_FOLLOW_FOR seconds",
    "refund.created": "refunds answered 201 processing",
    "refund.insufficient_funds": "refunds answered 402: the wallet no longer holds the amount",
    "refund.refused": "refunds answered 400 amount_too_large or charge_not_refundable",
    "refund.succeeded": "refunds seen final: succeeded",
    "refund.failed": "refunds seen final: failed",
    "refund.still_processing": "refunds still processing after SHARDPAY_LOCUST_FOLLOW_FOR seconds",
}


def count(outcome: str, n: int = 1) -> None:
    OUTCOMES[outcome] += n


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    global _ENVIRONMENT
    _ENVIRONMENT = environment
    if isinstance(environment.runner, MasterRunner):
        return
    cfg = config()
    if not cfg.funded:
        log.warning(
            "SHARDPAY_FUNDED_WALLETS is not set: users transfer between their own empty wallets, so transfers "
            "answer 402 insufficient_funds. Seed funded wallets: python -m loadtest.locustfile seed --help"
        )


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    data["shardpay_outcomes"] = dict(OUTCOMES)
    OUTCOMES.clear()


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    OUTCOMES.update(data.get("shardpay_outcomes", {}))


@events.quit.add_listener
def _on_quit(exit_code: int, **_kwargs: Any) -> None:
    """After the master got the workers' final reports: print the outcomes and write ``<csv>_outcomes.csv``."""
    environment = _ENVIRONMENT
    if environment is None or isinstance(environment.runner, WorkerRunner):
        return
    rows = sorted(OUTCOMES.items())
    width = max((len(name) for name, _ in rows), default=10)
    lines = ["", "shardpay outcomes (not HTTP requests; summed over all workers)", "-" * (width + 12)]
    lines += [f"{name:<{width}} {value:>10}" for name, value in rows] or ["(none)"]
    print("\n".join(lines), flush=True)
    options = environment.parsed_options
    prefix = getattr(options, "csv_prefix", None) if options is not None else None
    if prefix:
        with open(f"{prefix}_outcomes.csv", "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["Outcome", "Count", "Meaning"])
            for name, value in rows:
                writer.writerow([name, value, OUTCOME_HELP.get(name, "")])
