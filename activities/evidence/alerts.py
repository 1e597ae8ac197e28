"""The alerts provider: what else Alertmanager says is firing, for the faulted service and for
the services it depends on.

One call, ``GET /api/v2/alerts?active=true&silenced=false&inhibited=false``, bounded in time,
bytes and alerts (``MAX_ALERTS``, the first ones kept). An alert belongs to the service of its
``service`` label, else of its ``job`` label: the same rule the Alertmanager webhook intake uses
to name a fault's service (``detection.parsers.alert_to_fault``), so that both agree.

The alert that raised this very fault is not evidence about it (it *is* the fault): an alert of
the faulted service named like the fault's type, or whose fingerprint the fault's derives from,
is left out of the facts and the findings.

Facts: ``alerts.firing`` (count for the faulted service), ``alerts.names`` (sorted),
``alerts.<alertname>`` (true), ``deps.alerts.firing`` (count over the dependencies),
``deps.alerts.services`` (the dependencies with a firing alert, nearest first). Findings:
``alert_firing`` for each service with a firing alert, stronger for a critical one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from selfheal.activities.evidence.base import EvidenceRequest, Gathered
from selfheal.core.http_json import FetchError, get_json
from selfheal.core.settings import EvidenceSettings
from selfheal.domain import Fault, Finding

SOURCE = "alerts"
MAX_ALERTS = 2000
SERVICE_LABELS = ("service", "job")
STRENGTH = {"critical": 0.8, "warning": 0.6}
"""a finding's strength by the strongest severity firing; anything else 0.4"""


class AlertmanagerError(Exception):
    """Alertmanager could not be asked; the message says why in one line."""


@dataclass(frozen=True)
class Alert:
    name: str
    service: str
    fingerprint: str
    severity: str
    summary: str


def parse_alerts(payload: Any, limit: int = MAX_ALERTS) -> list[Alert]:
    """Alerts of an API v2 answer that name a service (``service`` or ``job`` label)."""
    if not isinstance(payload, list):
        raise AlertmanagerError(f"expected a JSON list of alerts, got {type(payload).__name__}")
    alerts: list[Alert] = []
    for item in payload[:limit]:
        labels = item.get("labels") if isinstance(item, dict) else None
        if not isinstance(labels, dict):
            continue
        service = next((str(labels[k]) for k in SERVICE_LABELS if labels.get(k)), "")
        name = str(labels.get("alertname", ""))
        if not service or not name:
            continue
        annotations = item.get("annotations") or {}
        alerts.append(
            Alert(
                name=name,
                service=service,
                fingerprint=str(item.get("fingerprint", "")),
                severity=str(labels.get("severity", "")),
                summary=str(
                    annotations.get("summary", "") if isinstance(annotations, dict) else ""
                ),
            )
        )
    return alerts


def is_own(alert: Alert, fault: Fault) -> bool:
    """Whether ``alert`` is the one that raised ``fault``."""
    if alert.fingerprint and (
        fault.fingerprint == alert.fingerprint
        or fault.fingerprint.startswith(f"{alert.fingerprint}-")
    ):
        return True
    return alert.service == fault.service and alert.name == fault.type


def assess(alerts: Sequence[Alert], *, fault: Fault, dependencies: Sequence[str]) -> Gathered:
    """The ``alerts.*`` and ``deps.alerts.*`` facts and the findings."""
    gathered = Gathered()
    facts = gathered.facts
    others = [a for a in alerts if not is_own(a, fault)]
    own = [a for a in others if a.service == fault.service]
    facts["alerts.firing"] = len(own)
    facts["alerts.names"] = sorted({a.name for a in own})
    for name in facts["alerts.names"]:
        facts[f"alerts.{name}"] = True
    by_dependency = {d: [a for a in others if a.service == d] for d in dependencies}
    firing = {d: found for d, found in by_dependency.items() if found}
    facts["deps.alerts.firing"] = sum(len(found) for found in firing.values())
    facts["deps.alerts.services"] = list(firing)
    for service, found in [(fault.service, own), *firing.items()]:
        if not found:
            continue
        names = sorted({a.name for a in found})
        strength = max(STRENGTH.get(a.severity, 0.4) for a in found)
        gathered.findings.append(
            Finding(
                source=SOURCE,
                kind="alert_firing",
                component=service,
                strength=strength,
                detail=f"{len(found)} alert(s) firing for {service}: {', '.join(names)}",
                facts={"names": names, "count": len(found)},
            )
        )
    return gathered


class AlertsProvider:
    name = SOURCE

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 4_000_000,
        max_alerts: int = MAX_ALERTS,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/api/v2/alerts"
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._max_alerts = max_alerts

    async def gather(self, request: EvidenceRequest) -> Gathered:
        alerts = await self.firing()
        return assess(alerts, fault=request.fault, dependencies=request.dependencies)

    async def firing(self) -> list[Alert]:
        """The active alerts, neither silenced nor inhibited. Raises ``AlertmanagerError``."""
        params = {"active": "true", "silenced": "false", "inhibited": "false"}
        try:
            status, payload = await get_json(
                self._http,
                self._url,
                params,
                timeout_s=self._timeout_s,
                max_bytes=self._max_bytes,
            )
        except FetchError as exc:
            raise AlertmanagerError(str(exc)) from None
        if status != 200:
            raise AlertmanagerError(f"{self._url}: HTTP {status}: {str(payload)[:200]}")
        return parse_alerts(payload, self._max_alerts)


def alerts_provider(settings: EvidenceSettings, http: httpx.AsyncClient) -> AlertsProvider | None:
    """The provider when ``alertmanager_url`` is set; else None (no alerts evidence)."""
    if not settings.alertmanager_url:
        return None
    return AlertsProvider(
        http,
        settings.alertmanager_url,
        timeout_s=settings.timeout_s,
        max_bytes=settings.max_bytes,
    )
