from __future__ import annotations

import random
from pathlib import Path

import pytest

from selfheal.core.catalog import load_services
from selfheal.detection.detector_config import load_detector_config
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.devstack.demo.checkout import SCENARIOS as INJECTABLE
from selfheal.devstack.demo.common import Sample, parse_traceparent, prometheus_text
from selfheal.devstack.demo.scenarios import SCENARIOS, UnknownScenario, get_scenario
from selfheal.models.catalog import load_catalog

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def test_every_scenario_is_injectable_and_names_its_root_cause_and_component() -> None:
    assert set(SCENARIOS) == set(INJECTABLE)
    assert {name: (s.root_cause, s.component) for name, s in SCENARIOS.items()} == {
        "error_burst": ("bad_feature_flag", "checkout"),
        "hang": ("process_hung", "checkout"),
        "crash": ("process_crashed", "checkout"),
        "poisoned_cache": ("cache_poisoned", "checkout"),
        "dependency_slow": ("dependency_degraded", "checkout"),
        "inventory_errors": ("dependency_failing", "inventory"),
    }
    assert get_scenario("hang").inject_path == "/inject/hang"


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(UnknownScenario, match="'meteor'; known: error_burst, hang, crash"):
        get_scenario("meteor")


def test_every_scenario_has_a_solution_on_its_component() -> None:
    specs = load_catalog(RUNBOOKS / "solutions")
    catalog = load_services(RUNBOOKS / "services.yaml")
    for scenario in SCENARIOS.values():
        fitting = [
            s
            for s in specs
            if s.pattern == scenario.root_cause and s.service in (None, scenario.component)
        ]
        assert fitting, scenario.name
        service = catalog.get(scenario.component)
        assert service is not None
        assert all(service.allows_action(step.action) for s in fitting for step in s.steps)
    # a restart of checkout is no answer to inventory's fault
    failing = [s for s in specs if s.pattern == "dependency_failing"]
    assert [step.params for s in failing for step in s.steps] == [{"process": "inventory"}]


def test_the_catalog_declares_both_services_and_the_metric_queries() -> None:
    catalog = load_services(RUNBOOKS / "services.yaml")
    checkout, inventory = catalog.get("checkout"), catalog.get("inventory")
    assert checkout is not None and inventory is not None
    assert catalog.dependencies("checkout") == ["inventory"]
    queries = checkout.evidence.metrics.queries
    assert {"error_ratio", "latency_p99", "requests", "last_change_timestamp"} <= set(queries)
    assert all('{service="${service}"}' in q for q in queries.values())


def feed(router: MetricsRouter, name: str, service: str, values: list[float]) -> list[str]:
    labels = {"service.name": service, "service": service}
    return [
        f"{f.service}/{f.target}/{f.type}"
        for i, value in enumerate(values)
        for f in router.observe(name, labels, 1e9 + i, value)
    ]


def test_the_detectors_raise_checkout_faults_on_errors_and_latency_only_for_checkout() -> None:
    config = load_detector_config(RUNBOOKS / "detectors.yaml")
    jitter = random.Random(7)
    calm_latency = [0.004 + jitter.random() * 0.01 for _ in range(30)]

    router = MetricsRouter(config)
    assert feed(router, "demo_error_ratio", "checkout", [0.0] * 20) == []
    assert "checkout/checkout/error_rate_high" in feed(
        router, "demo_error_ratio", "checkout", [0.6] * 3
    )
    assert feed(router, "demo_request_duration_p99_seconds", "checkout", calm_latency) == []
    assert "checkout/checkout/latency_high" in feed(
        router, "demo_request_duration_p99_seconds", "checkout", [0.31] * 2
    )

    other = MetricsRouter(config)
    feed(other, "demo_error_ratio", "inventory", [0.0] * 20)
    assert feed(other, "demo_error_ratio", "inventory", [1.0] * 5) == []


def test_traceparent_and_prometheus_text() -> None:
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(header) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert parse_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert parse_traceparent("garbage") is None and parse_traceparent(None) is None
    text = prometheus_text(
        [
            Sample(
                "demo_flag_last_change_timestamp_seconds",
                "gauge",
                "h",
                1733000000.125,
                {"flag": "a"},
            )
        ]
    )
    assert 'demo_flag_last_change_timestamp_seconds{flag="a"} 1733000000.125' in text
