"""The demo services (checkout and inventory) as their own processes under the supervisor: each
injected fault fails checkout's /healthz without saying why, leaves the evidence a diagnosis
needs in the OTLP exports (error spans with exception events, joined across both services in one
trace; the flag-change gauge; inventory's latency), and is healed by what its scenario says,
not by a restart of the wrong process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from selfheal.detection.parsers import ErrorSpan, parse_otlp_metrics, parse_otlp_traces
from selfheal.devstack.demo.scenarios import SCENARIOS
from tests.integration.demo_stack import INVENTORY, TARGET, DemoStack, demo_stack, wait_until

pytestmark = pytest.mark.integration

TOKEN = "demo-test-token"


@dataclass
class Receiver:
    """A small OTLP/HTTP JSON receiver: keeps every export, checked by the intake's parsers."""

    url: str = ""
    exports: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, with its resource's service.name under ``service``."""
        out = []
        with self.lock:
            bodies = [body for path, _, body in self.exports if path.endswith("/traces")]
        for body in bodies:
            for resource in json.loads(body)["resourceSpans"]:
                service = attrs(resource["resource"]["attributes"])["service.name"]
                for scope in resource["scopeSpans"]:
                    out += [{**span, "service": service} for span in scope["spans"]]
        return out

    def parsed_errors(self) -> list[ErrorSpan]:
        """The error spans as the intake's own parser reads them."""
        with self.lock:
            bodies = [body for path, _, body in self.exports if path.endswith("/traces")]
        return [s for body in bodies for s in parse_otlp_traces(body, "json").errors]

    def metric_points(self, name: str) -> list[tuple[dict[str, str], float]]:
        with self.lock:
            bodies = [body for path, _, body in self.exports if path.endswith("/metrics")]
        return [
            (p.labels, p.value)
            for body in bodies
            for p in parse_otlp_metrics(body, "json")
            if p.name == name
        ]

    def clear(self) -> None:
        with self.lock:
            self.exports.clear()


def attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in items}


def exception_of(span: dict[str, Any]) -> dict[str, Any] | None:
    events = [e for e in span.get("events", []) if e["name"] == "exception"]
    return attrs(events[0]["attributes"]) if events else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with received.lock:
                received.exports.append((self.path, self.headers["Authorization"] or "", body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_port}/v1/otlp"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def stack(tmp_path: Path, receiver: Receiver) -> Iterator[DemoStack]:
    with demo_stack(tmp_path, otlp_url=receiver.url, token=TOKEN, traffic_rps=10) as s:
        yield s


def healthz(stack: DemoStack, url: str | None = None) -> httpx.Response:
    return httpx.get(f"{url or stack.target_url}/healthz", timeout=2)


def wait_health(stack: DemoStack, status: int, what: str) -> None:
    wait_until(lambda: stack.health() == status, timeout_s=15, what=what)


def restart(stack: DemoStack, process: str, key: str) -> None:
    stack.supervisor.restart(process, f"{process}-{key}")  # keys are the supervisor's, global
    url = stack.target_url if process == TARGET else stack.inventory_url
    wait_until(lambda: stack.health(url=url) is not None, what=f"{process} to answer again")


def wait_spans(receiver: Receiver, predicate: Any, what: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal found
        found = [s for s in receiver.spans() if predicate(s)]
        return bool(found)

    wait_until(ready, timeout_s=15, what=what)
    return found


def trace_of(
    receiver: Receiver,
    trace_id: str,
    needs: tuple[tuple[str, str], ...] = (("checkout", "GET /"), ("inventory", "GET /reserve")),
) -> dict[tuple[str, str], dict[str, Any]]:
    """The spans of one trace by (service, name), once those it ``needs`` have arrived."""
    spans: dict[tuple[str, str], dict[str, Any]] = {}

    def complete() -> bool:
        nonlocal spans
        spans = {(s["service"], s["name"]): s for s in receiver.spans() if s["traceId"] == trace_id}
        return set(needs) <= set(spans)

    wait_until(complete, timeout_s=15, what=f"spans {needs} of trace {trace_id}")
    return spans


def test_healthy_services_export_joined_traces_and_metrics(
    stack: DemoStack, receiver: Receiver
) -> None:
    assert healthz(stack).json() == {"status": "ok"}
    assert healthz(stack, stack.inventory_url).json() == {"status": "ok"}
    assert httpx.get(stack.target_url, timeout=2).json() == {"order": "accepted"}

    root = wait_spans(receiver, lambda s: s["name"] == "GET /", "a checkout span")[0]
    spans = trace_of(receiver, root["traceId"])
    client = spans[("checkout", "GET /reserve")]
    server = spans[("inventory", "GET /reserve")]
    # checkout's server span → its client span → inventory's server span (traceparent)
    assert client["parentSpanId"] == root["spanId"]
    assert server["parentSpanId"] == client["spanId"]
    assert spans[("inventory", "index.lookup")]["parentSpanId"] == server["spanId"]
    assert attrs(client["attributes"])["peer.service"] == "inventory"
    assert all(s["status"]["code"] != 2 for s in spans.values())
    # What the intake's parser makes of them, and the token on every export
    with receiver.lock:
        exports = list(receiver.exports)
    assert {auth for _, auth, _ in exports} == {f"Bearer {TOKEN}"}
    traces = [body for path, _, body in exports if path == "/v1/otlp/v1/traces"]
    parsed = [parse_otlp_traces(body, "json") for body in traces]
    assert sum(p.total for p in parsed) >= 3 and not any(p.rejected for p in parsed)

    services = {labels["service.name"] for labels, _ in receiver.metric_points("demo_error_ratio")}
    assert services == {"checkout", "inventory"}
    assert receiver.metric_points("demo_requests_total")
    assert receiver.metric_points("demo_request_duration_p99_seconds")
    prometheus = httpx.get(f"{stack.target_url}/metrics", timeout=2).text
    assert 'demo_error_ratio{service="checkout"} 0.0' in prometheus
    assert "demo_flag_last_change_timestamp_seconds" not in prometheus  # never changed


def test_error_burst_shows_the_flag_and_is_healed_by_it_not_by_a_restart(
    stack: DemoStack, receiver: Receiver
) -> None:
    before = time.time()
    stack.inject("error_burst")
    wait_health(stack, 503, "checkout to fail")
    assert healthz(stack).json() == {"status": "failing"}

    failed = wait_spans(
        receiver, lambda s: s["name"] == "checkout.new_pricing" and exception_of(s), "a flag error"
    )[0]
    assert exception_of(failed) == {
        "exception.type": "PricingError",
        "exception.message": "rounding produced a negative total",
    }
    assert attrs(failed["attributes"])["feature_flag.key"] == "new_checkout"
    root = trace_of(receiver, failed["traceId"], needs=(("checkout", "GET /"),))[
        ("checkout", "GET /")
    ]
    assert root["status"]["code"] == 2 and failed["parentSpanId"] == root["spanId"]
    assert attrs(root["attributes"])["feature_flag.key"] == "new_checkout"

    wait_until(
        lambda: bool(receiver.metric_points("demo_flag_last_change_timestamp_seconds")),
        what="the flag-change gauge",
    )
    labels, changed_at = receiver.metric_points("demo_flag_last_change_timestamp_seconds")[-1]
    assert labels["flag"] == "new_checkout" and labels["service"] == "checkout"
    assert before <= changed_at <= time.time()

    restart(stack, TARGET, "r1")
    wait_health(stack, 503, "checkout to fail again after its restart")

    switched = httpx.put(
        f"{stack.target_url}/flags/new_checkout", json={"enabled": False}, timeout=2
    )
    assert switched.json() == {"name": "new_checkout", "enabled": False}
    wait_health(stack, 200, "checkout to recover once the flag is off")
    assert all(httpx.get(stack.target_url, timeout=2).status_code == 200 for _ in range(5))


def test_poisoned_cache_errors_in_cache_get_and_is_healed_by_a_flush_not_by_a_restart(
    stack: DemoStack, receiver: Receiver
) -> None:
    stack.inject("poisoned_cache")
    wait_health(stack, 503, "checkout to fail")
    assert healthz(stack).json() == {"status": "failing"}
    assert httpx.get(stack.target_url, timeout=2).status_code == 500

    span = wait_spans(
        receiver, lambda s: s["name"] == "cache.get" and s["status"]["code"] == 2, "a cache error"
    )[0]
    assert exception_of(span) is not None
    assert exception_of(span)["exception.type"] == "CacheCorruption"  # type: ignore[index]
    assert span["service"] == "checkout"

    restart(stack, TARGET, "r1")
    wait_health(stack, 503, "checkout to fail again after its restart")

    assert httpx.post(f"{stack.target_url}/admin/cache/flush", timeout=2).json() == {"flushed": 1}
    wait_health(stack, 200, "checkout to recover after the flush")


def test_dependency_slow_times_out_checkout_and_is_healed_by_the_fallback(
    stack: DemoStack, receiver: Receiver
) -> None:
    injected_ns = time.time_ns()
    stack.inject("dependency_slow")
    wait_health(stack, 503, "checkout to fail")
    assert healthz(stack, stack.inventory_url).json() == {"status": "ok"}

    # a call made after the injection (one made while inventory was still starting was refused)
    client = wait_spans(
        receiver,
        lambda s: (
            s["name"] == "GET /reserve"
            and s["service"] == "checkout"
            and int(s["startTimeUnixNano"]) >= injected_ns
            and exception_of(s)
        ),
        "a timed-out call",
    )[0]
    assert exception_of(client)["exception.type"] == "TimeoutError"  # type: ignore[index]
    # inventory's own span of that call: slow, yet not an error
    served = wait_spans(
        receiver,
        lambda s: s["traceId"] == client["traceId"] and s["service"] == "inventory",
        "inventory's span of the timed-out call",
    )
    server = next(s for s in served if s["name"] == "GET /reserve")
    assert server["parentSpanId"] == client["spanId"]
    assert server["status"]["code"] != 2
    assert (int(server["endTimeUnixNano"]) - int(server["startTimeUnixNano"])) / 1e9 >= 1.0

    def inventory_p99() -> float:
        points = receiver.metric_points("demo_request_duration_p99_seconds")
        slow = [v for labels, v in points if labels["service"] == "inventory"]
        return slow[-1] if slow else 0.0

    wait_until(lambda: inventory_p99() >= 1.0, timeout_s=15, what="inventory's p99 to rise")

    restart(stack, INVENTORY, "r1")  # the slowness is not in inventory's memory
    time.sleep(1)
    assert stack.health() == 503

    httpx.put(f"{stack.target_url}/control/degradation", json={"mode": "fallback"}, timeout=2)
    wait_health(stack, 200, "checkout to recover on its fallback path")
    assert httpx.get(stack.target_url, timeout=2).json() == {"order": "accepted", "fallback": True}


def test_inventory_errors_fail_checkout_and_only_an_inventory_restart_heals(
    stack: DemoStack, receiver: Receiver
) -> None:
    stack.inject("inventory_errors")
    wait_health(stack, 503, "checkout to fail")
    assert healthz(stack).json() == {"status": "failing"}
    assert healthz(stack, stack.inventory_url).status_code == 200  # a shallow liveness check

    origin = wait_spans(
        receiver,
        lambda s: s["service"] == "inventory" and s["name"] == "index.lookup" and exception_of(s),
        "inventory's index error",
    )[0]
    assert exception_of(origin)["exception.type"] == "IndexCorruption"  # type: ignore[index]
    spans = trace_of(receiver, origin["traceId"])
    root, client = spans[("checkout", "GET /")], spans[("checkout", "GET /reserve")]
    server = spans[("inventory", "GET /reserve")]
    assert [s["status"]["code"] for s in (root, client, server, origin)] == [2, 2, 2, 2]
    assert exception_of(client) is None and exception_of(root) is None  # not where it arose
    assert (server["parentSpanId"], client["parentSpanId"]) == (client["spanId"], root["spanId"])
    # the intake's parser finds the origin's exception and the join
    read = {s.span_id: s for s in receiver.parsed_errors() if s.trace_id == origin["traceId"]}
    assert read[origin["spanId"]].exceptions[0]["type"] == "IndexCorruption"
    assert read[server["spanId"]].parent_span_id == client["spanId"]
    assert read[client["spanId"]].attributes["peer.service"] == "inventory"

    def errors(service: str) -> float:
        ratios = [
            v
            for labels, v in receiver.metric_points("demo_error_ratio")
            if labels["service"] == service
        ]
        return ratios[-1] if ratios else 0.0

    wait_until(lambda: errors("inventory") > 0.9, what="inventory's error ratio to rise")

    restart(stack, TARGET, "r1")
    wait_health(stack, 503, "checkout to fail again after its own restart")

    restart(stack, INVENTORY, "r1")
    wait_health(stack, 200, "checkout to recover once inventory restarted")


def test_hang_stops_answering_until_a_restart(stack: DemoStack) -> None:
    stack.inject("hang")
    wait_until(lambda: stack.health(timeout_s=0.5) is None, what="checkout to hang")
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{stack.target_url}/healthz", timeout=0.5)
    assert stack.supervisor.status(TARGET).state == "running"  # alive, yet silent

    restart(stack, TARGET, "r1")
    assert healthz(stack).status_code == 200


def test_crash_exits_and_a_restart_brings_it_back(stack: DemoStack) -> None:
    stack.inject("crash")
    wait_until(lambda: stack.supervisor.status(TARGET).state == "exited", what="the crash")
    assert stack.health() is None
    assert stack.health(url=stack.inventory_url) == 200

    restart(stack, TARGET, "r1")
    wait_health(stack, 200, "checkout to be healthy again")


def test_bad_requests_are_named(stack: DemoStack) -> None:
    http = httpx.Client(base_url=stack.target_url, timeout=2)
    wrong = http.put("/flags/new_checkout", json={"enabled": "yes"})
    assert wrong.status_code == 400
    assert wrong.json()["field"] == "enabled"
    unknown = http.post("/inject/meteor")
    assert unknown.status_code == 404
    assert "error_burst" in unknown.json()["error"]
    assert http.get("/nowhere").status_code == 404
    assert set(SCENARIOS) <= set(unknown.json()["error"].split("known: ")[1].split(", "))


def test_reset_brings_back_normal_services(stack: DemoStack) -> None:
    for scenario in ("error_burst", "poisoned_cache", "dependency_slow", "inventory_errors"):
        stack.inject(scenario)
    httpx.put(f"{stack.target_url}/control/degradation", json={"mode": "fallback"}, timeout=2)
    wait_health(stack, 503, "checkout to fail")  # the cache is poisoned, fallback or not

    reset = httpx.post(f"{stack.target_url}/admin/reset", timeout=5)
    assert reset.json() == {"reset": True, "inventory": True}
    wait_health(stack, 200, "checkout to recover")
    assert httpx.get(stack.target_url, timeout=2).json() == {"order": "accepted"}
    mode = httpx.get(f"{stack.target_url}/control/degradation", timeout=2).json()["mode"]
    assert mode == "normal"
