"""What the demo's two services (``checkout`` and ``inventory``) share: spans and their W3C
``traceparent`` propagation, request statistics, the metrics both export (Prometheus text on
``/metrics`` and OTLP/HTTP JSON pushed to the intake), and the HTTP server they run on.

Standard library only, so that a service starts in a blink after the supervisor restarts it.
The exporter follows the OpenTelemetry data model closely enough for any OTLP receiver (span
kinds, status ERROR, ``exception`` events with ``exception.type`` and ``exception.message``,
resource attribute ``service.name``), without the SDK's start-up cost.

Metrics of both services (Prometheus label ``service``; in OTLP the same point attribute, and
the resource's ``service.name``):

    demo_requests_total                  counter  requests served
    demo_errors_total                    counter  requests answered 5xx
    demo_error_ratio                     gauge    5xx share of the requests of the last window
    demo_request_duration_p99_seconds    gauge    p99 latency of the last window (absent when
                                                  no request finished in it)
    demo_up                              gauge    1 while the process answers

``checkout`` adds ``demo_flag_last_change_timestamp_seconds{flag}`` (when the flag last
changed, unix seconds; absent until it ever did) and ``demo_degradation_mode{mode}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# The environment variable holding the intake's bearer token (never on the command line,
# where every user of the machine could read it).
TOKEN_ENV = "SELFHEAL_DEMO_OTLP_TOKEN"
SERVICE_LABEL = "service"
EXPORT_INTERVAL_S = 1.0
EXPORT_TIMEOUT_S = 1.0
SPAN_BUFFER = 2048

# OTLP span kinds and status codes (opentelemetry-proto trace.proto)
INTERNAL, SERVER, CLIENT = 1, 2, 3
STATUS_OK, STATUS_ERROR = 1, 2

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
AttributeValue = str | int | float | bool


# ------------------------------------------------------------------------------------ spans


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int = 0
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    status_code: int = 0
    status_message: str = ""

    @property
    def traceparent(self) -> str:
        """The W3C header a call made inside this span carries."""
        return f"00-{self.trace_id}-{self.span_id}-01"

    def fail(self, message: str) -> None:
        self.status_code, self.status_message = STATUS_ERROR, message

    def record_exception(self, exc: BaseException) -> None:
        """An ``exception`` event (OTel semantic conventions) and status ERROR."""
        self.events.append(
            {
                "name": "exception",
                "time_ns": time.time_ns(),
                "attributes": {
                    "exception.type": type(exc).__name__,
                    "exception.message": str(exc),
                },
            }
        )
        self.fail(f"{type(exc).__name__}: {exc}")

    @property
    def failed(self) -> bool:
        return self.status_code == STATUS_ERROR

    def to_otlp(self) -> dict[str, Any]:
        span: dict[str, Any] = {
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": str(self.start_ns),
            "endTimeUnixNano": str(self.end_ns),
            "attributes": otlp_attributes(self.attributes),
            "events": [
                {
                    "timeUnixNano": str(e["time_ns"]),
                    "name": e["name"],
                    "attributes": otlp_attributes(e["attributes"]),
                }
                for e in self.events
            ],
            "status": {"code": self.status_code, "message": self.status_message},
        }
        if self.parent_id:
            span["parentSpanId"] = self.parent_id
        return span


def parse_traceparent(header: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a valid W3C ``traceparent``; None otherwise (a new trace
    starts, as the specification asks of a receiver given a malformed header)."""
    match = _TRACEPARENT.match((header or "").strip().lower())
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(1), match.group(2)


class Tracer:
    """Makes spans and keeps the finished ones (a bounded buffer: the oldest are dropped when no
    one exports them) until the exporter drains them."""

    def __init__(self, service: str, buffer: int = SPAN_BUFFER) -> None:
        self.service = service
        self._finished: deque[Span] = deque(maxlen=buffer)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        kind: int = INTERNAL,
        parent: Span | None = None,
        remote_parent: tuple[str, str] | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Iterator[Span]:
        """A span, a child of ``parent`` (this process) or ``remote_parent`` (a traceparent's
        ids). An exception escaping it is recorded on it, then raised on."""
        if parent is not None:
            trace_id, parent_id = parent.trace_id, parent.span_id
        elif remote_parent is not None:
            trace_id, parent_id = remote_parent
        else:
            trace_id, parent_id = secrets.token_hex(16), None
        span = Span(
            trace_id, secrets.token_hex(8), parent_id, name, kind, time.time_ns(),
            attributes=dict(attributes or {}),
        )  # fmt: skip
        try:
            yield span
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            span.end_ns = time.time_ns()
            with self._lock:
                self._finished.append(span)

    def drain(self) -> list[Span]:
        with self._lock:
            spans = list(self._finished)
            self._finished.clear()
        return spans


# --------------------------------------------------------------------------------- metrics


class RequestStats:
    """Request counters, and the error ratio and p99 latency over a sliding window of time."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.requests = 0
        self.errors = 0
        self._recent: deque[tuple[float, float, bool]] = deque()
        self._lock = threading.Lock()

    def record(self, duration_s: float, failed: bool) -> None:
        with self._lock:
            self.requests += 1
            self.errors += failed
            self._recent.append((time.monotonic(), duration_s, failed))

    def window(self, within_s: float | None = None) -> tuple[int, float, float | None]:
        """(requests, error ratio, p99 seconds or None) over the last ``window_s``, or the last
        ``within_s`` of it."""
        with self._lock:
            now = time.monotonic()
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()
            since = now - min(within_s if within_s is not None else self.window_s, self.window_s)
            recent = [r for r in self._recent if r[0] >= since]
        if not recent:
            return 0, 0.0, None
        durations = sorted(d for _, d, _ in recent)
        p99 = durations[max(math.ceil(0.99 * len(durations)) - 1, 0)]
        return len(recent), sum(f for _, _, f in recent) / len(recent), p99


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def request_samples(service: str, stats: RequestStats) -> list[Sample]:
    """The metrics every demo service exports about its requests."""
    _, ratio, p99 = stats.window()
    label = {SERVICE_LABEL: service}
    window = f"{stats.window_s:g}s"
    samples = [
        Sample("demo_requests_total", "counter", "Requests served.", stats.requests, label),
        Sample("demo_errors_total", "counter", "Requests answered 5xx.", stats.errors, label),
        Sample("demo_error_ratio", "gauge", f"5xx share of the last {window}.", ratio, label),
        Sample("demo_up", "gauge", "1 while the process answers.", 1, label),
    ]
    if p99 is not None:
        help_ = f"p99 latency of the last {window}, in seconds."
        samples.append(Sample("demo_request_duration_p99_seconds", "gauge", help_, p99, label))
    return samples


def prometheus_text(samples: list[Sample]) -> str:
    lines: list[str] = []
    described: set[str] = set()
    for s in samples:
        if s.name not in described:
            described.add(s.name)
            lines += [f"# HELP {s.name} {s.help}", f"# TYPE {s.name} {s.kind}"]
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
        value = repr(float(s.value))  # full precision: timestamps need every digit
        lines.append(f"{s.name}{{{labels}}} {value}" if labels else f"{s.name} {value}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def otlp_attributes(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, value in attributes.items():
        if isinstance(value, bool):
            typed: dict[str, Any] = {"boolValue": value}
        elif isinstance(value, int):
            typed = {"intValue": str(value)}
        elif isinstance(value, float):
            typed = {"doubleValue": value}
        else:
            typed = {"stringValue": str(value)}
        out.append({"key": key, "value": typed})
    return out


def _resource(service: str) -> dict[str, Any]:
    return {"attributes": otlp_attributes({"service.name": service})}


_SCOPE = {"name": "selfheal.devstack.demo"}


def otlp_metrics(service: str, samples: list[Sample], start_ns: int) -> dict[str, Any]:
    """An ExportMetricsServiceRequest in OTLP/JSON: counters as cumulative monotonic sums."""
    now = str(time.time_ns())
    by_name: dict[str, dict[str, Any]] = {}
    for s in samples:
        point = {
            "attributes": otlp_attributes(s.labels),
            "timeUnixNano": now,
            "asDouble": float(s.value),
        }
        metric = by_name.get(s.name)
        if metric is None:
            metric = {"name": s.name, "description": s.help}
            if s.kind == "counter":
                metric["sum"] = {
                    "dataPoints": [],
                    "aggregationTemporality": 2,  # cumulative
                    "isMonotonic": True,
                }
            else:
                metric["gauge"] = {"dataPoints": []}
            by_name[s.name] = metric
        if s.kind == "counter":
            point["startTimeUnixNano"] = str(start_ns)
            metric["sum"]["dataPoints"].append(point)
        else:
            metric["gauge"]["dataPoints"].append(point)
    return {
        "resourceMetrics": [
            {
                "resource": _resource(service),
                "scopeMetrics": [{"scope": _SCOPE, "metrics": list(by_name.values())}],
            }
        ]
    }


def otlp_traces(service: str, spans: list[Span]) -> dict[str, Any]:
    """An ExportTraceServiceRequest in OTLP/JSON (ids in hex, as OTLP/JSON has them)."""
    return {
        "resourceSpans": [
            {
                "resource": _resource(service),
                "scopeSpans": [{"scope": _SCOPE, "spans": [s.to_otlp() for s in spans]}],
            }
        ]
    }


class OtlpExporter:
    """Pushes metrics and finished spans to ``<endpoint>/v1/metrics`` and ``/v1/traces`` every
    ``interval_s`` from a daemon thread. An intake that is not there (or refuses) costs the
    batch, silently: the demo service must never fail because its telemetry cannot leave."""

    def __init__(
        self,
        endpoint: str,
        token: str | None,
        tracer: Tracer,
        samples: Callable[[], list[Sample]],
        interval_s: float = EXPORT_INTERVAL_S,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.tracer = tracer
        self.samples = samples
        self.interval_s = interval_s
        self.start_ns = time.time_ns()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.export_once()

    def export_once(self) -> None:
        service = self.tracer.service
        with contextlib.suppress(Exception):
            self._post("/v1/metrics", otlp_metrics(service, self.samples(), self.start_ns))
        spans = self.tracer.drain()
        if spans:
            with contextlib.suppress(Exception):
                self._post("/v1/traces", otlp_traces(service, spans))

    def _post(self, path: str, payload: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.endpoint + path, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=EXPORT_TIMEOUT_S) as response:
            response.read()


# ------------------------------------------------------------------------------ HTTP server


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], service: str
    ) -> None:
        super().__init__(address, handler)
        self.service = service
        self.tracer = Tracer(service)
        self.hung = threading.Event()


class DemoHandler(BaseHTTPRequestHandler):
    """JSON in and out, no request log (the supervisor's log should hold faults, not probes),
    and a hung server that accepts connections and never answers, as a deadlocked one does."""

    server: DemoServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self, method: str) -> None:
        if self.server.hung.is_set():
            threading.Event().wait()
        path = self.path.split("?", 1)[0]
        self.route(method, path, [p for p in path.split("/") if p])

    def route(self, method: str, path: str, parts: list[str]) -> None:
        raise NotImplementedError

    def not_found(self, method: str, path: str) -> None:
        self.json(HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"})

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return None

    def json(self, status: HTTPStatus | int, payload: Any) -> None:
        self.send(status, json.dumps(payload).encode(), "application/json")

    def send(self, status: HTTPStatus | int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def metrics(self, samples: list[Sample]) -> None:
        body = prometheus_text(samples).encode()
        self.send(HTTPStatus.OK, body, "text/plain; version=0.0.4")


def crash_soon() -> None:
    """Exit with code 1 once the injecting caller has its answer."""
    threading.Timer(0.1, os._exit, (1,)).start()


def hang_soon(server: DemoServer) -> None:
    """Stop answering once the injecting caller has its answer."""
    threading.Timer(0.05, server.hung.set).start()


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def start_exporter(
    otlp_url: str | None, tracer: Tracer, samples: Callable[[], list[Sample]], interval_s: float
) -> OtlpExporter | None:
    """The exporter, started, when an OTLP endpoint was given (the token from ``TOKEN_ENV``)."""
    if not otlp_url:
        return None
    exporter = OtlpExporter(
        otlp_url, os.environ.get(TOKEN_ENV) or None, tracer, samples, interval_s
    )
    exporter.start()
    return exporter
