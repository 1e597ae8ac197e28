"""What evidence providers find and what diagnosis concludes from it.

A provider (``activities/evidence``) answers with flat ``facts`` (for the rules) and
``findings`` (for the hypotheses): a finding points at a component and says why. A provider that
could not answer leaves a ``MissingEvidence`` with its reason instead; it never fails a healing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Finding(BaseModel):
    """One observation that points at a cause: ``component`` is the service it points at."""

    source: str = Field(description="the provider: metrics, alerts, traces, kubernetes, ...")
    kind: str = Field(
        description="what was found, e.g. trace_origin, metric_shift, oom_killed, crash_loop, "
        "recent_rollout, alert_firing, probe_refused"
    )
    component: str = Field(description="the service (catalog name) it points at")
    strength: float = Field(default=0.5, ge=0.0, le=1.0, description="how strongly, in [0, 1]")
    detail: str = ""
    facts: dict[str, Any] = Field(default_factory=dict)


class MissingEvidence(BaseModel):
    """A source that was asked and did not answer (unreachable, timed out, refused)."""

    source: str
    reason: str


class Hypothesis(BaseModel):
    """A candidate explanation: a root-cause pattern on a component, with what it rests on."""

    root_cause: str
    component: str = Field(description="the service to act on")
    confidence: float = Field(ge=0.0, le=1.0)
    rule: str = Field(default="", description="the rule that proposed it, if any")
    summary: str = ""
    evidence: list[str] = Field(
        default_factory=list, description="one line per finding or fact it rests on"
    )
