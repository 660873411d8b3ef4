"""The monitoring files agree with the metric catalogue of docs/metrics.md (no network, no server).

The catalogue's tables are the one list of the metrics (name, type, labels). Every query of the
alerts (k8s/components/monitoring/prometheusrule.yaml) and of the Grafana dashboard
(k8s/components/monitoring/dashboards/xtyl.json) must parse (promql-parser) and may name only
metrics of that list, with labels the list gives them (or the labels Prometheus puts on every
target). Every metric of the list has a panel; every alert says its threshold and is documented;
compose's Prometheus scrapes every process and evaluates the same rules as Kubernetes.

``python libs/devstack/tests/test_monitoring_files.py --write-compose-rules`` regenerates
compose/prometheus-rules.yml from the PrometheusRule. Whether the processes really serve the
catalogue is checked beside the code, against a real scrape.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from xtyl_devstack.metric_catalogue import CATALOGUE, Metric, catalogue

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "k8s" / "components" / "monitoring"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboards" / "xtyl.json"
K8S_BASE = ROOT / "k8s" / "base"
COMPOSE = ROOT / "compose"
COMPOSE_RULES = COMPOSE / "prometheus-rules.yml"
COMPOSE_PROMETHEUS = COMPOSE / "prometheus.yml"
COMPOSE_MONITORING = COMPOSE / "docker-compose.monitoring.yml"

#: Every process and the port its /metrics is on (HTTP services: PORT; workers: HEALTH_PORT).
PROCESSES = {
    "gateway": 8000,
    "storage": 8000,
    "rag": 8000,
    "notify": 8000,
    "storage-worker": 8081,
    "rag-worker": 8081,
    "notify-worker": 8081,
}
WORKERS = {"storage-worker", "rag-worker", "notify-worker"}
#: Series Prometheus makes itself, with the labels a query may use on them.
BUILTIN_METRICS = {"up": frozenset[str]()}
#: Labels Prometheus adds to every series of a target (k8s monitors and compose's jobs).
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: Grafana's own variables, as the query it sends would have them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}
SEVERITIES = {"critical", "warning"}


# --------------------------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class Series:
    """A series name a query may select: its metric and the labels it has."""

    metric: str
    labels: frozenset[str]


def resolve(series: str, metrics: dict[str, Metric]) -> Series | str:
    """The catalogue metric behind ``series``, or why there is none."""
    if series in BUILTIN_METRICS:
        return Series(series, BUILTIN_METRICS[series])
    if series in metrics:
        if metrics[series].kind == "histogram":
            return f"{series} is a histogram: select its _bucket, _sum or _count"
        return Series(series, metrics[series].labels)
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and base in metrics and metrics[base].kind == "histogram":
            extra = {"le"} if suffix == "_bucket" else set[str]()
            return Series(base, metrics[base].labels | extra)
    return f"{series} is not in the catalogue of docs/metrics.md"


# --------------------------------------------------------------------------------- queries
@dataclass
class Query:
    """What a query selects, and what is wrong with it."""

    metrics: set[str]
    problems: list[str]


def selected(node: Any, metrics: dict[str, Metric]) -> Iterator[tuple[str | None, Any]]:
    """(series name, selector) of every vector selector under ``node``."""
    found: list[tuple[str | None, Any]] = []

    def visit(child: Any) -> None:
        if isinstance(child, promql_parser.VectorSelector):
            name = child.name
            if name is None:
                names = [m.value for m in child.matchers.matchers if m.name == "__name__"]
                name = names[0] if len(names) == 1 else None
            found.append((name, child))

    promql_parser.walk(node, visit)
    return iter(found)


def analyse(expr: str, metrics: dict[str, Metric]) -> Query:
    query = Query(set(), [])
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        query.problems.append(f"does not parse: {exc}")
        return query

    def labels_under(node: Any) -> set[str]:
        labels = set(TARGET_LABELS)
        for name, _ in selected(node, metrics):
            series = resolve(name, metrics) if name else None
            if isinstance(series, Series):
                labels |= series.labels
        return labels

    for name, selector in selected(tree, metrics):
        if name is None:
            query.problems.append(f"a selector without one metric name: {selector}")
            continue
        series = resolve(name, metrics)
        if isinstance(series, str):
            query.problems.append(series)
            continue
        query.metrics.add(series.metric)
        for matcher in selector.matchers.matchers:
            if matcher.name != "__name__" and matcher.name not in series.labels | TARGET_LABELS:
                query.problems.append(f"{name} has no label {matcher.name!r}")

    def visit(node: Any) -> None:
        grouping: list[str] = []
        inner: Any = None
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping, inner = list(node.modifier.labels), node.expr
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            grouping = [*(matching.labels if matching else []), *(node.modifier.group_labels or [])]
            inner = node
        if grouping:
            unknown = sorted(set(grouping) - labels_under(inner))
            if unknown:
                query.problems.append(f"groups by {unknown}, which no metric under it has")

    promql_parser.walk(tree, visit)
    return query


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


# --------------------------------------------------------------------------------- files
def prometheus_rule() -> dict[str, Any]:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert rule["kind"] == "PrometheusRule"
    return rule


def alerting_rules() -> list[dict[str, Any]]:
    return [r for g in prometheus_rule()["spec"]["groups"] for r in g["rules"] if "alert" in r]


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, those inside collapsed rows too."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL as Grafana would send it) of every panel target."""
    return [
        (panel["title"], grafana_to_promql(target["expr"]))
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def read_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


# --------------------------------------------------------------------------------- tests
def test_the_catalogue_is_a_well_formed_list() -> None:
    metrics = catalogue()
    assert len(metrics) >= 29, f"docs/metrics.md: only {len(metrics)} catalogue rows found"
    for metric in metrics.values():
        if metric.kind == "counter":
            assert metric.name.endswith("_total"), f"{metric.name}: counters end in _total"
        else:
            assert not metric.name.endswith("_total"), f"{metric.name}: only counters end in _total"
        if metric.kind == "histogram":
            assert metric.name.endswith("_seconds"), f"{metric.name}: durations are in seconds"
        assert "le" not in metric.labels, metric.name


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_alert_queries_parse_and_name_only_catalogue_metrics(rule: dict[str, Any]) -> None:
    query = analyse(rule["expr"], catalogue())
    assert not query.problems, f"{rule['alert']}: {query.problems}"
    assert query.metrics, f"{rule['alert']}: selects no metric"


def test_every_alert_says_its_threshold_and_is_documented() -> None:
    rules = alerting_rules()
    assert len(rules) >= 6
    documented = CATALOGUE.read_text(encoding="utf-8")
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "two alerts share a name"
    for rule in rules:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        description = annotations.get("description", "")
        assert len(description) > 80, f"{name}: the description must say the threshold and why"
        assert re.search(r"\d", description), f"{name}: the description names no threshold"
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name}: for: {rule['for']}"
        assert f"| `{name}` |" in documented, f"{name} is not in docs/metrics.md's alert table"


def test_dashboard_queries_parse_and_name_only_catalogue_metrics() -> None:
    metrics = catalogue()
    queries = dashboard_queries()
    assert len(queries) >= 20
    problems = [
        f"{title}: {problem}"
        for title, expr in queries
        for problem in analyse(expr, metrics).problems
    ]
    assert not problems, "\n".join(problems)


def test_the_dashboard_shows_every_metric_and_what_every_alert_watches() -> None:
    metrics = catalogue()
    shown = {m for _, expr in dashboard_queries() for m in analyse(expr, metrics).metrics}
    missing = sorted(set(metrics) - shown)
    assert not missing, f"no dashboard panel shows {missing}"
    watched = {m for rule in alerting_rules() for m in analyse(rule["expr"], metrics).metrics}
    assert watched <= shown, f"alerts watch {sorted(watched - shown)}, no panel shows it"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "two panels share an id"
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panel.get("description"), f"panel {panel['title']!r} has no description"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_compose_evaluates_the_same_rules_as_kubernetes() -> None:
    groups = read_yaml(COMPOSE_RULES)["groups"]
    assert groups == prometheus_rule()["spec"]["groups"], (
        "compose/prometheus-rules.yml differs from the PrometheusRule: run"
        " `.venv/bin/python libs/devstack/tests/test_monitoring_files.py --write-compose-rules`"
    )


def test_compose_prometheus_scrapes_every_process_and_stays_off_by_default() -> None:
    config = read_yaml(COMPOSE_PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(PROCESSES)
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        assert job.get("honor_labels") is True, name
        (discovery,) = job["dns_sd_configs"]
        assert discovery["names"] == [name], name
        assert discovery["port"] == PROCESSES[name], name
    (service,) = read_yaml(COMPOSE_MONITORING)["services"].values()
    assert service["profiles"] == ["monitoring"], "Prometheus must not start unless asked for"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"] if m.startswith("./")}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    rules = [target for target, source in mounts.items() if source == "./prometheus-rules.yml"]
    assert len(rules) == 1
    assert any(fnmatch.fnmatch(rules[0], pattern) for pattern in config["rule_files"])
    for path in (COMPOSE / "docker-compose.prod.yml", COMPOSE / "docker-compose.yml"):
        assert "prometheus" not in read_yaml(path)["services"], f"{path.name}: off by default"


def test_k8s_probes_monitors_and_compose_agree_on_the_ports() -> None:
    """The base probes the workers' listener by number, the component names that port for the
    PodMonitor, compose scrapes the same number; the ServiceMonitor reads the Services' port."""
    component = read_yaml(MONITORING / "kustomization.yaml")
    (patch,) = [p for p in component["patches"] if "worker" in p["target"]["name"]]
    (declared,) = yaml.safe_load(patch["patch"])[0]["value"]
    monitors = list(yaml.safe_load_all((MONITORING / "monitors.yaml").read_text("utf-8")))
    (pod_monitor,) = [m for m in monitors if m["kind"] == "PodMonitor"]
    (service_monitor,) = [m for m in monitors if m["kind"] == "ServiceMonitor"]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == declared["name"]
    for worker in WORKERS:
        deployment = read_yaml(K8S_BASE / f"{worker}.yaml")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] == declared["containerPort"], worker
        assert declared["containerPort"] == PROCESSES[worker]
    for name in PROCESSES.keys() - WORKERS:
        docs = list(yaml.safe_load_all((K8S_BASE / f"{name}.yaml").read_text("utf-8")))
        (service,) = [d for d in docs if d["kind"] == "Service"]
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports[service_monitor["spec"]["endpoints"][0]["port"]] == PROCESSES[name], name
    selected_apps = {
        value
        for monitor in monitors
        for expression in monitor["spec"]["selector"]["matchExpressions"]
        for value in expression["values"]
    }
    assert selected_apps == set(PROCESSES)


# --------------------------------------------------------------------------------- generator
class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (the queries) as literal blocks, readable as in the source."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _represent_str)

COMPOSE_RULES_HEADER = """\
# GENERATED from k8s/components/monitoring/prometheusrule.yaml (its spec.groups): edit that file,
# then run `.venv/bin/python libs/devstack/tests/test_monitoring_files.py --write-compose-rules`.
# libs/devstack/tests/test_monitoring_files.py fails while the two differ. Read by compose's
# Prometheus (docker-compose.monitoring.yml); thresholds and reasons: docs/metrics.md, "Alerts".
"""


def write_compose_rules() -> None:
    body = yaml.dump(
        {"groups": prometheus_rule()["spec"]["groups"]},
        Dumper=_LiteralDumper,
        sort_keys=False,
        width=100,
        allow_unicode=True,
    )
    temporary = COMPOSE_RULES.with_name(COMPOSE_RULES.name + ".tmp")
    temporary.write_text(COMPOSE_RULES_HEADER + body, encoding="utf-8")
    temporary.replace(COMPOSE_RULES)
    print(f"wrote {COMPOSE_RULES.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-compose-rules"]:
        sys.exit("usage: python libs/devstack/tests/test_monitoring_files.py --write-compose-rules")
    write_compose_rules()
