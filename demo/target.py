"""The demo target: a tiny "checkout" service with fault injection, run as its own process.

    python -m demo.target --port 8780 --state-dir .selfheal/target

Standard library only, so that it starts in a blink when the supervisor restarts it.

    GET  /                    a checkout; fails 3 in 5 while flag new_checkout is on, and always
                              while the cache is poisoned
    GET  /healthz             200 {"status": "ok", ...} or 503 {"status": "degraded", "checks":
                              {"errors": "failing"|"ok", "cache": "poisoned"|"ok"}, ...}
    GET  /metrics             Prometheus text
    GET  /flags, GET|PUT /flags/{name}   body {"enabled": bool}: absolute, hence idempotent
    POST /admin/cache/flush   empties the cache
    POST /inject/{scenario}   error_burst | hang | crash | poisoned_cache

Flags and cache live in the state directory: a restart heals ``hang`` and ``crash`` but not
``error_burst`` (switch the flag off) nor ``poisoned_cache`` (flush the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BAD_FLAG = "new_checkout"
POISONED_KEY = "price:sku-42"
SCENARIOS = ("error_burst", "hang", "crash", "poisoned_cache")
_FLAG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def target_command(port: int, state_dir: Path, host: str = "127.0.0.1") -> list[str]:
    """The command line that runs the demo target (for the supervisor)."""
    return [
        sys.executable, "-m", "demo.target",
        "--host", host, "--port", str(port), "--state-dir", str(state_dir),
    ]  # fmt: skip


class TargetState:
    """Flags and cache, written through to the state directory on every change."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._flags_file = state_dir / "flags.json"
        self._cache_file = state_dir / "cache.json"
        self._lock = threading.Lock()
        self.flags: dict[str, bool] = _read_json(self._flags_file)
        self.cache: dict[str, Any] = _read_json(self._cache_file)

    def set_flag(self, name: str, enabled: bool) -> None:
        with self._lock:
            self.flags[name] = enabled
            _write_json(self._flags_file, self.flags)

    def poison_cache(self) -> None:
        with self._lock:
            self.cache[POISONED_KEY] = {"value": "\x00corrupt", "poisoned": True}
            _write_json(self._cache_file, self.cache)

    def flush_cache(self) -> int:
        with self._lock:
            flushed = len(self.cache)
            self.cache = {}
            _write_json(self._cache_file, self.cache)
            return flushed

    @property
    def bad_flag_on(self) -> bool:
        return self.flags.get(BAD_FLAG, False)

    @property
    def cache_poisoned(self) -> bool:
        return any(isinstance(v, dict) and v.get("poisoned") for v in self.cache.values())


class Traffic:
    """Checkout counters, and the error ratio over a sliding window of time."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.requests = 0
        self.errors = 0
        self._recent: deque[tuple[float, bool]] = deque()
        self._lock = threading.Lock()

    def begin(self) -> int:
        """Count one checkout; returns its sequence number (from 0)."""
        with self._lock:
            self.requests += 1
            return self.requests - 1

    def finish(self, failed: bool) -> None:
        with self._lock:
            self.errors += failed
            self._recent.append((time.monotonic(), failed))

    def error_ratio(self) -> float:
        with self._lock:
            horizon = time.monotonic() - self.window_s
            while self._recent and self._recent[0][0] < horizon:
                self._recent.popleft()
            if not self._recent:
                return 0.0
            return sum(failed for _, failed in self._recent) / len(self._recent)


class TargetServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: TargetState, traffic: Traffic) -> None:
        super().__init__(address, Handler)
        self.state = state
        self.traffic = traffic
        self.hung = threading.Event()


class Handler(BaseHTTPRequestHandler):
    server: TargetServer
    server_version = "selfheal-demo-target"

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_POST(self) -> None:
        self._route("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the supervisor's log should hold faults, not one line per probe

    def _route(self, method: str) -> None:
        if self.server.hung.is_set():
            # The connection is accepted and never answered, as a deadlocked service does.
            threading.Event().wait()
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        match method, parts:
            case "GET", []:
                self._checkout()
            case "GET", ["healthz"]:
                self._healthz()
            case "GET", ["metrics"]:
                self._metrics()
            case "GET", ["flags"]:
                self._json(HTTPStatus.OK, {"flags": self.server.state.flags})
            case "GET", ["flags", name]:
                self._get_flag(name)
            case "PUT", ["flags", name]:
                self._put_flag(name)
            case "POST", ["admin", "cache", "flush"]:
                flushed = self.server.state.flush_cache()
                self._json(HTTPStatus.OK, {"flushed": flushed})
            case "POST", ["inject", scenario]:
                self._inject(scenario)
            case _:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"})

    def _checkout(self) -> None:
        state, traffic = self.server.state, self.server.traffic
        seq = traffic.begin()
        if state.cache_poisoned:
            error = f"cache entry {POISONED_KEY} is corrupt"
        elif state.bad_flag_on and seq % 5 < 3:
            error = f"checkout failed on the {BAD_FLAG} code path"
        else:
            error = None
        traffic.finish(failed=error is not None)
        if error:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": error})
        else:
            self._json(HTTPStatus.OK, {"order": "accepted"})

    def _healthz(self) -> None:
        state = self.server.state
        checks = {
            "errors": "failing" if state.bad_flag_on else "ok",
            "cache": "poisoned" if state.cache_poisoned else "ok",
        }
        healthy = all(v == "ok" for v in checks.values())
        self._json(
            HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE,
            {
                "status": "ok" if healthy else "degraded",
                "checks": checks,
                "error_rate": round(self.server.traffic.error_ratio(), 4),
                "flags": state.flags,
            },
        )

    def _metrics(self) -> None:
        state, traffic = self.server.state, self.server.traffic
        lines = [
            "# HELP demo_requests_total Checkout requests served.",
            "# TYPE demo_requests_total counter",
            f"demo_requests_total {traffic.requests}",
            "# HELP demo_errors_total Checkout requests that failed.",
            "# TYPE demo_errors_total counter",
            f"demo_errors_total {traffic.errors}",
            f"# HELP demo_error_ratio Failed share of checkouts in the last {traffic.window_s:g}s.",
            "# TYPE demo_error_ratio gauge",
            f"demo_error_ratio {traffic.error_ratio():.4f}",
            "# HELP demo_cache_poisoned 1 while the cache holds a corrupt entry.",
            "# TYPE demo_cache_poisoned gauge",
            f"demo_cache_poisoned {int(state.cache_poisoned)}",
            "# HELP demo_flag_enabled Feature flags, 1 when on.",
            "# TYPE demo_flag_enabled gauge",
            *(f'demo_flag_enabled{{flag="{n}"}} {int(v)}' for n, v in sorted(state.flags.items())),
            "# HELP demo_up 1 while the process answers.",
            "# TYPE demo_up gauge",
            "demo_up 1",
        ]
        self._send(HTTPStatus.OK, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")

    def _get_flag(self, name: str) -> None:
        if not _FLAG_NAME.match(name):
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"flag name {name!r} is not valid"})
            return
        self._json(
            HTTPStatus.OK, {"name": name, "enabled": self.server.state.flags.get(name, False)}
        )

    def _put_flag(self, name: str) -> None:
        if not _FLAG_NAME.match(name):
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"flag name {name!r} is not valid"})
            return
        body = self._body()
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            self._json(
                HTTPStatus.BAD_REQUEST,
                {"error": 'body: expected {"enabled": true|false}', "field": "enabled"},
            )
            return
        self.server.state.set_flag(name, enabled)
        self._json(HTTPStatus.OK, {"name": name, "enabled": enabled})

    def _inject(self, scenario: str) -> None:
        state = self.server.state
        if scenario == "error_burst":
            state.set_flag(BAD_FLAG, True)
        elif scenario == "poisoned_cache":
            state.poison_cache()
        elif scenario == "hang":
            # Set after this answer has gone out, so that the injecting caller gets its reply.
            threading.Timer(0.05, self.server.hung.set).start()
        elif scenario == "crash":
            threading.Timer(0.1, os._exit, (1,)).start()
        else:
            known = ", ".join(SCENARIOS)
            self._json(
                HTTPStatus.NOT_FOUND, {"error": f"unknown scenario {scenario!r}; known: {known}"}
            )
            return
        self._json(HTTPStatus.ACCEPTED, {"injected": scenario})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return None

    def _json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m demo.target", description="selfheal's demo target with fault injection"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--error-window-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    server = TargetServer(
        (args.host, args.port), TargetState(args.state_dir), Traffic(args.error_window_s)
    )
    print(f"demo target on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
