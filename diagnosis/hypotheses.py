"""Ranked hypotheses: what the rules propose, weighed by the providers' findings and by history.

Each rule that holds proposes a hypothesis *h* (root cause on a component) with its stated
confidence. That confidence is the prior; the evidence updates it in odds, naive-Bayes style
(every piece of evidence taken as independent given *h*):

1. **Track record.** The rule's past healings shrink its prior towards what happened:
   ``p = (confirmed + m * prior) / (total + m)``, ``m`` = ``PRIOR_WEIGHT`` pseudo-healings at the
   stated confidence (Laplace-style smoothing: with no history, the rule's own number).
2. **Findings.** Each finding is a likelihood ratio on the odds, unless the rule already read
   its source's facts (no counting one observation twice) or it is the symptom itself (the
   service fails its probe: that is why there is a healing). A finding that points at *h*'s
   component supports it (``1 + strength``); a localising finding (trace origin, metric
   ranking) that points elsewhere weighs against it (``1 / (1 + strength)``); a finding about
   a named root cause (history's) speaks only for hypotheses of that root cause. Learned ratios
   multiply in: among the rule's past healings, how much more often its confirmed ones showed
   this kind of finding than its refuted ones, Laplace-smoothed
   (``((a + 1) / (C + 2)) / ((b + 1) / (U + 2))``): 1 with no history.
3. **Missing evidence.** Each source that was asked and did not answer multiplies the result by
   ``MISSING_FACTOR``: a diagnosis made half-blind says so.

Hypotheses on the same root cause and component are merged (noisy-OR). Competing ones then
share the belief: each one's confidence is the probability that it alone is right, given the
others' (``p_i * prod(1 - p_j) / Z``, with "none of them" in ``Z``), so one hypothesis keeps its
own number and two equally good ones each drop well below it — the approval gate then asks a
human (it also asks when the top two are within a margin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from selfheal.diagnosis.rules import RuleMatch
from selfheal.domain import Finding, Hypothesis, MissingEvidence

PRIOR_WEIGHT = 4.0
MISSING_FACTOR = 0.9
LOCALISING_KINDS = frozenset({"trace_origin", "rca_rank"})
SYMPTOM_KINDS = frozenset({"probe_http_error"})
# The facts each source gives: a rule that read them has already weighed that source's findings.
SOURCE_FACTS: dict[str, tuple[str, ...]] = {
    "probe": ("probe_", "detected.", "body.", "metric_"),
    "metrics": ("metrics.", "deps.", "rca."),
    "alerts": ("alerts.", "deps.alerts."),
    "traces": ("traces.",),
    "kubernetes": ("k8s.",),
    "history": ("history.",),
}
_EPSILON = 1e-6


@dataclass(frozen=True)
class RuleRecord:
    """What one rule's past healings say: how many were confirmed (the plan recovered the
    target), and per finding kind how many confirmed / refuted healings showed it."""

    confirmed: int = 0
    total: int = 0
    kinds_confirmed: Mapping[str, int] = field(default_factory=dict)
    kinds_refuted: Mapping[str, int] = field(default_factory=dict)

    @property
    def refuted(self) -> int:
        return self.total - self.confirmed

    def likelihood_ratio(self, kind: str) -> float:
        a = self.kinds_confirmed.get(kind, 0)
        b = self.kinds_refuted.get(kind, 0)
        return ((a + 1) / (self.confirmed + 2)) / ((b + 1) / (self.refuted + 2))


@dataclass
class _Candidate:
    match: RuleMatch
    probability: float
    evidence: list[str]


def rank(
    matches: Sequence[RuleMatch],
    findings: Sequence[Finding],
    missing: Sequence[MissingEvidence] = (),
    history: Mapping[str, RuleRecord] | None = None,
) -> list[Hypothesis]:
    """The hypotheses, best first. ``history`` maps a rule name to its record."""
    history = history or {}
    candidates = [_weigh(m, findings, missing, history.get(m.rule.name)) for m in matches]
    merged = _merge(candidates)
    return _compete(merged)


def _odds(p: float) -> float:
    p = min(max(p, _EPSILON), 1 - _EPSILON)
    return p / (1 - p)


def _probability(odds: float) -> float:
    return odds / (1 + odds)


def _weigh(
    match: RuleMatch,
    findings: Sequence[Finding],
    missing: Sequence[MissingEvidence],
    record: RuleRecord | None,
) -> _Candidate:
    rule = match.rule
    facts = ", ".join(f"{k}={_short(v)}" for k, v in match.evidence_used.items())
    evidence = [f"rule {rule.name} ({match.confidence:.2f}): {facts or 'holds'}"]
    prior = match.confidence
    if record is not None and record.total > 0:
        prior = (record.confirmed + PRIOR_WEIGHT * prior) / (record.total + PRIOR_WEIGHT)
        evidence.append(f"history: {record.confirmed} of {record.total} confirmed")
    odds = _odds(prior)
    used = tuple(match.evidence_used)
    for finding in findings:
        about = finding.facts.get("root_cause")
        if about is not None and about != match.rule.root_cause:
            continue  # about another explanation (history): says nothing of this one
        if finding.kind in SYMPTOM_KINDS:
            continue  # that the service fails is why we are here, not a cause
        if any(fact.startswith(SOURCE_FACTS.get(finding.source, ("\0",))) for fact in used):
            continue  # the rule already read this source's facts: no counting it twice
        if finding.component == match.component:
            ratio = 1 + finding.strength
        elif finding.kind in LOCALISING_KINDS:
            ratio = 1 / (1 + finding.strength)
        else:
            continue  # about another component, and not a claim about where the cause is
        if record is not None and record.total > 0:
            ratio *= record.likelihood_ratio(finding.kind)
        odds *= ratio
        sign = "+" if ratio >= 1 else "-"
        evidence.append(
            f"{sign} {finding.source} {finding.kind} on {finding.component} "
            f"({finding.strength:.2f})" + (f": {finding.detail}" if finding.detail else "")
        )
    probability = _probability(odds)
    for gap in missing:
        probability *= MISSING_FACTOR
        evidence.append(f"- missing {gap.source}: {gap.reason}")
    return _Candidate(match, probability, evidence)


def _merge(candidates: Sequence[_Candidate]) -> list[_Candidate]:
    """One candidate per (root cause, component): agreeing rules strengthen it (noisy-OR)."""
    merged: dict[tuple[str, str], _Candidate] = {}
    for candidate in candidates:
        key = (candidate.match.rule.root_cause, candidate.match.component)
        known = merged.get(key)
        if known is None:
            merged[key] = candidate
            continue
        known.probability = 1 - (1 - known.probability) * (1 - candidate.probability)
        known.evidence.extend(candidate.evidence)
    return list(merged.values())


def _compete(candidates: Sequence[_Candidate]) -> list[Hypothesis]:
    if not candidates:
        return []
    ps = [min(max(c.probability, 0.0), 1 - _EPSILON) for c in candidates]
    none = math.prod(1 - p for p in ps)
    alone = [p * none / (1 - p) for p in ps]
    total = sum(alone) + none
    ranked = sorted(
        zip(candidates, alone, strict=True),
        key=lambda pair: (-pair[1], -pair[0].match.rule.priority),
    )
    return [
        Hypothesis(
            root_cause=c.match.rule.root_cause,
            component=c.match.component,
            confidence=round(min(max(a / total, 0.0), 1.0), 4),
            rule=c.match.rule.name,
            summary=c.match.rule.summary,
            evidence=c.evidence,
        )
        for c, a in ranked
    ]


def close_call(hypotheses: Sequence[Hypothesis], margin: float) -> bool:
    """True when the top two hypotheses are within ``margin`` of each other."""
    return len(hypotheses) >= 2 and hypotheses[0].confidence - hypotheses[1].confidence < margin


def _short(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
