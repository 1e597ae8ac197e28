"""The recent OTLP metric series, kept in Postgres so that every worker sees what the intake saw.

Without a Prometheus (``selfheal dev``, small installs), the metrics evidence provider asks this
store instead: ``range(name, matchers, start, end, ...)`` answers a simple selector
``name{label="value",...}`` with the same ``Series`` the Prometheus client returns.

Bounded: points older than ``max_age_s`` are deleted, and each series keeps its newest
``max_points_per_series``. Pruning is amortised (every ``prune_every`` adds, or sooner when many
rows arrived) and by-series only for the series written since the last prune, so an export pays
an insert and, now and then, a small delete.

Names and labels: OTLP writes ``http.server.duration`` and ``http.route`` where Prometheus
writes ``http_server_duration`` and ``http_route``; a selector may use either spelling. The
service of a point is its ``service.name`` label (the OTLP resource attribute), else
``service``, else ``job``; a matcher on ``service``, ``service_name`` or ``job`` compares with
it. A point without a service is not kept (counted in ``skipped``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Delete,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from selfheal.core.prometheus import Series
from selfheal.core.settings import EvidenceSettings
from selfheal.models.base import knowledge_base_error
from selfheal.models.evidence import MetricSampleRow

SERVICE_LABELS = ("service.name", "service", "job")
"""Where a point's service is read from, first found wins."""
SERVICE_MATCHERS = frozenset({"service", "service_name", "job"})
"""Matchers that compare with the point's service rather than with one label."""


# Each series' points at or before its (keep+1)-th newest: found by a short backward scan of
# the (series, ts) index per series, where ranking every point of the series would sort them.
_TRIM = text(
    """
    DELETE FROM metric_samples AS m
    USING (
        SELECT s.series, cut.ts
        FROM unnest(CAST(:series AS varchar[])) AS s(series)
        CROSS JOIN LATERAL (
            SELECT ts FROM metric_samples
            WHERE series = s.series
            ORDER BY ts DESC
            OFFSET :keep LIMIT 1
        ) AS cut
    ) AS over_bound
    WHERE m.series = over_bound.series AND m.ts <= over_bound.ts
    """
)


class PointLike(Protocol):
    """What the store needs of a point (``detection.parsers.MetricPoint`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def ts(self) -> float: ...
    @property
    def value(self) -> float: ...


def point_service(labels: Mapping[str, str]) -> str | None:
    return next((labels[k] for k in SERVICE_LABELS if labels.get(k)), None)


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """The series' identity: a hash of its name and labels (64 hex characters)."""
    canonical = json.dumps([name, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def prometheus_name(name: str) -> str:
    """The name as Prometheus spells an OTLP name or label (dots and dashes as underscores)."""
    return name.replace(".", "_").replace("-", "_")


class MetricStore:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        max_points_per_series: int,
        max_age_s: float,
        prune_every: int = 20,
        prune_rows: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_points_per_series < 1 or max_age_s <= 0:
            raise ValueError("max_points_per_series must be >= 1 and max_age_s > 0")
        self._session_factory = session_factory
        self._max_points = max_points_per_series
        self._max_age_s = max_age_s
        self._prune_every = prune_every
        self._prune_rows = prune_rows
        self._clock = clock
        self._adds = 0
        self._pending_rows = 0
        self._touched: set[str] = set()
        self._lock = asyncio.Lock()
        self.skipped = 0
        """points not kept: no service label, a non-finite value, or already too old"""

    async def add(self, points: Sequence[PointLike]) -> None:
        """Keep ``points``; prune now and then. Raises ``KnowledgeBaseError`` on a database
        failure (the intake logs and counts it: the export itself succeeds)."""
        oldest = self._clock() - self._max_age_s
        rows: list[dict[str, object]] = []
        for point in points:
            service = point_service(point.labels)
            if service is None or not math.isfinite(point.value) or point.ts < oldest:
                self.skipped += 1
                continue
            labels = dict(point.labels)
            rows.append(
                {
                    "series": series_key(point.name, labels),
                    "service": service[:200],
                    "name": point.name[:512],
                    "labels": labels,
                    "ts": datetime.fromtimestamp(point.ts, UTC),
                    "value": point.value,
                }
            )
        if rows:
            await asyncio.to_thread(self._insert, rows)
        async with self._lock:
            self._adds += 1
            self._pending_rows += len(rows)
            self._touched.update(str(r["series"]) for r in rows)
            due = self._adds >= self._prune_every or self._pending_rows >= self._prune_rows
            if due:
                touched, self._touched = self._touched, set()
                self._adds = self._pending_rows = 0
        if due:
            await self.prune(touched)

    async def prune(self, series: set[str] | None = None) -> int:
        """Delete points past ``max_age_s``, and each of ``series``' points beyond its newest
        ``max_points_per_series`` (all series when None). Returns the rows deleted."""
        return await asyncio.to_thread(self._prune, self._clock() - self._max_age_s, series)

    async def range(
        self,
        name: str,
        matchers: Mapping[str, str],
        start: float,
        end: float,
        limit_series: int,
        limit_points: int,
    ) -> list[Series]:
        """The series called ``name`` whose labels equal ``matchers``, with their points in
        [start, end] (the newest ``limit_points`` of each; at most ``limit_series`` series)."""
        return await asyncio.to_thread(
            self._range, name, dict(matchers), start, end, limit_series, limit_points
        )

    # ------------------------------------------------------------------------------ sync

    def _insert(self, rows: list[dict[str, object]]) -> None:
        try:
            with self._session_factory() as session, session.begin():
                session.execute(insert(MetricSampleRow), rows)
        except SQLAlchemyError as exc:
            raise knowledge_base_error("cannot keep OTLP metric points", exc) from exc

    def _prune(self, oldest: float, series: set[str] | None) -> int:
        table = MetricSampleRow
        try:
            with self._session_factory() as session, session.begin():
                deleted = _delete(
                    session, delete(table).where(table.ts < datetime.fromtimestamp(oldest, UTC))
                )
                keys = (
                    sorted(series)
                    if series is not None
                    else list(session.scalars(select(table.series).distinct()))
                )
                for at in range(0, len(keys), 1000):
                    result = session.execute(
                        _TRIM, {"series": keys[at : at + 1000], "keep": self._max_points}
                    )
                    deleted += int(cast(CursorResult[Any], result).rowcount or 0)
                return deleted
        except SQLAlchemyError as exc:
            raise knowledge_base_error("cannot prune OTLP metric points", exc) from exc

    def _range(
        self,
        name: str,
        matchers: dict[str, str],
        start: float,
        end: float,
        limit_series: int,
        limit_points: int,
    ) -> list[Series]:
        table = MetricSampleRow
        wanted_service = {v for k, v in matchers.items() if k in SERVICE_MATCHERS}
        if len(wanted_service) > 1:
            return []  # two different services asked at once: nothing can match
        others = {k: v for k, v in matchers.items() if k not in SERVICE_MATCHERS}
        where: list[ColumnElement[bool]] = [
            or_(table.name == name, func.replace(table.name, ".", "_") == name),
            table.ts >= datetime.fromtimestamp(start, UTC),
            table.ts <= datetime.fromtimestamp(end, UTC),
        ]
        if wanted_service:
            where.append(table.service == next(iter(wanted_service)))
        try:
            with self._session_factory() as session:
                heads = session.execute(
                    select(table.series, table.labels)
                    .ext(distinct_on(table.series))
                    .where(*where)
                    .order_by(table.series)
                ).all()
                chosen: dict[str, dict[str, str]] = {}
                for key, labels in heads:
                    flat = {str(k): str(v) for k, v in labels.items()}
                    if _matches(flat, others):
                        chosen[key] = flat
                        if len(chosen) >= limit_series:
                            break
                if not chosen:
                    return []
                rows = session.execute(
                    select(table.series, table.ts, table.value)
                    .where(*where, table.series.in_(list(chosen)))
                    .order_by(table.series, table.ts)
                ).all()
        except SQLAlchemyError as exc:
            raise knowledge_base_error("cannot read OTLP metric points", exc) from exc
        points: dict[str, list[tuple[float, float]]] = {key: [] for key in chosen}
        for key, ts, value in rows:
            points[key].append((ts.timestamp(), float(value)))
        return [
            Series(
                labels=chosen[key],
                points=pts[-limit_points:],
                truncated=len(pts) > limit_points,
            )
            for key, pts in points.items()
        ]


def _delete(session: Session, statement: Delete) -> int:
    result = cast(CursorResult[Any], session.execute(statement))
    return int(result.rowcount or 0)


def _matches(labels: Mapping[str, str], matchers: Mapping[str, str]) -> bool:
    """Equality on every matcher; a label is found under its OTLP or its Prometheus name, and
    an absent label equals "" (as in PromQL)."""
    by_prometheus_name = {prometheus_name(k): v for k, v in labels.items()}
    return all(labels.get(k, by_prometheus_name.get(k, "")) == v for k, v in matchers.items())


def metric_sink(
    session_factory: sessionmaker[Session], settings: EvidenceSettings
) -> Callable[[Sequence[PointLike]], Awaitable[None]] | None:
    """What the intake keeps OTLP points with (``IntakeDeps.metric_sink``): the store, unless
    a Prometheus answers the metrics evidence (then keeping them would be wasted writes)."""
    if settings.prometheus_url:
        return None
    store = MetricStore(
        session_factory,
        max_points_per_series=settings.series_max_points,
        max_age_s=settings.series_max_age_s,
    )
    return store.add
