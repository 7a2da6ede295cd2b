"""CI's failover drill: shard 0's primary postmaster killed under load, on a real Patroni cluster behind HAProxy.

Patroni promotes the synchronous standby; the test asserts what the drill measured: no acknowledged transfer
lost, no key with two effects, the money conserved, the audit clean, no 500, no error on shard 1 (whose
requests never touch shard 0), and writes to shard 0 back within the 15 s target.
"""

from __future__ import annotations

from shardpay.drills.faults import FAULTS
from shardpay.drills.runner import RTO_TARGET, run_drill
from shardpay.ha.layout import Topology


async def test_killing_a_shard_primary_loses_nothing_and_fails_over_within_the_target(
    ha_topology: Topology,
) -> None:
    report = await run_drill(ha_topology, FAULTS["shard-primary-kill"], shard=0)
    summary = {k: report[k] for k in ("injected", "rto_s", "first_error_s", "errors_by_status", "checks")}
    assert report["transfers_acknowledged"] > 100, summary  # the load really ran through the fault
    assert report["details"]["lost"] == [], summary
    assert report["details"]["doubled"] == [], summary
    assert report["checks"]["money_conserved"] and report["checks"]["audit_clean"], report["details"]
    assert report["status_500"] == 0 and report["gave_up"] == 0, summary
    assert report["errors_on_other_shards"] == 0, summary
    assert report["first_error_s"] is not None, summary  # the fault was felt: a primary really died
    assert report["rto_s"] <= RTO_TARGET, summary
    assert report["restored_after_s"] is not None, summary  # the old primary rejoined as the standby
    assert report["ok"], summary
