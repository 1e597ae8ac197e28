from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_FINGERPRINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PLACEHOLDER = re.compile(r"\$\{fault\.([A-Za-z0-9_.]+)\}")


def _now() -> datetime:
    return datetime.now(UTC)


class MetricCheck(BaseModel):
    """A metric read from a Prometheus text endpoint; healthy while ``value <= max``."""

    model_config = ConfigDict(extra="forbid")

    url: str
    name: str = Field(description='metric name, optionally with a label selector: m{a="b"}')
    max: float


class Fault(BaseModel):
    """Something in production is wrong. One fault, one healing: ``heal-<fingerprint>``."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: str = Field(
        default="",
        description="stable identity of the fault; derived from service, type and target if empty",
    )
    service: str = Field(min_length=1)
    type: str = Field(min_length=1, description="what is observed, e.g. health_check_failed")
    target: str | None = Field(default=None, description="what to act on, e.g. a process name")
    severity: Literal["info", "warning", "critical"] = "warning"
    summary: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    values: dict[str, float] = Field(default_factory=dict, description="the fault's own metrics")
    health_url: str | None = Field(default=None, description="HTTP probe of the target's health")
    metric: MetricCheck | None = None
    source: str = "manual"
    detected_at: datetime = Field(default_factory=_now)
    dry_run: bool = Field(default=False, description="plan and gate, change nothing")
    require_approval: bool = Field(
        default=False, description="a human must approve the plan, whatever its risk"
    )

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint_shape(cls, value: str) -> str:
        if value and not _FINGERPRINT.match(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _default_fingerprint(self) -> Fault:
        if not self.fingerprint:
            self.fingerprint = fingerprint_of(self.service, self.type, self.target)
        return self

    @property
    def workflow_id(self) -> str:
        return healing_workflow_id(self.fingerprint)


def fingerprint_of(service: str, fault_type: str, target: str | None) -> str:
    raw = "\x1f".join([service, fault_type, target or ""])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def healing_workflow_id(fingerprint: str) -> str:
    return f"heal-{fingerprint}"


class FaultUpdate(BaseModel):
    """Sent to a running healing with the ``fault_update`` signal.

    ``fired``: the fault was reported (again); every report counts, none starts a second healing.
    ``resolved``: the source says the fault is over.
    ``symptom``: another fault joins this healing as a secondary symptom.
    """

    kind: Literal["fired", "resolved", "symptom"]
    count: int = Field(default=1, ge=1, description="reports folded into this one (``fired``)")
    at: datetime = Field(default_factory=_now)
    fault: Fault | None = None
    note: str = ""


def render_params(params: dict[str, Any], fault: Fault) -> dict[str, Any]:
    """Fill ``${fault.target}``, ``${fault.service}``, ``${fault.labels.KEY}`` in string params."""

    def lookup(path: str) -> str:
        node: Any = fault.model_dump(mode="json")
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"${{fault.{path}}}")
            node = node[part]
        return "" if node is None else str(node)

    def render(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: lookup(m.group(1)), value)
        if isinstance(value, dict):
            return {k: render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v) for v in value]
        return value

    rendered: dict[str, Any] = render(params)
    return rendered
