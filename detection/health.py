"""Health checks into faults, as a pure function: ``decide`` takes the previous state and one
check and says what to do, so that it can be tested without a network; the watcher that probes
and reports through the door is ``selfheal.devstack.watcher.HealthWatcher``.

A fault is reported once per outage: after ``failure_threshold`` consecutive failures. When the
target has passed ``recovery_threshold`` consecutive checks again, the healing is told that its
fault resolved (a healing that already ended simply ignores this).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from selfheal.domain import Fault, MetricCheck

FAULT_TYPE = "health_check_failed"


@dataclass(frozen=True)
class Check:
    """One observation of the target."""

    ok: bool
    at: datetime
    detail: str = ""
    status: int | None = None
    metric_value: float | None = None
    error: str | None = None
    """the probe's error kind (timeout, connection_refused, ...): travels with the fault"""


@dataclass(frozen=True)
class WatchState:
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    first_failure_at: datetime | None = None
    last_failure: Check | None = None
    reported: bool = False
    reported_at: datetime | None = None


class Action(StrEnum):
    NONE = "none"
    REPORT_FAULT = "report_fault"
    REPORT_RESOLVED = "report_resolved"


def decide(
    state: WatchState,
    check: Check,
    *,
    failure_threshold: int = 3,
    recovery_threshold: int = 1,
    repeat_after_s: float | None = None,
) -> tuple[WatchState, Action]:
    """The next state and what to do about ``check``.

    A persisting outage is reported again every ``repeat_after_s`` (None: once): the door
    counts the repeat on the healing that answers for the fault, running or suppressing, and
    starts a new healing only once that one has ended and its suppression window has passed."""
    if not check.ok:
        failures = state.consecutive_failures + 1
        new = replace(
            state,
            consecutive_failures=failures,
            consecutive_successes=0,
            first_failure_at=state.first_failure_at or check.at,
            last_failure=check,
        )
        if not state.reported and failures >= failure_threshold:
            return replace(new, reported=True, reported_at=check.at), Action.REPORT_FAULT
        due = (
            state.reported
            and repeat_after_s is not None
            and state.reported_at is not None
            and (check.at - state.reported_at).total_seconds() >= repeat_after_s
        )
        if due:
            return replace(new, reported_at=check.at), Action.REPORT_FAULT
        return new, Action.NONE
    successes = state.consecutive_successes + 1
    if state.reported:
        if successes >= recovery_threshold:
            return WatchState(), Action.REPORT_RESOLVED
        return replace(state, consecutive_successes=successes), Action.NONE
    # A blip shorter than the threshold is forgotten on the first good check.
    return WatchState(consecutive_successes=successes), Action.NONE


@dataclass(frozen=True)
class WatchTarget:
    """What to watch and how to name its fault."""

    service: str
    health_url: str
    target: str | None = None
    metric: MetricCheck | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Detection:
    """A reported outage, for the timeline: when it began, was declared, and ended."""

    fault: Fault
    workflow_id: str
    first_failure_at: datetime
    detected_at: datetime
    resolved_at: datetime | None = None


def build_fault(target: WatchTarget, state: WatchState, now: datetime) -> Fault:
    last = state.last_failure
    values: dict[str, float] = {"consecutive_failures": float(state.consecutive_failures)}
    if last is not None and last.status is not None:
        values["http_status"] = float(last.status)
    if last is not None and last.metric_value is not None:
        values["metric_value"] = last.metric_value
    detail = last.detail if last is not None else "failing"
    labels = dict(target.labels)
    if last is not None and last.error is not None:
        # what detected the fault travels with it: diagnosis does not wait on a hung target again
        labels["probe_error"] = last.error
    return Fault(
        service=target.service,
        type=FAULT_TYPE,
        target=target.target,
        severity="critical",
        summary=(
            f"{target.health_url}: {state.consecutive_failures} consecutive failed checks "
            f"({detail})"
        ),
        labels=labels,
        values=values,
        health_url=target.health_url,
        metric=target.metric,
        source="watcher",
        detected_at=now,
    )
