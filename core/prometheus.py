"""A bounded client of the Prometheus HTTP API (``/api/v1/query``, ``/api/v1/query_range``).

Anything that speaks the API works: Prometheus, Thanos, Mimir, VictoriaMetrics. Every call is
bounded in time, series, points per series and response bytes; a failure raises
``PrometheusError`` with a one-line reason (the evidence provider records it as missing).

``render_query`` fills a PromQL template's ``${name}`` placeholders with label-escaped values,
so a service called ``a"b`` cannot break out of its label matcher.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from selfheal.core.http_json import FetchError, get_json
from selfheal.core.settings import EvidenceSettings

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class PrometheusError(Exception):
    """The query could not be answered; the message says why in one line."""


def escape_label_value(value: str) -> str:
    """A value safe inside a PromQL double-quoted label matcher (and a regex matcher's quotes)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_query(template: str, variables: Mapping[str, str]) -> str:
    """``template`` with each ``${name}`` replaced by its label-escaped value.

    An unknown placeholder raises ``KeyError`` naming it: a typo must not query for nothing.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise KeyError(f"unknown placeholder ${{{name}}} (known: {', '.join(variables)})")
        return escape_label_value(variables[name])

    return _PLACEHOLDER.sub(substitute, template)


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)
    """(unix seconds, value), in time order; NaN and infinite samples are dropped"""
    truncated: bool = False


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    max_series: int = 50
    max_points: int = 1000
    max_bytes: int = 4_000_000


def limits_of(settings: EvidenceSettings) -> Limits:
    """The bounds ``SELFHEAL_EVIDENCE__*`` sets for every query."""
    return Limits(
        timeout_s=settings.timeout_s,
        max_series=settings.max_series,
        max_points=settings.max_points,
        max_bytes=settings.max_bytes,
    )


class PrometheusClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, limits: Limits | None = None):
        self._http = http
        self._base = base_url.rstrip("/")
        self._limits = limits or Limits()

    @property
    def base_url(self) -> str:
        return self._base

    async def query(self, promql: str, at: float | None = None) -> list[Series]:
        """An instant query: one point per series."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = _num(at)
        return await self._get("/api/v1/query", params)

    async def query_range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[Series]:
        if end <= start:
            raise PrometheusError(f"empty range: end {end} is not after start {start}")
        # Ask for no more points than we keep: widen the step instead of truncating.
        step = max(step_s, (end - start) / max(self._limits.max_points - 1, 1))
        params = {"query": promql, "start": _num(start), "end": _num(end), "step": _num(step)}
        return await self._get("/api/v1/query_range", params)

    async def _get(self, path: str, params: dict[str, str]) -> list[Series]:
        limits = self._limits
        url = self._base + path
        try:
            status, payload = await get_json(
                self._http,
                url,
                params,
                timeout_s=limits.timeout_s,
                max_bytes=limits.max_bytes,
                too_big_hint="narrow the query",
            )
        except FetchError as exc:
            raise PrometheusError(str(exc)) from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            error = payload.get("error") if isinstance(payload, dict) else None
            raise PrometheusError(f"{url}: HTTP {status}: {error or 'no success status'}")
        return self._series(payload.get("data"))

    def _series(self, data: Any) -> list[Series]:
        if not isinstance(data, dict):
            raise PrometheusError("answer without data")
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar" and isinstance(result, list):
            return [Series({}, _points([result], self._limits.max_points)[0])]
        if kind not in ("vector", "matrix") or not isinstance(result, list):
            raise PrometheusError(f"unexpected resultType {kind!r}")
        series: list[Series] = []
        for item in result[: self._limits.max_series]:
            if not isinstance(item, dict):
                continue
            labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
            raw = item.get("values") if kind == "matrix" else [item.get("value")]
            points, cut = _points(raw or [], self._limits.max_points)
            series.append(Series(labels, points, cut))
        return series


def _points(raw: list[Any], limit: int) -> tuple[list[tuple[float, float]], bool]:
    points: list[tuple[float, float]] = []
    for pair in raw:
        try:
            t, v = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(v):
            points.append((t, v))
    # keep the newest: the fault is at the end of the window
    return (points[-limit:], True) if len(points) > limit else (points, False)


def _num(value: float) -> str:
    return f"{value:.3f}"
