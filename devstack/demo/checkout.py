"""The demo's ``checkout`` service, with fault injection, run as its own process; it calls its
dependency ``inventory`` (selfheal.devstack.demo.inventory) on every checkout.

    python -m selfheal.devstack.demo.checkout --port 8780 --state-dir .selfheal/checkout \
        --inventory-url http://127.0.0.1:8782 [--otlp-url <intake>/v1/otlp] [--traffic-rps 5]

Standard library only, so that it starts in a blink when the supervisor restarts it.

    GET  /                    a checkout: cache lookup (span ``cache.get``), the new pricing
                              path while flag new_checkout is on, then a reservation from
                              inventory (client span ``GET /reserve``, W3C traceparent)
    GET  /healthz             200 {"status": "ok"} or 503 {"status": "failing"}: failing while
                              at least UNHEALTHY_RATIO of the last second's checkouts failed
                              (it makes synthetic ones when the window holds fewer than
                              MIN_REQUESTS). The body never says why.
    GET  /metrics             Prometheus text (see selfheal.devstack.demo.common)
    GET  /flags, GET|PUT /flags/{name}   body {"enabled": bool}: absolute, hence idempotent
    GET|PUT /control/degradation   the switch of ``http.degrade``: {"mode": "normal"|"fallback"|
                              "circuit_break"|"rate_limit", "rate_limit_rps": number|null}
    POST /admin/cache/flush   empties the cache
    POST /admin/reset         back to normal, inventory included
    POST /inject/{scenario}   error_burst | hang | crash | poisoned_cache here;
                              dependency_slow | inventory_errors are passed on to inventory

A synthetic client inside the process makes ``--traffic-rps`` checkouts a second (as a canary
would), so that faults show in the error ratio, the health check and the traces without anyone
calling. Every checkout is a trace: the server span ``GET /``, its children, and inventory's
spans through the traceparent header. Errors are spans with status ERROR; where an exception
arose, its span has an ``exception`` event (``CacheCorruption`` on ``cache.get``,
``PricingError`` on ``checkout.new_pricing`` with ``feature_flag.key=new_checkout``,
``TimeoutError`` on the client span when inventory is slow, ``IndexCorruption`` on inventory's
``index.lookup``).

Degradation modes: ``fallback`` answers from a fallback path without calling inventory;
``circuit_break`` does not call it and fails fast; ``rate_limit`` answers 429 above
``rate_limit_rps``. Flags (with when they last changed), the switch and the cache outlive a
restart: a restart heals ``hang`` and ``crash``, not ``error_burst`` (switch the flag off),
``poisoned_cache`` (flush the cache), ``dependency_slow`` (degrade to the fallback) nor
``inventory_errors`` (restart inventory). The cache is a JSON file in the state directory, or
Redis keys under a prefix with ``--redis-url``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from selfheal.devstack.demo.common import (
    CLIENT,
    SERVER,
    SERVICE_LABEL,
    DemoHandler,
    DemoServer,
    RequestStats,
    Sample,
    Span,
    crash_soon,
    hang_soon,
    read_json,
    request_samples,
    start_exporter,
    write_json,
)

SERVICE = "checkout"
BAD_FLAG = "new_checkout"
POISONED_KEY = "price:sku-42"
POISONED_VALUE = {"value": "\x00corrupt", "poisoned": True}
LOCAL_SCENARIOS = ("error_burst", "hang", "crash", "poisoned_cache")
INVENTORY_SCENARIOS = ("dependency_slow", "inventory_errors")
SCENARIOS = (*LOCAL_SCENARIOS, *INVENTORY_SCENARIOS)
MODES = ("normal", "fallback", "circuit_break", "rate_limit")
DEFAULT_REDIS_PREFIX = "demo:cache:"
TRAFFIC_RPS = 5.0
# How long a checkout waits for inventory before giving up (inventory's slow path is 1 s).
DEPENDENCY_TIMEOUT_S = 0.3
UNHEALTHY_RATIO = 0.25
# Health looks at the last second only: a recovery shows at once (the metrics keep the window).
HEALTH_WINDOW_S = 1.0
MIN_REQUESTS = 3
_FLAG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A prefix is used in SCAN patterns: no glob characters.
_REDIS_PREFIX = re.compile(r"^[A-Za-z0-9_:.-]{1,64}$")


def checkout_command(
    port: int,
    state_dir: Path,
    *,
    inventory_url: str,
    host: str = "127.0.0.1",
    otlp_url: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
    traffic_rps: float = TRAFFIC_RPS,
) -> list[str]:
    """The command line that runs checkout (for the supervisor). The OTLP token goes in the
    environment (``common.TOKEN_ENV``), not here."""
    command = [
        sys.executable, "-m", "selfheal.devstack.demo.checkout",
        "--host", host, "--port", str(port), "--state-dir", str(state_dir),
        "--inventory-url", inventory_url, "--traffic-rps", f"{traffic_rps:g}",
    ]  # fmt: skip
    if otlp_url:
        command += ["--otlp-url", otlp_url]
    if redis_url:
        command += ["--redis-url", redis_url, "--redis-prefix", redis_prefix]
    return command


def inventory_command(
    port: int,
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    otlp_url: str | None = None,
    slow_for_s: float = 0.0,
) -> list[str]:
    """The command line that runs inventory (for the supervisor)."""
    command = [
        sys.executable, "-m", "selfheal.devstack.demo.inventory",
        "--host", host, "--port", str(port), "--state-dir", str(state_dir),
    ]  # fmt: skip
    if slow_for_s:
        command += ["--slow-for-s", f"{slow_for_s:g}"]
    return command + (["--otlp-url", otlp_url] if otlp_url else [])


class CacheCorruption(Exception):
    """A cache entry that does not decode."""


class PricingError(Exception):
    """The new_checkout pricing path's bug."""


# ------------------------------------------------------------------------------------ state


class Cache(Protocol):
    system: str

    def poison(self) -> None: ...

    def flush(self) -> int: ...

    def poisoned(self) -> bool: ...


class FileCache:
    """The cache as a JSON file in the state directory (the default: no Redis needed)."""

    system = "file"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, Any] = read_json(path)

    def poison(self) -> None:
        with self._lock:
            self._entries[POISONED_KEY] = POISONED_VALUE
            write_json(self._path, self._entries)

    def flush(self) -> int:
        with self._lock:
            flushed = len(self._entries)
            self._entries = {}
            write_json(self._path, self._entries)
            return flushed

    def poisoned(self) -> bool:
        return any(_is_poisoned(v) for v in list(self._entries.values()))


class RedisCache:
    """The cache as Redis keys under a prefix, each a JSON value."""

    system = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        import redis  # only here: the file-cache service starts without importing redis

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


class CheckoutState:
    """Flags (and when each last changed), the degradation switch and the cache, kept across
    restarts: written through to the state directory on every change."""

    def __init__(self, state_dir: Path, cache: Cache | None = None) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._flags_file = state_dir / "flags.json"
        self._changes_file = state_dir / "flag_changes.json"
        self._degradation_file = state_dir / "degradation.json"
        self._lock = threading.Lock()
        self.cache: Cache = cache or FileCache(state_dir / "cache.json")
        self.flags: dict[str, bool] = read_json(self._flags_file)
        self.flag_changed_at: dict[str, float] = read_json(self._changes_file)
        self.degradation: dict[str, Any] = read_json(self._degradation_file) or {
            "mode": "normal",
            "rate_limit_rps": None,
            "updated_by": None,
            "previous": None,
        }

    def set_flag(self, name: str, enabled: bool) -> None:
        with self._lock:
            if self.flags.get(name, False) != enabled:
                self.flag_changed_at[name] = time.time()
                write_json(self._changes_file, self.flag_changed_at)
            self.flags[name] = enabled
            write_json(self._flags_file, self.flags)

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
            write_json(self._degradation_file, self.degradation)

    def reset(self) -> None:
        """Back to a healthy, normal checkout: what a demo starts from."""
        self.set_flag(BAD_FLAG, False)
        self.set_degradation("normal", None, None)
        self.cache.flush()

    @property
    def mode(self) -> str:
        return str(self.degradation["mode"])

    @property
    def bad_flag_on(self) -> bool:
        return self.flags.get(BAD_FLAG, False)


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


# ----------------------------------------------------------------------------- the service


class CheckoutServer(DemoServer):
    def __init__(
        self,
        address: tuple[str, int],
        state: CheckoutState,
        inventory_url: str,
        window_s: float,
    ) -> None:
        super().__init__(address, CheckoutHandler, SERVICE)
        self.state = state
        self.inventory_url = inventory_url.rstrip("/")
        self.stats = RequestStats(window_s)
        self.limiter = RateLimiter()
        self._seq = 0
        self._seq_lock = threading.Lock()

    def healthy(self) -> bool:
        """Judged on the last window's checkouts; with fewer than MIN_REQUESTS of them (just
        started, or no traffic), it makes synthetic ones first, so that a restart does not
        look healthy merely for having served nothing yet."""
        count, ratio, _ = self.stats.window(HEALTH_WINDOW_S)
        for _ in range(MIN_REQUESTS - count):
            self.checkout()
        if count < MIN_REQUESTS:
            count, ratio, _ = self.stats.window(HEALTH_WINDOW_S)
        return ratio < UNHEALTHY_RATIO

    def samples(self) -> list[Sample]:
        label = {SERVICE_LABEL: SERVICE}
        state = self.state
        samples = request_samples(SERVICE, self.stats)
        samples += [
            Sample(
                "demo_flag_last_change_timestamp_seconds",
                "gauge",
                "When the feature flag last changed (unix seconds).",
                at,
                {**label, "flag": name},
            )
            for name, at in sorted(state.flag_changed_at.items())
        ]
        samples += [
            Sample(
                "demo_degradation_mode",
                "gauge",
                "The degradation switch, 1 for the current mode.",
                int(mode == state.mode),
                {**label, "mode": mode},
            )
            for mode in MODES
        ]
        return samples

    def checkout(self) -> tuple[HTTPStatus, dict[str, Any]]:
        """One checkout, traced and counted: its status and answer."""
        started = time.monotonic()
        with self._seq_lock:
            seq, self._seq = self._seq, self._seq + 1
        attributes = {"http.request.method": "GET", "http.route": "/", "url.path": "/"}
        with self.tracer.span("GET /", kind=SERVER, attributes=attributes) as span:
            status, answer = self._serve(span, seq)
            span.attributes["http.response.status_code"] = int(status)
            if status >= 500 and not span.failed:
                span.fail(str(answer.get("error", status.phrase)))
        if status != HTTPStatus.TOO_MANY_REQUESTS:  # shed on purpose: not a failure
            self.stats.record(time.monotonic() - started, failed=status >= 500)
        return status, answer

    def _serve(self, span: Span, seq: int) -> tuple[HTTPStatus, dict[str, Any]]:
        state, mode = self.state, self.state.mode
        if mode == "rate_limit" and not self.limiter.allow(
            float(state.degradation["rate_limit_rps"] or 1.0)
        ):
            return HTTPStatus.TOO_MANY_REQUESTS, {"error": "rate limited"}
        try:
            cache_attributes = {
                "db.system": state.cache.system,
                "db.operation.name": "GET",
                "db.query.text": f"GET {POISONED_KEY}",
            }
            with self.tracer.span(
                "cache.get", kind=CLIENT, parent=span, attributes=cache_attributes
            ):
                if state.cache.poisoned():
                    raise CacheCorruption(f"entry {POISONED_KEY} does not decode as a price")
        except CacheCorruption as exc:
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"CacheCorruption: {exc}"}
        if state.bad_flag_on:
            flag = {"feature_flag.key": BAD_FLAG, "feature_flag.result.variant": "on"}
            span.attributes.update(flag)
            try:
                with self.tracer.span("checkout.new_pricing", parent=span, attributes=flag):
                    if seq % 5 < 3:
                        raise PricingError("rounding produced a negative total")
            except PricingError as exc:
                return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"PricingError: {exc}"}
        if mode == "circuit_break":
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "circuit open: inventory not called"}
        if mode == "fallback":
            return HTTPStatus.OK, {"order": "accepted", "fallback": True}
        try:
            code = self._reserve(span)
        except TimeoutError as exc:
            return HTTPStatus.GATEWAY_TIMEOUT, {"error": f"inventory: {exc}"}
        except OSError as exc:
            return HTTPStatus.BAD_GATEWAY, {"error": f"inventory unreachable: {exc}"}
        if code >= 500:
            return HTTPStatus.BAD_GATEWAY, {"error": f"inventory answered {code}"}
        return HTTPStatus.OK, {"order": "accepted"}

    def _reserve(self, parent: Span) -> int:
        """Call inventory inside a client span; its HTTP status. A 5xx is an ERROR span
        without an exception (the exception is inventory's); a timeout or a refused connection
        raises, recorded on the client span."""
        url = f"{self.inventory_url}/reserve"
        where = urlsplit(url)
        attributes: dict[str, str | int | float | bool] = {
            "http.request.method": "GET",
            "url.full": url,
            "server.address": where.hostname or "",
            "server.port": where.port or 80,
            "peer.service": "inventory",
        }
        with self.tracer.span(
            "GET /reserve", kind=CLIENT, parent=parent, attributes=attributes
        ) as span:
            request = urllib.request.Request(url, headers={"traceparent": span.traceparent})
            try:
                with urllib.request.urlopen(request, timeout=DEPENDENCY_TIMEOUT_S) as response:
                    response.read()
                    code = int(response.status)
            except urllib.error.HTTPError as exc:
                code = exc.code
                exc.close()
            except urllib.error.URLError as exc:
                reason = exc.reason
                raise reason if isinstance(reason, OSError) else OSError(str(reason)) from None
            except TimeoutError:
                raise TimeoutError(
                    f"no answer from inventory within {DEPENDENCY_TIMEOUT_S:g}s"
                ) from None
            span.attributes["http.response.status_code"] = code
            if code >= 500:
                span.attributes["error.type"] = str(code)
                span.fail(f"HTTP {code}")
        return code

    def inventory(self, method: str, path: str) -> tuple[int, Any]:
        """Pass a control call on to inventory: its status and JSON answer (502 if none)."""
        request = urllib.request.Request(f"{self.inventory_url}{path}", method=method, data=b"")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _loads(exc.read())
        except (OSError, ValueError) as exc:
            return HTTPStatus.BAD_GATEWAY, {"error": f"inventory at {self.inventory_url}: {exc}"}


def drive_traffic(server: CheckoutServer, rps: float) -> None:
    """The synthetic client: ``rps`` checkouts a second, none while the process is hung."""
    interval = 1.0 / rps
    while True:
        time.sleep(interval)
        if not server.hung.is_set():
            with contextlib.suppress(Exception):
                server.checkout()


class CheckoutHandler(DemoHandler):
    server: CheckoutServer
    server_version = "selfheal-demo-checkout"

    def route(self, method: str, path: str, parts: list[str]) -> None:
        server = self.server
        match method, parts:
            case "GET", []:
                self.json(*server.checkout())
            case "GET", ["healthz"]:
                healthy = server.healthy()
                self.json(
                    HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE,
                    {"status": "ok" if healthy else "failing"},
                )
            case "GET", ["metrics"]:
                self.metrics(server.samples())
            case "GET", ["flags"]:
                self.json(HTTPStatus.OK, {"flags": server.state.flags})
            case "GET", ["flags", name]:
                self._get_flag(name)
            case "PUT", ["flags", name]:
                self._put_flag(name)
            case "GET", ["control", "degradation"]:
                self.json(HTTPStatus.OK, server.state.degradation)
            case "PUT", ["control", "degradation"]:
                self._put_degradation()
            case "POST", ["admin", "reset"]:
                server.state.reset()
                code, _ = server.inventory("POST", "/admin/reset")
                self.json(HTTPStatus.OK, {"reset": True, "inventory": code == HTTPStatus.OK})
            case "POST", ["admin", "cache", "flush"]:
                self.json(HTTPStatus.OK, {"flushed": server.state.cache.flush()})
            case "POST", ["inject", scenario]:
                self._inject(scenario)
            case _:
                self.not_found(method, path)

    def _get_flag(self, name: str) -> None:
        if not _FLAG_NAME.match(name):
            self.json(HTTPStatus.BAD_REQUEST, {"error": f"flag name {name!r} is not valid"})
            return
        self.json(
            HTTPStatus.OK, {"name": name, "enabled": self.server.state.flags.get(name, False)}
        )

    def _put_flag(self, name: str) -> None:
        if not _FLAG_NAME.match(name):
            self.json(HTTPStatus.BAD_REQUEST, {"error": f"flag name {name!r} is not valid"})
            return
        body = self.body()
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            self.json(
                HTTPStatus.BAD_REQUEST,
                {"error": 'body: expected {"enabled": true|false}', "field": "enabled"},
            )
            return
        self.server.state.set_flag(name, enabled)
        self.json(HTTPStatus.OK, {"name": name, "enabled": enabled})

    def _put_degradation(self) -> None:
        body = self.body()
        body = body if isinstance(body, dict) else {}
        mode, rps = body.get("mode"), body.get("rate_limit_rps")
        if mode not in MODES:
            self.json(
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
            self.json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"body: expected rate_limit_rps {expected}", "field": "rate_limit_rps"},
            )
            return
        state = self.server.state
        state.set_degradation(mode, rps, self.headers.get("Idempotency-Key"))
        self.json(HTTPStatus.OK, state.degradation)

    def _inject(self, scenario: str) -> None:
        state = self.server.state
        if scenario in INVENTORY_SCENARIOS:
            code, answer = self.server.inventory("POST", f"/inject/{scenario}")
            if code != HTTPStatus.ACCEPTED:
                self.json(HTTPStatus.BAD_GATEWAY, {"error": f"inventory: {answer}"})
                return
            self.json(HTTPStatus.ACCEPTED, {"injected": scenario, "service": "inventory"})
            return
        if scenario == "error_burst":
            state.set_flag(BAD_FLAG, True)
        elif scenario == "poisoned_cache":
            state.cache.poison()
        elif scenario == "hang":
            hang_soon(self.server)
        elif scenario == "crash":
            crash_soon()
        else:
            known = ", ".join(SCENARIOS)
            self.json(
                HTTPStatus.NOT_FOUND, {"error": f"unknown scenario {scenario!r}; known: {known}"}
            )
            return
        self.json(HTTPStatus.ACCEPTED, {"injected": scenario, "service": SERVICE})


def _is_poisoned(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("poisoned"))


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m selfheal.devstack.demo.checkout",
        description="selfheal's demo checkout service with fault injection",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--inventory-url", required=True, help="e.g. http://127.0.0.1:8782")
    parser.add_argument("--window-s", type=float, default=3.0, help="of health, ratio and p99")
    parser.add_argument(
        "--traffic-rps",
        type=float,
        default=TRAFFIC_RPS,
        help="synthetic checkouts a second (0: none)",
    )
    parser.add_argument("--otlp-url", help="OTLP/HTTP base URL to push to, e.g. <intake>/v1/otlp")
    parser.add_argument("--export-interval-s", type=float, default=1.0)
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
    if args.traffic_rps < 0:
        parser.error("--traffic-rps: expected a number >= 0")
    cache = RedisCache(args.redis_url, args.redis_prefix) if args.redis_url else None
    server = CheckoutServer(
        (args.host, args.port),
        CheckoutState(args.state_dir, cache),
        args.inventory_url,
        args.window_s,
    )
    start_exporter(args.otlp_url, server.tracer, server.samples, args.export_interval_s)
    if args.traffic_rps > 0:
        threading.Thread(
            target=drive_traffic, args=(server, args.traffic_rps), name="traffic", daemon=True
        ).start()
    print(f"demo checkout on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
