"""Payload parsing, auth, the error-span store and the storm coalescer: pure logic."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from selfheal.api.auth import AuthError, TokenAuthority
from selfheal.api.traces import ErrorTraceStore
from selfheal.detection.parsers import (
    ErrorSpan,
    IntervalMeans,
    PayloadError,
    PayloadWarning,
    parse_alertmanager,
    parse_fault,
    parse_otlp_metrics,
    parse_otlp_traces,
)
from selfheal.domain import Fault
from selfheal.healings.coalesce import Coalescer


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "service": "checkout", **labels},
        "annotations": {"summary": "errors above 5%"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "a1b2c3d4e5f60718",
    }


def webhook(*alerts: dict[str, Any], **extra: Any) -> bytes:
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "selfheal",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
        **extra,
    }
    return json.dumps(body).encode()


# ------------------------------------------------------------------------------ Alertmanager


def test_alertmanager_alert_becomes_fault_with_unknown_fields_tolerated() -> None:
    body = webhook(
        alert(pod="api-1", severity="critical"),
        notification_reason="new_alert",
        routeLabels={"team": "pay"},
    )
    [signal] = parse_alertmanager(body)
    fault = signal.fault
    assert signal.firing
    assert (fault.service, fault.type, fault.target) == ("checkout", "HighErrorRate", "api-1")
    assert fault.severity == "critical"
    assert fault.summary == "errors above 5%"
    assert fault.labels["pod"] == "api-1"
    assert fault.source == "alertmanager"
    assert fault.fingerprint == "a1b2c3d4e5f60718-api-1"
    assert not fault.dry_run


def test_alert_target_label_order_job_fallback_and_dry_run() -> None:
    a = alert(target="t1", deployment="d1", pod="p1", selfheal_dry_run="true")
    del a["labels"]["service"]
    a["labels"]["job"] = "payments"
    [signal] = parse_alertmanager(webhook(a))
    assert (signal.fault.service, signal.fault.target) == ("payments", "t1")
    assert signal.fault.dry_run


def test_resolved_alert_names_the_same_healing_as_its_firing_one() -> None:
    [firing] = parse_alertmanager(webhook(alert(pod="p")))
    [resolved] = parse_alertmanager(webhook(alert("resolved", pod="p")))
    assert not resolved.firing
    assert resolved.fault.workflow_id == firing.fault.workflow_id
    [other] = parse_alertmanager(webhook(alert(pod="q")))
    assert other.fault.workflow_id != firing.fault.workflow_id


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        (b"{not json", "body", 400),
        (b"[1, 2]", "body", 422),
        (webhook(alert(), alerts="x"), "alerts", 422),
        (json.dumps({"version": "4"}).encode(), "alerts", 422),
        (webhook(alert(), {**alert(), "status": "pending"}), "alerts[1].status", 422),
        (webhook({**alert(), "labels": {"service": "s"}}), "alerts[0].labels.alertname", 422),
        (webhook({**alert(), "labels": {"alertname": "A"}}), "alerts[0].labels.service", 422),
        (webhook({**alert(), "labels": {"alertname": "A", "service": "s", "n": 1}}),
         "alerts[0].labels.n", 422),
        # only version 4: another version's fields may mean something else
        (webhook(alert(), version="3"), "version", 422),
        (webhook(alert(), version=4), "version", 422),
        (json.dumps({"alerts": [alert()]}).encode(), "version", 422),
        # over-long fields are refused naming the label they came from, never sent to Temporal
        (webhook(alert(alertname="A" * 5000)), "alerts[0].labels.alertname", 422),
        (webhook(alert(alertname="A" * 129)), "alerts[0].labels.alertname", 422),
        (webhook(alert(service="s" * 129)), "alerts[0].labels.service", 422),
        (webhook({**alert(), "labels": {"alertname": "A", "job": "j" * 129}}),
         "alerts[0].labels.job", 422),
        (webhook(alert(pod="p" * 254)), "alerts[0].labels.pod", 422),
        (webhook(alert(team="t" * 1025)), "alerts[0].labels.team", 422),
        (webhook(alert(**{"k" * 129: "v"})), "alerts[0].labels", 422),
        (webhook(alert(), alert(**{f"l{i}": "v" for i in range(130)})), "alerts[1].labels", 422),
    ],
)  # fmt: skip
def test_malformed_alertmanager_payload_names_the_field(
    body: bytes, field: str, status: int
) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_alertmanager(body)
    assert caught.value.field == field
    assert caught.value.status == status


def test_an_over_long_field_is_refused_without_echoing_it() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_alertmanager(webhook(alert(**{"k" * 5000: "v"})))
    assert caught.value.field == "alerts[0].labels"
    assert "at most 128" in caught.value.message and len(caught.value.message) < 200
    assert not caught.value.message.startswith("Value error")


def test_unknown_severity_keeps_the_alert_and_says_so() -> None:
    [signal] = parse_alertmanager(webhook(alert(severity="page")))
    assert signal.firing and signal.fault.severity == "warning"
    assert signal.warnings == (
        PayloadWarning(
            field="alerts[0].labels.severity",
            message="unknown severity 'page': taken as warning (expected info, warning or "
            "critical)",
        ),
    )
    [upper] = parse_alertmanager(webhook(alert(severity="Critical")))
    assert upper.fault.severity == "critical" and upper.warnings == ()
    for labels in ({}, {"severity": ""}):
        [absent] = parse_alertmanager(webhook(alert(**labels)))
        assert absent.fault.severity == "warning" and absent.warnings == ()


@pytest.mark.parametrize(
    ("spelling", "flag", "warned"),
    [
        *[(s, True, False) for s in ("true", "TRUE", "yes", "Yes", "1", "on", "On", " true ")],
        *[(s, False, False) for s in ("false", "FALSE", "no", "0", "off", "Off", "")],
        *[(s, True, True) for s in ("maybe", "2", "enabled", "y", "ture")],
    ],
)  # fmt: skip
def test_flag_labels_accept_the_usual_spellings_and_fail_safe(
    spelling: str, flag: bool, warned: bool
) -> None:
    labels = {"selfheal_dry_run": spelling, "selfheal_require_approval": spelling}
    [signal] = parse_alertmanager(webhook(alert(**labels)))
    assert signal.fault.dry_run is flag
    assert signal.fault.require_approval is flag
    fields = [w.field for w in signal.warnings]
    expected = ["alerts[0].labels.selfheal_dry_run", "alerts[0].labels.selfheal_require_approval"]
    assert fields == (expected if warned else [])
    if warned:
        assert "taken as true" in signal.warnings[0].message
        assert repr(spelling) in signal.warnings[0].message


def test_absent_flag_labels_are_false_without_warning() -> None:
    [signal] = parse_alertmanager(webhook(alert()))
    assert not signal.fault.dry_run and not signal.fault.require_approval
    assert signal.warnings == ()


def test_a_long_description_is_clipped_not_refused() -> None:
    a = alert()
    a["annotations"] = {"description": "d" * 10_000}
    [signal] = parse_alertmanager(webhook(a))
    assert len(signal.fault.summary) == 4096 and signal.fault.summary.endswith("…")
    [warning] = signal.warnings
    assert warning.field == "alerts[0].annotations.description"
    assert "clipped to 4096" in warning.message


def test_fault_json_errors_name_the_field() -> None:
    fault = parse_fault(b'{"service": "s", "type": "t", "target": "x"}')
    assert fault.fingerprint
    with pytest.raises(PayloadError) as caught:
        parse_fault(b'{"service": "s", "type": "t", "severity": "loud"}')
    assert caught.value.field == "severity"
    with pytest.raises(PayloadError) as caught:
        parse_fault(b'{"service": "s", "type": "t", "metric": {"url": "u"}}')
    assert caught.value.field.startswith("metric.")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "t" * 5000}, "type"),
        ({"service": "s" * 129}, "service"),
        ({"target": "x" * 254}, "target"),
        ({"summary": "s" * 4097}, "summary"),
        ({"source": "s" * 65}, "source"),
        ({"fingerprint": "f" * 129}, "fingerprint"),
        ({"labels": {"team": "t" * 1025}}, "labels.team"),
        ({"labels": {"k" * 129: "v"}}, "labels"),
        ({"values": {"v" * 129: 1.0}}, "values"),
        ({"health_url": "notaurl"}, "health_url"),
        ({"health_url": "ftp://host/x"}, "health_url"),
        ({"metric": {"url": "http://", "name": "m", "max": 1}}, "metric.url"),
        ({"metric": {"url": "http://m", "name": "m" * 513, "max": 1}}, "metric.name"),
    ],
)
def test_fault_json_over_its_bounds_is_refused_naming_the_field(
    fields: dict[str, Any], field: str
) -> None:
    body = json.dumps({"service": "s", "type": "t", **fields}).encode()
    with pytest.raises(PayloadError) as caught:
        parse_fault(body)
    assert (caught.value.field, caught.value.status) == (field, 422)


# ------------------------------------------------------------------------------------- OTLP


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def metrics_request() -> ExportMetricsServiceRequest:
    ts = 1_700_000_000_000_000_000
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=[kv("service.name", "checkout")]),
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[
                            Metric(
                                name="queue_depth",
                                gauge=Gauge(
                                    data_points=[
                                        NumberDataPoint(
                                            time_unix_nano=ts,
                                            as_double=12.5,
                                            attributes=[kv("queue", "orders")],
                                        )
                                    ]
                                ),
                            ),
                            Metric(
                                name="http_errors",
                                sum=Sum(data_points=[NumberDataPoint(time_unix_nano=ts, as_int=7)]),
                            ),
                            Metric(
                                name="latency",
                                histogram=Histogram(
                                    data_points=[
                                        HistogramDataPoint(time_unix_nano=ts, count=4, sum=2.0)
                                    ]
                                ),
                            ),
                        ]
                    )
                ],
            )
        ]
    )


def test_otlp_metrics_protobuf_and_json_decode_to_the_same_points() -> None:
    from google.protobuf import json_format

    request = metrics_request()
    from_proto = parse_otlp_metrics(request.SerializeToString(), "protobuf")
    from_json = parse_otlp_metrics(json_format.MessageToJson(request).encode(), "json")
    assert from_proto == from_json
    summary = {(p.name, p.value) for p in from_proto}
    assert summary == {
        ("queue_depth", 12.5), ("http_errors", 7.0),
        ("latency_sum", 2.0), ("latency_count", 4.0), ("latency", 0.5),
    }  # fmt: skip
    gauge = next(p for p in from_proto if p.name == "queue_depth")
    assert gauge.labels == {"service.name": "checkout", "queue": "orders"}
    assert gauge.ts == pytest.approx(1_700_000_000.0)


def test_cumulative_histograms_become_interval_means() -> None:
    means = IntervalMeans(max_series=1)
    assert means.mean("d", {}, 10.0, 10, cumulative=True) == 1.0
    assert means.mean("d", {}, 40.0, 20, cumulative=True) == 3.0  # (40-10)/(20-10)
    assert means.mean("d", {}, 1.0, 2, cumulative=True) == 0.5  # counter reset
    assert means.mean("d", {"x": "1"}, 4.0, 2, cumulative=True) == 2.0
    assert means.mean("d", {}, 5.0, 4, cumulative=True) == 1.25  # evicted: from scratch
    assert means.mean("d", {}, 3.0, 0, cumulative=False) is None


OTLP_JSON_TRACES = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "pay"}}]},
        "scopeSpans": [{
            "scope": {"name": "manual"},
            "spans": [
                {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                 "parentSpanId": "eee19b7ec3c1b175",
                 "name": "POST /charge", "kind": 2, "startTimeUnixNano": "1544712660000000000",
                 "endTimeUnixNano": "1544712661000000000",
                 "status": {"code": 2, "message": "card service timeout"},
                 "someFutureField": True},
                {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
                 "name": "GET /ok", "status": {}},
                {"traceId": "00000000000000000000000000000001", "spanId": "0000000000000001",
                 "name": "healthy", "status": {"code": 1}},
            ],
        }],
    }]
}  # fmt: skip


def test_otlp_json_traces_keep_whole_error_traces_with_hex_ids() -> None:
    batch = parse_otlp_traces(json.dumps(OTLP_JSON_TRACES).encode(), "json")
    assert (batch.total, batch.rejected) == (3, 0)
    # the error span and its healthy parent: the whole trace
    assert [(s.span_id, s.error) for s in batch.error_traces] == [
        ("eee19b7ec3c1b174", True),
        ("eee19b7ec3c1b175", False),
    ]
    [span] = batch.errors
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert span.parent_span_id == "eee19b7ec3c1b175"
    assert (span.service, span.name, span.message) == (
        "pay",
        "POST /charge",
        "card service timeout",
    )
    assert span.end - span.start == pytest.approx(1.0)
    assert batch.error_traces[1].parent_span_id == ""
    # a trace without an error: only a candidate to join a trace already kept
    assert [s.name for s in batch.others] == ["healthy"]


def event(name: str, **attributes: str) -> Span.Event:
    return Span.Event(
        name=name, attributes=[kv(k.replace("_", "."), v) for k, v in attributes.items()]
    )


def test_otlp_protobuf_traces_exceptions_attributes_and_rejected_ids() -> None:
    trace_id = bytes(range(1, 17))
    noisy = [kv(f"custom.{i}", "x") for i in range(10)]
    many = [kv(f"http.header.{i:03}", "v" * 1000) for i in range(100)]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[kv("service.name", "inventory"), kv("service.version", "1.4.2")]
                ),
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=trace_id,
                                span_id=bytes(range(1, 9)),
                                parent_span_id=bytes(range(2, 10)),
                                name="SELECT stock",
                                status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
                                attributes=[
                                    kv("feature_flag.key", "new-cache"),
                                    kv("db.system", "postgresql"),
                                    kv("peer.service", "postgres"),
                                    *noisy,
                                ],
                                events=[
                                    event("log", message="ignored"),
                                    event(
                                        "exception",
                                        exception_type="TimeoutError",
                                        exception_message="pool exhausted",
                                    ),
                                ],
                            ),
                            Span(
                                trace_id=trace_id,
                                span_id=bytes(range(3, 11)),
                                name="bounded",
                                status=Status(code=Status.STATUS_CODE_ERROR),
                                attributes=many,
                            ),
                            # no ids: rejected, not refused
                            Span(name="fine", status=Status(code=Status.STATUS_CODE_OK)),
                            Span(trace_id=bytes(16), span_id=bytes(range(8)), name="zero"),
                        ]
                    )
                ],
            )
        ]
    )
    batch = parse_otlp_traces(request.SerializeToString(), "protobuf")
    assert (batch.total, batch.rejected, batch.others) == (4, 2, [])
    first, bounded = batch.error_traces
    assert (first.service, first.name, first.trace_id) == (
        "inventory",
        "SELECT stock",
        trace_id.hex(),
    )
    assert first.parent_span_id == bytes(range(2, 10)).hex()
    assert first.exceptions == ({"type": "TimeoutError", "message": "pool exhausted"},)
    assert first.attributes == {
        "service.version": "1.4.2",
        "feature_flag.key": "new-cache",
        "db.system": "postgresql",
        "peer.service": "postgres",
    }
    assert len(bounded.attributes) == 32
    assert max(len(v) for v in bounded.attributes.values()) == 256


def test_otlp_traces_without_service_name_are_unknown_service() -> None:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=bytes(range(1, 17)),
                                span_id=bytes(range(1, 9)),
                                name="x" * 2000,
                                status=Status(code=Status.STATUS_CODE_ERROR),
                            )
                        ]
                    )
                ]
            )
        ]
    )
    [span] = parse_otlp_traces(request.SerializeToString(), "protobuf").errors
    assert span.service == "unknown_service"
    assert len(span.name) == 512


@pytest.mark.parametrize(
    ("body", "encoding", "status"),
    [
        (b"\xff\xff\xff\xff", "protobuf", 400),
        (gzip.compress(b"x"), "protobuf", 400),
        (b"{", "json", 400),
        (b'{"resourceMetrics": 5}', "json", 422),
        (b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": 3}]}]}]}', "json", 422),
    ],
)
def test_malformed_otlp_is_refused(body: bytes, encoding: Any, status: int) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_otlp_metrics(body, encoding)
    assert caught.value.status == status


def test_otlp_json_bad_hex_id_names_the_field() -> None:
    bad = json.loads(json.dumps(OTLP_JSON_TRACES))
    bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "zz"
    with pytest.raises(PayloadError) as caught:
        parse_otlp_traces(json.dumps(bad).encode(), "json")
    assert caught.value.field == "spanId"


# ------------------------------------------------------------------------- auth and stores


def test_tokens_scopes_and_identities() -> None:
    authority = TokenAuthority({"s3cret-ingest": ["ingest"], "ops": ["approve", "name:alice"]})
    assert authority.authorize("Bearer s3cret-ingest", "ingest").identity.startswith("token:")
    assert "s3cret" not in authority.authorize("Bearer s3cret-ingest", "ingest").identity
    assert authority.authorize("bearer ops", "approve").identity == "name:alice"
    for header, status in [
        (None, 401),
        ("", 401),
        ("Basic b3Bz", 401),
        ("Bearer nope", 401),
        ("Bearer ", 401),
    ]:
        with pytest.raises(AuthError) as caught:
            authority.authorize(header, "ingest")
        assert caught.value.status == status
    with pytest.raises(AuthError) as caught:
        authority.authorize("Bearer s3cret-ingest", "approve")
    assert caught.value.status == 403
    assert "s3cret" not in caught.value.message


def span(service: str, end: float) -> ErrorSpan:
    return ErrorSpan("t", f"s{end}", service, "op", end - 1, end, "boom")


def test_error_trace_store_is_bounded_and_newest_first() -> None:
    store = ErrorTraceStore(3)
    store.add([span("a", 1), span("b", 2)])
    store.add([span("a", 4), span("a", 3)])
    assert len(store) == 3
    assert [s.end for s in store.recent_errors()] == [4, 3, 2]
    assert [s.end for s in store.recent_errors("a", limit=5)] == [4, 3]
    assert [s.end for s in store.recent_errors("a", limit=1)] == [4]


async def test_coalescer_counts_every_report_with_few_calls() -> None:
    calls: list[tuple[str, int]] = []
    gate = asyncio.Event()

    async def send(fault: Fault, count: int) -> str:
        calls.append((fault.workflow_id, count))
        await gate.wait()
        return fault.workflow_id

    coalescer: Coalescer[Fault, str] = Coalescer(send)
    one = Fault(service="s", type="t")
    two = Fault(service="s", type="u")
    first = [asyncio.create_task(coalescer.fire(one.workflow_id, one)) for _ in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.fire(one.workflow_id, one)) for _ in range(30)]
    other = asyncio.create_task(coalescer.fire(two.workflow_id, two, count=5))
    gate.set()
    results = await asyncio.gather(*first, *later, other)
    # the 30 later reports waited for the first call: one batch of their own, not 30 calls
    assert sorted(calls) == sorted(
        [(one.workflow_id, 50), (one.workflow_id, 30), (two.workflow_id, 5)]
    )
    assert sum(not r.coalesced for r in results) == 3
    assert {r.result for r in results} == {one.workflow_id, two.workflow_id}


async def test_coalescer_fails_every_caller_of_a_failed_batch() -> None:
    async def send(fault: Fault, count: int) -> str:
        raise RuntimeError("down")

    coalescer: Coalescer[Fault, str] = Coalescer(send)
    fault = Fault(service="s", type="t")
    results = await asyncio.gather(
        *(coalescer.fire(fault.workflow_id, fault) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
