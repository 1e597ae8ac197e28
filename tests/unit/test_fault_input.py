"""A Fault's strings are bounded at every door (issue 8 §2): the model refuses what is over its
bounds naming the field, and the detectors, whose labels come from OTLP, cut theirs to fit
instead of failing the exporter's request."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from selfheal.detection.detector_config import parse_detector_config
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.domain import Fault
from selfheal.domain.fault import (
    LABEL_KEY_MAX,
    LABEL_VALUE_MAX,
    LABELS_MAX,
    SERVICE_MAX,
    TARGET_MAX,
    TYPE_MAX,
    clip,
    fit_labels,
)
from selfheal.workflows.contract import FAULT_SERVICE, FAULT_TYPE


def fault(**fields: Any) -> Fault:
    return Fault.model_validate({"service": "shop", "type": "t", **fields})


def test_search_attribute_fields_are_bounded_well_under_temporals_limit() -> None:
    # Temporal refuses a keyword search attribute over 2048 bytes (a 502 at the door)
    assert FAULT_SERVICE.name == "FaultService" and FAULT_TYPE.name == "FaultType"
    assert SERVICE_MAX * 4 <= 2048 and TYPE_MAX * 4 <= 2048  # even in 4-byte UTF-8
    assert fault(service="s" * SERVICE_MAX, type="t" * TYPE_MAX).type == "t" * TYPE_MAX


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"type": "t" * 5000}, ("type",)),
        ({"service": "é" * (SERVICE_MAX + 1)}, ("service",)),
        ({"target": "x" * (TARGET_MAX + 1)}, ("target",)),
        ({"summary": "s" * 4097}, ("summary",)),
        ({"source": "s" * 65}, ("source",)),
        ({"labels": {"team": "v" * (LABEL_VALUE_MAX + 1)}}, ("labels", "team")),
        ({"labels": {"k" * (LABEL_KEY_MAX + 1): "v"}}, ("labels",)),
        ({"labels": {f"k{i}": "v" for i in range(LABELS_MAX + 1)}}, ("labels",)),
        ({"values": {f"v{i}": 1.0 for i in range(65)}}, ("values",)),
        ({"health_url": "notaurl"}, ("health_url",)),
        ({"health_url": "file:///etc/passwd"}, ("health_url",)),
        ({"health_url": "http://" + "h" * 2100}, ("health_url",)),
        ({"metric": {"url": "/metrics", "name": "m", "max": 1}}, ("metric", "url")),
    ],
)
def test_the_model_refuses_what_is_over_its_bounds(fields: dict[str, Any], loc: tuple[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        fault(**fields)
    assert tuple(caught.value.errors()[0]["loc"]) == loc


def test_bounds_accept_what_real_sources_send() -> None:
    ok = fault(
        target="x" * TARGET_MAX,
        labels={f"k{i}": "v" * LABEL_VALUE_MAX for i in range(LABELS_MAX)},
        health_url="https://shop.example:8443/healthz?deep=1",
        metric={"url": "http://127.0.0.1:9090/metrics", "name": 'm{a="b"}', "max": 1},
    )
    # a URL is checked, not rewritten
    assert ok.health_url == "https://shop.example:8443/healthz?deep=1"
    assert ok.metric is not None and ok.metric.url == "http://127.0.0.1:9090/metrics"


def test_the_bounds_are_documented_in_the_schema() -> None:
    schema = Fault.model_json_schema()["properties"]
    assert (
        schema["type"]["maxLength"] == TYPE_MAX and str(TYPE_MAX) in schema["type"]["description"]
    )
    assert schema["service"]["maxLength"] == SERVICE_MAX
    assert schema["labels"]["maxProperties"] == LABELS_MAX
    assert str(LABEL_KEY_MAX) in schema["labels"]["description"]


def test_clip_and_fit_labels() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcd", 3) == "ab…"
    fitted = fit_labels({"k" * (LABEL_KEY_MAX + 1): "dropped", "a": "v" * 5000, "b": "ok"}, room=1)
    assert fitted == {"a": "v" * (LABEL_VALUE_MAX - 1) + "…"}
    assert Fault(service="s", type="t", labels=fit_labels({str(i): "v" for i in range(500)}))


# -------------------------------------------------------------------- detectors: OTLP labels

CONFIG = """\
metrics:
  - name: errors
    metric: error_ratio
    detector: ewma
    params: {direction: up, min_points: 5, min_std: 0.02, clip: 3}
    fault: {type: error_rate_high, service: fallback, service_label: service.name,
            target_label: pod}
heartbeats:
  components:
    - match: "*"
      service: beats
"""


def anomaly(labels: dict[str, str]) -> Fault:
    router = MetricsRouter(parse_detector_config(CONFIG, "t.yaml"))
    for i in range(10):
        assert router.observe("error_ratio", labels, 1_700_000_000.0 + i, 0.0) == []
    [raised] = router.observe("error_ratio", labels, 1_700_000_100.0, 0.9)
    return raised


def test_an_over_long_otlp_label_value_is_clipped_not_an_error() -> None:
    labels = {"service.name": "shop", "pod": "api-1", "http.url": "u" * 10_000}
    raised = anomaly({**labels, "k" * 500: "dropped", **{f"a{i}": "v" for i in range(300)}})
    assert raised.service == "shop" and raised.target == "api-1"
    assert raised.labels["http.url"] == "u" * (LABEL_VALUE_MAX - 1) + "…"
    assert len(raised.labels) == LABELS_MAX
    assert not any(len(k) > LABEL_KEY_MAX for k in raised.labels)
    # the detector's own labels are always kept
    assert raised.labels["metric"] == "error_ratio" and raised.labels["detector_rule"] == "errors"


def test_an_over_long_service_or_target_label_is_clipped_so_the_catalog_refuses_it() -> None:
    raised = anomaly({"service.name": "s" * 5000, "pod": "p" * 5000})
    assert raised.service == "s" * (SERVICE_MAX - 1) + "…"
    assert raised.target == "p" * (TARGET_MAX - 1) + "…"
    # '…' is in no catalog name: the door refuses it as an unknown service, with that reason


def test_a_heartbeat_fault_of_a_long_configured_target_fits() -> None:
    config = parse_detector_config(
        "heartbeats:\n  components:\n    - {match: '*', service: beats, target: "
        + "t" * 400
        + "}\n",
        "t.yaml",
    )
    clock = [0.0]
    router = MetricsRouter(config, clock=lambda: clock[0])
    for second in range(20):
        clock[0] = float(second)
        router.heartbeat("beat-1")
    [missed] = router.check_heartbeats(now=10_000.0)
    assert missed.target is not None and len(missed.target) == TARGET_MAX
