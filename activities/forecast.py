"""Predicted faults (issue 12 §2): ``run_forecast`` forecasts one rule of
``runbooks/forecasts.yaml``, ``choose_window`` picks where a predicted fault's plan runs.

``run_forecast(RunForecastInput(rule=...))``:

- reads the rule's *current* definition (``core.forecasts.ForecastRulesSource``: the file is
  re-read when it changes); a rule that is not there is a ``ConfigError`` (non-retryable);
- resolves its ``metric`` as a validation criterion's left-hand side is resolved
  (``activities.validation.metric_query``): one of the service's evidence queries, rendered with
  ``core.catalog.query_variables``, else PromQL as written;
- reads the series over ``lookback`` from the worker's one metric source
  (``activities.evidence.metrics.metric_source``: Prometheus, which widens its step to fit
  ``max_points``, else the intake's OTLP store, which keeps ``series_max_points`` points of the
  last ``series_max_age_s``);
- when the query returns several series (one per pod, per disk), forecasts the one nearest the
  threshold in the rule's direction (by the median of its last ``RECENT_POINTS`` values) and
  names it in ``detail``;
- runs ``detection.forecast.forecast`` from now over ``horizon`` and returns a ``Prediction``.
  No series, or fewer than ``detection.forecast.MIN_POINTS`` points, is a prediction of
  probability 0 whose ``detail`` says so: a forecast that cannot conclude predicts nothing.
  The source failing is retryable (``DiagnosisError``); a query it cannot answer (PromQL to the
  OTLP store) or a query with an unknown placeholder is a ``ConfigError``.

``choose_window(ChooseWindowInput(...))``: the occurrences of the service's
``maintenance_windows`` (``services.yaml``) between now and the expected crossing (a week when
there is none), ranked with acting now by ``detection.maintenance.rank_windows``:

- ``off_peak`` is the window's own;
- *busy* healings are the other healings of the service (not ``workflow_id``) that hold one of
  its targets' locks or have acted and not ended (``models.guardrails``: ``target_locks``,
  ``healing_actions``). Acting now, and a window already in progress, count each busy healing,
  and each other healing of the service that acted since the window began, as a conflict; their
  resources are free when no healing is busy. A window to come has no known conflict and is
  taken as free: selfheal reserves nothing ahead, and a healing runs for minutes. Without a
  database nothing is known: no option counts as free;
- the best ranked option wins: a window (``start``, ``end``) or acting now (``act_now``, also
  when the service declares no window), with its score and reasons, and the runner-up named.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.errors import as_application_error
from selfheal.activities.evidence.metrics import MetricSource, UnsupportedQuery, metric_source
from selfheal.activities.validation import Unevaluable, metric_query
from selfheal.core.catalog import ServiceCatalog, query_variables
from selfheal.core.forecasts import ForecastRulesSource
from selfheal.core.probes import http_client
from selfheal.core.prometheus import PrometheusError, Series
from selfheal.core.settings import EvidenceSettings
from selfheal.detection.forecast import MIN_POINTS, Forecast, forecast
from selfheal.detection.maintenance import (
    CandidateWindow,
    RankedWindow,
    occurrences,
    rank_windows,
)
from selfheal.domain import ConfigError, DiagnosisError, KnowledgeBaseError, SelfhealError
from selfheal.domain.criteria import Expression
from selfheal.domain.forecast import (
    ChooseWindowInput,
    ChosenWindow,
    ForecastRule,
    ForecastRules,
    Prediction,
    RunForecastInput,
)
from selfheal.models.base import knowledge_base_error
from selfheal.models.guardrails import HealingActionRow, TargetLockRow
from selfheal.workflows.contract import CHOOSE_WINDOW, RUN_FORECAST, implements

log = structlog.get_logger(__name__)

RECENT_POINTS = 5
"""a series' current level, for choosing among several: the median of its last points"""
STALE_STEPS = 5.0
"""a series whose latest point is older than this many of its steps is said to have stopped"""
NO_CROSSING_SPAN = timedelta(days=7)
"""how far ahead windows are looked for when no crossing is expected"""
NOW_LABEL = "now"
NOUNS = {
    "disk_fill": "disk",
    "memory_leak": "memory",
    "pool_saturation": "pool",
    "queue_saturation": "queue",
    "cert_expiry": "certificate",
}


# --- the pure part: which series, what it means ---------------------------------------------


@dataclass(frozen=True)
class Picked:
    series: Series
    of: int
    """how many series the query returned (with points)"""


def recent_level(series: Series) -> float | None:
    values = [v for _, v in series.points[-RECENT_POINTS:] if math.isfinite(v)]
    return statistics.median(values) if values else None


def nearest_series(series: Sequence[Series], rule: ForecastRule) -> Picked | None:
    """The series nearest ``rule``'s threshold in its direction (one already beyond it first,
    the furthest beyond), by its recent level; None when no series has a point."""
    sign = 1.0 if rule.direction == "up" else -1.0
    ranked: list[tuple[float, int]] = []
    for index, one in enumerate(series):
        level = recent_level(one)
        if level is not None:
            ranked.append((sign * (rule.threshold - level), index))
    if not ranked:
        return None
    _, best = min(ranked)
    return Picked(series[best], len(ranked))


def where_of(rule: ForecastRule) -> str:
    return f"{rule.service}/{rule.target}" if rule.target else rule.service


def span_text(seconds: float) -> str:
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{max(seconds, 0.0) / 60:.0f} min"


def labels_text(labels: dict[str, str]) -> str:
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"


def describe(rule: ForecastRule, result: Forecast, picked: Picked, now: float) -> str:
    """One line: what crosses what, when, how sure, and which series."""
    subject = f"{NOUNS[rule.kind]} of {where_of(rule)} ({rule.metric})"
    numbers = (
        f"p={result.probability:.2f}, trend {result.trend_per_hour:+.4g}/h, "
        f"level {result.level:.4g}"
    )
    if result.already_crossed:
        line = f"{subject} is already beyond {rule.threshold:g} ({numbers})"
    elif result.crossing_at is not None:
        line = (
            f"{subject} crosses {rule.threshold:g} in ~{span_text(result.crossing_at - now)} "
            f"({numbers})"
        )
    else:
        line = (
            f"{subject} is not expected to cross {rule.threshold:g} within "
            f"{span_text(rule.horizon_s)} ({numbers})"
        )
    notes = []
    if picked.of > 1:
        notes.append(
            f"series {labels_text(picked.series.labels)}, nearest the threshold of {picked.of}"
        )
    points = picked.series.points
    if len(points) >= 2:
        step = statistics.median(b[0] - a[0] for a, b in itertools.pairwise(points))
        age = now - points[-1][0]
        if step > 0 and age > STALE_STEPS * step:
            notes.append(f"latest point {span_text(age)} old")
    skipped = result.points_skipped + result.repeated_timestamps
    if skipped:
        notes.append(
            f"{result.points_used} points used, {result.points_skipped} non-finite skipped, "
            f"{result.repeated_timestamps} repeated timestamps averaged"
        )
    return line + "".join(f"; {note}" for note in notes)


def prediction_of(rule: ForecastRule, result: Forecast, picked: Picked, now: float) -> Prediction:
    return Prediction(
        rule=rule.name,
        at=datetime.fromtimestamp(now, UTC),
        probability=result.probability,
        min_probability=rule.min_probability,
        crossing_at=None
        if result.crossing_at is None
        else datetime.fromtimestamp(result.crossing_at, UTC),
        already_crossed=result.already_crossed,
        level=result.level,
        threshold=rule.threshold,
        trend_per_hour=result.trend_per_hour,
        points_used=result.points_used,
        points_skipped=result.points_skipped,
        detail=describe(rule, result, picked, now),
    )


def inconclusive(rule: ForecastRule, now: float, why: str) -> Prediction:
    return Prediction(
        rule=rule.name,
        at=datetime.fromtimestamp(now, UTC),
        probability=0.0,
        min_probability=rule.min_probability,
        crossing_at=None,
        threshold=rule.threshold,
        detail=f"{NOUNS[rule.kind]} of {where_of(rule)} ({rule.metric}): {why}; no prediction",
    )


@dataclass(frozen=True)
class Busy:
    """The other healings of a service, as ``choose_window`` weighs them."""

    holding: frozenset[str]
    """holding a lock on one of the service's targets, or acting and not ended"""
    acted: tuple[tuple[str, datetime], ...]
    """(workflow id, first acted at) of those that acted since the earliest span asked about"""

    def conflicts(self, since: datetime) -> int:
        return len(self.holding | {wf for wf, at in self.acted if at >= since})


def candidates(
    windows: Sequence[tuple[datetime, datetime, bool]], now: datetime, busy: Busy | None
) -> tuple[CandidateWindow, list[CandidateWindow]]:
    """Acting now and the windows ``(start, end, off_peak)`` as candidates: conflicts and free
    resources as the module says."""

    def candidate(
        start: datetime, end: datetime, off_peak: bool, label: str = ""
    ) -> CandidateWindow:
        if busy is None:
            return CandidateWindow(start=start, end=end, off_peak=off_peak, label=label)
        if start > now:  # to come: nothing known to be planned then
            return CandidateWindow(
                start=start, end=end, off_peak=off_peak, resources_free=True, label=label
            )
        return CandidateWindow(
            start=start,
            end=end,
            off_peak=off_peak,
            resources_free=not busy.holding,
            conflicts=busy.conflicts(start),
            label=label,
        )

    act_now = candidate(now, now, False, NOW_LABEL)
    return act_now, [candidate(start, end, off_peak) for start, end, off_peak in windows]


def chosen(ranked: Sequence[RankedWindow], preface: Sequence[str]) -> ChosenWindow:
    best = ranked[0]
    act_now = best.label == NOW_LABEL
    reasons = [*preface, f"{best.label}: score {best.score:+g}", *best.reasons]
    if len(ranked) > 1:
        second = ranked[1]
        late = ", too late" if second.too_late else ""
        reasons.append(f"next best: {second.label} (score {second.score:+g}{late})")
    return ChosenWindow(
        start=best.start,
        end=None if act_now else best.end,
        act_now=act_now,
        score=best.score,
        reasons=reasons,
    )


# --- the activities -------------------------------------------------------------------------


class ForecastActivities:
    def __init__(
        self,
        rules: ForecastRulesSource | ForecastRules,
        catalog: ServiceCatalog,
        evidence: EvidenceSettings,
        *,
        http: httpx.AsyncClient | None = None,
        session_factory: sessionmaker[Session] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = rules
        self._catalog = catalog
        self._evidence = evidence
        self._http = http
        self._session_factory = session_factory
        self._clock = clock

    def _rule(self, name: str) -> ForecastRule:
        rules = (
            self._rules.current() if isinstance(self._rules, ForecastRulesSource) else self._rules
        )
        rule = rules.get(name)
        if rule is None:
            known = ", ".join(r.name for r in rules.forecasts) or "none"
            raise ConfigError(f"unknown forecast rule {name!r} (known: {known})")
        return rule

    @implements(RUN_FORECAST)
    async def run_forecast(self, input: RunForecastInput) -> Prediction:
        try:
            rule = self._rule(input.rule)
            async with http_client(self._http) as http:
                source = metric_source(self._evidence, http, self._session_factory)
                if source is None:
                    raise ConfigError(
                        "no metrics source on this worker (SELFHEAL_EVIDENCE__PROMETHEUS_URL, "
                        "or a database with the intake's OTLP series)"
                    )
                return await self._forecast(rule, source)
        except SelfhealError as exc:
            raise as_application_error(exc) from None

    async def _forecast(self, rule: ForecastRule, source: MetricSource) -> Prediction:
        service = self._catalog.get(rule.service)
        comparison = "<" if rule.direction == "up" else ">"
        expression = Expression(lhs=rule.metric, op=comparison, threshold=rule.threshold)
        try:
            query = metric_query(expression, service, query_variables(self._catalog, rule.service))
        except Unevaluable as exc:
            raise ConfigError(f"forecast rule {rule.name!r}: {exc}") from None
        end = self._clock()
        try:
            found = await source.range(query, end - rule.lookback_s, end)
        except UnsupportedQuery as exc:
            raise ConfigError(f"forecast rule {rule.name!r}: {exc}") from None
        except (PrometheusError, KnowledgeBaseError) as exc:
            raise DiagnosisError(f"forecast rule {rule.name!r}: {source.name}: {exc}") from None
        picked = nearest_series(found, rule)
        lookback = span_text(rule.lookback_s)
        if picked is None:
            return inconclusive(rule, end, f"no series in the last {lookback} ({source.name})")
        points = [(t, v) for t, v in picked.series.points if math.isfinite(v)]
        if len({t for t, _ in points}) < MIN_POINTS:
            return inconclusive(
                rule,
                end,
                f"{len(points)} points in the last {lookback} ({source.name}); a forecast needs "
                f"at least {MIN_POINTS}",
            )
        now = max(end, points[-1][0])
        result = forecast(
            [t for t, _ in points],
            [v for _, v in points],
            threshold=rule.threshold,
            horizon_s=rule.horizon_s,
            direction=rule.direction,
            now=now,
        )
        prediction = prediction_of(rule, result, picked, now)
        log.info(
            "forecast",
            rule=rule.name,
            probability=prediction.probability,
            crossing_at=prediction.crossing_at,
            detail=prediction.detail,
        )
        return prediction

    @implements(CHOOSE_WINDOW)
    async def choose_window(self, input: ChooseWindowInput) -> ChosenWindow:
        now = datetime.fromtimestamp(self._clock(), UTC)
        crossing = input.crossing_at
        if crossing is not None and crossing.tzinfo is None:
            crossing = crossing.replace(tzinfo=UTC)
        service = self._catalog.get(input.service)
        if service is None:
            # The guardrails refuse an unknown service with their own reason: no window to wait for.
            return ChosenWindow(
                start=now,
                act_now=True,
                reasons=[f"service {input.service!r} is not in the catalog: no window to wait for"],
            )
        until = crossing if crossing is not None else now + NO_CROSSING_SPAN
        spans = sorted(
            (start, end, window.off_peak)
            for window in service.maintenance_windows
            for start, end in occurrences(window, now, max(until, now))
        )
        preface: list[str] = []
        if not service.maintenance_windows:
            preface.append(f"service {service.name!r} declares no maintenance window")
        elif not spans:
            preface.append(
                f"no maintenance window of {service.name!r} before "
                f"{until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            )
        busy: Busy | None = None
        if self._session_factory is None:
            preface.append("other healings unknown (no database): no option counts as free")
        else:
            since = min([now, *(start for start, _, _ in spans)])
            try:
                busy = await asyncio.to_thread(
                    busy_healings, self._session_factory, service.name, input.workflow_id, since
                )
            except KnowledgeBaseError as exc:
                raise as_application_error(exc) from None
        act_now, windows = candidates(spans, now, busy)
        ranked = rank_windows(windows, now=now, crossing_at=crossing, act_now=act_now)
        return chosen(ranked, preface)


def busy_healings(
    session_factory: sessionmaker[Session], service: str, exclude: str, since: datetime
) -> Busy:
    """The healings of ``service`` other than ``exclude`` that hold one of its targets or act
    now, and those that first acted at or after ``since``."""
    locks = TargetLockRow
    actions = HealingActionRow
    try:
        with session_factory() as session:
            holding = set(
                session.scalars(
                    select(locks.workflow_id).where(
                        locks.target.startswith(f"{service}/", autoescape=True),
                        locks.workflow_id != exclude,
                    )
                )
            )
            rows = session.execute(
                select(actions.workflow_id, actions.acted_at, actions.ended_at).where(
                    actions.service == service,
                    actions.workflow_id != exclude,
                    or_(actions.ended_at.is_(None), actions.acted_at >= since),
                )
            ).all()
    except SQLAlchemyError as exc:
        raise knowledge_base_error(f"cannot read the healings of {service}", exc) from exc
    holding |= {row.workflow_id for row in rows if row.ended_at is None}
    acted = tuple((row.workflow_id, at) for row in rows if (at := _aware(row.acted_at)) >= since)
    return Busy(frozenset(holding), acted)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
