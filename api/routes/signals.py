"""Signals in: Alertmanager, faults, heartbeats, OTLP metrics and traces. Each becomes Faults for
the door (``Intake.deliver``); a 2xx only once every fault's healing is durably started or
signalled."""

from __future__ import annotations

import re
import time

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from pydantic import BaseModel, Field

from selfheal.api.deps import IngestBody, IntakeDep
from selfheal.api.errors import HttpProblem
from selfheal.api.intake import Delivery, Intake, Refusal, SignalResult
from selfheal.api.openapi import request_body
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.detection.parsers import (
    Encoding,
    PayloadWarning,
    parse_alertmanager,
    parse_fault,
    parse_otlp_metrics,
    parse_otlp_traces,
)
from selfheal.domain import Fault

log = structlog.get_logger(__name__)

router = APIRouter(tags=["signals"])

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class AlertmanagerResult(BaseModel):
    accepted: int = Field(description="firing alerts durably delivered to their healings")
    started: list[str] = Field(default_factory=list)
    joined: list[str] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)
    resolved: int = 0
    warnings: list[PayloadWarning] = Field(
        default_factory=list,
        description="what was taken on a guess (an unknown severity, a flag label spelled "
        "neither true nor false, a clipped summary); those alerts went on all the same",
    )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request) -> None:
    """415 unless the body is declared ``application/json``."""
    media = media_type(request)
    if media != JSON:
        raise HttpProblem(415, f"Content-Type must be {JSON}, got {media!r}")


def otlp_encoding(request: Request) -> Encoding:
    media = media_type(request)
    if media == PROTOBUF:
        return "protobuf"
    if media == JSON:
        return "json"
    raise HttpProblem(415, f"Content-Type must be {PROTOBUF} or {JSON}, got {media!r}")


def otlp_response(
    message: ExportMetricsServiceResponse | ExportTraceServiceResponse, encoding: Encoding
) -> Response:
    """The OTLP success message, in the request's encoding (as the specification asks)."""
    if encoding == "protobuf":
        return Response(message.SerializeToString(), media_type=PROTOBUF)
    return JSONResponse(json_format.MessageToDict(message))


def detectors(intake: Intake) -> MetricsRouter:
    if intake.deps.router is None:
        raise HttpProblem(503, "no detectors are configured on this intake")
    return intake.deps.router


@router.post(
    "/v1/alertmanager",
    response_model=AlertmanagerResult,
    openapi_extra=request_body(None, "Alertmanager webhook payload, version 4", JSON),
)
async def alertmanager(request: Request, intake: IntakeDep, body: IngestBody) -> AlertmanagerResult:
    """Every firing alert starts or joins its healing; a resolved one tells its healing.
    What was taken on a guess is listed under ``warnings`` (and logged)."""
    received_at = time.monotonic()
    require_json(request)
    # An alert without a catalog service that names Kubernetes objects (kube-prometheus'
    # namespace/deployment/statefulset/pod/node labels) heals the catalog target they name.
    signals = parse_alertmanager(body, intake.door.catalog)
    warnings = [w for s in signals for w in s.warnings]
    for warning in warnings:
        log.warning("alert taken on a guess", field=warning.field, warning=warning.message)
    # Refused by the catalog before becoming faults (Kubernetes labels that name no target of
    # it): listed with the door's refusals, counted as they are.
    uncatalogued = [
        Refusal(fingerprint=s.fingerprint, service=s.service, reason=s.refused)
        for s in signals
        if s.fault is None and s.firing
    ]
    for refusal in uncatalogued:
        log.warning("fault refused", fingerprint=refusal.fingerprint, reason=refusal.reason)
    if uncatalogued:
        intake.metrics.received.labels("alertmanager").inc(len(uncatalogued))
        intake.metrics.faults.labels("alertmanager", "refused").inc(len(uncatalogued))
    firing = [s.fault for s in signals if s.firing and s.fault is not None]
    delivered = await intake.deliver(firing, "alertmanager", received_at)
    resolved = [s.fault for s in signals if not s.firing and s.fault is not None]
    for fault in resolved:
        await intake.resolve(fault, "alertmanager")
    return AlertmanagerResult(
        accepted=len(delivered.faults),
        started=[d.workflow_id for d in delivered.faults if d.started],
        joined=[d.workflow_id for d in delivered.faults if not d.started],
        refused=[*uncatalogued, *delivered.refused],
        resolved=sum(1 for s in signals if not s.firing),
        warnings=warnings,
    )


@router.post(
    "/v1/faults",
    response_model=Delivery,
    openapi_extra=request_body(Fault, "a Fault in selfheal's JSON", JSON),
)
async def faults(
    request: Request,
    intake: IntakeDep,
    body: IngestBody,
    dry_run: bool = False,
    require_approval: bool = False,
) -> Delivery:
    """Start the healing of a fault, or count one more report of its running healing.
    ``dry_run``: plan and gate, change nothing; ``require_approval``: a human must approve."""
    received_at = time.monotonic()
    require_json(request)
    fault = parse_fault(body)
    if dry_run:
        fault = fault.model_copy(update={"dry_run": True})
    result = await intake.deliver([fault], "faults", received_at, require_approval=require_approval)
    if result.refused:
        raise HttpProblem(422, result.refused[0].reason, "fault")
    return result.faults[0]


@router.post("/v1/heartbeats/{component}", response_model=SignalResult)
async def heartbeats(component: str, intake: IntakeDep, _: IngestBody) -> SignalResult:
    """A heartbeat of ``component`` (body ignored); overdue components raise faults."""
    if not _COMPONENT.match(component):
        raise HttpProblem(422, "expected 1-128 letters, digits, '.', '_', ':' or '-'", "component")
    if not detectors(intake).heartbeat(component):
        raise HttpProblem(
            404,
            f"no heartbeats.components entry of detectors.yaml watches {component!r}",
            "component",
        )
    return await intake.sweep_heartbeats()


@router.post(
    "/v1/otlp/v1/metrics",
    response_class=Response,
    openapi_extra=request_body(
        None, "OTLP ExportMetricsServiceRequest", PROTOBUF, "application/json"
    ),
)
async def otlp_metrics(request: Request, intake: IntakeDep, body: IngestBody) -> Response:
    """OTLP/HTTP metrics; each point goes through the detectors, then is kept for diagnosis by
    the metric sink (Postgres: the series the metrics evidence reads without a Prometheus).
    Keeping is best effort: a sink failure is logged and the export still succeeds, since the
    faults the detectors raised are what must not be lost (and they are delivered first)."""
    received_at = time.monotonic()
    encoding = otlp_encoding(request)
    points = parse_otlp_metrics(body, encoding, intake.means)
    router_ = detectors(intake)
    intake.metrics.points.inc(len(points))
    raised: list[Fault] = []
    for p in points:
        raised.extend(router_.observe(p.name, p.labels, p.ts, p.value))
    sink = intake.deps.metric_sink
    try:
        if raised:
            await intake.deliver(raised, "otlp_metrics", received_at)
    finally:
        if sink is not None and points:
            try:
                await sink(points)
            except Exception as exc:  # evidence, not the fault: never fail the export for it
                log.warning(
                    "metric points not kept",
                    points=len(points),
                    reason=f"{type(exc).__name__}: {exc}"[:300],
                )
    return otlp_response(ExportMetricsServiceResponse(), encoding)


@router.post(
    "/v1/otlp/v1/traces",
    response_class=Response,
    openapi_extra=request_body(
        None, "OTLP ExportTraceServiceRequest", PROTOBUF, "application/json"
    ),
)
async def otlp_traces(request: Request, intake: IntakeDep, body: IngestBody) -> Response:
    """OTLP/HTTP traces. The traces that hold an error are kept whole for diagnosis, by the
    trace sink (Postgres: every worker sees them), which also keeps the later spans of a trace
    it already holds; the error spans also in this intake's memory (``/v1/traces/errors``).
    Spans without valid ids are rejected (OTLP partial success), the rest kept."""
    encoding = otlp_encoding(request)
    batch = parse_otlp_traces(body, encoding)
    sink = intake.deps.trace_sink
    if sink is not None and (batch.error_traces or batch.others):
        try:
            await sink([*batch.error_traces, *batch.others])
        except Exception as exc:  # the sink is the database: the exporter retries on 503
            log.warning("error traces not kept", reason=f"{type(exc).__name__}: {exc}"[:300])
            raise HttpProblem(503, "the trace store is unreachable; retry later") from None
    errors = batch.errors
    intake.traces.add(errors)
    intake.metrics.spans.labels("error").inc(len(errors))
    intake.metrics.spans.labels("other").inc(batch.total - len(errors))
    response = ExportTraceServiceResponse()
    if batch.rejected:
        response.partial_success.rejected_spans = batch.rejected
        response.partial_success.error_message = (
            "spans need a 16-byte trace id and an 8-byte span id (not all zeros)"
        )
    return otlp_response(response, encoding)
