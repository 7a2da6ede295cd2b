"""The Grafana dashboard and the Prometheus alert rules under infra/ are well formed and name only metrics that a
running gateway exports: a renamed metric fails here, not silently on an SRE's screen during an incident."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
METRIC = re.compile(r"\bshardpay_[a-z_]+\b")
HISTOGRAM_PARTS = ("_bucket", "_count", "_sum")


def _exported(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def _base(name: str) -> str:
    for part in HISTOGRAM_PARTS:
        if name.endswith(part):
            return name.removesuffix(part)
    return name.removesuffix("_total") if name.endswith("_total") else name


def _expressions() -> dict[str, str]:
    rules = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())
    found = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    dashboard = json.loads((INFRA / "grafana" / "shardpay.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found[f"{panel['title']} / {target['refId']}"] = target["expr"]
    return found


def test_alert_rules_are_well_formed() -> None:
    rules = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {a["alert"] for a in alerts} >= {"ShardpayShardWithoutPrimary", "ShardpayOutboxLagGrowing",
                                            "ShardpayServerErrors", "ShardpayDeadLetters"}  # fmt: skip
    for alert in alerts:
        assert alert["labels"]["severity"] in ("page", "ticket") and alert["annotations"]["summary"], alert
        assert alert["expr"].count("(") == alert["expr"].count(")"), alert["alert"]


async def test_every_metric_the_dashboard_and_alerts_use_is_exported(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        exported = {_base(name) for name in _exported((await http.get("/metrics")).text)}
    for where, expression in _expressions().items():
        used = {_base(name) for name in METRIC.findall(expression)}
        assert used and used <= exported, (where, used - exported)
