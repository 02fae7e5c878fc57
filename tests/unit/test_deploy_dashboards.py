"""deploy/grafana/gatehouse.json and deploy/prometheus/alerts.yml: both parse, cover what DESIGN
11 asks of them, and every `gatehouse_*` name and label they use is one that `GET /metrics`
lists (read from a live app, not from a list kept here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gatehouse.domain import events
from gatehouse.observability.prometheus import prometheus_metrics

from .api_client import Api

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gatehouse.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
NAME = re.compile(r"\bgatehouse_[a-z0-9_]+")
# A selector `name{label="value", label=~"regex"}`: its label names and exact values.
SELECTOR = re.compile(r"\b(gatehouse_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-z_]+)\s*(=~|!=|!~|=)\s*"([^"]*)"')
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "gatehouse" and board["panels"]
    exprs = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        exprs += [t["expr"] for t in panel["targets"]]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"].startswith("Gatehouse") and rule["expr"].strip()
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
    return rules


async def listed(api: Api) -> dict[str, set[str]]:
    """Every sample name `/metrics` lists (from its TYPE lines), with its metric's labels."""
    text = (await api.client.get("/metrics")).text
    metrics = vars(prometheus_metrics()).values()
    labels = {m._name: set(m._labelnames) for m in metrics if hasattr(m, "_labelnames")}
    names: dict[str, set[str]] = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        base = name.removesuffix("_total")
        own = labels.get(base, set()) | ({"le"} if kind == "histogram" else set())
        for suffix in SUFFIXES.get(kind, ("",)):
            names[name + suffix] = own
    return names


def check(exprs: list[str], names: dict[str, set[str]]) -> set[str]:
    used: set[str] = set()
    for expr in exprs:
        for name in NAME.findall(expr):
            assert name in names, f"{name} (in {expr}) is not listed by /metrics"
            used.add(name)
        for name, selector in SELECTOR.findall(expr):
            for label, _op, value in MATCHER.findall(selector):
                assert label in names[name], f"{name} has no label {label} (in {expr})"
                if label == "type" and _op == "=":
                    assert value in vars(events).values(), f"no event type {value}"
    return used


async def test_the_dashboard_uses_only_listed_metrics_and_covers_design_11(api: Api) -> None:
    exprs = dashboard_exprs()
    used = check(exprs, await listed(api))
    text = "\n".join(exprs)
    assert events.VERIFIED in text  # sign-ups
    assert "sum by (outcome, factor) (rate(gatehouse_logins_total" in text
    assert "gatehouse_job_duration_seconds_bucket" in used  # job latency
    assert "gatehouse_outbox_lag_seconds" in used
    assert "sum by (channel, outcome) (rate(gatehouse_deliveries_total" in text


async def test_the_alert_rules_use_only_listed_metrics_and_cover_design_11(api: Api) -> None:
    rules = alert_rules()
    used = check([r["expr"] for r in rules], await listed(api))
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert "gatehouse_outbox_lag_seconds" in by_name["GatehouseOutboxLagging"]
    assert "abandoned" in by_name["GatehouseDeliveriesAbandoned"]
    assert 'status=~"5.."' in by_name["GatehouseHigh5xxRate"]
    assert {"gatehouse_outbox_lag_seconds", "gatehouse_deliveries_total"} <= used
