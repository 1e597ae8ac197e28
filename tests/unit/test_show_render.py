"""What `selfheal show` and `selfheal list --phase awaiting_approval` tell an operator, rendered
from constructed statuses: each validation criterion with its verdict and values, side effects
that tripped a guard, the breaker, disputed resolutions, and who may decide a pending approval
after how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from selfheal.cli.render import (
    Event,
    approvers_text,
    criterion_text,
    make_console,
    pending_table,
    span_text,
    timeline,
    timeline_table,
)
from selfheal.domain import (
    Approval,
    Fault,
    HealingOutcome,
    HealingPhase,
    HealingStatus,
    ValidationResult,
)
from selfheal.domain.criteria import (
    BreakerEvent,
    BreakerStatus,
    CriterionResult,
    GuardBreach,
)
from selfheal.healings.queries import HealingRow, PendingApproval, pending_approval

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def status(**fields: object) -> HealingStatus:
    base: dict[str, object] = {
        "workflow_id": "heal-x",
        "run_id": "r",
        "phase": HealingPhase.VALIDATING,
        "fault": Fault(service="checkout", type="error_burst", detected_at=T0),
        "started_at": T0,
    }
    base.update(fields)
    return HealingStatus.model_validate(base)


def one(events: list[Event], what: str) -> Event:
    [event] = [e for e in events if e.what == what]
    return event


def printed(value: object) -> str:
    console = make_console()
    with console.capture() as captured:
        console.print(value)
    return captured.get()


# -------------------------------------------------------------------------- validation


def criterion(label: str, ok: bool | None, **fields: object) -> CriterionResult:
    return CriterionResult.model_validate(
        {"criterion": label, "kind": "metric", "ok": ok, **fields}
    )


def test_each_criterion_shows_its_verdict_and_the_values_seen() -> None:
    validation = ValidationResult(
        healthy=False,
        checks=6,
        failures=2,
        window_s=30,
        started_at=T0,
        criteria=[
            criterion("error_ratio < 0.01", True, values=[0.004, 0.002]),
            criterion("latency_p99 <= 0.3", False, values=[float(i) for i in range(20)]),
            criterion("alert_resolved", None, kind="alert_resolved", detail="Alertmanager down"),
            criterion("rollout", None, kind="rollout", optional=True, detail="no workload"),
        ],
    )

    detail = one(timeline(status(validations=[validation])), "validation").detail
    lines = detail.splitlines()

    assert lines[0].startswith("unhealthy: 6 checks, 2 failed, window 30s")
    assert lines[1:] == [
        "  ok error_ratio < 0.01: seen 0.004, 0.002",
        "  failed latency_p99 <= 0.3: seen 14, 15, 16, 17, 18, 19 (last 6 of 20)",
        "  not evaluated alert_resolved; Alertmanager down",
        "  not evaluated (optional) rollout; no workload",
    ]


def test_a_criterion_without_values_says_only_its_verdict() -> None:
    assert criterion_text(criterion("probe", True, kind="probe")) == "ok probe"


def test_a_guard_that_tripped_during_validation_is_named_in_it() -> None:
    breach = GuardBreach(
        guard="server_errors", service="checkout", expr="error_ratio > 0.15", value=0.4
    )
    validation = ValidationResult(
        healthy=False, checks=3, failures=0, window_s=30, started_at=T0, breach=breach
    )

    detail = one(timeline(status(validations=[validation])), "validation").detail

    assert detail.splitlines()[-1] == (
        "  side effect: guard server_errors on checkout: error_ratio > 0.15: value 0.4"
    )


# ------------------------------------------------------------------------- side effects


def test_side_effects_show_the_guard_the_service_and_the_value_against_its_baseline() -> None:
    breaches = [
        GuardBreach(
            guard="latency_p99_rise",
            service="frontend",
            expr="latency_p99 > 0.3",
            value=0.42,
            baseline=0.08,
            detail="up 0.34 since the plan started",
            at=T0 + timedelta(seconds=20),
        )
    ]

    event = one(timeline(status(breaches=breaches)), "side effect")

    assert event.at == T0 + timedelta(seconds=20)
    assert event.detail == (
        "guard latency_p99_rise on frontend: latency_p99 > 0.3: value 0.42 vs baseline 0.08; "
        "up 0.34 since the plan started"
    )
    assert event.style == "bold red"


# ------------------------------------------------------------------------------ breaker


def test_the_breaker_shows_its_state_cycles_and_history() -> None:
    breaker = BreakerStatus(
        state="open",
        step="degrade checkout",
        dependency="inventory",
        cycles=2,
        open_until=T0 + timedelta(seconds=90),
        history=[
            BreakerEvent(state="open", at=T0 + timedelta(seconds=1), detail="degraded"),
            BreakerEvent(
                state="half_open", at=T0 + timedelta(seconds=31), detail="probing inventory"
            ),
            BreakerEvent(state="open", at=T0 + timedelta(seconds=32), detail="1 of 3 failed"),
        ],
    )

    events = timeline(status(breaker=breaker))

    history = [(e.what, e.detail) for e in events if e.what.startswith("breaker ")]
    assert history == [
        ("breaker open", "degraded"),
        ("breaker half-open", "probing inventory"),
        ("breaker open", "1 of 3 failed"),
    ]
    assert one(events, "breaker").detail == (
        "open over degrade checkout (closes when inventory is healthy), "
        "2 half-open probe cycle(s), open until 12:01:30"
    )


def test_no_breaker_no_breaker_lines() -> None:
    assert not [e for e in timeline(status()) if e.what.startswith("breaker")]


# -------------------------------------------------------------------- disputed resolutions


def test_disputed_resolutions_are_listed() -> None:
    disputed = ["resolved at 12:00:40 by alertmanager: error_ratio still 0.3 (> 0.01)"]

    event = one(timeline(status(resolution_disputed=disputed)), "resolution disputed")

    assert event.detail == disputed[0]


# --------------------------------------------------------------------- pending approval


def pending(**fields: object) -> HealingStatus:
    base: dict[str, object] = {
        "phase": HealingPhase.AWAITING_APPROVAL,
        "approval_required": True,
        "approval_reasons": ["approval requested when the healing was started"],
        "awaiting_approval": True,
    }
    return status(**{**base, **fields})


def test_a_pending_approval_says_since_when_and_who_may_decide() -> None:
    asked = T0 + timedelta(seconds=30)
    waiting = pending(awaiting_since=asked, approvers=["name:alice", "alice"])

    event = one(timeline(waiting, now=asked + timedelta(minutes=12, seconds=3)), "approval")

    assert event.at == asked
    assert event.detail == (
        "required: approval requested when the healing was started; waiting 12m 03s; "
        "may decide: name:alice, alice"
    )


def test_an_older_pending_approval_counts_from_the_start_and_anyone_may_decide() -> None:
    event = one(timeline(pending(), now=T0 + timedelta(hours=1, minutes=5)), "approval")

    assert event.detail.endswith(
        "waiting 1h 05m (since the healing started); may decide: anyone who may send the update"
    )


def test_a_decided_approval_shows_the_decision_not_the_wait() -> None:
    decided = status(
        approval_required=True,
        approval_reasons=["plan risk high is at least high"],
        approvers=["name:alice"],
        approval=Approval(approved=True, by="name:alice", reason="ok", at=T0),
    )

    detail = one(timeline(decided), "approval").detail

    assert detail.startswith("approved by name:alice: ok") and "waiting" not in detail


def test_the_timeline_table_prints_every_line() -> None:
    validation = ValidationResult(
        healthy=True,
        checks=1,
        failures=0,
        window_s=5,
        started_at=T0,
        criteria=[criterion("error_ratio < 0.01", True, values=[0.001])],
    )
    ended = status(
        phase=HealingPhase.HEALED,
        outcome=HealingOutcome.HEALED,
        ended_at=T0 + timedelta(seconds=9),
        validations=[validation],
        resolution_disputed=["resolved by watcher: probe still failing"],
    )

    output = printed(timeline_table(ended))

    assert "ok error_ratio < 0.01: seen 0.001" in output
    assert "resolution disputed" in output and "probe still failing" in output


# ----------------------------------------------------------------- the list of pending


def row(**fields: object) -> HealingRow:
    base: dict[str, object] = {
        "workflow_id": "heal-x",
        "status": "RUNNING",
        "phase": "awaiting_approval",
        "service": "checkout",
        "fault_type": "error_burst",
        "root_cause": "bad_deploy",
        "risk": "high",
        "outcome": "",
        "started_at": T0,
        "closed_at": None,
    }
    return HealingRow.model_validate({**base, **fields})


def test_a_listed_pending_approval_waited_since_it_asked() -> None:
    asked = T0 + timedelta(minutes=1)
    answer = pending(awaiting_since=asked, approvers=["name:alice"])

    listed = pending_approval(row(), answer, asked + timedelta(seconds=90))

    assert (listed.waited_s, listed.waited_since) == (90.0, "asked")
    assert listed.awaiting_since == asked and listed.approvers == ["name:alice"]
    assert listed.reasons == ["approval requested when the healing was started"]
    assert listed.root_cause == "bad_deploy"  # the visibility row is kept


def test_an_older_pending_approval_waited_since_its_start() -> None:
    listed = pending_approval(row(), pending(), T0 + timedelta(minutes=5))

    assert (listed.waited_s, listed.waited_since, listed.awaiting_since) == (
        300.0,
        "started",
        None,
    )
    assert listed.approvers == []


def test_a_status_that_did_not_answer_leaves_the_approvers_unknown() -> None:
    listed = pending_approval(
        row(), None, T0 + timedelta(minutes=2), detail="the status query failed"
    )

    assert (listed.waited_s, listed.waited_since, listed.approvers) == (120.0, "started", None)
    assert listed.detail == "the status query failed"


def test_a_healing_decided_or_ended_since_the_listing_waits_no_more() -> None:
    decided = pending_approval(
        row(), status(phase=HealingPhase.EXECUTING), T0 + timedelta(minutes=2)
    )
    ended = pending_approval(row(status="TERMINATED"), None, T0 + timedelta(minutes=2))

    assert decided.waited_s is None and decided.detail == (
        "no longer awaiting approval (executing)"
    )
    assert ended.waited_s is None and ended.detail == "terminated: nothing to approve"


def test_the_pending_table_shows_the_wait_and_the_approvers() -> None:
    rows = [
        PendingApproval(
            **row(workflow_id="heal-a").model_dump(),
            waited_s=754,
            waited_since="asked",
            approvers=["name:alice", "name:bob"],
            reasons=["plan risk high is at least high"],
        ),
        PendingApproval(
            **row(workflow_id="heal-b").model_dump(),
            waited_s=7300,
            waited_since="started",
            approvers=[],
        ),
        PendingApproval(
            **row(workflow_id="heal-c").model_dump(), detail="no longer awaiting approval"
        ),
    ]

    lines = printed(pending_table(rows)).splitlines()

    [a] = [line for line in lines if "heal-a" in line]
    [b] = [line for line in lines if "heal-b" in line]
    [c] = [line for line in lines if "heal-c" in line]
    assert "12m 34s" in a and "name:alice, name:bob" in a and "plan risk high" in a
    assert "2h 01m (since start)" in b and "anyone who may send the update" in b
    assert "no longer awaiting approval" in c


def test_durations_and_approvers_read_plainly() -> None:
    assert [span_text(s) for s in (0, 40.9, 61, 3600, 90061)] == [
        "0s",
        "40s",
        "1m 01s",
        "1h 00m",
        "1d 01h",
    ]
    assert approvers_text(None) == "unknown"
    assert approvers_text([]) == "anyone who may send the update"
    assert approvers_text(["name:alice"]) == "name:alice"
