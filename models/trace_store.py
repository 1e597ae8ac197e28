"""Error traces in Postgres (``trace_spans``), so that every worker sees what any intake received.

A trace is kept whole: every span of a trace that holds an error. A span of a trace without an
error in its own export is kept only when its trace is already stored (a healthy parent exported
later by another service: one indexed look-up by trace id per export). A healthy span that
arrives *before* any error span of its trace is not kept: nothing says yet that it will matter.

Bounded by age (``received_at`` older than ``max_age_s`` is deleted) and by count (only the
``max_traces`` most recently received traces stay). Pruning costs a scan of the table, so it runs
once ``max_traces // 10`` new traces (at least 1) arrived, or ``prune_interval_s`` passed: the
table holds at most about ``max_traces`` plus that slack per intake replica.

Writes are idempotent: a span re-sent (an exporter's retry) is the same row, keyed
(trace_id, span_id). Sync SQLAlchemy, run in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, Row, Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from selfheal.domain.spans import Span
from selfheal.models.base import knowledge_base_error
from selfheal.models.evidence import TraceSpanRow

__all__ = ["StoredSpan", "TraceStore"]

_CHUNK = 1000  # ids per IN (): well under Postgres' 65535 parameters
_TABLE = cast(Table, TraceSpanRow.__table__)


@dataclass(frozen=True)
class StoredSpan:
    """A kept span; times are Unix seconds (each by its service's clock)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    service: str
    name: str
    error: bool
    message: str
    start: float
    end: float
    exceptions: tuple[dict[str, str], ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)


def _text(value: str, limit: int | None = None) -> str:
    # Postgres text and JSONB refuse NUL characters; a span name may hold one
    cleaned = value.replace("\x00", "")
    return cleaned if limit is None else cleaned[:limit]


def _row(span: Span) -> dict[str, Any]:
    return {
        "trace_id": _text(span.trace_id, 64),
        "span_id": _text(span.span_id, 32),
        "parent_span_id": _text(span.parent_span_id, 32) or None,
        "service": _text(span.service, 200),
        "name": _text(span.name, 512),
        "error": span.error,
        "status_message": _text(span.message),
        "start": datetime.fromtimestamp(span.start, UTC),
        "end": datetime.fromtimestamp(span.end, UTC),
        "exceptions": [{k: _text(v) for k, v in e.items()} for e in span.exceptions],
        "attributes": {_text(k): _text(v) for k, v in span.attributes.items()},
    }


_COLUMNS = (
    TraceSpanRow.trace_id,
    TraceSpanRow.span_id,
    TraceSpanRow.parent_span_id,
    TraceSpanRow.service,
    TraceSpanRow.name,
    TraceSpanRow.error,
    TraceSpanRow.status_message,
    TraceSpanRow.start,
    TraceSpanRow.end,
    TraceSpanRow.exceptions,
    TraceSpanRow.attributes,
)


def _stored(row: Row[Any]) -> StoredSpan:
    """A row of ``_COLUMNS`` (plain rows, not ORM objects: a window may hold thousands)."""
    return StoredSpan(
        trace_id=row.trace_id,
        span_id=row.span_id,
        parent_span_id=row.parent_span_id or "",
        service=row.service,
        name=row.name,
        error=row.error,
        message=row.status_message,
        start=row.start.timestamp(),
        end=row.end.timestamp(),
        exceptions=tuple({str(k): str(v) for k, v in e.items()} for e in row.exceptions),
        attributes={str(k): str(v) for k, v in row.attributes.items()},
    )


def _delete(session: Session, statement: Delete) -> int:
    statement = statement.execution_options(synchronize_session=False)
    result = cast(CursorResult[Any], session.execute(statement))
    return int(result.rowcount or 0)


@contextmanager
def _errors(doing: str) -> Iterator[None]:
    """A database failure as one line (``KnowledgeBaseError``), not SQLAlchemy's pages."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise knowledge_base_error(doing, exc) from exc


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class TraceStore:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        max_traces: int,
        max_age_s: float,
        prune_interval_s: float = 60.0,
    ) -> None:
        if max_traces < 1:
            raise ValueError(f"max_traces: expected at least 1, got {max_traces}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s: expected more than 0, got {max_age_s}")
        self._sessions = session_factory
        self.max_traces = max_traces
        self.max_age = timedelta(seconds=max_age_s)
        self._slack = max(1, max_traces // 10)
        self._prune_interval_s = prune_interval_s
        self._new_since_prune = 0
        self._pruned_at = time.monotonic()

    # ------------------------------------------------------------------------------- writes

    async def add(self, spans: Sequence[Span]) -> None:
        """Keep the spans of every trace that holds an error, here or already stored; prune when
        due. Re-sent spans change nothing."""
        if not spans:
            return
        new_traces = await asyncio.to_thread(self._add, spans)
        self._new_since_prune += new_traces
        due = time.monotonic() - self._pruned_at >= self._prune_interval_s
        if self._new_since_prune >= self._slack or (due and self._new_since_prune):
            self._new_since_prune = 0
            self._pruned_at = time.monotonic()
            await self.prune()

    def _add(self, spans: Sequence[Span]) -> int:
        by_trace: dict[str, list[Span]] = {}
        for span in spans:
            by_trace.setdefault(span.trace_id, []).append(span)
        erroring = {t for t, members in by_trace.items() if any(s.error for s in members)}
        with _errors("cannot keep error traces"), self._sessions.begin() as session:
            stored: set[str] = set()
            for ids in _chunks(list(by_trace)):
                found = session.scalars(
                    select(TraceSpanRow.trace_id).where(TraceSpanRow.trace_id.in_(ids)).distinct()
                )
                stored.update(found)
            kept = [span for t in erroring | stored for span in by_trace[t]]
            rows = list({(r["trace_id"], r["span_id"]): r for r in map(_row, kept)}.values())
            if rows:
                # Core, not the ORM's bulk path: one statement, batched parameter sets
                session.execute(
                    pg_insert(_TABLE).on_conflict_do_nothing(
                        index_elements=["trace_id", "span_id"]
                    ),
                    rows,
                )
        return len(erroring - stored)

    async def prune(self) -> int:
        """Delete what is older than ``max_age_s``, then all but the ``max_traces`` most
        recently received traces; returns the number of spans deleted."""
        return await asyncio.to_thread(self._prune)

    def _prune(self) -> int:
        old = delete(TraceSpanRow).where(TraceSpanRow.received_at < func.now() - self.max_age)
        beyond = (
            select(TraceSpanRow.trace_id)
            .group_by(TraceSpanRow.trace_id)
            .order_by(func.max(TraceSpanRow.received_at).desc(), TraceSpanRow.trace_id)
            .offset(self.max_traces)
        )
        surplus = delete(TraceSpanRow).where(TraceSpanRow.trace_id.in_(beyond.scalar_subquery()))
        with _errors("cannot prune error traces"), self._sessions.begin() as session:
            return _delete(session, old) + _delete(session, surplus)

    # -------------------------------------------------------------------------------- reads

    async def recent_errors(self, service: str | None = None, limit: int = 50) -> list[StoredSpan]:
        """The error spans that ended last, newest first; ``service`` None: every service."""
        return await asyncio.to_thread(self._recent_errors, service, limit)

    def _recent_errors(self, service: str | None, limit: int) -> list[StoredSpan]:
        query = select(*_COLUMNS).where(TraceSpanRow.error)
        if service is not None:
            query = query.where(TraceSpanRow.service == service)
        query = query.order_by(TraceSpanRow.end.desc()).limit(limit)
        with _errors("cannot read error spans"), self._sessions() as session:
            return [_stored(row) for row in session.execute(query)]

    async def traces_between(
        self,
        start: datetime,
        end: datetime,
        services: Sequence[str] | None = None,
        limit_traces: int = 200,
    ) -> list[list[StoredSpan]]:
        """The whole traces with a span in [start, end] (of one of ``services``, when given),
        the latest ``limit_traces`` of them, each as its spans in start order."""
        return await asyncio.to_thread(self._traces_between, start, end, services, limit_traces)

    def _traces_between(
        self,
        start: datetime,
        end: datetime,
        services: Sequence[str] | None,
        limit_traces: int,
    ) -> list[list[StoredSpan]]:
        touching = select(TraceSpanRow.trace_id).where(
            TraceSpanRow.start <= end, TraceSpanRow.end >= start
        )
        if services is not None:
            touching = touching.where(TraceSpanRow.service.in_(list(services)))
        touching = (
            touching.group_by(TraceSpanRow.trace_id)
            .order_by(func.max(TraceSpanRow.start).desc(), TraceSpanRow.trace_id)
            .limit(limit_traces)
        )
        with _errors("cannot read error traces"), self._sessions() as session:
            ids = list(session.scalars(touching))
            if not ids:
                return []
            rows = session.execute(
                select(*_COLUMNS)
                .where(TraceSpanRow.trace_id.in_(ids))
                .order_by(TraceSpanRow.start, TraceSpanRow.span_id)
            )
            by_trace: dict[str, list[StoredSpan]] = {trace_id: [] for trace_id in ids}
            for row in rows:
                span = _stored(row)
                by_trace[span.trace_id].append(span)
        return [spans for spans in by_trace.values() if spans]
