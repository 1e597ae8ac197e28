"""Notifications: one JSON POST per healing event to a Slack-compatible incoming webhook.

The body is ``{"text": <one line>, "healing": <HealingStatus as JSON>, "extra": {...}}``: Slack
shows ``text``; other receivers can read the whole status. Webhook URLs carry their secret in
the path, so errors name the host only.
"""

from __future__ import annotations

from typing import Any

import httpx

from selfheal.activities.errors import as_application_error
from selfheal.core.probes import http_client
from selfheal.domain import ConfigError, HealingOutcome, HealingStatus, TargetError
from selfheal.domain.payloads import NotifyInput
from selfheal.workflows.contract import NOTIFY, implements

_ICONS = {
    HealingOutcome.HEALED: ":white_check_mark:",
    HealingOutcome.FAILED: ":x:",
    HealingOutcome.ESCALATED: ":rotating_light:",
    HealingOutcome.REJECTED: ":no_entry:",
    HealingOutcome.APPROVAL_TIMEOUT: ":hourglass:",
    HealingOutcome.RESOLVED_BEFORE_ACTION: ":information_source:",
    HealingOutcome.DRY_RUN: ":memo:",
}
# Retrying cannot fix a 4xx, except these two that say "later".
_RETRYABLE_4XX = frozenset({408, 429})


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary_line(status: HealingStatus) -> str:
    """One line: outcome (or phase), fault, root cause, solution, time to recover, detail."""
    fault = status.fault
    if status.outcome is not None:
        icon, state = _ICONS[status.outcome], status.outcome.value
    elif status.awaiting_approval:
        icon, state = ":raising_hand:", "awaits approval"
    else:
        icon, state = ":gear:", status.phase.value
    subject = f"{fault.service}/{fault.type}" + (f" on {fault.target}" if fault.target else "")
    parts = [f"{icon} {status.workflow_id} {state.replace('_', ' ')}: {subject}"]
    if status.diagnosis is not None:
        diagnosis = status.diagnosis
        parts.append(f"root cause {diagnosis.root_cause} ({diagnosis.confidence:.2f})")
    if status.solution_name:
        parts.append(f"via {status.solution_name}")
    if status.time_to_recover_s is not None:
        parts.append(f"recovered in {status.time_to_recover_s:.1f}s")
    if status.awaiting_approval and status.approval_reasons:
        parts.append("why: " + "; ".join(status.approval_reasons))
    if status.outcome_detail:
        parts.append(status.outcome_detail)
    return _slack_escape(" — ".join(" ".join(part.split()) for part in parts))


class NotifyActivities:
    def __init__(
        self,
        webhook_url: str | None,
        timeout_s: float = 5.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if webhook_url:
            try:
                url = httpx.URL(webhook_url)
            except httpx.InvalidURL:
                url = None
            if url is None or url.scheme not in ("http", "https") or not url.host:
                raise ConfigError("notify.webhook_url: expected an http:// or https:// URL")
        self._webhook_url = webhook_url or None
        self._timeout_s = timeout_s
        self._http = http

    @implements(NOTIFY)
    async def notify(self, input: NotifyInput) -> bool:
        """True when delivered; False when no webhook is configured. Failures raise (retryable)."""
        if self._webhook_url is None:
            return False
        payload: dict[str, Any] = {
            "text": summary_line(input.status),
            "healing": input.status.model_dump(mode="json"),
        }
        if input.extra:
            payload["extra"] = input.extra
        host = httpx.URL(self._webhook_url).host
        async with http_client(self._http) as http:
            try:
                response = await http.post(self._webhook_url, json=payload, timeout=self._timeout_s)
            except httpx.HTTPError as exc:
                error = TargetError(f"notification webhook {host}: {type(exc).__name__}")
                # not chained: the httpx error carries the secret URL into the failure
                raise as_application_error(error) from None
        if response.is_success:
            return True
        code = response.status_code
        retryable = code >= 500 or code in _RETRYABLE_4XX
        error = TargetError(
            f"notification webhook {host} answered HTTP {code}", retryable=retryable
        )
        raise as_application_error(error)
