"""What past healings say about diagnosis: the ``healings`` audit read back for learning.

Two questions, both bounded by a row limit so that a long history never slows a diagnosis:

- ``past_healings``: the recent healings of one service and fault type (the history evidence
  provider turns them into ``history.*`` facts);
- ``confirmed_counts``: the counts a naive Bayes over evidence needs. A healing is *judged* when
  ``confirmed`` is set (its top hypothesis' plan recovered the target, or did not); dry runs and
  healings that never acted stay unjudged and are not counted.

Sync SQLAlchemy, like the rest of ``models``: activities call these in a thread.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from selfheal.models.base import knowledge_base_error
from selfheal.models.tables import HealingRow


@dataclass(frozen=True)
class PastHealing:
    root_cause: str | None
    rule: str | None
    component: str | None
    confirmed: bool | None
    """True: the plan of its top hypothesis recovered the target; None: never judged"""
    evidence_kinds: tuple[str, ...]
    outcome: str | None
    started_at: datetime


@dataclass(frozen=True)
class ConfirmedCounts:
    """Counts over the judged healings looked at (the newest ``limit``)."""

    judged: int = 0
    """healings with a verdict (``confirmed`` true or false)"""
    rules: dict[str, tuple[int, int]] = field(default_factory=dict)
    """rule -> (confirmed, judged) for the healings that rule proposed"""
    root_causes: dict[str, int] = field(default_factory=dict)
    """root cause -> confirmed healings of it: the denominator of P(kind | root cause)"""
    kinds: dict[tuple[str, str], int] = field(default_factory=dict)
    """(root cause, finding kind) -> confirmed healings of that root cause that had the kind"""
    rule_kinds: dict[tuple[str, str, bool], int] = field(default_factory=dict)
    """(rule, finding kind, confirmed) -> judged healings of that rule that had the kind"""


def past_healings(
    session_factory: sessionmaker[Session],
    *,
    service: str,
    fault_type: str,
    since: datetime,
    until: datetime,
    limit: int,
) -> list[PastHealing]:
    """The newest ``limit`` real (not dry-run) healings of ``service`` and ``fault_type`` that
    started in [since, until), newest first."""
    query = (
        select(
            HealingRow.root_cause,
            HealingRow.rule,
            HealingRow.component,
            HealingRow.confirmed,
            HealingRow.evidence_kinds,
            HealingRow.outcome,
            HealingRow.started_at,
        )
        .where(
            HealingRow.fault_service == service,
            HealingRow.fault_type == fault_type,
            HealingRow.dry_run.is_(False),
            HealingRow.started_at >= since,
            HealingRow.started_at < until,
        )
        .order_by(HealingRow.started_at.desc(), HealingRow.id.desc())
        .limit(limit)
    )
    try:
        with session_factory() as session:
            rows = session.execute(query).all()
    except SQLAlchemyError as exc:
        raise knowledge_base_error(f"cannot read the past healings of {service}", exc) from exc
    return [
        PastHealing(
            root_cause=row.root_cause,
            rule=row.rule,
            component=row.component,
            confirmed=row.confirmed,
            evidence_kinds=_kinds(row.evidence_kinds),
            outcome=row.outcome,
            started_at=row.started_at,
        )
        for row in rows
    ]


def confirmed_counts(
    session_factory: sessionmaker[Session], *, rule: str | None = None, limit: int = 500
) -> ConfirmedCounts:
    """Counts over the newest ``limit`` judged healings (of ``rule`` only, when given).

    Each healing counts once per kind, however many findings of that kind it had. The caller
    smooths: P(kind | cause) = (kinds[cause, kind] + 1) / (root_causes[cause] + 2).
    """
    query = (
        select(
            HealingRow.rule, HealingRow.root_cause, HealingRow.confirmed, HealingRow.evidence_kinds
        )
        .where(HealingRow.confirmed.is_not(None), HealingRow.dry_run.is_(False))
        .order_by(HealingRow.started_at.desc(), HealingRow.id.desc())
        .limit(limit)
    )
    if rule is not None:
        query = query.where(HealingRow.rule == rule)
    try:
        with session_factory() as session:
            rows = session.execute(query).all()
    except SQLAlchemyError as exc:
        raise knowledge_base_error("cannot count the confirmed healings", exc) from exc
    rules: dict[str, tuple[int, int]] = {}
    root_causes: Counter[str] = Counter()
    kinds: Counter[tuple[str, str]] = Counter()
    rule_kinds: Counter[tuple[str, str, bool]] = Counter()
    for row in rows:
        if row.rule:
            confirmed, judged = rules.get(row.rule, (0, 0))
            rules[row.rule] = (confirmed + bool(row.confirmed), judged + 1)
            for kind in _kinds(row.evidence_kinds):
                rule_kinds[(row.rule, kind, bool(row.confirmed))] += 1
        if row.confirmed and row.root_cause:
            root_causes[row.root_cause] += 1
            for kind in _kinds(row.evidence_kinds):
                kinds[(row.root_cause, kind)] += 1
    return ConfirmedCounts(
        judged=len(rows),
        rules=rules,
        root_causes=dict(root_causes),
        kinds=dict(kinds),
        rule_kinds=dict(rule_kinds),
    )


def _kinds(raw: object) -> tuple[str, ...]:
    """The distinct kinds of a row's ``evidence_kinds`` (a JSON list), in first-seen order."""
    if not isinstance(raw, list):
        return ()
    return tuple(dict.fromkeys(str(kind) for kind in raw if isinstance(kind, str) and kind))
