"""The metrics provider: how each query of the faulted service and of its dependencies moved at
the fault, and which service the cross-service ranking (``diagnosis.rca``) puts first.

Where the series come from (``MetricSource``): a Prometheus HTTP API (Prometheus, Thanos,
Mimir, VictoriaMetrics; ``SELFHEAL_EVIDENCE__PROMETHEUS_URL``), or, without one, the recent OTLP
series the intake keeps in Postgres (``models.metric_store``), which answers the simple
selectors ``name{label="value",...}`` and ``rate(name{...}[5m])``.

The queries are each service's ``evidence.metrics.queries`` (PromQL templates, ``services.yaml``)
rendered with ``core.catalog.query_variables``. For each, over
[at - window_before_s, at + window_after_s] (never past now: Prometheus would repeat the last
sample into the future):

- the fault's effect starts a little before ``at`` (a detector fires *after* the change began):
  the *after* window starts ``lead_s`` (60 s) before ``at``, the *before* window ends there;
- ``before`` is the median of the before window; ``after`` the median of the after window (not
  its extreme: one scrape's outlier must not read as a shift; the after window is short, and
  past the detector's lead nearly all of it is the changed level);
- ``change`` = after - before; ``z`` the robust z-score of ``after`` against the before window,
  signed (up: positive), scored as ``diagnosis.rca.robust_score`` scores (median and MAD x
  1.4826, floored, capped; a before window without spread scores the relative change), so that
  ``z`` and the ranking's scores speak the same unit;
- a query named ``*_timestamp`` also gives ``age_s``: ``at`` minus its latest value.

When a query returns several series (per instance, per route), the one that moved most (largest
|z|) speaks for the query. Facts: ``metrics.<q>.*`` for the faulted service,
``deps.<D>.<q>.*`` for each dependency, ``deps.max.<q>.z``, ``deps.max.<q>.change`` and
``deps.worst.<q>`` (the largest signed z among the dependencies, that dependency's change in the
query's unit, and whose it is: a rule needs the change too, a z-score alone cannot tell 27 µs
from 27 ms), ``rca.top`` and ``rca.top_score``. Findings:
``metric_shift`` for each |z| >= ``SHIFT_Z`` (3, as ``rca.ANOMALOUS``), ``rca_rank`` for the top
ranked service when its score is anomalous too (a best of nothing points at nothing).

Soft: a template that cannot be rendered or answered (an unknown placeholder, PromQL the store
does not speak, a query Prometheus refuses) is the fact ``metrics.<q>.error`` (``deps.<D>.<q>.
error``) and the others go on; when no query got an answer from the source at all (unreachable,
refused), the provider raises and the fan-out records missing evidence.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.evidence.base import EvidenceRequest, Gathered
from selfheal.core.catalog import query_variables
from selfheal.core.prometheus import (
    PrometheusClient,
    PrometheusError,
    Series,
    limits_of,
    render_query,
)
from selfheal.core.settings import EvidenceSettings
from selfheal.diagnosis.rca import ANOMALOUS, MIN_NORMAL_POINTS, rank_services, robust_score
from selfheal.domain import Finding, KnowledgeBaseError
from selfheal.models.metric_store import MetricStore

SOURCE = "metrics"
SHIFT_Z = ANOMALOUS
"""|z| from which a query's move is a ``metric_shift`` finding"""
LEAD_S = 60.0
"""how long before ``at`` the after window starts"""
CONCURRENCY = 4
"""queries in flight at once, per gather"""
Points = Sequence[tuple[float, float]]


class MetricsUnavailable(Exception):
    """No query got an answer from the source (unreachable, failing): missing evidence."""


class UnsupportedQuery(ValueError):
    """A query this source cannot answer (the OTLP store speaks only simple selectors)."""


class MetricSource(Protocol):
    name: str

    async def range(self, query: str, start: float, end: float) -> list[Series]: ...


# --- the pure part: one series' shift, the facts of a gather ---------------------------------


@dataclass(frozen=True)
class Shift:
    before: float
    after: float
    change: float
    z: float


def shift(points: Points, split_at: float) -> Shift | None:
    """``points``' move at ``split_at`` (the after window starts there), or None when either
    window has too few points to tell. With a history shorter than twice the lead (a service
    that just started), the after window is its second half: the lead must not eat the whole
    baseline."""
    if points:
        split_at = max(split_at, (points[0][0] + points[-1][0]) / 2)
    normal = np.array([v for t, v in points if t < split_at and math.isfinite(v)])
    fault = np.array([v for t, v in points if t >= split_at and math.isfinite(v)])
    if len(normal) < MIN_NORMAL_POINTS or len(fault) == 0:
        return None
    before = float(np.median(normal))
    after = float(np.median(fault))
    size = robust_score(normal, np.array([after]))
    return Shift(before, after, after - before, math.copysign(size, after - before))


@dataclass(frozen=True)
class QueryResult:
    service: str
    query: str
    series: list[Series] | None = None
    error: str | None = None
    unreachable: bool = False
    """the source itself failed (not this query): all of them so is missing evidence"""


@dataclass(frozen=True)
class Chosen:
    """The series that speaks for a query: the one that moved most."""

    points: Points
    shift: Shift | None


def choose(series: Sequence[Series], split_at: float) -> Chosen | None:
    best: Chosen | None = None
    for one in series:
        if not one.points:
            continue
        candidate = Chosen(one.points, shift(one.points, split_at))
        if best is None or _size(candidate) > _size(best):
            best = candidate
    return best


def _size(chosen: Chosen) -> float:
    return abs(chosen.shift.z) if chosen.shift is not None else -1.0


def assess(
    results: Sequence[QueryResult],
    *,
    service: str,
    at: float,
    lead_s: float = LEAD_S,
    graph: Mapping[str, Sequence[str]] | None = None,
) -> Gathered:
    """The facts and findings of the answered queries of ``service`` (the faulted one) and of
    its dependencies."""
    gathered = Gathered()
    facts = gathered.facts
    split_at = at - lead_s
    frame: dict[str, dict[str, Points]] = {}
    worst: dict[str, tuple[float, str, float]] = {}
    for result in results:
        own = result.service == service
        prefix = f"metrics.{result.query}" if own else f"deps.{result.service}.{result.query}"
        if result.error is not None:
            facts[f"{prefix}.error"] = result.error
            continue
        chosen = choose(result.series or [], split_at)
        if chosen is None:
            continue
        frame.setdefault(result.service, {})[result.query] = chosen.points
        if result.query.endswith("_timestamp"):
            latest = [v for t, v in chosen.points if t <= at] or [chosen.points[-1][1]]
            facts[f"{prefix}.age_s"] = at - latest[-1]
        moved = chosen.shift
        if moved is None:
            continue
        facts[f"{prefix}.before"] = moved.before
        facts[f"{prefix}.after"] = moved.after
        facts[f"{prefix}.change"] = moved.change
        facts[f"{prefix}.z"] = moved.z
        if not own and (result.query not in worst or moved.z > worst[result.query][0]):
            worst[result.query] = (moved.z, result.service, moved.change)
        if abs(moved.z) >= SHIFT_Z:
            gathered.findings.append(
                Finding(
                    source=SOURCE,
                    kind="metric_shift",
                    component=result.service,
                    strength=min(1.0, abs(moved.z) / (2 * SHIFT_Z)),
                    detail=f"{result.query} of {result.service}: {moved.before:.4g} -> "
                    f"{moved.after:.4g} (z={moved.z:.1f})",
                    facts={
                        "query": result.query,
                        "before": moved.before,
                        "after": moved.after,
                        "z": moved.z,
                    },
                )
            )
    for query, (z, dependency, change) in sorted(worst.items()):
        facts[f"deps.max.{query}.z"] = z
        facts[f"deps.max.{query}.change"] = change
        facts[f"deps.worst.{query}"] = dependency
    ranking = rank_services(frame, split_at, graph, symptom=service) if frame else []
    if ranking:
        top = ranking[0]
        facts["rca.top"] = top.service
        facts["rca.top_score"] = top.score
        if top.score >= ANOMALOUS:
            gathered.findings.append(
                Finding(
                    source=SOURCE,
                    kind="rca_rank",
                    component=top.service,
                    strength=min(1.0, top.score / (2 * ANOMALOUS)),
                    detail=f"ranked first of {len(ranking)} by how its metrics moved: "
                    + ", ".join(f"{m.metric} {m.score:.1f}" for m in top.metrics),
                    facts={"score": top.score, "metrics": [m.metric for m in top.metrics]},
                )
            )
    return gathered


# --- the sources -------------------------------------------------------------------------------


class PrometheusSource:
    name = "prometheus"

    def __init__(self, client: PrometheusClient, step_s: float) -> None:
        self._client = client
        self._step_s = step_s

    async def range(self, query: str, start: float, end: float) -> list[Series]:
        return await self._client.query_range(query, start, end, self._step_s)


_NAME = r"[A-Za-z_:][A-Za-z0-9_:.]*"
_SELECTOR = re.compile(rf"^\s*(?P<name>{_NAME})\s*(?:\{{(?P<matchers>.*)\}})?\s*$", re.DOTALL)
_RATE = re.compile(
    rf"^\s*rate\(\s*(?P<selector>{_NAME}\s*(?:\{{.*\}})?)\s*\[(?P<window>\d+)(?P<unit>[smh])\]\s*\)\s*$",
    re.DOTALL,
)
_MATCHER = re.compile(
    r'\s*(?P<label>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*'
)
_UNESCAPE = re.compile(r"\\(.)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
STORE_QUERIES = 'name{label="value",...} or rate(name{...}[5m])'


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: dict[str, str]
    rate_s: float | None = None


def parse_selector(query: str) -> Selector:
    """``name{label="value",...}`` or ``rate(<that>[<n>s|m|h])``; anything else raises
    ``UnsupportedQuery`` saying what the store answers."""
    rate = _RATE.match(query)
    rate_s = None
    if rate is not None:
        rate_s = int(rate.group("window")) * _UNITS[rate.group("unit")]
        query = rate.group("selector")
    match = _SELECTOR.match(query)
    if match is None or rate_s == 0:
        raise UnsupportedQuery(_unsupported(query))
    matchers: dict[str, str] = {}
    body = (match.group("matchers") or "").strip().rstrip(",")
    for part in _split_matchers(body) if body else []:
        found = _MATCHER.fullmatch(part)
        if found is None:
            raise UnsupportedQuery(_unsupported(query))
        matchers[found.group("label")] = _unescape(found.group("value"))
    return Selector(match.group("name"), matchers, rate_s)


def _unsupported(query: str) -> str:
    return (
        f"the OTLP series store answers only {STORE_QUERIES}, not {query.strip()[:120]!r} "
        "(set SELFHEAL_EVIDENCE__PROMETHEUS_URL for PromQL)"
    )


def _split_matchers(body: str) -> list[str]:
    """Split at the commas outside quoted values."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in body:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def rate(points: Points, window_s: float) -> list[tuple[float, float]]:
    """Per-second increase of a counter over the trailing ``window_s`` at each point (a reset,
    a drop of the counter, counts from zero), where the window holds two points or more."""
    out: list[tuple[float, float]] = []
    first = 0
    increase_to = [0.0]
    for i in range(1, len(points)):
        step = points[i][1] - points[i - 1][1]
        increase_to.append(increase_to[-1] + (step if step >= 0 else points[i][1]))
    for i, (t, _) in enumerate(points):
        while points[first][0] < t - window_s:
            first += 1
        elapsed = t - points[first][0]
        if i > first and elapsed > 0:
            out.append((t, (increase_to[i] - increase_to[first]) / elapsed))
    return out


class StoreSource:
    """The OTLP series in Postgres, for simple selectors."""

    name = "otlp store"

    def __init__(self, store: MetricStore, *, max_series: int, max_points: int) -> None:
        self._store = store
        self._max_series = max_series
        self._max_points = max_points

    async def range(self, query: str, start: float, end: float) -> list[Series]:
        selector = parse_selector(query)
        lookback = selector.rate_s or 0.0
        found = await self._store.range(
            selector.name,
            selector.matchers,
            start - lookback,
            end,
            self._max_series,
            self._max_points,
        )
        if selector.rate_s is None:
            return found
        return [
            Series(s.labels, [p for p in rate(s.points, selector.rate_s) if p[0] >= start])
            for s in found
        ]


# --- the provider ------------------------------------------------------------------------------


class MetricsProvider:
    name = SOURCE

    def __init__(self, source: MetricSource, *, lead_s: float = LEAD_S) -> None:
        self._source = source
        self._lead_s = lead_s

    @property
    def source(self) -> MetricSource:
        return self._source

    async def gather(self, request: EvidenceRequest) -> Gathered:
        at = request.at.timestamp()
        start = at - request.window_before_s
        end = min(at + request.window_after_s, time.time())
        if end <= start:
            end = start + 1.0
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(service: str, query: str, template: str) -> QueryResult:
            try:
                promql = render_query(
                    template, query_variables(request.catalog, service, request.fault)
                )
            except KeyError as exc:
                return QueryResult(service, query, error=f"template: {exc.args[0]}")
            async with gate:
                try:
                    series = await self._source.range(promql, start, end)
                except UnsupportedQuery as exc:
                    return QueryResult(service, query, error=str(exc))
                except (PrometheusError, KnowledgeBaseError) as exc:
                    error = f"{self._source.name}: {exc}"
                    return QueryResult(service, query, error=error, unreachable=True)
            return QueryResult(service, query, series=series)

        services = [request.fault.service, *request.dependencies]
        asked = [
            (service, query, template)
            for service in services
            for spec in [request.catalog.get(service)]
            if spec is not None
            for query, template in spec.evidence.metrics.queries.items()
        ]
        results = await asyncio.gather(*(one(*item) for item in asked))
        failed = [r.error for r in results if r.unreachable]
        if failed and all(r.unreachable or r.series is None for r in results):
            # no answer at all from the source: missing evidence, not a page of error facts
            raise MetricsUnavailable(failed[0])
        graph = {spec.name: list(spec.depends_on) for spec in request.catalog.services}
        return assess(
            results, service=request.fault.service, at=at, lead_s=self._lead_s, graph=graph
        )


def metric_source(
    settings: EvidenceSettings,
    http: httpx.AsyncClient,
    session_factory: sessionmaker[Session] | None,
) -> MetricSource | None:
    """Prometheus when ``prometheus_url`` is set; else the OTLP store when there is a database;
    else None. The one choice of where series are read, for evidence, validation and guards."""
    if settings.prometheus_url:
        client = PrometheusClient(http, settings.prometheus_url, limits_of(settings))
        return PrometheusSource(client, settings.step_s)
    if session_factory is not None:
        store = MetricStore(
            session_factory,
            max_points_per_series=settings.series_max_points,
            max_age_s=settings.series_max_age_s,
        )
        return StoreSource(store, max_series=settings.max_series, max_points=settings.max_points)
    return None


async def read_latest(source: MetricSource, query: str, *, lookback_s: float) -> float | None:
    """The latest value of ``query`` within the last ``lookback_s`` seconds, over every series
    it returns (the largest, so that one bad instance is seen); None when there is none.

    Raises ``UnsupportedQuery`` (a query the OTLP store cannot answer), ``PrometheusError`` or
    ``KnowledgeBaseError`` (the source did not answer)."""
    end = time.time()
    series = await source.range(query, end - lookback_s, end)
    latest = [s.points[-1][1] for s in series if s.points]
    finite = [v for v in latest if math.isfinite(v)]
    return max(finite) if finite else None


def metrics_provider(
    settings: EvidenceSettings,
    http: httpx.AsyncClient,
    session_factory: sessionmaker[Session] | None,
) -> MetricsProvider | None:
    """Metrics evidence from :func:`metric_source`; None when this worker has no source."""
    source = metric_source(settings, http, session_factory)
    return None if source is None else MetricsProvider(source, lead_s=settings.metrics_lead_s)
