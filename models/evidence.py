"""What the intake keeps for diagnosis, so that every worker sees it: the recent OTLP metric
series (the metrics provider's answer when no Prometheus is configured) and the error traces
(whole traces: every span of a trace that holds an error). Both bounded by count and age."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from selfheal.models.base import Base


class MetricSampleRow(Base):
    __tablename__ = "metric_samples"
    __table_args__ = (
        Index("ix_metric_samples_service_name_ts", "service", "name", "ts"),
        Index("ix_metric_samples_series_ts", "series", "ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    series: Mapped[str] = mapped_column(String(64), doc="hash of name and labels")
    service: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(512))
    labels: Mapped[dict[str, Any]]
    ts: Mapped[datetime]
    value: Mapped[float]


class TraceSpanRow(Base):
    __tablename__ = "trace_spans"
    __table_args__ = (
        Index("ix_trace_spans_received_at", "received_at"),
        Index("ix_trace_spans_service_start", "service", "start"),
    )

    trace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    span_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    parent_span_id: Mapped[str | None] = mapped_column(String(32))
    service: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(512))
    error: Mapped[bool]
    status_message: Mapped[str] = mapped_column(Text, default="")
    start: Mapped[datetime]
    end: Mapped[datetime]
    exceptions: Mapped[list[Any]] = mapped_column(doc="exception events: type, message")
    attributes: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
