"""What `selfheal show` tells an operator about refusals and waits."""

from __future__ import annotations

from datetime import UTC, datetime

from selfheal.cli.render import timeline
from selfheal.domain import Fault, HealingPhase, HealingStatus, StepResult, StepStatus

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def status(**fields: object) -> HealingStatus:
    base: dict[str, object] = {
        "workflow_id": "heal-x",
        "run_id": "r",
        "phase": HealingPhase.EXECUTING,
        "fault": Fault(service="demo", type="t", detected_at=T0),
        "started_at": T0,
    }
    base.update(fields)
    return HealingStatus.model_validate(base)


def test_a_refused_step_names_its_rule() -> None:
    refused = StepResult(
        candidate=0,
        order=1,
        name="drain",
        action="kubernetes.cordon",
        status=StepStatus.REFUSED,
        error="allowlist: kubernetes.cordon is not allowed for service demo",
        started_at=T0,
        ended_at=T0,
    )
    events = timeline(status(steps=[refused]))
    step = next(e for e in events if e.what == "plan 1 step 2: drain")
    assert "refused" in step.detail and "allowlist: kubernetes.cordon" in step.detail
    assert step.style == "magenta"


def test_a_healing_waiting_on_a_guardrail_says_which() -> None:
    events = timeline(status(waiting_on="kill_switch: paused by alice: freeze"))
    assert (
        events[-1].detail
        == "in progress, waiting on guardrail kill_switch: paused by alice: freeze"
    )
