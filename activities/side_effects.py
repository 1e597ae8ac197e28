"""Side effects of a plan, watched while it runs (``watch_side_effects``), and the health of the
dependency behind a breaker (``probe_dependency``).

A plan can heal its target and hurt something else: a restart that empties a connection pool, a
fallback that doubles the latency of a caller. ``watch_side_effects`` runs beside the plan's steps
and its validation; the workflow cancels it when the plan is done, and it returns early only when
a guard trips, so that the workflow can stop and undo the plan.

What is watched: the guards (``services.yaml``: ``guards``, else ``DEFAULT_GUARDS``) of the
fault's service and of every service that depends on it directly (their callers feel the plan
too). A guard's left-hand side is the name of one of that service's evidence queries
(``evidence.metrics.queries``) or PromQL as written; both are rendered with the service's
``${service}``, ``${target}``, ``${namespace}``. A *bare name* (letters, digits, ``_``) that is
not one of the service's queries is not watched: the defaults name queries a service may not
define (``pool_usage``), and a typo must not watch a metric that does not exist. A raw metric name
is written as PromQL with a selector: ``up{}``.

The baseline is each guard's value when the watch starts, read from the one metric source of the
worker (``activities.evidence.metrics.metric_source``: Prometheus, else the OTLP store). Not
watched, with the reason in the result's ``skipped``:

- a guard whose value cannot be read at the start (no sample, a query the source cannot answer,
  the source down): nothing to compare with;
- a guard that already trips at the start (an absolute one: ``pool_usage >= 0.9`` while the pool
  is already full): that is the fault, or something else, not a side effect of the plan.

Then, every ``interval_s``: a ``relative`` guard compares ``value - baseline``, an absolute one
the value; with ``for_s``, the condition must hold at every read for that long (a round whose
value cannot be read is not evaluated, and neither breaks nor extends the run). The first guard
that trips ends the watch with a ``GuardBreach``.

Durable: the baseline and the runs in progress are the heartbeat details, and a retried watch
(a worker lost) resumes from ``activity.info().heartbeat_details``, so it compares with the
values from before the plan, not with values the plan may already have moved. Heartbeats are
also how cancellation arrives: the workflow's heartbeat timeout must exceed ``interval_s`` plus
one read (``SELFHEAL_EVIDENCE__TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from selfheal.activities.evidence.metrics import (
    MetricSource,
    UnsupportedQuery,
    metric_source,
    read_latest,
)
from selfheal.core.catalog import ServiceCatalog, query_variables
from selfheal.core.probes import http_client, probe_health
from selfheal.core.prometheus import PrometheusError, render_query
from selfheal.core.settings import EvidenceSettings
from selfheal.domain import Fault, KnowledgeBaseError
from selfheal.domain.criteria import Expression, GuardBreach, GuardSpec
from selfheal.domain.payloads import (
    ProbeDependencyInput,
    ProbeDependencyResult,
    WatchSideEffectsInput,
    WatchSideEffectsResult,
)
from selfheal.workflows.contract import PROBE_DEPENDENCY, WATCH_SIDE_EFFECTS, implements

log = structlog.get_logger(__name__)

BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""A left-hand side that can only mean one of the service's queries."""
STALE_S = 60.0
"""A value older than this (or than three polls) is not read: the series stopped."""
CONCURRENCY = 4
"""reads in flight at once"""
PROBE_SPACING_S = 0.5
"""between two trials of a dependency's probe"""
MIN_INTERVAL_S = 0.05
"""a shorter poll interval would only load the metric source"""


# --- the pure part: what is watched, and when it trips -------------------------------------------


@dataclass(frozen=True)
class WatchedGuard:
    """One guard of one service, with its query rendered for that service."""

    service: str
    guard: GuardSpec
    query: str

    @property
    def key(self) -> str:
        return f"{self.service}:{self.guard.name}"

    @property
    def expression(self) -> Expression:
        return self.guard.expression

    def compared(self, value: float, baseline: float) -> float:
        """What the expression is held against: the change for a relative guard."""
        return value - baseline if self.guard.relative else value


def guards_to_watch(catalog: ServiceCatalog, fault: Fault) -> tuple[list[WatchedGuard], list[str]]:
    """The guards of ``fault.service`` and of its dependents, each with its rendered query; and
    those that cannot be watched, as ``'<service>:<guard>: why'``."""
    watched: list[WatchedGuard] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for service in dict.fromkeys([fault.service, *catalog.dependents(fault.service)]):
        spec = catalog.get(service)
        if spec is None:
            skipped.append(f"{service}: not in the service catalog")
            continue
        queries = spec.evidence.metrics.queries
        variables = query_variables(catalog, service, fault)
        for guard in spec.watched_guards:
            key = f"{service}:{guard.name}"
            if key in seen:
                skipped.append(f"{key}: a guard of this name is declared twice")
                continue
            seen.add(key)
            lhs = guard.expression.lhs
            template = queries.get(lhs)
            if template is None and BARE_NAME.match(lhs):
                skipped.append(f"{key}: no query {lhs!r}")
                continue
            try:
                query = render_query(template if template is not None else lhs, variables)
            except KeyError as exc:
                skipped.append(f"{key}: {exc.args[0]}")
                continue
            watched.append(WatchedGuard(service, guard, query))
    return watched, skipped


def tripped_at_start(watched: WatchedGuard, value: float) -> bool:
    """True when the guard already holds at its baseline (a relative one compares 0)."""
    return watched.expression.holds(watched.compared(value, value))


def evaluate(
    watched: WatchedGuard, value: float, baseline: float, now: float, since: float | None
) -> tuple[bool, float | None]:
    """(tripped, since): ``since`` is when the condition started holding without a break,
    None when it does not hold now; the guard trips once that has lasted ``for_s``."""
    if not watched.expression.holds(watched.compared(value, baseline)):
        return False, None
    since = now if since is None else since
    return now - since >= watched.guard.for_s, since


def breach_detail(watched: WatchedGuard, value: float, baseline: float, held_s: float) -> str:
    """One line: what moved, from what, against which threshold, for how long."""
    expression = watched.expression
    if watched.guard.relative:
        change = value - baseline
        text = (
            f"{expression.lhs} went from {baseline:g} to {value:g} "
            f"(change {change:+g} {expression.op} {expression.threshold:g})"
        )
    else:
        text = (
            f"{expression.lhs} = {value:g} {expression.op} {expression.threshold:g} "
            f"(at start {baseline:g})"
        )
    if watched.guard.for_s > 0:
        text += f" for {held_s:.0f}s"
    return f"{watched.service}: {text}"


class WatchState(BaseModel):
    """What a retried watch resumes from (the heartbeat details)."""

    started_at: float
    baseline: dict[str, float] = Field(default_factory=dict, description="by guard key")
    skipped: dict[str, str] = Field(
        default_factory=dict, description="guard key -> why it is not watched"
    )
    since: dict[str, float] = Field(
        default_factory=dict, description="guard key -> when its condition began to hold"
    )
    rounds: int = 0


def resumed_state(details: Sequence[Any]) -> WatchState | None:
    """The state a previous attempt heartbeat, if it left one that reads as such."""
    if not details:
        return None
    try:
        return WatchState.model_validate(details[-1])
    except ValidationError:
        return None


# --- the activities ------------------------------------------------------------------------------


class SideEffectActivities:
    def __init__(
        self,
        catalog: ServiceCatalog,
        evidence: EvidenceSettings,
        *,
        http: httpx.AsyncClient | None = None,
        session_factory: sessionmaker[Session] | None = None,
        probe_timeout_s: float = 3.0,
    ) -> None:
        self._catalog = catalog
        self._evidence = evidence
        self._http = http
        self._session_factory = session_factory
        self._probe_timeout_s = probe_timeout_s

    @implements(WATCH_SIDE_EFFECTS)
    async def watch_side_effects(self, input: WatchSideEffectsInput) -> WatchSideEffectsResult:
        """Returns when a guard trips, or at once when nothing can be watched; otherwise runs
        until cancelled (``asyncio.CancelledError`` propagates)."""
        planned, skipped = guards_to_watch(self._catalog, input.fault)
        async with http_client(self._http) as http:
            source = metric_source(self._evidence, http, self._session_factory)
            if source is None:
                reason = "no metric source on this worker (no Prometheus URL, no database)"
                skipped += [f"{w.key}: {reason}" for w in planned]
                return WatchSideEffectsResult(skipped=skipped)
            interval_s = max(input.interval_s, MIN_INTERVAL_S)
            lookback_s = max(STALE_S, 3 * interval_s)
            state = resumed_state(activity.info().heartbeat_details)
            if state is None:
                state = WatchState(started_at=time.time())
            await self._baseline(source, planned, state, lookback_s)
            watching = [w for w in planned if w.key in state.baseline]
            skipped += [f"{key}: {why}" for key, why in state.skipped.items()]
            result = WatchSideEffectsResult(watched=[w.key for w in watching], skipped=skipped)
            if not watching:
                log.info("no side effect can be watched", skipped=skipped)
                return result
            log.info("watching side effects", watched=result.watched, skipped=skipped)
            while True:
                activity.heartbeat(state.model_dump(mode="json"))
                await asyncio.sleep(interval_s)
                breach = await self._round(source, watching, state, lookback_s)
                if breach is not None:
                    log.warning(
                        "side effect",
                        guard=breach.guard,
                        service=breach.service,
                        expr=breach.expr,
                        value=breach.value,
                        baseline=breach.baseline,
                        detail=breach.detail,
                    )
                    return result.model_copy(update={"breach": breach})

    async def _baseline(
        self,
        source: MetricSource,
        planned: list[WatchedGuard],
        state: WatchState,
        lookback_s: float,
    ) -> None:
        """Read the baseline of every guard ``state`` knows nothing of yet (all of them at the
        first attempt; on a retry, only guards added to the catalog since)."""
        new = [w for w in planned if w.key not in state.baseline and w.key not in state.skipped]
        readings = await self._read_all(source, new, lookback_s)
        for watched, (value, problem) in zip(new, readings, strict=True):
            if value is None:
                state.skipped[watched.key] = f"cannot read at start: {problem}"
            elif tripped_at_start(watched, value):
                state.skipped[watched.key] = f"already tripped at start ({value:g})"
            else:
                state.baseline[watched.key] = value

    async def _round(
        self,
        source: MetricSource,
        watching: list[WatchedGuard],
        state: WatchState,
        lookback_s: float,
    ) -> GuardBreach | None:
        readings = await self._read_all(source, watching, lookback_s)
        now = time.time()
        state.rounds += 1
        for watched, (value, _) in zip(watching, readings, strict=True):
            if value is None:
                continue  # not evaluated this round: the run so far neither breaks nor grows
            baseline = state.baseline[watched.key]
            tripped, since = evaluate(watched, value, baseline, now, state.since.get(watched.key))
            if since is None:
                state.since.pop(watched.key, None)
            else:
                state.since[watched.key] = since
            if tripped:
                held_s = now - (since if since is not None else now)
                return GuardBreach(
                    guard=watched.guard.name,
                    service=watched.service,
                    expr=watched.guard.expr,
                    value=value,
                    baseline=baseline,
                    detail=breach_detail(watched, value, baseline, held_s),
                    at=datetime.fromtimestamp(now, UTC),
                )
        return None

    async def _read_all(
        self, source: MetricSource, guards: list[WatchedGuard], lookback_s: float
    ) -> list[tuple[float | None, str]]:
        """(value, why there is none) of each guard's query, a few at a time, each bounded."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(watched: WatchedGuard) -> tuple[float | None, str]:
            async with gate:
                try:
                    async with asyncio.timeout(self._evidence.timeout_s):
                        value = await read_latest(source, watched.query, lookback_s=lookback_s)
                except UnsupportedQuery as exc:
                    return None, str(exc)
                except (PrometheusError, KnowledgeBaseError) as exc:
                    return None, f"{source.name}: {exc}"
                except TimeoutError:
                    return None, f"{source.name}: no answer within {self._evidence.timeout_s:g}s"
            if value is None:
                return None, f"no value of {watched.query!r} in the last {lookback_s:g}s"
            return value, ""

        return list(await asyncio.gather(*(one(w) for w in guards)))

    @implements(PROBE_DEPENDENCY)
    async def probe_dependency(self, input: ProbeDependencyInput) -> ProbeDependencyResult:
        """Healthy only when every probe of every dependency answers 2xx. An unhealthy, unknown
        or unprobeable dependency is an answer (``healthy=False`` and why), never an error."""
        if input.dependency:
            services = [input.dependency]
        else:
            spec = self._catalog.get(input.service)
            if spec is None:
                detail = f"unknown service {input.service!r}: its dependencies are unknown"
                return ProbeDependencyResult(healthy=False, detail=detail)
            services = list(dict.fromkeys(spec.depends_on))
            if not services:
                detail = f"{input.service} has no dependency in the service catalog to probe"
                return ProbeDependencyResult(healthy=False, detail=detail)
        urls: dict[str, str] = {}
        problems: list[str] = []
        for service in services:
            spec = self._catalog.get(service)
            target = spec.target(None) if spec is not None else None
            if spec is None:
                problems.append(f"{service}: not in the service catalog")
            elif target is None or not target.health_url:
                problems.append(f"{service}: its default target has no health_url")
            else:
                urls[service] = target.health_url
        if problems:
            return ProbeDependencyResult(healthy=False, probed=services, detail="; ".join(problems))
        trials = max(input.trials, 1)
        async with http_client(self._http) as http:
            for trial in range(1, trials + 1):
                if trial > 1:
                    await asyncio.sleep(PROBE_SPACING_S)
                results = await asyncio.gather(
                    *(probe_health(http, url, self._probe_timeout_s) for url in urls.values())
                )
                activity.heartbeat({"trial": trial})
                failed = [
                    f"{service}: {result.url}: {result.detail}"
                    for service, result in zip(urls, results, strict=True)
                    if not result.ok
                ]
                if failed:
                    detail = f"probe {trial}/{trials} failed: " + "; ".join(failed)
                    return ProbeDependencyResult(healthy=False, probed=services, detail=detail)
        names = ", ".join(services)
        return ProbeDependencyResult(
            healthy=True, probed=services, detail=f"{names}: {trials}/{trials} probes answered 2xx"
        )
