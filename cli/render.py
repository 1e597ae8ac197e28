"""Human output shared by ``selfheal dev`` and ``selfheal show``: the healing's timeline (with
each validation's criteria, the side effects that tripped a guard, the breaker, disputed
resolutions and who may decide a pending approval), the table of healings and the table of
pending approvals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

from selfheal.domain import (
    Diagnosis,
    Fault,
    HealingOutcome,
    HealingStatus,
    StepResult,
    StepStatus,
    ValidationResult,
)
from selfheal.domain.criteria import BreakerStatus, CriterionResult, GuardBreach
from selfheal.healings.queries import HealingRow, PendingApproval

OUTCOME_STYLE = {
    HealingOutcome.HEALED: "bold green",
    HealingOutcome.DRY_RUN: "cyan",
    HealingOutcome.RESOLVED_BEFORE_ACTION: "cyan",
}

_END = datetime.max.replace(tzinfo=UTC)  # sorts untimed events last

STEP_STYLE = {
    StepStatus.SUCCEEDED: "green",
    StepStatus.DRY_RUN: "cyan",
    StepStatus.COMPENSATED: "yellow",
    StepStatus.FAILED: "red",
    StepStatus.COMPENSATION_FAILED: "bold red",
    StepStatus.REFUSED: "magenta",
}


# Outside a terminal there is no width to fit: as wide as any line will be.
NATURAL_WIDTH = 10_000


class CliConsole(Console):
    """A console that fits a terminal's width, and outside a terminal (a pipe, a file, CI, a
    test's CliRunner) has no width limit: a table takes its natural width, its headers and rows
    whole, instead of wrapping at the 80 columns rich assumes. Decided at every print: the
    CLI's consoles are made at import, and whoever runs a command may swap stdout later."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(NATURAL_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def make_console() -> Console:
    """The console every command prints its tables and lines with."""
    return CliConsole(highlight=False)


@dataclass(frozen=True)
class Event:
    at: datetime | None
    what: str
    detail: str = ""
    style: str = ""


@dataclass(frozen=True)
class Prelude:
    """What happened before the healing started, known only to whoever watched (``dev``)."""

    injected_at: datetime | None = None
    injected: str = ""
    first_failure_at: datetime | None = None


def _seconds(start: datetime, end: datetime) -> str:
    return f"{(end - start).total_seconds():.1f}s"


def _step_event(step: StepResult) -> Event:
    verb = f"plan {step.candidate + 1} step {step.order + 1}"
    if step.compensation:
        verb = "undo " + verb
    skipped = step.output.get("skipped") if step.compensation else None
    outcome = f"skipped ({skipped})" if skipped else step.status.value
    detail = f"{step.action} {outcome} in {_seconds(step.started_at, step.ended_at)}"
    if step.error:
        detail += f": {step.error}"
    return Event(step.started_at, f"{verb}: {step.name}", detail, STEP_STYLE.get(step.status, ""))


def _validation_event(validation: ValidationResult) -> Event:
    verdict = "healthy" if validation.healthy else "unhealthy"
    if validation.started_at is not None and validation.ended_at is not None:
        verdict += " after " + _seconds(validation.started_at, validation.ended_at)
    lines = [
        f"{verdict}: {validation.checks} checks, {validation.failures} failed, "
        f"window {validation.window_s:g}s"
        + (f" ({validation.detail})" if validation.detail else "")
    ]
    lines += [f"  {criterion_text(c)}" for c in validation.criteria]
    if validation.breach is not None:
        lines.append(f"  side effect: {breach_text(validation.breach)}")
    return Event(
        validation.started_at,
        "validation",
        "\n".join(lines),
        "green" if validation.healthy else "red",
    )


# A criterion keeps its last 20 values; a line shows the last few.
SHOWN_VALUES = 6


def criterion_text(result: CriterionResult) -> str:
    """``ok|failed|not evaluated [optional] LABEL: values seen; detail``."""
    verdict = {True: "ok", False: "failed", None: "not evaluated"}[result.ok]
    text = f"{verdict}{' (optional)' if result.optional else ''} {result.criterion}"
    seen = [f"{v:g}" for v in result.values[-SHOWN_VALUES:]]
    if seen:
        more = len(result.values) - len(seen)
        text += (
            ": seen "
            + ", ".join(seen)
            + (f" (last {len(seen)} of {len(result.values)})" if more else "")
        )
    if result.detail:
        text += f"; {result.detail}"
    return text


def breach_text(breach: GuardBreach) -> str:
    """``guard on service: expr: value V vs baseline B; detail``."""
    text = f"guard {breach.guard} on {breach.service}: {breach.expr}: value {breach.value:g}"
    if breach.baseline is not None:
        text += f" vs baseline {breach.baseline:g}"
    if breach.detail:
        text += f"; {breach.detail}"
    return text


def _breaker_events(breaker: BreakerStatus) -> list[Event]:
    """Each change of the breaker's state (timed), then where it stands."""
    events = [
        Event(change.at, f"breaker {change.state.replace('_', '-')}", change.detail)
        for change in breaker.history
    ]
    detail = f"{breaker.state.replace('_', '-')} over {breaker.step}"
    if breaker.dependency:
        detail += f" (closes when {breaker.dependency} is healthy)"
    detail += f", {breaker.cycles} half-open probe cycle(s)"
    if breaker.open_until is not None and breaker.state == "open":
        detail += f", open until {breaker.open_until.astimezone(UTC):%H:%M:%S}"
    style = "" if breaker.state == "closed" else "yellow"
    return [*events, Event(None, "breaker", detail, style)]


def approvers_text(approvers: Sequence[str] | None) -> str:
    """Who may decide: the list, ``anyone`` for an empty one, ``unknown`` for None."""
    if approvers is None:
        return "unknown"
    return ", ".join(approvers) if approvers else "anyone who may send the update"


def span_text(seconds: float) -> str:
    """A duration the way an operator reads it: ``2d 03h``, ``1h 05m``, ``12m 03s``, ``40s``."""
    whole = int(max(0.0, seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _fault_detail(fault: Fault) -> str:
    return (
        f"{fault.type} on {fault.service}"
        + (f" (target {fault.target})" if fault.target else "")
        + (f": {fault.summary}" if fault.summary else "")
    )


def _hypothesis_events(diagnosis: Diagnosis) -> list[Event]:
    """Every hypothesis with what it rests on, then the sources that did not answer."""
    events: list[Event] = []
    for rank, h in enumerate(diagnosis.hypotheses, start=1):
        lines = [f"{h.root_cause} on {h.component} {h.confidence:.2f}"]
        lines += [f"  {line}" for line in h.evidence]
        events.append(Event(None, f"hypothesis {rank}", "\n".join(lines)))
    events.extend(
        Event(None, "missing evidence", f"{gap.source}: {gap.reason}") for gap in diagnosis.missing
    )
    if diagnosis.acting_on is not None:
        events.append(
            Event(
                None,
                "acting on",
                f"{diagnosis.acting_on.service}/{diagnosis.acting_on.target}: the diagnosed "
                "component, not the service the fault was reported on",
            )
        )
    return events


def timeline(
    status: HealingStatus, prelude: Prelude | None = None, *, now: datetime | None = None
) -> list[Event]:
    """The healing's story in order: detection, diagnosis, plans, approval, steps, validation,
    side effects, the breaker, outcome. Events the workflow does not time (diagnosis, plans)
    carry no time. ``now`` (default: the clock) is what a pending approval has waited until."""
    events: list[Event] = []
    if prelude is not None and prelude.injected_at is not None:
        events.append(Event(prelude.injected_at, "injected", prelude.injected))
    if prelude is not None and prelude.first_failure_at is not None:
        events.append(Event(prelude.first_failure_at, "first failed check"))
    events.append(Event(status.fault.detected_at, "detected", _fault_detail(status.fault)))
    events.append(Event(status.started_at, "healing started", status.workflow_id))
    events.extend(
        Event(symptom.detected_at, "secondary symptom", _fault_detail(symptom))
        for symptom in status.secondary_faults
    )
    diagnosis = status.diagnosis
    if diagnosis is not None:
        events.append(
            Event(
                None,
                "diagnosis",
                f"{diagnosis.root_cause} (confidence {diagnosis.confidence:.2f}, "
                f"rule {diagnosis.rule})" + (f": {diagnosis.summary}" if diagnosis.summary else ""),
            )
        )
        events.extend(_hypothesis_events(diagnosis))
    for index, plan in enumerate(status.candidates):
        tried = status.current_candidate is not None and index <= status.current_candidate
        events.append(
            Event(
                None,
                f"plan {index + 1}" + ("" if tried else " (not tried)"),
                f"{plan.solution_name} [{plan.source}], risk {plan.risk.value}, "
                f"success rate {plan.success_rate:.2f}, {len(plan.steps)} step(s)",
            )
        )
    if status.approval is not None:
        approval = status.approval
        verdict = "approved" if approval.approved else "rejected"
        detail = f"{verdict} by {approval.by}" + (f": {approval.reason}" if approval.reason else "")
        if status.approval_reasons:
            detail += " (asked because " + "; ".join(status.approval_reasons) + ")"
        events.append(Event(approval.at, "approval", detail))
    elif status.approval_required:
        detail = "required: " + "; ".join(status.approval_reasons)
        if status.awaiting_approval:
            since = status.awaiting_since or status.started_at
            waited = ((now or datetime.now(UTC)) - since).total_seconds()
            detail += (
                f"; waiting {span_text(waited)}"
                + ("" if status.awaiting_since else " (since the healing started)")
                + f"; may decide: {approvers_text(status.approvers)}"
            )
        events.append(Event(status.awaiting_since, "approval", detail))
    elif status.candidates:
        events.append(Event(None, "approval", "not required"))
    execution = [_step_event(step) for step in status.steps]
    execution += [_validation_event(v) for v in status.validations]
    execution += [Event(b.at, "side effect", breach_text(b), "bold red") for b in status.breaches]
    breaker = _breaker_events(status.breaker) if status.breaker is not None else []
    execution += [e for e in breaker if e.at is not None]
    # Steps, validations, breaches and the breaker interleave: a plan fails, the next runs.
    events.extend(sorted(execution, key=lambda e: e.at or _END))
    events.extend(e for e in breaker if e.at is None)
    events.extend(
        Event(None, "resolution disputed", disputed, "yellow")
        for disputed in status.resolution_disputed
    )
    if status.outcome is not None:
        detail = status.outcome_detail
        if status.time_to_recover_s is not None:
            detail += f" (time to recover {status.time_to_recover_s:.1f}s after detection)"
        events.append(
            Event(
                status.ended_at,
                f"outcome: {status.outcome.value}",
                detail,
                OUTCOME_STYLE.get(status.outcome, "bold red"),
            )
        )
        if status.suppressed_until is not None or status.reports_after_outcome:
            until = status.suppressed_until
            window = f"; answers for its fingerprint until {until:%H:%M:%S}" if until else ""
            events.append(
                Event(
                    None,
                    "after the outcome",
                    f"{status.reports_after_outcome} more report(s) counted, nothing started"
                    + window,
                )
            )
    else:
        detail = "in progress"
        if status.waiting_on:
            detail += f", waiting on guardrail {status.waiting_on}"
        events.append(Event(None, f"phase: {status.phase.value}", detail))
    return events


def timeline_table(status: HealingStatus, prelude: Prelude | None = None) -> Table:
    events = timeline(status, prelude)
    origin = min((e.at for e in events if e.at is not None), default=None)
    table = Table(title=f"healing {status.workflow_id}", title_justify="left")
    table.add_column("t+", justify="right", no_wrap=True)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("detail")
    for event in events:
        offset = "" if event.at is None or origin is None else _seconds(origin, event.at)
        clock = "" if event.at is None else f"{event.at:%H:%M:%S.%f}"[:-3]
        table.add_row(offset, clock, Text(event.what, style=event.style), Text(event.detail))
    return table


def pending_table(rows: list[PendingApproval]) -> Table:
    """Healings awaiting approval: how long each has waited, who may decide, and why it asks."""
    table = Table()
    for column in ("workflow id", "service", "fault", "root cause", "risk"):
        table.add_column(column)
    table.add_column("waiting", no_wrap=True)
    table.add_column("may decide")
    table.add_column("why")
    for row in rows:
        if row.waited_s is None:
            waiting = "-"
        else:
            waiting = span_text(row.waited_s) + (
                "" if row.waited_since == "asked" else " (since start)"
            )
        why = "; ".join(row.reasons) or "-"
        if row.detail:
            why = f"{why} ({row.detail})" if row.reasons else row.detail
        table.add_row(
            row.workflow_id,
            row.service or "-",
            row.fault_type or "-",
            row.root_cause or "-",
            row.risk or "-",
            waiting,
            approvers_text(row.approvers) if row.waited_s is not None else "-",
            why,
        )
    return table


def healings_table(rows: list[HealingRow]) -> Table:
    table = Table()
    for column in ("workflow id", "phase", "service", "fault", "root cause", "risk", "outcome"):
        table.add_column(column)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("status")
    for row in rows:
        table.add_row(
            row.workflow_id,
            row.phase or "-",
            row.service or "-",
            row.fault_type or "-",
            row.root_cause or "-",
            row.risk or "-",
            row.outcome or "-",
            "-" if row.started_at is None else f"{row.started_at:%Y-%m-%d %H:%M:%S}",
            row.status.lower(),
        )
    return table
