"""The demo target: a tiny "checkout" service with fault injection, run as its own process.

    python -m selfheal.devstack.demo.target --port 8780 --state-dir .selfheal/target

Standard library only, so that it starts in a blink when the supervisor restarts it.

    GET  /                    a checkout; fails 3 in 5 while flag new_checkout is on, always
                              while the cache is poisoned, and (after a delay) while its
                              downstream dependency is slow, unless degraded (below)
    GET  /healthz             200 {"status": "ok", ...} or 503 {"status": "degraded", "checks":
                              {"errors": "failing"|"ok", "cache": "poisoned"|"ok"}, ...};
                              checks.dependency appears once the dependency is not plainly ok:
                              "failing", "fallback" (healthy) or "open" (circuit broken)
    GET  /metrics             Prometheus text
    GET  /flags, GET|PUT /flags/{name}   body {"enabled": bool}: absolute, hence idempotent
    GET|PUT /control/degradation   the degradation switch of ``http.degrade`` (see
                              activities/actions/degrade.py): {"mode": "normal"|"fallback"|
                              "circuit_break"|"rate_limit", "rate_limit_rps": number|null}
    POST /admin/cache/flush   empties the cache
    POST /admin/reset         back to normal: flag off, dependency fast, no degradation, empty cache
    POST /inject/{scenario}   error_burst | hang | crash | poisoned_cache | dependency_slow

Degradation modes: ``fallback`` answers checkouts from a fallback path without calling the
dependency; ``circuit_break`` stops calling it and fails fast; ``rate_limit`` answers 429 above
``rate_limit_rps`` and still calls the dependency.

Flags, the degradation switch, the dependency's fault and the cache outlive a restart: a
restart heals ``hang`` and ``crash`` but not ``error_burst`` (switch the flag off),
``poisoned_cache`` (flush the cache) nor ``dependency_slow`` (degrade to the fallback). The
cache is a JSON file in the state directory, or Redis keys under a prefix with ``--redis-url``.
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
from typing import Any, Protocol

BAD_FLAG = "new_checkout"
POISONED_KEY = "price:sku-42"
POISONED_VALUE = {"value": "\x00corrupt", "poisoned": True}
SCENARIOS = ("error_burst", "hang", "crash", "poisoned_cache", "dependency_slow")
MODES = ("normal", "fallback", "circuit_break", "rate_limit")
DEFAULT_REDIS_PREFIX = "demo:cache:"
# How long a checkout waits on the slow dependency before giving up.
DEPENDENCY_TIMEOUT_S = 0.2
_FLAG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A prefix is used in SCAN patterns: no glob characters.
_REDIS_PREFIX = re.compile(r"^[A-Za-z0-9_:.-]{1,64}$")


def target_command(
    port: int,
    state_dir: Path,
    host: str = "127.0.0.1",
    *,
    redis_url: str | None = None,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
) -> list[str]:
    """The command line that runs the demo target (for the supervisor)."""
    command = [
        sys.executable, "-m", "selfheal.devstack.demo.target",
        "--host", host, "--port", str(port), "--state-dir", str(state_dir),
    ]  # fmt: skip
    if redis_url:
        command += ["--redis-url", redis_url, "--redis-prefix", redis_prefix]
    return command


class Cache(Protocol):
    def poison(self) -> None: ...

    def flush(self) -> int: ...

    def poisoned(self) -> bool: ...


class FileCache:
    """The cache as a JSON file in the state directory (the default: no Redis needed)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, Any] = _read_json(path)

    def poison(self) -> None:
        with self._lock:
            self._entries[POISONED_KEY] = POISONED_VALUE
            _write_json(self._path, self._entries)

    def flush(self) -> int:
        with self._lock:
            flushed = len(self._entries)
            self._entries = {}
            _write_json(self._path, self._entries)
            return flushed

    def poisoned(self) -> bool:
        return any(_is_poisoned(v) for v in self._entries.values())


class RedisCache:
    """The cache as Redis keys under a prefix, each a JSON value."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis  # only here: the file-cache target starts without importing redis

        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix

    def poison(self) -> None:
        self._client.set(self.prefix + POISONED_KEY, json.dumps(POISONED_VALUE))

    def flush(self) -> int:
        keys = list(self._client.scan_iter(match=self.prefix + "*", count=500))
        return int(self._client.unlink(*keys)) if keys else 0

    def poisoned(self) -> bool:
        keys = list(self._client.scan_iter(match=self.prefix + "*", count=500))
        values = self._client.mget(keys) if keys else []
        return any(v is not None and _is_poisoned(_loads(v)) for v in values)


class TargetState:
    """Flags, degradation switch, dependency fault and cache, kept across restarts.

    Flags and the rest are written through to the state directory on every change.
    """

    def __init__(self, state_dir: Path, cache: Cache | None = None) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._flags_file = state_dir / "flags.json"
        self._degradation_file = state_dir / "degradation.json"
        self._dependency_file = state_dir / "dependency.json"
        self._lock = threading.Lock()
        self.cache: Cache = cache or FileCache(state_dir / "cache.json")
        self.flags: dict[str, bool] = _read_json(self._flags_file)
        self.degradation: dict[str, Any] = _read_json(self._degradation_file) or {
            "mode": "normal",
            "rate_limit_rps": None,
            "updated_by": None,
            "previous": None,
        }
        self.dependency_slow: bool = bool(_read_json(self._dependency_file).get("slow"))

    def set_flag(self, name: str, enabled: bool) -> None:
        with self._lock:
            self.flags[name] = enabled
            _write_json(self._flags_file, self.flags)

    def set_degradation(self, mode: str, rate_limit_rps: float | None, key: str | None) -> None:
        """Absolute, and applied once per idempotency key: a repeated key changes nothing, so
        ``previous`` stays the state that key's first request replaced."""
        with self._lock:
            current = self.degradation
            if key is not None and key == current["updated_by"]:
                return
            self.degradation = {
                "mode": mode,
                "rate_limit_rps": rate_limit_rps,
                "updated_by": key,
                "previous": {"mode": current["mode"], "rate_limit_rps": current["rate_limit_rps"]},
            }
            _write_json(self._degradation_file, self.degradation)

    def slow_dependency(self) -> None:
        with self._lock:
            self.dependency_slow = True
            _write_json(self._dependency_file, {"slow": True})

    def poison_cache(self) -> None:
        self.cache.poison()

    def reset(self) -> None:
        """Back to a healthy, normal target: what a demo starts from. Not a remediation: it also
        ends the faults that no action of a runbook can end (the slow dependency)."""
        with self._lock:
            self.flags[BAD_FLAG] = False
            _write_json(self._flags_file, self.flags)
            self.dependency_slow = False
            _write_json(self._dependency_file, {"slow": False})
        self.set_degradation("normal", None, None)
        self.cache.flush()

    def flush_cache(self) -> int:
        return self.cache.flush()

    @property
    def mode(self) -> str:
        return str(self.degradation["mode"])

    @property
    def bad_flag_on(self) -> bool:
        return self.flags.get(BAD_FLAG, False)

    @property
    def cache_poisoned(self) -> bool:
        return self.cache.poisoned()

    @property
    def dependency_check(self) -> str:
        """ok | failing | fallback (bypassed, healthy) | open (circuit broken, unhealthy)."""
        if self.mode == "fallback":
            return "fallback"
        if self.mode == "circuit_break":
            return "open"
        return "failing" if self.dependency_slow else "ok"


class RateLimiter:
    """A token bucket refilled at the current rate (the rate may change between calls); it
    starts full, holding one second's worth of requests."""

    def __init__(self) -> None:
        self._tokens: float | None = None
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def allow(self, rps: float) -> bool:
        with self._lock:
            now, capacity = time.monotonic(), max(rps, 1.0)
            refilled = capacity if self._tokens is None else self._tokens + (now - self._last) * rps
            self._tokens = min(capacity, refilled)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


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
        self.limiter = RateLimiter()
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
            case "GET", ["control", "degradation"]:
                self._json(HTTPStatus.OK, self.server.state.degradation)
            case "PUT", ["control", "degradation"]:
                self._put_degradation()
            case "POST", ["admin", "reset"]:
                self.server.state.reset()
                self._json(HTTPStatus.OK, {"reset": True})
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
        mode = state.mode
        if mode == "rate_limit" and not self.server.limiter.allow(
            float(state.degradation["rate_limit_rps"] or 1.0)
        ):
            traffic.finish(failed=False)  # shed on purpose: not a failure of the service
            self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": "rate limited"})
            return
        status, error = HTTPStatus.INTERNAL_SERVER_ERROR, None
        if state.cache_poisoned:
            error = f"cache entry {POISONED_KEY} is corrupt"
        elif state.bad_flag_on and seq % 5 < 3:
            error = f"checkout failed on the {BAD_FLAG} code path"
        elif mode == "circuit_break":
            status, error = HTTPStatus.SERVICE_UNAVAILABLE, "circuit open: dependency not called"
        elif mode != "fallback" and state.dependency_slow:
            time.sleep(DEPENDENCY_TIMEOUT_S)
            status, error = HTTPStatus.BAD_GATEWAY, "the dependency timed out"
        traffic.finish(failed=error is not None)
        if error:
            self._json(status, {"error": error})
        elif mode == "fallback":
            self._json(HTTPStatus.OK, {"order": "accepted", "fallback": True})
        else:
            self._json(HTTPStatus.OK, {"order": "accepted"})

    def _healthz(self) -> None:
        state = self.server.state
        checks = {
            "errors": "failing" if state.bad_flag_on else "ok",
            "cache": "poisoned" if state.cache_poisoned else "ok",
        }
        if (dependency := state.dependency_check) != "ok":
            checks["dependency"] = dependency
        healthy = all(v in ("ok", "fallback") for v in checks.values())
        self._json(
            HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE,
            {
                "status": "ok" if healthy else "degraded",
                "checks": checks,
                "error_rate": round(self.server.traffic.error_ratio(), 4),
                "flags": state.flags,
                "degradation": state.mode,
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
            "# HELP demo_degradation_mode The degradation switch, 1 for the current mode.",
            "# TYPE demo_degradation_mode gauge",
            *(f'demo_degradation_mode{{mode="{m}"}} {int(m == state.mode)}' for m in MODES),
            "# HELP demo_dependency_slow 1 while the downstream dependency is slow.",
            "# TYPE demo_dependency_slow gauge",
            f"demo_dependency_slow {int(state.dependency_slow)}",
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

    def _put_degradation(self) -> None:
        body = self._body()
        body = body if isinstance(body, dict) else {}
        mode, rps = body.get("mode"), body.get("rate_limit_rps")
        if mode not in MODES:
            self._json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"body: expected mode one of {', '.join(MODES)}", "field": "mode"},
            )
            return
        valid_rps = (
            isinstance(rps, int | float) and not isinstance(rps, bool) and rps > 0
            if mode == "rate_limit"
            else rps is None
        )
        if not valid_rps:
            expected = "a number > 0" if mode == "rate_limit" else "null outside mode rate_limit"
            self._json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"body: expected rate_limit_rps {expected}", "field": "rate_limit_rps"},
            )
            return
        state = self.server.state
        state.set_degradation(mode, rps, self.headers.get("Idempotency-Key"))
        self._json(HTTPStatus.OK, state.degradation)

    def _inject(self, scenario: str) -> None:
        state = self.server.state
        if scenario == "error_burst":
            state.set_flag(BAD_FLAG, True)
        elif scenario == "poisoned_cache":
            state.poison_cache()
        elif scenario == "dependency_slow":
            state.slow_dependency()
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


def _is_poisoned(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("poisoned"))


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


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
        prog="python -m selfheal.devstack.demo.target",
        description="selfheal's demo target with fault injection",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--error-window-s", type=float, default=30.0)
    parser.add_argument(
        "--redis-url", help="keep the cache in Redis (redis://host:port/db) instead of a file"
    )
    parser.add_argument(
        "--redis-prefix",
        default=DEFAULT_REDIS_PREFIX,
        help=f"prefix of the cache's Redis keys (default {DEFAULT_REDIS_PREFIX})",
    )
    args = parser.parse_args(argv)
    if not _REDIS_PREFIX.match(args.redis_prefix):
        parser.error("--redis-prefix: expected 1-64 characters among A-Z a-z 0-9 _ : . -")
    cache = RedisCache(args.redis_url, args.redis_prefix) if args.redis_url else None
    server = TargetServer(
        (args.host, args.port), TargetState(args.state_dir, cache), Traffic(args.error_window_s)
    )
    print(f"demo target on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
