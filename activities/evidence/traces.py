"""The traces provider: where the errors of the fault's window began, from the error traces the
intake keeps in Postgres (``models.trace_store``).

It reads the traces of [at - window_before_s, at + window_after_s] that touch the faulted
service or one of its dependencies, finds each one's origin (``diagnosis.traces``) and reports
the dominant one: facts ``traces.*`` and a ``trace_origin`` finding whose strength is the share
of the error traces that began there.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.evidence.base import EvidenceRequest, Gathered
from selfheal.core.settings import EvidenceSettings
from selfheal.diagnosis.rules import Facts
from selfheal.diagnosis.traces import OriginSummary, summarize
from selfheal.domain import Finding
from selfheal.models.trace_store import TraceStore

__all__ = ["TracesProvider", "traces_facts", "traces_provider"]

DEFAULT_LIMIT_TRACES = 200


class TracesProvider:
    name = "traces"

    def __init__(
        self,
        store: TraceStore,
        *,
        limit_traces: int = DEFAULT_LIMIT_TRACES,
        window_s: float | None = None,
    ) -> None:
        if limit_traces < 1:
            raise ValueError(f"limit_traces: expected at least 1, got {limit_traces}")
        self._store = store
        self._limit = limit_traces
        self._window_s = window_s  # before the fault; None: the request's window

    async def gather(self, request: EvidenceRequest) -> Gathered:
        services = [request.fault.service, *request.dependencies]
        before = request.window_before_s
        if self._window_s is not None:
            before = min(before, self._window_s)
        traces = await self._store.traces_between(
            request.at - timedelta(seconds=before),
            request.at + timedelta(seconds=request.window_after_s),
            services,
            self._limit,
        )
        summary = summarize(traces)
        gathered = Gathered(facts=traces_facts(summary))
        if summary is not None:
            # the rules tell a dependency's failure from the service's own by this
            gathered.facts["traces.origin.is_dependency"] = summary.service in request.dependencies
        if summary is not None:
            gathered.findings.append(
                Finding(
                    source=self.name,
                    kind="trace_origin",
                    component=summary.service,
                    strength=round(summary.share, 3),
                    detail=_detail(summary),
                    facts={k: v for k, v in gathered.facts.items() if "attributes" not in k},
                )
            )
        return gathered


def traces_facts(summary: OriginSummary | None) -> Facts:
    """The ``traces.*`` facts; only ``traces.errors`` (0) when no trace in the window failed.
    A fact that was not observed (no exception recorded) is absent."""
    if summary is None:
        return {"traces.errors": 0}
    facts: Facts = {
        "traces.errors": summary.traces,
        "traces.origin.service": summary.service,
        "traces.origin.span": summary.span,
        "traces.origin.share": round(summary.share, 3),
        "traces.affected": summary.affected,
        "traces.path": summary.path,
    }
    if summary.exception:
        facts["traces.origin.exception"] = summary.exception
    if summary.message:
        facts["traces.origin.message"] = summary.message
    for key, value in summary.attributes.items():
        facts[f"traces.origin.attributes.{key}"] = value
    return facts


def _detail(summary: OriginSummary) -> str:
    raised = f" raised {summary.exception}" if summary.exception else " failed"
    count = round(summary.share * summary.traces)
    path = " → ".join(summary.path)
    return (
        f"{summary.service}: {summary.span!r}{raised} in {count} of {summary.traces} error "
        f"traces (path {path})"
    )


def traces_provider(
    settings: EvidenceSettings, session_factory: sessionmaker[Session]
) -> TracesProvider:
    """The provider over the store the intake writes: error traces of the last
    ``traces_window_s`` before the fault (older ones belong to other incidents)."""
    store = TraceStore(
        session_factory, max_traces=settings.traces_max, max_age_s=settings.traces_max_age_s
    )
    return TracesProvider(store, window_s=settings.traces_window_s)
