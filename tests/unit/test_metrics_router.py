"""The router applies detectors.yaml: points to detectors, anomalies to Faults with stable
fingerprints, heartbeats to phi accrual."""

from __future__ import annotations

from datetime import UTC, datetime

from selfheal.detection.detector_config import parse_detector_config
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.domain.fault import fingerprint_of

CONFIG = """\
max_series: 3
metrics:
  - name: errors
    metric: demo_error_ratio
    detector: ewma
    params: {direction: up, min_points: 5, min_std: 0.02, clip: 3}
    fault: {type: error_rate_high, service: demo, target: demo-target, severity: critical}
  - name: latency
    metric: http.server.request.duration
    labels: {http.route: {regex: '/api/.*'}}
    detector: zscore
    params: {min_points: 5, direction: up, min_std: 0.005}
    threshold: 0.9
    fault: {type: latency_high, service: fallback, service_label: service.name,
            target_label: http.route}
heartbeats:
  components:
    - match: "demo*"
      service: demo
      target: demo-target
    - match: "worker-*"
      service: workers
"""


def router(now: list[float] | None = None) -> MetricsRouter:
    clock = now or [0.0]
    return MetricsRouter(parse_detector_config(CONFIG, "t.yaml"), clock=lambda: clock[0])


def feed(r: MetricsRouter, name: str, labels: dict[str, str], values: list[float]) -> list[int]:
    return [len(r.observe(name, labels, 1_700_000_000.0 + i, v)) for i, v in enumerate(values)]


def test_an_error_burst_raises_faults_that_share_one_fingerprint() -> None:
    r = router()
    assert feed(r, "demo_error_ratio", {}, [0.0] * 10) == [0] * 10
    faults = [f for t in range(3) for f in r.observe("demo_error_ratio", {}, 2e9 + t, 0.5)]
    assert len(faults) == 3
    assert {f.fingerprint for f in faults} == {
        fingerprint_of("demo", "error_rate_high", "demo-target")
    }
    first = faults[0]
    assert (first.service, first.type, first.target) == ("demo", "error_rate_high", "demo-target")
    assert first.severity == "critical"
    assert first.source == "otlp"
    assert first.detected_at == datetime.fromtimestamp(2e9, UTC)
    assert first.values["value"] == 0.5
    assert 0.5 <= first.values["anomaly_score"] <= 1.0
    assert first.labels["metric"] == "demo_error_ratio"
    assert "demo_error_ratio" in first.summary


def test_service_and_target_come_from_labels_with_the_literal_as_fallback() -> None:
    r = router()
    labelled = {"service.name": "shop", "http.route": "/api/pay"}
    unlabelled = {"http.route": "/api/cart"}
    feed(r, "http.server.request.duration", labelled, [0.05] * 10)
    feed(r, "http.server.request.duration", unlabelled, [0.05] * 10)
    [shop] = r.observe("http.server.request.duration", labelled, 2e9, 5.0)
    [fallback] = r.observe("http.server.request.duration", unlabelled, 2e9, 5.0)
    assert (shop.service, shop.target, shop.type) == ("shop", "/api/pay", "latency_high")
    assert (fallback.service, fallback.target) == ("fallback", "/api/cart")
    assert shop.fingerprint != fallback.fingerprint


def test_points_that_match_no_rule_are_ignored() -> None:
    r = router()
    health = {"http.route": "/health"}
    assert feed(r, "http.server.request.duration", health, [0.05] * 10) == [0] * 10
    assert r.observe("http.server.request.duration", health, 2e9, 50.0) == []
    assert r.observe("unknown_metric", {}, 2e9, 1e9) == []


def test_each_series_learns_on_its_own() -> None:
    r = router()
    slow, fast = {"http.route": "/api/slow"}, {"http.route": "/api/fast"}
    feed(r, "http.server.request.duration", slow, [2.0] * 10)
    feed(r, "http.server.request.duration", fast, [0.01] * 10)
    assert r.observe("http.server.request.duration", slow, 2e9, 2.0) == []
    assert len(r.observe("http.server.request.duration", fast, 2e9, 2.0)) == 1


def test_label_order_does_not_make_a_new_series() -> None:
    r = router()
    feed(r, "http.server.request.duration", {"http.route": "/api/a", "x": "1"}, [0.05] * 10)
    later = r.observe("http.server.request.duration", {"x": "1", "http.route": "/api/a"}, 2e9, 9.0)
    assert len(later) == 1  # learnt from the same series, so already past min_points


def test_series_beyond_max_series_evict_the_least_recently_used() -> None:
    r = router()
    routes = [{"http.route": f"/api/{i}"} for i in range(4)]
    for labels in routes[:3]:
        feed(r, "http.server.request.duration", labels, [0.05] * 10)
    feed(r, "http.server.request.duration", routes[3], [0.05])  # evicts /api/0
    # /api/0 starts again from nothing: under min_points it cannot score (and evicts /api/1).
    assert r.observe("http.server.request.duration", routes[0], 2e9, 9.0) == []
    assert len(r.observe("http.server.request.duration", routes[2], 2e9, 9.0)) == 1


def test_non_finite_values_are_skipped_without_harm() -> None:
    r = router()
    feed(r, "demo_error_ratio", {}, [0.0] * 10)
    assert r.observe("demo_error_ratio", {}, 2e9, float("nan")) == []
    assert r.observe("demo_error_ratio", {}, float("inf"), 0.0) == []
    assert r.observe("demo_error_ratio", {}, 2e9, 0.0) == []
    assert len(r.observe("demo_error_ratio", {}, 2e9, 0.5)) == 1


def test_silence_after_heartbeats_raises_one_fingerprint_until_they_return() -> None:
    now = [0.0]
    r = router(now)
    assert r.heartbeat("demo-target") is True
    for t in range(1, 30):
        now[0] = float(t)
        r.heartbeat("demo-target")
    assert r.check_heartbeats(30.0) == []
    late = r.check_heartbeats(29.0 + 10.0)
    assert len(late) == 1
    fault = late[0]
    assert (fault.service, fault.type, fault.target) == ("demo", "heartbeat_missed", "demo-target")
    assert fault.source == "heartbeat"
    assert fault.severity == "critical"
    assert fault.values["phi"] >= 8
    again = r.check_heartbeats(29.0 + 60.0)
    assert [f.fingerprint for f in again] == [fault.fingerprint]
    assert again[0].values["phi"] < float("inf")  # JSON-safe even when phi overflows
    now[0] = 90.0
    r.heartbeat("demo-target")
    assert r.check_heartbeats(90.5) == []


def test_heartbeats_of_unwatched_components_are_refused() -> None:
    r = router()
    assert r.heartbeat("stranger", 1.0) is False
    assert r.check_heartbeats(1e6) == []


def test_a_component_without_a_target_is_its_own_target() -> None:
    r = router()
    for t in range(10):
        r.heartbeat("worker-7", float(t))
    [fault] = r.check_heartbeats(100.0)
    assert (fault.service, fault.target) == ("workers", "worker-7")
    assert fault.labels == {"component": "worker-7"}
