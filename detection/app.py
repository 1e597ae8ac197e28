"""The HTTP intake (``selfheal serve``): Alertmanager, OTLP, heartbeats and faults in; healings
listed, shown, approved and rejected; the guardrails' kill switch read, paused and resumed.

Safety, in the order a request meets it: a bearer token with the endpoint's scope (401/403), a
body size limit (413, also after gzip), a payload that parses into Faults (400/422 naming the
field; nothing is started when any part is malformed), then Temporal. A 2xx is sent only once
every fault's workflow is durably started or signalled; Temporal unreachable is 503, so that
Alertmanager and OTLP exporters retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import generate_latest as render_metrics
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from selfheal.detection.auth import APPROVE, INGEST, AuthError, Principal, TokenAuthority
from selfheal.detection.gateway import (
    Delivery,
    Intake,
    IntakeDeps,
    Refusal,
    SignalResult,
    TemporalUnavailable,
    temporal_down,
)
from selfheal.detection.healings import (
    WORKER_ANSWER_TIMEOUT,
    HealingLookupError,
    describe_healing,
    fetch_status,
    healing_row,
    update_failure_message,
    visibility_query,
)
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.detection.parsers import (
    Encoding,
    PayloadError,
    describe_errors,
    parse_alertmanager,
    parse_fault,
    parse_json_object,
    parse_otlp_error_spans,
    parse_otlp_metrics,
)
from selfheal.domain import (
    Approval,
    ApprovalDecision,
    Fault,
    HealingStatus,
    KnowledgeBaseError,
)
from selfheal.domain.kill_switch import KillSwitch, PauseState

__all__ = ["IntakeDeps", "create_app", "openapi_json"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
PROTOBUF = "application/x-protobuf"


# ------------------------------------------------------------------------------ wire models


class ErrorBody(BaseModel):
    error: str
    field: str | None = None


class AlertmanagerResult(BaseModel):
    accepted: int = Field(description="firing alerts durably delivered to their healings")
    started: list[str] = Field(default_factory=list)
    joined: list[str] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)
    resolved: int = 0


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class HealingRowOut(BaseModel):
    workflow_id: str
    status: str
    phase: str
    service: str
    fault_type: str
    root_cause: str
    risk: str
    outcome: str
    started_at: str | None
    closed_at: str | None


class ErrorSpanOut(BaseModel):
    trace_id: str
    span_id: str
    service: str
    name: str
    start: float
    end: float
    message: str
    attributes: dict[str, str]


# --------------------------------------------------------------------------------- failures


class HttpProblem(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def _problem(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    body = ErrorBody(error=message, field=field).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers or None)


# --------------------------------------------------------------------------------- requests


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes on the wire and after gzip (413 beyond)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpProblem(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding != "gzip":
        raise HttpProblem(415, f"Content-Encoding {coding!r} is not supported; use gzip")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpProblem(400, f"body is not valid gzip: {exc}") from None
    if len(plain) > limit:
        raise HttpProblem(413, f"body larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise HttpProblem(400, "body is not valid gzip: truncated")
    return plain


def otlp_encoding(request: Request) -> Encoding:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == PROTOBUF:
        return "protobuf"
    if media == "application/json":
        return "json"
    raise HttpProblem(415, f"Content-Type must be {PROTOBUF} or application/json, got {media!r}")


def otlp_response(
    message: ExportMetricsServiceResponse | ExportTraceServiceResponse, encoding: Encoding
) -> Response:
    """The OTLP success message, in the request's encoding (as the specification asks)."""
    if encoding == "protobuf":
        return Response(message.SerializeToString(), media_type=PROTOBUF)
    return JSONResponse(json_format.MessageToDict(message))


def _request_body(model: type[BaseModel] | None, description: str, *media: str) -> dict[str, Any]:
    schema: dict[str, Any] = (
        {"$ref": f"#/components/schemas/{model.__name__}"} if model else {"type": "string"}
    )
    if not model:
        schema["format"] = "binary"
    content = {m: {"schema": schema} for m in media}
    return {"requestBody": {"required": True, "description": description, "content": content}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "undecodable body",
        401: "missing or unknown bearer token",
        403: "the token lacks the endpoint's scope",
        413: "body too large",
        415: "unsupported Content-Type or Content-Encoding",
        422: "a field is wrong (named in `field`), or the fault was refused",
        502: "Temporal refused the call: retry once fixed",
        503: "Temporal unreachable: retry",
    }.items()
}


def create_app(deps: IntakeDeps) -> FastAPI:
    intake = Intake(deps)
    auth = TokenAuthority(deps.settings.tokens)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep_forever(intake)) if deps.router else None
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper

    app = FastAPI(
        title="selfheal intake",
        version="1",
        description="Signals in (Alertmanager, OTLP, heartbeats, faults); healings out.",
        lifespan=lifespan,
        responses=_ERRORS,
        redirect_slashes=False,  # an API client gets 404, not a redirect it may not follow
    )
    app.state.intake = intake

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return _problem(exc.status, exc.message, **headers)

    @app.exception_handler(PayloadError)
    async def _payload(request: Request, exc: PayloadError) -> JSONResponse:
        return _problem(exc.status, exc.message, exc.field or "body")

    @app.exception_handler(HttpProblem)
    async def _http(request: Request, exc: HttpProblem) -> JSONResponse:
        return _problem(exc.status, exc.message, exc.field)

    def unreachable(exc: Exception) -> JSONResponse:
        log.warning("Temporal unreachable: %s", exc)
        return _problem(503, "Temporal is unreachable; retry later", **{"Retry-After": "5"})

    @app.exception_handler(TemporalUnavailable)
    async def _down(request: Request, exc: TemporalUnavailable) -> JSONResponse:
        return unreachable(exc)

    @app.exception_handler(RuntimeError)
    async def _no_connection(request: Request, exc: RuntimeError) -> JSONResponse:
        if not temporal_down(exc):
            raise exc
        return unreachable(exc)

    @app.exception_handler(RPCError)
    async def _refused(request: Request, exc: RPCError) -> JSONResponse:
        if temporal_down(exc):
            return unreachable(exc)
        # Temporal said no (a namespace or search attribute missing, say): a server-side fault
        # the sender should retry once an operator has fixed it
        log.error("Temporal refused %s: %s", request.url.path, exc.message)
        return _problem(502, f"Temporal refused: {exc.message}")

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _problem(422, str(first["msg"]), where)

    def principal(request: Request, scope: str | None) -> Principal:
        header = request.headers.get("authorization")
        if scope is None:
            return auth.authenticate(header)
        return auth.authorize(header, scope)

    async def body_of(request: Request, scope: str) -> bytes:
        principal(request, scope)  # before reading: strangers do not get to send bytes
        return await read_body(request, deps.settings.max_body_bytes)

    # -- signals in

    @app.post(
        "/v1/alertmanager",
        response_model=AlertmanagerResult,
        tags=["signals"],
        openapi_extra=_request_body(
            None, "Alertmanager webhook payload, version 4", "application/json"
        ),
    )
    async def alertmanager(request: Request) -> AlertmanagerResult:
        """Every firing alert starts or joins its healing; a resolved one tells its healing."""
        received_at = time.monotonic()
        signals = parse_alertmanager(await body_of(request, INGEST))
        firing = [s.fault for s in signals if s.firing]
        delivered = await intake.deliver(firing, "alertmanager", received_at)
        for signal in signals:
            if not signal.firing:
                await intake.resolve(signal.fault, "alertmanager")
        return AlertmanagerResult(
            accepted=len(delivered.faults),
            started=[d.workflow_id for d in delivered.faults if d.started],
            joined=[d.workflow_id for d in delivered.faults if not d.started],
            refused=delivered.refused,
            resolved=len(signals) - len(firing),
        )

    @app.post(
        "/v1/faults",
        response_model=Delivery,
        tags=["signals"],
        openapi_extra=_request_body(Fault, "a Fault in selfheal's JSON", "application/json"),
    )
    async def faults(request: Request, dry_run: bool = False) -> Delivery:
        """Start the healing of a fault, or count one more report of its running healing."""
        received_at = time.monotonic()
        fault = parse_fault(await body_of(request, INGEST))
        if dry_run:
            fault = fault.model_copy(update={"dry_run": True})
        result = await intake.deliver([fault], "faults", received_at)
        if result.refused:
            raise HttpProblem(422, result.refused[0].reason, "fault")
        return result.faults[0]

    @app.post(
        "/v1/heartbeats/{component}",
        response_model=SignalResult,
        tags=["signals"],
    )
    async def heartbeats(component: str, request: Request) -> SignalResult:
        """A heartbeat of ``component`` (body ignored); overdue components raise faults."""
        await body_of(request, INGEST)
        if not _COMPONENT.match(component):
            raise HttpProblem(
                422, "expected 1-128 letters, digits, '.', '_', ':' or '-'", "component"
            )
        if not _router(deps).heartbeat(component):
            raise HttpProblem(
                404,
                f"no heartbeats.components entry of detectors.yaml watches {component!r}",
                "component",
            )
        return await intake.sweep_heartbeats()

    @app.post(
        "/v1/otlp/v1/metrics",
        tags=["signals"],
        response_class=Response,
        openapi_extra=_request_body(
            None, "OTLP ExportMetricsServiceRequest", PROTOBUF, "application/json"
        ),
    )
    async def otlp_metrics(request: Request) -> Response:
        """OTLP/HTTP metrics; each point goes through the detectors."""
        received_at = time.monotonic()
        body = await body_of(request, INGEST)
        encoding = otlp_encoding(request)
        points = parse_otlp_metrics(body, encoding, intake.means)
        router = _router(deps)
        intake.metrics.points.inc(len(points))
        raised: list[Fault] = []
        for p in points:
            raised.extend(router.observe(p.name, p.labels, p.ts, p.value))
        if raised:
            await intake.deliver(raised, "otlp_metrics", received_at)
        return otlp_response(ExportMetricsServiceResponse(), encoding)

    @app.post(
        "/v1/otlp/v1/traces",
        tags=["signals"],
        response_class=Response,
        openapi_extra=_request_body(
            None, "OTLP ExportTraceServiceRequest", PROTOBUF, "application/json"
        ),
    )
    async def otlp_traces(request: Request) -> Response:
        """OTLP/HTTP traces; spans with status ERROR are kept for diagnosis."""
        body = await body_of(request, INGEST)
        encoding = otlp_encoding(request)
        total, errors = parse_otlp_error_spans(body, encoding)
        intake.traces.add(errors)
        intake.metrics.spans.labels("error").inc(len(errors))
        intake.metrics.spans.labels("other").inc(total - len(errors))
        return otlp_response(ExportTraceServiceResponse(), encoding)

    @app.get("/v1/traces/errors", response_model=list[ErrorSpanOut], tags=["healings"])
    async def error_traces(
        request: Request, service: str | None = None, limit: int = 50
    ) -> list[ErrorSpanOut]:
        """The most recent error spans, newest first."""
        principal(request, None)
        if not 1 <= limit <= 1000:
            raise HttpProblem(422, "expected 1..1000", "limit")
        return [ErrorSpanOut(**vars(s)) for s in intake.recent_errors(service, limit)]

    # -- healings

    @app.get("/v1/healings", response_model=list[HealingRowOut], tags=["healings"])
    async def list_healings(
        request: Request, phase: str | None = None, limit: int = 50
    ) -> list[HealingRowOut]:
        """Healings, newest first (a visibility query on HealingPhase)."""
        principal(request, None)
        if not 1 <= limit <= 1000:
            raise HttpProblem(422, "expected 1..1000", "limit")
        try:
            query = visibility_query(phase)
        except HealingLookupError as exc:
            raise HttpProblem(422, str(exc).removeprefix(f"{exc.field}: "), exc.field) from None
        rows = []
        async for execution in intake.client.list_workflows(query, limit=limit):
            row = healing_row(execution)
            rows.append(HealingRowOut(
                **{**vars(row), "started_at": _iso(row.started_at),
                   "closed_at": _iso(row.closed_at)}
            ))  # fmt: skip
        return rows

    @app.get("/v1/healings/{workflow_id}", response_model=HealingStatus, tags=["healings"])
    async def show_healing(workflow_id: str, request: Request) -> HealingStatus:
        """One healing's status: phase, faults, diagnosis, plans, approval, steps, outcome."""
        principal(request, None)
        return await _call(fetch_status(intake.client, workflow_id), workflow_id)

    async def reason_of(request: Request) -> DecisionBody:
        data = parse_json_object(await read_body(request, deps.settings.max_body_bytes) or b"{}")
        try:
            return DecisionBody.model_validate(data)
        except ValidationError as exc:
            raise describe_errors(exc) from None

    async def decide(update: str, workflow_id: str, request: Request) -> Approval:
        who = principal(request, APPROVE)
        body = await reason_of(request)

        async def work() -> Approval:
            handle = intake.client.get_workflow_handle(workflow_id)
            description = await describe_healing(handle)
            if description.status != WorkflowExecutionStatus.RUNNING:
                raise HttpProblem(409, f"healing {workflow_id} has already ended")
            try:
                approval: Approval = await handle.execute_update(
                    update,
                    ApprovalDecision(by=who.identity, reason=body.reason),
                    result_type=Approval,
                    rpc_timeout=WORKER_ANSWER_TIMEOUT,
                )
            except WorkflowUpdateFailedError as exc:
                raise HttpProblem(409, f"{update} refused: {update_failure_message(exc)}") from None
            return approval

        return await _call(work(), workflow_id)

    @app.post(
        "/v1/healings/{workflow_id}/approve",
        response_model=Approval,
        tags=["healings"],
        openapi_extra=_request_body(DecisionBody, "why", "application/json"),
    )
    async def approve(workflow_id: str, request: Request) -> Approval:
        """Approve a healing awaiting approval; the approver is the token's identity."""
        return await decide("approve", workflow_id, request)

    @app.post(
        "/v1/healings/{workflow_id}/reject",
        response_model=Approval,
        tags=["healings"],
        openapi_extra=_request_body(DecisionBody, "why", "application/json"),
    )
    async def reject(workflow_id: str, request: Request) -> Approval:
        """Reject a healing awaiting approval: nothing is executed."""
        return await decide("reject", workflow_id, request)

    # -- guardrails

    @app.get("/v1/guardrails", response_model=PauseState, tags=["guardrails"])
    async def guardrails(request: Request) -> PauseState:
        """The global kill switch: paused or not, and who changed it last, when and why."""
        principal(request, None)
        return await _in_database(deps, lambda switch: switch.state())

    @app.post(
        "/v1/guardrails/pause",
        response_model=PauseState,
        tags=["guardrails"],
        openapi_extra=_request_body(DecisionBody, "why", "application/json"),
    )
    async def pause(request: Request) -> PauseState:
        """Stop every mutating step of every healing until resumed; by the token's identity."""
        who = principal(request, APPROVE)
        reason = (await reason_of(request)).reason.strip()
        return await _in_database(deps, lambda switch: switch.set(True, who.identity, reason))

    @app.post("/v1/guardrails/resume", response_model=PauseState, tags=["guardrails"])
    async def resume(request: Request) -> PauseState:
        """Let healings act again; by the token's identity."""
        who = principal(request, APPROVE)
        return await _in_database(deps, lambda switch: switch.set(False, who.identity))

    # -- operations

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Ready when Temporal and the database answer."""

        async def temporal() -> None:
            await intake.client.service_client.check_health(timeout=timedelta(seconds=2))

        checks = {"temporal": temporal, **deps.ready_checks}
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=5)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unreachable: {type(exc).__name__}"
        ok = all(v == "ok" for v in results.values())
        return JSONResponse(results, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        return Response(render_metrics(intake.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _add_component_schemas(app, [Fault, DecisionBody])
    return app


# ---------------------------------------------------------------------------------- helpers


def openapi_json(app: FastAPI) -> str:
    """The OpenAPI document as committed in docs/openapi.json."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def _router(deps: IntakeDeps) -> MetricsRouter:
    if deps.router is None:
        raise HttpProblem(503, "no detectors are configured on this intake")
    return deps.router


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def _call(work: Awaitable[T], workflow_id: str) -> T:
    """Temporal's answers about one healing, as HTTP statuses."""
    try:
        return await work
    except HealingLookupError as exc:
        raise HttpProblem(404 if exc.not_found else 503, str(exc)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HttpProblem(404, f"no healing with id {workflow_id}") from None
        raise  # unreachable (503) or refused (502): the app's handlers answer


async def _in_database(deps: IntakeDeps, work: Callable[[KillSwitch], T]) -> T:
    """``work`` on the kill switch, off the event loop; 503 when there is none or it fails."""
    switch = deps.kill_switch
    if switch is None:
        raise HttpProblem(503, "no database configured on this intake")
    try:
        return await asyncio.to_thread(work, switch)
    except KnowledgeBaseError as exc:
        raise HttpProblem(503, str(exc)) from None


async def _sweep_forever(intake: Intake) -> None:
    while True:
        await asyncio.sleep(intake.deps.heartbeat_sweep_s)
        try:
            await intake.sweep_heartbeats()
        except Exception:
            log.exception("heartbeat sweep failed; retrying")


def _add_component_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Bodies parsed by hand (for size limits and field-naming errors) still get schemas, and
    every /v1/ operation declares its bearer token."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            full = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(full.pop("$defs", {}))
            components[model.__name__] = full
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "intake token"}
        }
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
