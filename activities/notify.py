"""Notifications: a Slack-compatible message for every healing event, a PagerDuty page for the
ones a person must take over.

Events (``NotifyInput.event``): ``outcome`` (the healing ended), ``reminder`` (an approval still
waits) and ``resolved`` (the fault of an escalated or failed healing is over).

- **Slack-compatible webhook** (``notify.webhook_url``), every event: ``{"text": <one line>,
  "blocks": [...], "healing": <HealingStatus as JSON>, "extra": {...}}``. Slack shows the Block
  Kit ``blocks`` (the fault, the hypotheses with the evidence they rest on, what was tried and
  how each step ended, the validations with the values they saw, side-effect breaches, the
  breaker, the approval, the outcome, a button to the workflow in the Temporal UI) and uses
  ``text`` where blocks cannot be shown; other receivers read the whole status. The blocks stay
  within Slack's limits (50 blocks, 3000 characters per text), whatever the status holds.
- **PagerDuty Events API v2** (``notify.pagerduty_routing_key``): an outcome ``escalated``,
  ``failed`` or ``approval_timeout`` triggers an alert, ``resolved`` resolves it; both carry the
  fault's fingerprint as ``dedup_key``, so PagerDuty folds repeats into one incident. Healed
  outcomes and reminders never page.

A destination that took the message is remembered in the activity's heartbeat details, so a
retry (the other destination failed) does not post it twice. Webhook URLs carry their secret in
the path and the routing key is one: errors and logs name the host only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
import structlog
from temporalio import activity

from selfheal.activities.errors import as_application_error
from selfheal.core.catalog import INTERNAL_LABELS
from selfheal.core.probes import http_client
from selfheal.core.settings import NotifySettings
from selfheal.domain import (
    ConfigError,
    HealingOutcome,
    HealingStatus,
    StepResult,
    StepStatus,
    TargetError,
    ValidationResult,
)
from selfheal.domain.criteria import BreakerStatus, CriterionResult, GuardBreach
from selfheal.domain.evidence import Hypothesis
from selfheal.domain.fault import clip
from selfheal.domain.payloads import NotifyEvent, NotifyInput
from selfheal.workflows.contract import NOTIFY, implements

log = structlog.get_logger(__name__)

_ICONS = {
    HealingOutcome.HEALED: ":white_check_mark:",
    HealingOutcome.FAILED: ":x:",
    HealingOutcome.ESCALATED: ":rotating_light:",
    HealingOutcome.REJECTED: ":no_entry:",
    HealingOutcome.APPROVAL_TIMEOUT: ":hourglass:",
    HealingOutcome.RESOLVED_BEFORE_ACTION: ":information_source:",
    HealingOutcome.DRY_RUN: ":memo:",
}
_STEP_ICONS = {
    StepStatus.SUCCEEDED: ":white_check_mark:",
    StepStatus.FAILED: ":x:",
    StepStatus.COMPENSATED: ":leftwards_arrow_with_hook:",
    StepStatus.COMPENSATION_FAILED: ":bangbang:",
    StepStatus.DRY_RUN: ":memo:",
    StepStatus.REFUSED: ":no_entry_sign:",
}
# Retrying cannot fix a 4xx, except these two that say "later".
_RETRYABLE_4XX = frozenset({408, 429})

# Slack's limits (api.slack.com/reference/block-kit): 50 blocks a message, 3000 characters in a
# section's text, 2000 in a field, 150 in a header, 75 in a button's text, 10 fields a section.
SLACK_MAX_BLOCKS = 50
SLACK_TEXT_MAX = 3000
SLACK_FIELD_MAX = 2000
SLACK_HEADER_MAX = 150
SLACK_BUTTON_MAX = 75
SLACK_URL_MAX = 3000
# PagerDuty's: a summary of 1024 characters; an event of 512 KB, which the bounds below keep
# custom_details far from (about 10 hypotheses x 20 lines, 50 steps, 10 validations x 20
# criteria, each string at most _DETAIL_MAX characters).
PAGERDUTY_SUMMARY_MAX = 1024
_PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}

_HYPOTHESES_SHOWN = 5
_EVIDENCE_SHOWN = 10
_LABELS_SHOWN = 10
_VALUES_SHOWN = 8
_HISTORY_SHOWN = 10
_DETAIL_MAX = 300
# Labels that say the most about where a fault is, shown first.
_LABEL_ORDER = ("alertname", "namespace", "deployment", "pod", "container", "instance", "job")
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


# ------------------------------------------------------------------------------- text helpers


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fit(mrkdwn: str, limit: int = SLACK_TEXT_MAX) -> str:
    """Escaped text cut to ``limit`` characters, never inside an entity such as ``&amp;``."""
    if len(mrkdwn) <= limit:
        return mrkdwn
    cut = _ENTITY_TAIL.sub("", mrkdwn[: limit - 1])
    return cut + "…"


def _esc(text: object, limit: int = _DETAIL_MAX) -> str:
    """A value from the outside, for mrkdwn: on one line, bounded, escaped."""
    return _slack_escape(clip(_one_line(str(text)), limit))


def _code(text: object, limit: int = 120) -> str:
    return "`" + _esc(text, limit).replace("`", "'") + "`"


def _lines(lines: Sequence[str], limit: int = SLACK_TEXT_MAX) -> str:
    """Lines joined while they fit in ``limit``, then how many were left out."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        line = _fit(line, limit - 40)
        if used + len(line) + 1 > limit - 40:
            kept.append(f"_… {len(lines) - index} more_")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at is not None else "?"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _waited(status: HealingStatus, now: datetime) -> str | None:
    if status.awaiting_since is None:
        return None
    return _duration((now - status.awaiting_since).total_seconds())


# ------------------------------------------------------------------------------ the one line


def _state(status: HealingStatus, event: NotifyEvent, now: datetime) -> tuple[str, str]:
    """(icon, what happened) for the one line and the header."""
    if event == "resolved":
        was = f" (was {status.outcome.value.replace('_', ' ')})" if status.outcome else ""
        return ":large_green_circle:", f"fault resolved{was}"
    if status.outcome is not None and event == "outcome":
        return _ICONS[status.outcome], status.outcome.value.replace("_", " ")
    if status.awaiting_approval or event == "reminder":
        waited = _waited(status, now) if event == "reminder" else None
        return ":raising_hand:", "awaits approval" + (f" for {waited}" if waited else "")
    return ":gear:", status.phase.value.replace("_", " ")


def _summary_parts(status: HealingStatus, event: NotifyEvent, now: datetime) -> list[str]:
    fault = status.fault
    _, state = _state(status, event, now)
    subject = f"{fault.service}/{fault.type}" + (f" on {fault.target}" if fault.target else "")
    parts = [f"{status.workflow_id} {state}: {subject}"]
    if status.diagnosis is not None:
        diagnosis = status.diagnosis
        parts.append(f"root cause {diagnosis.root_cause} ({diagnosis.confidence:.2f})")
    if status.solution_name:
        parts.append(f"via {status.solution_name}")
    if status.time_to_recover_s is not None:
        parts.append(f"recovered in {status.time_to_recover_s:.1f}s")
    awaiting = status.awaiting_approval or event == "reminder"
    if awaiting and status.approval_reasons:
        parts.append("why: " + "; ".join(status.approval_reasons))
    if awaiting and status.approvers:
        parts.append("approvers: " + ", ".join(status.approvers))
    elif event == "reminder":
        parts.append("any approver")
    if status.outcome_detail:
        parts.append(status.outcome_detail)
    return [_one_line(part) for part in parts]


def summary_line(
    status: HealingStatus, event: NotifyEvent = "outcome", *, now: datetime | None = None
) -> str:
    """One line, escaped for Slack: outcome (or phase), fault, root cause, solution, time to
    recover, detail; a reminder says how long the approval has waited and who may give it."""
    now = now or datetime.now(UTC)
    icon, _ = _state(status, event, now)
    return _fit(_slack_escape(f"{icon} " + " — ".join(_summary_parts(status, event, now))))


def workflow_url(ui_url: str, namespace: str, workflow_id: str, run_id: str) -> str:
    """The healing's history in the Temporal UI."""
    path = f"namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe=':')}"
    if run_id:
        path += f"/{quote(run_id, safe='')}/history"
    return f"{ui_url.rstrip('/')}/{path}"


# ---------------------------------------------------------------------------- Slack blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _fit(text)}}


def _fault_blocks(status: HealingStatus) -> list[dict[str, Any]]:
    fault = status.fault
    fields = [
        f"*Service*\n{_code(fault.service)}",
        f"*Type*\n{_code(fault.type)}",
        f"*Target*\n{_code(fault.target) if fault.target else '_none_'}",
        f"*Severity*\n{_esc(fault.severity)}",
    ]
    if status.occurrences > 1:
        fields.append(f"*Reports*\n{status.occurrences}")
    fields.append(f"*Fingerprint*\n{_code(fault.fingerprint)}")
    block: dict[str, Any] = {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": _fit(f, SLACK_FIELD_MAX)} for f in fields[:10]],
    }
    lines: list[str] = []
    if fault.summary:
        lines.append(_esc(fault.summary, 1000))
    labels = _labels_that_matter(fault.labels)
    if labels:
        shown = ", ".join(_code(f"{k}={v}", 200) for k, v in labels[:_LABELS_SHOWN])
        more = len(labels) - _LABELS_SHOWN
        lines.append(f"*Labels* {shown}" + (f" _… {more} more_" if more > 0 else ""))
    if status.secondary_faults:
        also = [f"{_code(f.service)}/{_code(f.type)}" for f in status.secondary_faults[:5]]
        more = len(status.secondary_faults) - 5
        lines.append("*Also seen* " + ", ".join(also) + (f" _… {more} more_" if more > 0 else ""))
    if lines:
        block["text"] = {"type": "mrkdwn", "text": _lines(lines)}
    return [block]


def _labels_that_matter(labels: dict[str, str]) -> list[tuple[str, str]]:
    """The fault's labels without selfheal's internal ones, those saying where first."""
    kept = {k: v for k, v in labels.items() if k not in INTERNAL_LABELS and k != "severity"}
    first = [(k, kept.pop(k)) for k in _LABEL_ORDER if k in kept]
    return first + sorted(kept.items())


def _approval_lines(status: HealingStatus, event: NotifyEvent, now: datetime) -> list[str]:
    lines: list[str] = []
    if event == "reminder" or status.awaiting_approval:
        waited = _waited(status, now)
        since = f" for *{waited}* (since {_when(status.awaiting_since)})" if waited else ""
        lines.append(f":raising_hand: *Approval waiting*{since}")
        for reason in status.approval_reasons:
            lines.append(f"• why: {_esc(reason)}")
        who = ", ".join(_code(a, 80) for a in status.approvers[:20])
        lines.append(f"• who may approve: {who or 'anyone allowed to send the approve update'}")
        lines.append(
            f"• `selfheal approve {_esc(status.workflow_id)} --by NAME` (or `selfheal reject ...`)"
        )
    elif status.approval is not None:
        approval = status.approval
        verdict = ":ok_hand: approved" if approval.approved else ":no_entry: rejected"
        why = f": {_esc(approval.reason)}" if approval.reason else ""
        lines.append(f"{verdict} by {_code(approval.by, 80)}{why} ({_when(approval.at)})")
        if status.approval_reasons:
            lines.append("• asked because " + "; ".join(_esc(r) for r in status.approval_reasons))
    elif status.approval_required and status.approval_reasons:
        lines.append(
            "*Approval asked* because " + "; ".join(_esc(r) for r in status.approval_reasons)
        )
    return lines


def _outcome_lines(status: HealingStatus, event: NotifyEvent) -> list[str]:
    lines: list[str] = []
    if event == "resolved":
        lines.append(f":large_green_circle: *The fault resolved* ({_when(status.resolved_at)})")
    if status.outcome is not None:
        detail = f" — {_esc(status.outcome_detail, 1500)}" if status.outcome_detail else ""
        lines.append(f"{_ICONS[status.outcome]} *Outcome* {_code(status.outcome.value)}{detail}")
    else:
        lines.append(f":gear: *Phase* {_code(status.phase.value)}")
    if status.solution_name:
        lines.append(f"• solution {_code(status.solution_name)}")
    if status.time_to_recover_s is not None:
        lines.append(f"• recovered in {status.time_to_recover_s:.1f}s")
    if status.waiting_on:
        lines.append(f"• waiting on {_esc(status.waiting_on)}")
    if status.resolution_disputed:
        disputed = "; ".join(_esc(d, 200) for d in status.resolution_disputed[:3])
        lines.append(f"• 'resolved' reports not confirmed by the evidence: {disputed}")
    if status.reports_after_outcome:
        lines.append(f"• {status.reports_after_outcome} reports after the outcome")
    return lines


def _hypothesis_text(rank: int, hypothesis: Hypothesis) -> str:
    rule = f" (rule {_code(hypothesis.rule)})" if hypothesis.rule else ""
    lines = [
        f"*{rank}. {_code(hypothesis.root_cause)} on {_code(hypothesis.component)}* — "
        f"{hypothesis.confidence:.2f}{rule}"
    ]
    if hypothesis.summary:
        lines.append(f"_{_esc(hypothesis.summary, 500)}_")
    for line in hypothesis.evidence[:_EVIDENCE_SHOWN]:
        lines.append(f"• {_esc(line)}")
    if len(hypothesis.evidence) > _EVIDENCE_SHOWN:
        lines.append(f"_… {len(hypothesis.evidence) - _EVIDENCE_SHOWN} more_")
    return _lines(lines)


def _diagnosis_blocks(status: HealingStatus) -> list[dict[str, Any]]:
    diagnosis = status.diagnosis
    if diagnosis is None:
        return []
    on = diagnosis.component or status.fault.service
    head = (
        f":mag: *Diagnosis* root cause {_code(diagnosis.root_cause)} on {_code(on)} "
        f"({diagnosis.confidence:.2f}, rule {_code(diagnosis.rule)})"
    )
    if diagnosis.summary:
        head += f"\n{_esc(diagnosis.summary, 1000)}"
    blocks = [_section(head)]
    hypotheses = diagnosis.hypotheses
    for rank, hypothesis in enumerate(hypotheses[:_HYPOTHESES_SHOWN], start=1):
        blocks.append(_section(_hypothesis_text(rank, hypothesis)))
    if len(hypotheses) > _HYPOTHESES_SHOWN:
        more = len(hypotheses) - _HYPOTHESES_SHOWN
        blocks.append(_context(f"… {more} more hypotheses, in the healing's status"))
    if diagnosis.missing:
        lines = [":grey_question: *Missing evidence*"]
        lines += [f"• {_code(m.source)}: {_esc(m.reason)}" for m in diagnosis.missing]
        blocks.append(_section(_lines(lines)))
    return blocks


def _step_line(step: StepResult) -> str:
    icon = _STEP_ICONS.get(step.status, ":grey_question:")
    undo = "undo " if step.compensation else ""
    name = _code(step.name)
    action = f" — {_code(step.action)}" if step.action != step.name else ""
    error = f": {_esc(step.error)}" if step.error else ""
    return f"{icon} {undo}{step.order + 1}. {name}{action} {step.status.value}{error}"


def _steps_blocks(status: HealingStatus) -> list[dict[str, Any]]:
    if not status.steps:
        return []
    blocks: list[dict[str, Any]] = []
    by_candidate: dict[int, list[StepResult]] = {}
    for step in status.steps:
        by_candidate.setdefault(step.candidate, []).append(step)
    total = len(status.candidates)
    for candidate, steps in by_candidate.items():
        plan = status.candidates[candidate] if 0 <= candidate < total else None
        title = f"*Plan {candidate + 1}" + (f" of {total}" if total else "") + "*"
        if plan is not None:
            title += f" {_code(plan.solution_name)} (risk {plan.risk.value})"
        title = ":hammer_and_wrench: " + title
        blocks.append(_section(_lines([title, *(_step_line(s) for s in steps)])))
    return blocks


def _criterion_line(result: CriterionResult) -> str:
    if result.ok is None:
        icon, verdict = (
            ":grey_question:",
            "not evaluated" + (" (optional)" if result.optional else ""),
        )
    else:
        icon, verdict = (":white_check_mark:", "held") if result.ok else (":x:", "failed")
    values = ""
    if result.values:
        shown = ", ".join(_number(v) for v in result.values[-_VALUES_SHOWN:])
        more = "…, " if len(result.values) > _VALUES_SHOWN else ""
        values = f" values {more}{shown}"
    detail = f" — {_esc(result.detail)}" if result.detail else ""
    return (
        f"    {icon} {_code(result.criterion)} ({_esc(result.kind, 40)}) {verdict}{values}{detail}"
    )


def _breach_line(breach: GuardBreach) -> str:
    baseline = f" (baseline {_number(breach.baseline)})" if breach.baseline is not None else ""
    detail = f" — {_esc(breach.detail)}" if breach.detail else ""
    return (
        f":warning: guard {_code(breach.guard)} on {_code(breach.service)}: "
        f"{_code(breach.expr)} at {_number(breach.value)}{baseline}{detail}"
    )


def _validation_blocks(status: HealingStatus) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for number, validation in enumerate(status.validations, start=1):
        blocks.append(_section(_validation_text(number, validation)))
    return blocks


def _validation_text(number: int, validation: ValidationResult) -> str:
    icon, verdict = (
        (":white_check_mark:", "healthy") if validation.healthy else (":x:", "not healthy")
    )
    head = (
        f"{icon} *Validation {number}* {verdict}: {validation.checks} checks, "
        f"{validation.failures} failures over {validation.window_s:g}s"
    )
    if validation.detail:
        head += f" — {_esc(validation.detail, 500)}"
    lines = [head, *(_criterion_line(c) for c in validation.criteria)]
    if validation.breach is not None:
        lines.append("    " + _breach_line(validation.breach))
    return _lines(lines)


def _breach_blocks(status: HealingStatus) -> list[dict[str, Any]]:
    if not status.breaches:
        return []
    lines = ["*Side effects*", *(_breach_line(b) for b in status.breaches)]
    return [_section(_lines(lines))]


def _breaker_blocks(breaker: BreakerStatus | None) -> list[dict[str, Any]]:
    if breaker is None:
        return []
    on = f", dependency {_code(breaker.dependency)}" if breaker.dependency else ""
    until = f", open until {_when(breaker.open_until)}" if breaker.open_until else ""
    lines = [
        f":electric_plug: *Breaker* over {_code(breaker.step)}: {_code(breaker.state)}, "
        f"{breaker.cycles} half-open cycles{on}{until}"
    ]
    history = breaker.history[-_HISTORY_SHOWN:]
    if len(breaker.history) > len(history):
        lines.append(f"_… {len(breaker.history) - len(history)} earlier changes_")
    for change in history:
        detail = f" — {_esc(change.detail)}" if change.detail else ""
        lines.append(f"• {_when(change.at)} {_code(change.state)}{detail}")
    return [_section(_lines(lines))]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _fit(text)}]}


def _header(status: HealingStatus, event: NotifyEvent, now: datetime) -> dict[str, Any]:
    icon, state = _state(status, event, now)
    fault = status.fault
    text = f"{icon} {state[:1].upper()}{state[1:]}: {fault.service}/{fault.type}"
    return {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": clip(_one_line(text), SLACK_HEADER_MAX),
            "emoji": True,
        },
    }


def slack_blocks(
    status: HealingStatus,
    event: NotifyEvent = "outcome",
    *,
    link: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The Block Kit blocks of one notification, within Slack's limits: every text at most
    3000 characters, at most 50 blocks (the last ones give way to a note that says so; the
    link and the workflow's identity are always kept)."""
    now = now or datetime.now(UTC)
    body: list[dict[str, Any]] = [_header(status, event, now), *_fault_blocks(status)]
    body.append(_section(_lines(_outcome_lines(status, event))))
    approval = _approval_lines(status, event, now)
    if approval:
        body.append(_section(_lines(approval)))
    body += _diagnosis_blocks(status)
    body += _steps_blocks(status)
    body += _validation_blocks(status)
    body += _breach_blocks(status)
    body += _breaker_blocks(status.breaker)

    tail: list[dict[str, Any]] = []
    if link is not None and len(link) <= SLACK_URL_MAX:
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in Temporal UI"[:SLACK_BUTTON_MAX]},
            "url": link,
            "action_id": "open_workflow",
        }
        tail.append({"type": "actions", "elements": [button]})
    started = f" · started {_when(status.started_at)}"
    ended = f" · ended {_when(status.ended_at)}" if status.ended_at else ""
    tail.append(
        _context(
            f"{_code(status.workflow_id, 200)} · run {_code(status.run_id, 80)}{started}{ended}"
        )
    )

    room = SLACK_MAX_BLOCKS - len(tail)
    if len(body) > room:
        left_out = len(body) - (room - 1)
        body = body[: room - 1]
        body.append(_context(f"… {left_out} more blocks left out; the workflow has everything"))
    return body + tail


def slack_message(
    status: HealingStatus,
    event: NotifyEvent = "outcome",
    *,
    link: str | None = None,
    extra: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The webhook's JSON body."""
    now = now or datetime.now(UTC)
    message: dict[str, Any] = {
        "text": summary_line(status, event, now=now),
        "blocks": slack_blocks(status, event, link=link, now=now),
        "healing": status.model_dump(mode="json"),
    }
    if extra:
        message["extra"] = extra
    return message


# ------------------------------------------------------------------------------- PagerDuty


def _details_hypothesis(hypothesis: Hypothesis) -> dict[str, Any]:
    return {
        "root_cause": hypothesis.root_cause,
        "component": hypothesis.component,
        "confidence": hypothesis.confidence,
        "rule": hypothesis.rule,
        "summary": clip(hypothesis.summary, _DETAIL_MAX),
        "evidence": [clip(line, _DETAIL_MAX) for line in hypothesis.evidence[:20]],
    }


def _details_step(step: StepResult) -> dict[str, Any]:
    return {
        "candidate": step.candidate,
        "order": step.order,
        "name": clip(step.name, 120),
        "action": step.action,
        "status": step.status.value,
        "compensation": step.compensation,
        "error": clip(step.error, _DETAIL_MAX) if step.error else None,
    }


def _details_breach(breach: GuardBreach) -> dict[str, Any]:
    data = breach.model_dump(mode="json")
    data["detail"] = clip(breach.detail, _DETAIL_MAX)
    return data


def _details_validation(validation: ValidationResult) -> dict[str, Any]:
    return {
        "healthy": validation.healthy,
        "checks": validation.checks,
        "failures": validation.failures,
        "window_s": validation.window_s,
        "detail": clip(validation.detail, _DETAIL_MAX),
        "criteria": [
            {
                "criterion": clip(c.criterion, 200),
                "kind": c.kind,
                "ok": c.ok,
                "optional": c.optional,
                "values": c.values[-20:],
                "detail": clip(c.detail, _DETAIL_MAX),
            }
            for c in validation.criteria[:20]
        ],
        "breach": _details_breach(validation.breach) if validation.breach else None,
    }


def _tail(items: Sequence[Any], keep: int) -> list[Any]:
    return list(items[-keep:]) if len(items) > keep else list(items)


def pagerduty_trigger(
    status: HealingStatus, routing_key: str, *, link: str | None = None
) -> dict[str, Any]:
    """The Events API v2 ``trigger`` of a healing that hands its fault over to a person.
    ``dedup_key`` is the fault's fingerprint: the later ``resolve`` and any repeat find it."""
    fault = status.fault
    diagnosis = status.diagnosis
    summary = " — ".join(_summary_parts(status, "outcome", datetime.now(UTC)))
    outcome = {
        "outcome": status.outcome.value if status.outcome else None,
        "detail": clip(status.outcome_detail, 1000),
        "solution": status.solution_name,
        "approval": status.approval.model_dump(mode="json") if status.approval else None,
        "approval_reasons": [clip(r, _DETAIL_MAX) for r in status.approval_reasons[:10]],
    }
    details: dict[str, Any] = {
        "hypotheses": [
            _details_hypothesis(h) for h in (diagnosis.hypotheses if diagnosis else [])[:10]
        ],
        "missing_evidence": [
            f"{m.source}: {clip(m.reason, _DETAIL_MAX)}"
            for m in (diagnosis.missing if diagnosis else [])[:20]
        ],
        "steps": [_details_step(s) for s in _tail(status.steps, 50)],
        "validations": [_details_validation(v) for v in _tail(status.validations, 10)],
        "outcome": outcome,
        "workflow": {
            "id": status.workflow_id,
            "run_id": status.run_id,
            "url": link,
            "started_at": _when(status.started_at),
            "ended_at": _when(status.ended_at) if status.ended_at else None,
        },
        "fault": {
            "fingerprint": fault.fingerprint,
            "summary": clip(fault.summary, 1000),
            "labels": {k: clip(v, 200) for k, v in _labels_that_matter(fault.labels)[:20]},
        },
    }
    if status.breaches:
        details["breaches"] = [_details_breach(b) for b in _tail(status.breaches, 20)]
    if status.breaker is not None:
        breaker = status.breaker.model_copy(update={"history": status.breaker.history[-20:]})
        details["breaker"] = breaker.model_dump(mode="json")
    if len(status.steps) > 50 or len(status.validations) > 10:
        details["left_out"] = "only the last 50 steps and 10 validations; the workflow has all"
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": fault.fingerprint,
        "client": "selfheal",
        "payload": {
            "summary": clip(summary, PAGERDUTY_SUMMARY_MAX),
            "source": f"{fault.service}/{fault.target}" if fault.target else fault.service,
            "severity": _PAGERDUTY_SEVERITY.get(fault.severity, "error"),
            "timestamp": fault.detected_at.astimezone(UTC).isoformat(),
            "component": (diagnosis.component if diagnosis else None) or fault.service,
            "group": fault.service,
            "class": fault.type,
            "custom_details": details,
        },
    }
    if link is not None:
        event["client_url"] = link
        event["links"] = [{"href": link, "text": f"{status.workflow_id} in the Temporal UI"}]
    return event


def pagerduty_resolve(status: HealingStatus, routing_key: str) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "event_action": "resolve",
        "dedup_key": status.fault.fingerprint,
    }


# ------------------------------------------------------------------------------ delivering


def _checked_url(value: str | None, field: str) -> str | None:
    if not value:
        return None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"notify.{field}: expected an http:// or https:// URL")
    return value


class _Failed(Exception):
    """One destination did not take the message; the text names its host only."""

    def __init__(self, text: str, *, retryable: bool) -> None:
        super().__init__(text)
        self.retryable = retryable


Destination = Literal["pagerduty", "slack"]


class NotifyActivities:
    """Built once per worker from ``Settings.notify``; ``namespace`` makes the Temporal UI link."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        namespace: str = "default",
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._webhook_url = _checked_url(settings.webhook_url, "webhook_url")
        self._routing_key = (settings.pagerduty_routing_key or "").strip() or None
        pagerduty_url = _checked_url(settings.pagerduty_url, "pagerduty_url")
        if self._routing_key is not None and pagerduty_url is None:
            raise ConfigError("notify.pagerduty_url: expected the Events API v2 URL")
        self._pagerduty_url = pagerduty_url
        self._ui_url = _checked_url(settings.temporal_ui_url, "temporal_ui_url")
        self._timeout_s = settings.timeout_s
        self._namespace = namespace
        self._http = http
        # Never in a message: the webhook's URL (its path is the secret) and the routing key.
        self._secrets = [s for s in (self._webhook_url, self._routing_key) if s]
        if self._webhook_url:
            path = httpx.URL(self._webhook_url).raw_path.decode()
            if len(path) > 1:
                self._secrets.append(path)

    def link(self, status: HealingStatus) -> str | None:
        """The healing in the Temporal UI, when its URL is configured."""
        if self._ui_url is None:
            return None
        return workflow_url(self._ui_url, self._namespace, status.workflow_id, status.run_id)

    def messages(self, input: NotifyInput) -> dict[Destination, tuple[str, dict[str, Any]]]:
        """What this event sends where: destination → (URL, JSON body)."""
        status, event = input.status, input.event
        link = self.link(status)
        out: dict[Destination, tuple[str, dict[str, Any]]] = {}
        if self._routing_key is not None and self._pagerduty_url is not None:
            if event == "resolved":
                out["pagerduty"] = (
                    self._pagerduty_url,
                    pagerduty_resolve(status, self._routing_key),
                )
            elif event == "outcome" and status.outcome is not None and status.outcome.pages:
                body = pagerduty_trigger(status, self._routing_key, link=link)
                out["pagerduty"] = (self._pagerduty_url, body)
        if self._webhook_url is not None:
            body = slack_message(status, event, link=link, extra=input.extra)
            out["slack"] = (self._webhook_url, body)
        return out

    @implements(NOTIFY)
    async def notify(self, input: NotifyInput) -> bool:
        """True when a destination took the message; False when none is configured for this
        event. A failure raises after every destination was tried: retryable when one that
        failed may take it later (those that took it are not sent to again)."""
        messages = self.messages(input)
        if not messages:
            return False
        done = _done_in_earlier_attempts()
        failures: list[_Failed] = []
        async with http_client(self._http) as http:
            for destination, (url, body) in messages.items():
                if destination in done:
                    continue
                try:
                    await self._post(http, destination, url, body)
                except _Failed as failure:
                    failures.append(failure)
                    log.warning(
                        "notification failed",
                        destination=destination,
                        kind=input.event,
                        problem=str(failure),
                    )
                    if failure.retryable:
                        continue
                    done[destination] = "refused"
                else:
                    done[destination] = "sent"
                    log.info("notification sent", destination=destination, kind=input.event)
                if activity.in_activity():
                    activity.heartbeat(done)
        if failures:
            retryable = any(f.retryable for f in failures)
            error = TargetError("; ".join(str(f) for f in failures), retryable=retryable)
            raise as_application_error(error)
        return "sent" in done.values()

    async def _post(
        self, http: httpx.AsyncClient, destination: Destination, url: str, body: dict[str, Any]
    ) -> None:
        what = "PagerDuty" if destination == "pagerduty" else "notification webhook"
        host = httpx.URL(url).host
        try:
            response = await http.post(url, json=body, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            # no detail from httpx: its errors can carry the secret URL
            raise _Failed(f"{what} {host}: {type(exc).__name__}", retryable=True) from None
        if response.is_success:  # PagerDuty answers 202, Slack 200
            return
        code = response.status_code
        said = self._said(response)
        raise _Failed(
            f"{what} {host} answered HTTP {code}" + (f": {said}" if said else ""),
            retryable=code >= 500 or code in _RETRYABLE_4XX,
        )

    def _said(self, response: httpx.Response) -> str:
        """What the receiver said about a refusal (Slack: ``invalid_blocks``; PagerDuty: its
        message and errors), on one line, bounded, with the secrets taken out."""
        try:
            text = response.text
            data = json.loads(text) if text.lstrip().startswith("{") else None
        except (ValueError, UnicodeDecodeError):
            return ""
        if isinstance(data, dict):
            errors = data.get("errors")
            parts = [str(data.get("message") or data.get("error") or data.get("status") or "")]
            if isinstance(errors, list):
                parts += [str(e) for e in errors]
            text = " ".join(p for p in parts if p)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return clip(_one_line(text), 200)


def _done_in_earlier_attempts() -> dict[str, str]:
    """The destinations an earlier attempt of this activity delivered to or was refused by,
    from its last heartbeat."""
    if not activity.in_activity():
        return {}
    details: Iterable[Any] = activity.info().heartbeat_details
    for detail in details:
        if isinstance(detail, dict):
            return {str(k): str(v) for k, v in detail.items()}
    return {}
