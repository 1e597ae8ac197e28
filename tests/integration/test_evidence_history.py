"""The history provider and the learning counts against a real Postgres ``healings`` table.

Rows are written as the knowledge base records them when a healing ends (the columns that
matter here: service, fault type, root cause, rule, confirmed, evidence kinds, dry run, start).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.evidence.base import EvidenceProviders, EvidenceRequest
from selfheal.activities.evidence.history import (
    ConfirmedCounts,
    HistoryProvider,
    confirmed_counts,
    history_provider,
)
from selfheal.core.catalog import ServiceCatalog
from selfheal.devstack.processes import free_port
from selfheal.domain import Fault
from selfheal.models import HealingRow
from tests.support import scratch_database, sessions

pytestmark = pytest.mark.integration

AT = datetime.now(UTC).replace(microsecond=0)
FAULT_TYPE = "health_check_failed"


@pytest.fixture(scope="module")
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(database_url) as made:
        yield made


def insert(factory: sessionmaker[Session], *rows: dict[str, Any]) -> None:
    with factory() as session, session.begin():
        for values in rows:
            session.add(HealingRow(**values))


def healing(
    service: str,
    root_cause: str | None,
    *,
    confirmed: bool | None,
    ago_s: float = 3600,
    fault_type: str = FAULT_TYPE,
    rule: str | None = None,
    kinds: list[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    workflow_id = f"heal-{uuid.uuid4().hex[:12]}"
    return {
        "workflow_id": workflow_id,
        "run_id": uuid.uuid4().hex,
        "fault_fingerprint": workflow_id[5:],
        "fault_service": service,
        "fault_type": fault_type,
        "fault": {"service": service, "type": fault_type},
        "diagnosis": None,
        "root_cause": root_cause,
        "confidence": 0.8,
        "solutions_tried": [],
        "approval_required": False,
        "outcome": "healed" if confirmed else "failed",
        "dry_run": dry_run,
        "started_at": AT - timedelta(seconds=ago_s),
        "rule": rule,
        "component": service,
        "confirmed": confirmed,
        "evidence_kinds": kinds or [],
    }


def request(service: str) -> EvidenceRequest:
    return EvidenceRequest(
        fault=Fault(service=service, type=FAULT_TYPE),
        at=AT,
        window_before_s=900,
        window_after_s=120,
        service=None,
        catalog=ServiceCatalog(),
    )


async def test_past_healings_of_the_service_and_fault_type(
    factory: sessionmaker[Session],
) -> None:
    shop = f"shop-{uuid.uuid4().hex[:6]}"
    insert(
        factory,
        healing(shop, "memory_leak", confirmed=True, ago_s=100),
        healing(shop, "memory_leak", confirmed=True, ago_s=200),
        healing(shop, "bad_deploy", confirmed=True, ago_s=300),
        healing(shop, "memory_leak", confirmed=True, ago_s=400),
        healing(shop, "memory_leak", confirmed=False, ago_s=500),
        healing(shop, "unknown", confirmed=None, ago_s=600),
        # not counted: a dry run, too old, after the fault, another type, another service
        healing(shop, "bad_deploy", confirmed=True, dry_run=True),
        healing(shop, "bad_deploy", confirmed=True, ago_s=40 * 86400),
        healing(shop, "bad_deploy", confirmed=True, ago_s=-60),
        healing(shop, "bad_deploy", confirmed=True, fault_type="latency_high"),
        healing(f"{shop}-other", "bad_deploy", confirmed=True),
    )
    gathered = await history_provider(factory).gather(request(shop))
    assert gathered.facts == {
        "history.healings": 6,
        "history.confirmed.memory_leak": 3,
        "history.confirmed.bad_deploy": 1,
        "history.top": "memory_leak",
    }
    [finding] = gathered.findings
    assert (finding.source, finding.kind, finding.component) == (
        "history",
        "history_root_cause",
        shop,
    )
    assert finding.strength == 0.6  # 3 confirmed of 5 judged
    assert finding.facts == {"root_cause": "memory_leak", "confirmed": 3, "judged": 5}

    # Bounded: the newest three only, or those within the age.
    newest = await HistoryProvider(factory, limit=3).gather(request(shop))
    assert newest.facts["history.healings"] == 3
    assert newest.facts["history.confirmed.memory_leak"] == 2
    narrower = await HistoryProvider(factory, max_age_s=250).gather(request(shop))
    assert narrower.facts["history.healings"] == 2


async def test_no_history_is_a_count_of_zero_and_no_finding(
    factory: sessionmaker[Session],
) -> None:
    never = f"new-{uuid.uuid4().hex[:6]}"
    insert(factory, healing(never, "memory_leak", confirmed=False))
    gathered = await history_provider(factory).gather(request(never))
    assert gathered.facts == {"history.healings": 1}
    assert gathered.findings == []


async def test_an_unreachable_database_is_missing_evidence() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    with sessions(url) as unreachable:
        providers = EvidenceProviders([history_provider(unreachable)], timeout_s=10)
        collected = await providers.collect(request("shop"), ["history"])
    [missing] = collected.missing
    assert missing.source == "history"
    assert "cannot read the past healings of shop" in missing.reason
    assert collected.facts == {}


def test_confirmed_counts_for_learning(postgres_admin_url: str) -> None:
    with scratch_database(postgres_admin_url, "selfheal_hist") as url, sessions(url) as factory:
        assert confirmed_counts(factory) == ConfirmedCounts()
        insert(
            factory,
            healing("a", "memory_leak", confirmed=True, rule="oom", kinds=["oom_killed"] * 2),
            healing(
                "b",
                "memory_leak",
                confirmed=True,
                rule="oom",
                kinds=["oom_killed", "crash_loop"],
            ),
            healing("a", "bad_deploy", confirmed=False, rule="oom", kinds=["oom_killed"]),
            healing("c", "bad_deploy", confirmed=True, rule="rollout", kinds=["recent_rollout"]),
            healing("c", "bad_deploy", confirmed=None, rule="rollout", kinds=["recent_rollout"]),
            healing("c", "bad_deploy", confirmed=True, rule="rollout", dry_run=True),
        )
        counts = confirmed_counts(factory)
        assert counts.judged == 4
        assert counts.rules == {"oom": (2, 3), "rollout": (1, 1)}
        assert counts.root_causes == {"memory_leak": 2, "bad_deploy": 1}
        assert counts.kinds == {
            ("memory_leak", "oom_killed"): 2,
            ("memory_leak", "crash_loop"): 1,
            ("bad_deploy", "recent_rollout"): 1,
        }
        only_oom = confirmed_counts(factory, rule="oom")
        assert only_oom.rules == {"oom": (2, 3)}
        assert only_oom.root_causes == {"memory_leak": 2}
        assert confirmed_counts(factory, limit=1).judged == 1
