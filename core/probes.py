"""The two ways selfheal looks at a target: an HTTP health probe and a Prometheus metric read.

Evidence collection and recovery validation share them, so that "healthy" means the same thing
before and after a healing. Neither raises for a target's failure: a refused connection or an
unreadable metric is an observation, reported in the result.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from selfheal.domain import MetricCheck

ProbeError = Literal["connection_refused", "timeout", "http_error", "other"]

_SELECTOR = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.DOTALL)
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class ProbeResult:
    url: str
    ok: bool
    status: int | None = None
    error: ProbeError | None = None
    latency_ms: float = 0.0
    body: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True)
class MetricReading:
    """``value`` is None when the metric could not be read; ``error`` then says why."""

    value: float | None
    error: str | None = None


@asynccontextmanager
async def http_client(shared: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """The worker's shared client, or one for this call only (closed when done)."""
    if shared is not None:
        yield shared
        return
    async with httpx.AsyncClient() as own:
        yield own


async def probe_health(http: httpx.AsyncClient, url: str, timeout_s: float) -> ProbeResult:
    """GET ``url``: ok on a 2xx answer within ``timeout_s``; the JSON object body, if any."""
    started = time.perf_counter()

    def elapsed_ms() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        # httpx's timeout applies per read; the outer deadline bounds a slow trickle too.
        async with asyncio.timeout(timeout_s):
            response = await http.get(url, timeout=timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        detail = f"no answer within {timeout_s:g}s"
        return ProbeResult(url, ok=False, error="timeout", latency_ms=elapsed_ms(), detail=detail)
    except httpx.HTTPError as exc:
        kind = _connect_error_kind(exc)
        detail = "connection refused" if kind == "connection_refused" else _describe(exc)
        return ProbeResult(url, ok=False, error=kind, latency_ms=elapsed_ms(), detail=detail)
    ok = response.is_success
    return ProbeResult(
        url,
        ok=ok,
        status=response.status_code,
        error=None if ok else "http_error",
        latency_ms=elapsed_ms(),
        body=_json_object(response),
        detail=f"HTTP {response.status_code}",
    )


def _connect_error_kind(exc: BaseException) -> ProbeError:
    """A refusal is buried in the cause chain (httpx → httpcore → anyio → OSError)."""
    node: BaseException | None = exc
    seen: set[int] = set()
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(node, socket.gaierror):
            return "other"
        node = node.__cause__ or node.__context__
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection_refused"
    return "other"


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def parse_selector(selector: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name{label="value",...}`` → (name, labels). ValueError when malformed."""
    match = _SELECTOR.match(selector)
    if match is None:
        raise ValueError(
            f'invalid metric selector {selector!r}: expected name{{label="value",...}}'
        )
    name, inner = match.group(1), (match.group(2) or "").strip()
    labels: dict[str, str] = {}
    position = 0
    while position < len(inner):
        label = _LABEL.match(inner, position)
        if label is None:
            raise ValueError(
                f"invalid metric selector {selector!r}: "
                f'expected label="value" at {inner[position:]!r}'
            )
        labels[label.group(1)] = _ESCAPE.sub(_unescape, label.group(2))
        position = label.end()
    return name, labels


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def sum_samples(text: str, name: str, labels: dict[str, str]) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``; None when none match."""
    total: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total = (total or 0.0) + float(sample.value)
    return total


async def read_metric(
    http: httpx.AsyncClient, check: MetricCheck, timeout_s: float
) -> MetricReading:
    """Read ``check.name`` from the Prometheus text exposition at ``check.url``."""
    try:
        name, labels = parse_selector(check.name)
    except ValueError as exc:
        return MetricReading(None, str(exc))
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.get(check.url, timeout=timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        return MetricReading(None, f"{check.url}: no answer within {timeout_s:g}s")
    except httpx.HTTPError as exc:
        return MetricReading(None, f"{check.url}: {_describe(exc)}")
    if not response.is_success:
        return MetricReading(None, f"{check.url}: HTTP {response.status_code}")
    try:
        value = sum_samples(response.text, name, labels)
    except ValueError as exc:
        return MetricReading(None, f"{check.url}: not Prometheus text format ({exc})")
    if value is None:
        return MetricReading(None, f"{check.url}: no sample matches {check.name}")
    if math.isnan(value):
        return MetricReading(None, f"{check.url}: {check.name} is NaN")
    return MetricReading(value)
