"""The history provider: what past healings of the same service and fault type turned out to be.

A past healing is *confirmed* when the plan of its top hypothesis recovered the target (the
``healings.confirmed`` column, set when a healing ends). The root cause confirmed most often is a
prior worth stating: ``history.top`` and a ``history_root_cause`` finding whose strength is its
share of the judged healings. Bounded: the newest ``limit`` healings within ``max_age_s``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.evidence.base import EvidenceRequest, Gathered
from selfheal.domain import Finding
from selfheal.models.diagnosis_history import (
    ConfirmedCounts,
    PastHealing,
    confirmed_counts,
    past_healings,
)

__all__ = [
    "ConfirmedCounts",
    "HistoryProvider",
    "confirmed_counts",
    "history_gathered",
    "history_provider",
]

DEFAULT_LIMIT = 200
DEFAULT_MAX_AGE_S = 30 * 86400.0


class HistoryProvider:
    name = "history"

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        limit: int = DEFAULT_LIMIT,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        if limit < 1 or max_age_s <= 0:
            raise ValueError("history provider: limit must be >= 1 and max_age_s > 0")
        self._session_factory = session_factory
        self._limit = limit
        self._max_age = timedelta(seconds=max_age_s)

    async def gather(self, request: EvidenceRequest) -> Gathered:
        fault = request.fault
        past = await asyncio.to_thread(
            past_healings,
            self._session_factory,
            service=fault.service,
            fault_type=fault.type,
            since=request.at - self._max_age,
            until=request.at,
            limit=self._limit,
        )
        return history_gathered(past, service=fault.service, fault_type=fault.type)


def history_provider(
    session_factory: sessionmaker[Session],
    *,
    limit: int = DEFAULT_LIMIT,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> HistoryProvider:
    return HistoryProvider(session_factory, limit=limit, max_age_s=max_age_s)


def history_gathered(past: Sequence[PastHealing], *, service: str, fault_type: str) -> Gathered:
    """Facts and the finding for ``past`` (newest first): ties go to the most recent cause."""
    confirmed = Counter(h.root_cause for h in past if h.confirmed and h.root_cause)
    judged = sum(1 for h in past if h.confirmed is not None)
    gathered = Gathered(facts={"history.healings": len(past)})
    for root_cause, count in confirmed.items():
        gathered.facts[f"history.confirmed.{root_cause}"] = count
    if not confirmed:
        return gathered
    top, count = confirmed.most_common(1)[0]
    gathered.facts["history.top"] = top
    gathered.findings.append(
        Finding(
            source="history",
            kind="history_root_cause",
            component=service,
            strength=round(count / judged, 4),
            detail=f"{count} of {judged} judged past healings of {service} ({fault_type}) "
            f"confirmed {top}",
            facts={"root_cause": top, "confirmed": count, "judged": judged},
        )
    )
    return gathered
