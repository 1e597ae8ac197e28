"""Payloads from the outside world into selfheal's terms, without I/O.

- Alertmanager webhook (version 4, and only 4): each alert becomes an ``AlertSignal`` (a Fault,
  whether it fires or resolved, and the ``PayloadWarning``s of what was taken on a guess: an
  unknown severity, a flag label spelled neither true nor false, a summary clipped). Given the
  service catalog, an alert that names no catalog service but a Kubernetes object (the labels
  of kube-prometheus: ``namespace``, ``deployment``, ``statefulset``, ``pod``, ``node``) takes
  its service and target from the catalog target those labels name
  (``core.catalog.resolve_workload``), or is refused with the reason (``AlertSignal.refused``).
- selfheal's own Fault JSON.
- OTLP/HTTP metrics and traces, protobuf or JSON: decoded with the generated classes of
  ``opentelemetry-proto`` into flat ``MetricPoint``s and, for traces that hold an error, their
  ``ErrorSpan``s (``OtlpTraces``).

Every refusal is a ``PayloadError`` naming the field (``alerts[2].labels.alertname``) and what
was expected, so that the HTTP layer can answer 400/422 without guessing. A Fault's strings are
bounded (``domain/fault.py``): an alert over a bound is refused naming the label it came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    NumberDataPoint,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfheal.core.catalog import (
    WORKLOAD_LABELS,
    ServiceCatalog,
    WorkloadMatch,
    resolve_workload,
    scoped_fingerprint,
)
from selfheal.domain import Fault
from selfheal.domain.errors import IntakeError
from selfheal.domain.fault import SUMMARY_MAX, clip

Encoding = Literal["protobuf", "json"]

DRY_RUN_LABEL = "selfheal_dry_run"
REQUIRE_APPROVAL_LABEL = "selfheal_require_approval"
SERVICE_NAME = "service.name"  # the OpenTelemetry resource attribute
TARGET_LABELS = ("target", "deployment", "pod")
_SEVERITIES = ("info", "warning", "critical")
DEFAULT_SEVERITY = "warning"
TRUE_SPELLINGS = ("true", "yes", "1", "on")
FALSE_SPELLINGS = ("false", "no", "0", "off", "")
_FINGERPRINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class PayloadError(IntakeError):
    """The payload cannot become signals. ``status`` is 400 for undecodable bytes, 422 for a
    decodable payload whose fields are wrong."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status


class PayloadWarning(BaseModel):
    """Something of a payload that selfheal took on a guess rather than refuse: the sender is
    told (and the intake logs it), the signal goes on."""

    field: str = Field(description="where, e.g. alerts[0].labels.severity")
    message: str


def describe_errors(
    exc: ValidationError, prefix: str = "", renames: dict[str, str] | None = None
) -> PayloadError:
    """The first error of a pydantic validation, as a PayloadError naming its field.

    ``renames`` maps a model's top-level field to where its value came from in the payload
    (``type`` -> ``labels.alertname``), so that the error names what the sender wrote."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    if renames and loc and isinstance(loc[0], str) and loc[0] in renames:
        loc = [*renames[loc[0]].split("."), *loc[1:]]
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return PayloadError(path or "body", str(first["msg"]).removeprefix("Value error, "))


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and neither does Temporal's payload
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError("body", f"not valid JSON: {exc}", status=400) from None
    except RecursionError:
        raise PayloadError("body", "JSON nested too deeply", status=400) from None
    if not isinstance(data, dict):
        raise PayloadError("body", f"expected a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------ Alertmanager


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # Alertmanager's spelling
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerWebhook(BaseModel):
    """Version 4 of the webhook (any other version is refused: its fields may mean something
    else); fields added by later Alertmanagers are ignored."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = ""
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = ""
    alerts: list[AlertmanagerAlert]


@dataclass(frozen=True)
class AlertSignal:
    fault: Fault | None
    """None when the alert was refused: ``refused`` says why"""
    firing: bool
    warnings: tuple[PayloadWarning, ...] = ()
    refused: str = ""
    fingerprint: str = ""
    """Alertmanager's, to name a refused alert"""
    service: str = ""
    """the service label (or job) of a refused alert, if any"""


def label_flag(
    labels: dict[str, str], name: str, where: str, meaning: str
) -> tuple[bool, PayloadWarning | None]:
    """A true/false label, failing safe: ``true``/``yes``/``1``/``on`` (any case) are true,
    ``false``/``no``/``0``/``off``, empty or absent false, and anything else true, with a
    warning saying so (a flag that asks for more caution is never dropped for its spelling)."""
    raw = labels.get(name)
    spelled = (raw or "").strip().lower()
    if spelled in TRUE_SPELLINGS:
        return True, None
    if raw is None or spelled in FALSE_SPELLINGS:
        return False, None
    return True, PayloadWarning(
        field=f"{where}.labels.{name}",
        message=f"{clip(raw, 40)!r} is neither {'/'.join(TRUE_SPELLINGS)} nor "
        f"{'/'.join(FALSE_SPELLINGS[:-1])}: taken as true ({meaning}), the safe side",
    )


def alert_severity(labels: dict[str, str], where: str) -> tuple[str, PayloadWarning | None]:
    """The alert's ``severity`` label (any case); absent or empty is ``warning``. An unknown one
    is ``warning`` too, with a warning: the alert is kept whatever its severity says."""
    raw = labels.get("severity")
    if raw is None or not raw.strip():
        return DEFAULT_SEVERITY, None
    spelled = raw.strip().lower()
    if spelled in _SEVERITIES:
        return spelled, None
    return DEFAULT_SEVERITY, PayloadWarning(
        field=f"{where}.labels.severity",
        message=f"unknown severity {clip(raw, 40)!r}: taken as {DEFAULT_SEVERITY} "
        f"(expected {', '.join(_SEVERITIES[:-1])} or {_SEVERITIES[-1]})",
    )


def workload_of_alert(
    labels: dict[str, str], named: str, catalog: ServiceCatalog
) -> WorkloadMatch | str | None:
    """The catalog target an alert's Kubernetes labels name, the reason it is refused (a
    string), or None when its service label (or job) decides as before.

    The labels are read when the alert has no ``target`` label and names at least one
    Kubernetes object. A ``service`` (or ``job``) naming a catalog service confines the match
    to that service's targets, and when none matches there the service decides (its target
    from the ``target``/``deployment``/``pod`` label, which the door checks). Any other alert
    (no service label, or one the catalog does not know: kube-state-metrics' own ``job`` and
    ``service``) must name exactly one catalog target, or it is refused."""
    if labels.get("target") or not any(labels.get(k) for k in WORKLOAD_LABELS):
        return None
    known = named if named and catalog.get(named) is not None else None
    try:
        return resolve_workload(labels, catalog, within=known)
    except IntakeError as exc:
        if known is not None:
            return None
        return f"unknown service {clip(named, 80)!r}, and {exc}" if named else str(exc)


def alert_to_fault(
    alert: AlertmanagerAlert, where: str, catalog: ServiceCatalog | None = None
) -> AlertSignal:
    labels = alert.labels
    alertname = labels.get("alertname", "")
    if not alertname:
        raise PayloadError(f"{where}.labels.alertname", "required: it names the fault type")
    service_label = "service" if labels.get("service") else "job"
    service = labels.get(service_label) or ""
    target_label = next((k for k in TARGET_LABELS if labels.get(k)), None)
    target = labels[target_label] if target_label else None
    matched = workload_of_alert(labels, service, catalog) if catalog is not None else None
    if isinstance(matched, str):
        fingerprint = alert.fingerprint if _FINGERPRINT.match(alert.fingerprint) else ""
        firing = alert.status == "firing"
        return AlertSignal(None, firing, refused=matched, fingerprint=fingerprint, service=service)
    if matched is not None:
        service, target, target_label = matched.service, matched.target, matched.label
        service_label = matched.label
    if not service:
        raise PayloadError(f"{where}.labels.service", "required (or label job): the service")
    severity, severity_warning = alert_severity(labels, where)
    dry_run, dry_run_warning = label_flag(labels, DRY_RUN_LABEL, where, "a dry run")
    require_approval, approval_warning = label_flag(
        labels, REQUIRE_APPROVAL_LABEL, where, "a human approves"
    )
    warnings = [w for w in (severity_warning, dry_run_warning, approval_warning) if w]
    summary_key = "summary" if alert.annotations.get("summary") else "description"
    summary = alert.annotations.get(summary_key, "")
    if len(summary) > SUMMARY_MAX:
        # prose, not identity: an alert is never refused for a long description
        warnings.append(
            PayloadWarning(
                field=f"{where}.annotations.{summary_key}",
                message=f"{len(summary)} characters, clipped to {SUMMARY_MAX} for the summary",
            )
        )
        summary = clip(summary, SUMMARY_MAX)
    # Alertmanager's fingerprint hashes the alert's labels; bound to the target it names one
    # healing per target (resolve_fault binds it to the catalog's target the same way).
    fingerprint = ""
    if _FINGERPRINT.match(alert.fingerprint):
        fingerprint = scoped_fingerprint(alert.fingerprint, target) if target else alert.fingerprint
    renames = {"type": "labels.alertname", "service": f"labels.{service_label}"}
    if target_label:
        renames["target"] = f"labels.{target_label}"
    try:
        fault = Fault(
            fingerprint=fingerprint,
            service=service,
            type=alertname,
            target=target,
            severity=severity,
            summary=summary,
            labels=dict(labels),
            source="alertmanager",
            detected_at=alert.startsAt or datetime.now(UTC),
            dry_run=dry_run,
            require_approval=require_approval,
        )
    except ValidationError as exc:
        raise describe_errors(exc, prefix=where, renames=renames) from None
    return AlertSignal(fault, alert.status == "firing", tuple(warnings))


def parse_alertmanager(body: bytes, catalog: ServiceCatalog | None = None) -> list[AlertSignal]:
    """Every alert of a webhook as a signal. With ``catalog``, alerts that name Kubernetes
    objects instead of a service are resolved through it (see ``workload_of_alert``)."""
    data = parse_json_object(body)
    try:
        webhook = AlertmanagerWebhook.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(exc) from None
    return [
        alert_to_fault(alert, f"alerts[{i}]", catalog) for i, alert in enumerate(webhook.alerts)
    ]


def parse_fault(body: bytes) -> Fault:
    data = parse_json_object(body)
    try:
        return Fault.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(exc) from None


# ------------------------------------------------------------------------------------- OTLP


@dataclass(frozen=True)
class MetricPoint:
    name: str
    labels: dict[str, str]
    ts: float
    value: float


@dataclass(frozen=True)
class ErrorSpan:
    """One span of a trace that holds an error, as diagnosis needs it: the tree (``parent_span_id``,
    empty for a root), where (``service``: the resource's ``service.name``), what failed
    (``error``: this span's own status is ERROR; ``message``: the status message; ``exceptions``:
    its ``exception`` events as ``{"type", "message"}``) and a bounded set of ``attributes``
    (feature flags, HTTP, database, peer). Times are Unix seconds, each by its own service's
    clock. Every string is bounded (``SPAN_*`` limits)."""

    trace_id: str
    span_id: str
    service: str
    name: str
    start: float
    end: float
    message: str
    attributes: dict[str, str] = field(default_factory=dict)
    parent_span_id: str = ""
    error: bool = True
    exceptions: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class OtlpTraces:
    """What one OTLP traces export holds for diagnosis.

    ``error_traces``: every span of each trace that has at least one ERROR span in this export.
    ``others``: the spans of the other traces; a store keeps them only if their trace is already
    kept (a healthy parent exported later, by another service). A healthy span that arrives
    *before* any error span of its trace cannot be known to matter and is not kept.
    ``rejected``: spans without a valid trace or span id (OTLP's partial success)."""

    total: int
    error_traces: list[ErrorSpan]
    others: list[ErrorSpan]
    rejected: int = 0

    @property
    def errors(self) -> list[ErrorSpan]:
        """The spans whose own status is ERROR."""
        return [s for s in self.error_traces if s.error]


def _any_value(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind in ("array_value", "kvlist_value"):
        return json_format.MessageToJson(value, indent=None)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return str(getattr(value, kind))


def _attributes(attributes: Any) -> dict[str, str]:
    items: list[KeyValue] = list(attributes)
    return {kv.key: _any_value(kv.value) for kv in items}


_OTLP_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _OTLP_ID_KEYS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise PayloadError(key, f"expected a hex string, got {value!r}") from None
            out[key] = _hex_ids_to_base64(value)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def _decode(message: Message, body: bytes, encoding: Encoding) -> None:
    if encoding == "protobuf":
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise PayloadError("body", f"not a valid protobuf message: {exc}", status=400) from None
        return
    data = _hex_ids_to_base64(parse_json_object(body))
    try:
        # Receivers must ignore unknown fields (OTLP specification): newer senders add some.
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, RecursionError) as exc:
        raise PayloadError("body", f"not a valid OTLP JSON message: {exc}") from None


def _number(point: NumberDataPoint) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


class IntervalMeans:
    """Per-series memory of cumulative histogram sums and counts, so that a histogram's point is
    the mean of its last export interval (what a latency detector needs), whatever the
    exporter's temporality. Bounded: the least recently seen series is forgotten first."""

    def __init__(self, max_series: int = 10_000) -> None:
        self._last: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, int]] = (
            OrderedDict()
        )
        self._max = max_series

    def mean(
        self, name: str, labels: dict[str, str], total: float, count: int, cumulative: bool
    ) -> float | None:
        key = (name, tuple(sorted(labels.items())))
        previous = self._last.pop(key, None) if cumulative else None
        if cumulative:
            self._last[key] = (total, count)
            if len(self._last) > self._max:
                self._last.popitem(last=False)
            # a counter reset (restart of the exporter) starts a new series
            if previous is not None and count >= previous[1]:
                total, count = total - previous[0], count - previous[1]
        return total / count if count > 0 else None


def parse_otlp_metrics(
    body: bytes, encoding: Encoding, means: IntervalMeans | None = None
) -> list[MetricPoint]:
    """Gauges and sums as points. Histograms as ``<name>_sum`` and ``<name>_count`` (what a
    Prometheus user would query) and, under their own name, the mean of the export interval.
    Labels: the point's attributes and the resource's ``service.name``."""
    request = ExportMetricsServiceRequest()
    _decode(request, body, encoding)
    means = means or IntervalMeans()
    points: list[MetricPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        base = {SERVICE_NAME: resource[SERVICE_NAME]} if SERVICE_NAME in resource else {}
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind in ("gauge", "sum"):
                    for p in getattr(metric, kind).data_points:
                        labels = {**base, **_attributes(p.attributes)}
                        ts = p.time_unix_nano / 1e9
                        points.append(MetricPoint(metric.name, labels, ts, _number(p)))
                elif kind in ("histogram", "exponential_histogram", "summary"):
                    data = getattr(metric, kind)
                    cumulative = kind == "summary" or (
                        data.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
                    )
                    for hp in data.data_points:
                        labels = {**base, **_attributes(hp.attributes)}
                        ts = hp.time_unix_nano / 1e9
                        points.append(MetricPoint(f"{metric.name}_sum", labels, ts, hp.sum))
                        points.append(
                            MetricPoint(f"{metric.name}_count", labels, ts, float(hp.count))
                        )
                        mean = means.mean(metric.name, labels, hp.sum, hp.count, cumulative)
                        if mean is not None:
                            points.append(MetricPoint(metric.name, labels, ts, mean))
    return points


# Which span and resource attributes diagnosis keeps (by prefix, or whole key), and how many.
SPAN_ATTRIBUTE_PREFIXES = (
    "feature_flag.",
    "http.",
    "url.",
    "db.",
    "rpc.",
    "messaging.",
    "server.",
    "net.peer.",
    "error.",
    "peer.service",
    "service.version",
    "deployment.",
    "k8s.",
)
SPAN_ATTRIBUTES_MAX = 32
SPAN_ATTRIBUTE_KEY_MAX = 128
SPAN_ATTRIBUTE_VALUE_MAX = 256
SPAN_EXCEPTIONS_MAX = 4
SPAN_NAME_MAX = 512
SPAN_SERVICE_MAX = 200
SPAN_MESSAGE_MAX = 1000
UNKNOWN_SERVICE = "unknown_service"  # what the OpenTelemetry SDKs call a nameless service


def _kept_attributes(*sources: Any) -> dict[str, str]:
    """The diagnosis-worthy attributes of ``sources`` (later sources win), bounded in count,
    key and value length."""
    kept: dict[str, str] = {}
    for attributes in sources:
        for kv in attributes:
            key: str = kv.key
            if len(key) > SPAN_ATTRIBUTE_KEY_MAX or not key.startswith(SPAN_ATTRIBUTE_PREFIXES):
                continue
            if key not in kept and len(kept) >= SPAN_ATTRIBUTES_MAX:
                continue
            kept[key] = clip(_any_value(kv.value), SPAN_ATTRIBUTE_VALUE_MAX)
    return kept


def _exceptions(span: Span) -> tuple[dict[str, str], ...]:
    """The span's ``exception`` events (OpenTelemetry semantic conventions), bounded."""
    found: list[dict[str, str]] = []
    for event in span.events:
        if event.name != "exception":
            continue
        attributes = {kv.key: kv.value for kv in event.attributes}
        kind = attributes.get("exception.type")
        message = attributes.get("exception.message")
        found.append(
            {
                "type": clip(_any_value(kind), 200) if kind is not None else "",
                "message": clip(_any_value(message), SPAN_MESSAGE_MAX)
                if message is not None
                else "",
            }
        )
        if len(found) >= SPAN_EXCEPTIONS_MAX:
            break
    return tuple(found)


def _valid_ids(span: Span) -> bool:
    """W3C ids: a 16-byte trace id and an 8-byte span id, neither all zeros; the parent id empty
    or 8 bytes."""
    return (
        len(span.trace_id) == 16
        and any(span.trace_id)
        and len(span.span_id) == 8
        and any(span.span_id)
        and len(span.parent_span_id) in (0, 8)
    )


def _trace_span(span: Span, service: str, resource: Any) -> ErrorSpan:
    return ErrorSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() if any(span.parent_span_id) else "",
        service=service,
        name=clip(span.name, SPAN_NAME_MAX),
        start=span.start_time_unix_nano / 1e9,
        end=span.end_time_unix_nano / 1e9,
        error=span.status.code == Status.STATUS_CODE_ERROR,
        message=clip(span.status.message, SPAN_MESSAGE_MAX),
        exceptions=_exceptions(span),
        attributes=_kept_attributes(resource, span.attributes),
    )


def parse_otlp_traces(body: bytes, encoding: Encoding) -> OtlpTraces:
    """The spans of an OTLP traces export, split into whole error traces and the others (see
    ``OtlpTraces``). Spans with invalid ids are counted as rejected, not refused: the rest of
    the export is still good."""
    request = ExportTraceServiceRequest()
    _decode(request, body, encoding)
    total = rejected = 0
    by_trace: dict[str, list[ErrorSpan]] = {}
    for resource_spans in request.resource_spans:
        resource = resource_spans.resource.attributes
        names = [kv.value for kv in resource if kv.key == SERVICE_NAME]
        service = clip(_any_value(names[-1]), SPAN_SERVICE_MAX) if names else ""
        service = service or UNKNOWN_SERVICE
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                total += 1
                if not _valid_ids(span):
                    rejected += 1
                    continue
                parsed = _trace_span(span, service, resource)
                by_trace.setdefault(parsed.trace_id, []).append(parsed)
    error_traces: list[ErrorSpan] = []
    others: list[ErrorSpan] = []
    for spans in by_trace.values():
        (error_traces if any(s.error for s in spans) else others).extend(spans)
    return OtlpTraces(total, error_traces, others, rejected)
