"""The alerts provider against a real Alertmanager (API v2), and its pure assessment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from selfheal.activities.evidence.alerts import (
    Alert,
    AlertmanagerError,
    AlertsProvider,
    alerts_provider,
    assess,
    is_own,
    parse_alerts,
)
from selfheal.activities.evidence.base import EvidenceProviders, EvidenceRequest
from selfheal.core.catalog import ServiceCatalog, ServiceSpec
from selfheal.core.settings import EvidenceSettings
from selfheal.domain import Fault
from tests.e2e.peers import Alertmanager, run_alertmanager
from tests.support import free_port

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Shop:
    checkout: str
    payments: str
    ledger: str
    catalog: ServiceCatalog


def shop() -> Shop:
    suffix = uuid.uuid4().hex[:6]
    checkout, payments, ledger = (f"{n}-{suffix}" for n in ("checkout", "payments", "ledger"))
    catalog = ServiceCatalog(
        services=[
            ServiceSpec(name=checkout, depends_on=[payments]),
            ServiceSpec(name=payments, depends_on=[ledger]),
            ServiceSpec(name=ledger),
        ]
    )
    return Shop(checkout, payments, ledger, catalog)


def request_for(s: Shop, fault: Fault | None = None) -> EvidenceRequest:
    fault = fault or Fault(service=s.checkout, type="ErrorRateHigh")
    return EvidenceRequest(
        fault=fault,
        at=fault.detected_at,
        window_before_s=900,
        window_after_s=120,
        service=s.catalog.get(s.checkout),
        catalog=s.catalog,
    )


def alert(name: str, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} is firing"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    # notifications go nowhere (a closed port): only the API matters here
    webhook = f"http://127.0.0.1:{free_port()}/v1/alertmanager"
    with run_alertmanager(tmp_path_factory.mktemp("am"), webhook_url=webhook, token="t") as peer:
        yield peer


@pytest.fixture(scope="module")
def incident(alertmanager: Alertmanager) -> Shop:
    """checkout's own alert (the fault) and a latency alert; payments down (named by ``job``);
    ledger's alert silenced; an unrelated service's alert."""
    s = shop()
    alerts = [
        alert("ErrorRateHigh", service=s.checkout, severity="critical"),
        alert("LatencyHigh", service=s.checkout, severity="warning"),
        alert("PaymentsDown", job=s.payments, severity="critical"),
        alert("LedgerSlow", service=s.ledger, severity="warning"),
        alert("Elsewhere", service=f"other-{uuid.uuid4().hex[:6]}"),
    ]
    httpx.post(f"{alertmanager.url}/api/v2/alerts", json=alerts, timeout=5).raise_for_status()
    now = datetime.now(UTC)
    silence = {
        "matchers": [{"name": "service", "value": s.ledger, "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test",
        "comment": "ledger maintenance",
    }
    httpx.post(f"{alertmanager.url}/api/v2/silences", json=silence, timeout=5).raise_for_status()
    return s


async def test_firing_alerts_of_the_service_and_its_dependencies(
    alertmanager: Alertmanager, incident: Shop
) -> None:
    s = incident
    async with httpx.AsyncClient() as http:
        provider = AlertsProvider(http, alertmanager.url)
        gathered = await provider.gather(request_for(s))
    facts = gathered.facts
    assert facts["alerts.firing"] == 1
    assert facts["alerts.names"] == ["LatencyHigh"]
    assert facts["alerts.LatencyHigh"] is True
    assert "alerts.ErrorRateHigh" not in facts  # the fault's own alert is not evidence
    assert facts["deps.alerts.firing"] == 1
    assert facts["deps.alerts.services"] == [s.payments]  # ledger's alert is silenced
    findings = {f.component: f for f in gathered.findings}
    assert set(findings) == {s.checkout, s.payments}
    assert findings[s.payments].kind == "alert_firing"
    assert findings[s.payments].strength > findings[s.checkout].strength  # critical > warning
    assert "PaymentsDown" in findings[s.payments].detail


async def test_the_own_alert_is_recognised_by_its_fingerprint(
    alertmanager: Alertmanager, incident: Shop
) -> None:
    """A fault raised by LatencyHigh (its fingerprint, bound to a target) leaves LatencyHigh out
    and counts ErrorRateHigh instead."""
    s = incident
    listed = alertmanager.alerts()
    latency = next(
        a for a in listed if a["labels"] == {"alertname": "LatencyHigh", "service": s.checkout,
                                             "severity": "warning"}
    )  # fmt: skip
    fault = Fault(
        service=s.checkout, type="slow", fingerprint=f"{latency['fingerprint']}-checkout-pod"
    )
    async with httpx.AsyncClient() as http:
        gathered = await AlertsProvider(http, alertmanager.url).gather(request_for(s, fault))
    assert gathered.facts["alerts.names"] == ["ErrorRateHigh"]


async def test_bounds_on_bytes_and_alerts(alertmanager: Alertmanager, incident: Shop) -> None:
    async with httpx.AsyncClient() as http:
        small = AlertsProvider(http, alertmanager.url, max_bytes=100)
        collected = await EvidenceProviders([small]).collect(request_for(incident), ["alerts"])
        assert [m.source for m in collected.missing] == ["alerts"]
        assert "over 100 bytes" in collected.missing[0].reason
        few = AlertsProvider(http, alertmanager.url, max_alerts=1)
        assert len(await few.firing()) <= 1
        assert len(await AlertsProvider(http, alertmanager.url).firing()) >= 3


async def test_an_unreachable_alertmanager_is_missing_evidence(incident: Shop) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with httpx.AsyncClient() as http:
        provider = alerts_provider(EvidenceSettings(alertmanager_url=closed, timeout_s=2), http)
        assert provider is not None
        collected = await EvidenceProviders([provider]).collect(request_for(incident), ["alerts"])
        assert alerts_provider(EvidenceSettings(), http) is None
    assert collected.facts == {}
    assert [m.source for m in collected.missing] == ["alerts"]
    assert "ConnectError" in collected.missing[0].reason


# --- pure --------------------------------------------------------------------------------------


def test_parse_keeps_alerts_that_name_a_service() -> None:
    payload = [
        {"labels": {"alertname": "A", "service": "s"}, "fingerprint": "f1"},
        {"labels": {"alertname": "B", "job": "j", "severity": "critical"}},
        {"labels": {"alertname": "C"}},  # no service: whose would it be?
        {"labels": {"service": "s"}},  # no name
        "garbage",
    ]
    parsed = parse_alerts(payload)
    assert [(a.name, a.service, a.severity) for a in parsed] == [
        ("A", "s", ""),
        ("B", "j", "critical"),
    ]
    with pytest.raises(AlertmanagerError, match="expected a JSON list"):
        parse_alerts({"alerts": []})


def test_nothing_firing_is_observed_as_zero() -> None:
    fault = Fault(service="s", type="t")
    gathered = assess([], fault=fault, dependencies=["d"])
    assert gathered.facts == {
        "alerts.firing": 0,
        "alerts.names": [],
        "deps.alerts.firing": 0,
        "deps.alerts.services": [],
    }
    assert gathered.findings == []


def test_own_alert_by_name_or_fingerprint() -> None:
    fault = Fault(service="s", type="Down", fingerprint="abc123-pod-1")
    assert is_own(Alert("Down", "s", "zzz", "", ""), fault)
    assert is_own(Alert("Other", "s", "abc123", "", ""), fault)
    assert not is_own(Alert("Down", "d", "zzz", "", ""), fault)  # a dependency's Down
    assert not is_own(Alert("Other", "s", "abc", "", ""), fault)
