"""The demo's ``inventory`` service: checkout's dependency, run as its own process.

    python -m selfheal.devstack.demo.inventory --port 8782 --state-dir .selfheal/inventory \
        [--otlp-url http://127.0.0.1:8000/v1/otlp]   (token: env SELFHEAL_DEMO_OTLP_TOKEN)

    GET  /reserve             reserve an item; joins the caller's trace (W3C traceparent)
    GET  /healthz             200 {"status": "ok"} while the process answers: a shallow
                              liveness check, as many real services have, that does not look
                              at the index, so an index fault shows only in traces and metrics
    GET  /metrics             Prometheus text (see selfheal.devstack.demo.common)
    POST /inject/{scenario}   dependency_slow | inventory_errors | crash | hang
    POST /admin/reset         back to normal: fast, index intact

Faults: ``dependency_slow`` makes every reservation take ``SLOW_S`` (the spans stay OK, only
slow) and is kept in the state directory, so a restart does not end it; with ``--slow-for-s N``
it ends by itself N seconds after its injection (a dependency that recovers, as ``selfheal dev``
runs it, so that the breaker kept over checkout's fallback can close); ``inventory_errors``
corrupts the in-memory index, so every reservation fails with an ``IndexCorruption`` exception
until the process restarts (and only then).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path

from selfheal.devstack.demo.common import (
    SERVER,
    DemoHandler,
    DemoServer,
    RequestStats,
    Sample,
    crash_soon,
    hang_soon,
    parse_traceparent,
    read_json,
    request_samples,
    start_exporter,
    write_json,
)

SERVICE = "inventory"
SCENARIOS = ("dependency_slow", "inventory_errors", "crash", "hang")
SLOW_S = 1.0


class IndexCorruption(Exception):
    """The in-memory index is corrupt: what a restart (reloading it) clears."""


class InventoryState:
    def __init__(self, state_dir: Path, slow_for_s: float = 0.0) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._file = state_dir / "inventory.json"
        self._lock = threading.Lock()
        saved = read_json(self._file)
        self._slow = bool(saved.get("slow"))
        self._slow_until: float | None = saved.get("slow_until")
        self._slow_for_s = slow_for_s
        self.index_corrupt = False  # in memory only: a restart reloads the index

    @property
    def slow(self) -> bool:
        if self._slow and self._slow_until is not None and time.time() >= self._slow_until:
            self.set_slow(False)
        return self._slow

    def set_slow(self, slow: bool) -> None:
        with self._lock:
            self._slow = slow
            # wall-clock: the end survives a restart of the process
            self._slow_until = time.time() + self._slow_for_s if slow and self._slow_for_s else None
            write_json(self._file, {"slow": slow, "slow_until": self._slow_until})

    def reset(self) -> None:
        self.set_slow(False)
        self.index_corrupt = False


class InventoryServer(DemoServer):
    def __init__(self, address: tuple[str, int], state: InventoryState, window_s: float) -> None:
        super().__init__(address, InventoryHandler, SERVICE)
        self.state = state
        self.stats = RequestStats(window_s)

    def samples(self) -> list[Sample]:
        return request_samples(SERVICE, self.stats)


class InventoryHandler(DemoHandler):
    server: InventoryServer
    server_version = "selfheal-demo-inventory"

    def route(self, method: str, path: str, parts: list[str]) -> None:
        match method, parts:
            case "GET", ["reserve"]:
                self._reserve()
            case "GET", ["healthz"]:
                self.json(HTTPStatus.OK, {"status": "ok"})
            case "GET", ["metrics"]:
                self.metrics(self.server.samples())
            case "POST", ["admin", "reset"]:
                self.server.state.reset()
                self.json(HTTPStatus.OK, {"reset": True})
            case "POST", ["inject", scenario]:
                self._inject(scenario)
            case _:
                self.not_found(method, path)

    def _reserve(self) -> None:
        server, state = self.server, self.server.state
        started = time.monotonic()
        status, answer = HTTPStatus.OK, {"sku": "sku-42", "reserved": True}
        attributes = {
            "http.request.method": "GET",
            "http.route": "/reserve",
            "url.path": "/reserve",
        }
        with server.tracer.span(
            "GET /reserve",
            kind=SERVER,
            remote_parent=parse_traceparent(self.headers.get("traceparent")),
            attributes=attributes,
        ) as span:
            try:
                with server.tracer.span("index.lookup", parent=span, attributes={"sku": "sku-42"}):
                    if state.slow:
                        time.sleep(SLOW_S)
                    if state.index_corrupt:
                        raise IndexCorruption(
                            "index segment 7 failed its checksum: sku-42 unreadable"
                        )
            except IndexCorruption as exc:
                status, answer = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
                span.fail(f"IndexCorruption: {exc}")
            span.attributes["http.response.status_code"] = int(status)
        server.stats.record(time.monotonic() - started, failed=status >= 500)
        self.json(status, answer)

    def _inject(self, scenario: str) -> None:
        state = self.server.state
        if scenario == "dependency_slow":
            state.set_slow(True)
        elif scenario == "inventory_errors":
            state.index_corrupt = True
        elif scenario == "crash":
            crash_soon()
        elif scenario == "hang":
            hang_soon(self.server)
        else:
            known = ", ".join(SCENARIOS)
            self.json(
                HTTPStatus.NOT_FOUND, {"error": f"unknown scenario {scenario!r}; known: {known}"}
            )
            return
        self.json(HTTPStatus.ACCEPTED, {"injected": scenario, "service": SERVICE})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m selfheal.devstack.demo.inventory",
        description="selfheal's demo inventory service (checkout's dependency)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--window-s", type=float, default=3.0, help="of the ratio and p99 gauges")
    parser.add_argument("--otlp-url", help="OTLP/HTTP base URL to push to, e.g. <intake>/v1/otlp")
    parser.add_argument("--export-interval-s", type=float, default=1.0)
    parser.add_argument(
        "--slow-for-s", type=float, default=0.0, help="dependency_slow ends after this; 0: never"
    )
    args = parser.parse_args(argv)
    server = InventoryServer(
        (args.host, args.port), InventoryState(args.state_dir, args.slow_for_s), args.window_s
    )
    start_exporter(args.otlp_url, server.tracer, server.samples, args.export_interval_s)
    print(f"demo inventory on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
