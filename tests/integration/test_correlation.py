"""Correlation on the real Temporal dev server: a symptom of a service whose dependency is being
healed joins that healing; anything else gets a healing of its own, one per fault.

Healings wait for approval (stand-in diagnosis of confidence 0.5) so they stay running. Service
names carry a per-test suffix: visibility queries see every healing of the session's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from selfheal.cli.render import timeline
from selfheal.core.catalog import ServiceCatalog, resolve_fault
from selfheal.domain import Fault, HealingStatus, IntakeError
from selfheal.healings.correlation import RouteResult, dependency_query, route_fault
from selfheal.worker import workflow_runner
from selfheal.workflows.healing import HealingWorkflow
from tests.integration.standins import Scenario

pytestmark = pytest.mark.integration

WINDOW_S = 300.0


class Shop:
    """A catalog web -> checkout -> db, plus search (no dependencies), named for one test."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.db, self.checkout, self.web, self.search = (
            f"{name}-{suffix}" for name in ("db", "checkout", "web", "search")
        )
        self.catalog = ServiceCatalog.model_validate(
            {
                "correlation_window_s": WINDOW_S,
                "services": [
                    service(self.db),
                    service(self.checkout, depends_on=[self.db]),
                    service(self.web, depends_on=[self.checkout]),
                    service(self.search),
                ],
            }
        )

    def fault(self, service: str, fault_type: str = "errors_high", **fields: object) -> Fault:
        return Fault.model_validate({"service": service, "type": fault_type} | fields)


def service(name: str, depends_on: list[str] | None = None) -> dict[str, object]:
    return {
        "name": name,
        "depends_on": depends_on or [],
        "targets": [
            {"name": f"{name}-main", "kind": "http", "base_url": f"http://{name}.internal"}
        ],
    }


class Router:
    """The door's path for one fault (``admit`` through the catalog, then ``route_fault``) on
    this test's task queue, with a clock; remembers what it routed, to clean up."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue
        self.routed: set[str] = set()

    async def __call__(
        self, fault: Fault, catalog: ServiceCatalog, *, now: datetime | None = None
    ) -> RouteResult:
        admitted = resolve_fault(fault, catalog)
        result = await route_fault(
            self.client, admitted, catalog, task_queue=self.task_queue, now=now
        )
        self.routed.add(result.workflow_id)
        return result


@pytest_asyncio.fixture
async def route(client: Client, task_queue: str) -> AsyncIterator[Router]:
    """A router with a worker running; terminates every healing it routed to."""
    router = Router(client, task_queue)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[HealingWorkflow],
        activities=Scenario(confidence=0.5).activities(),
        workflow_runner=workflow_runner(),
    ):
        try:
            yield router
        finally:
            for workflow_id in router.routed:
                with contextlib.suppress(RPCError):  # already ended
                    await client.get_workflow_handle(workflow_id).terminate("test over")


async def visible(client: Client, services: list[str], within_s: float = 10) -> None:
    """Wait until a running healing of one of ``services`` is listed: visibility lags."""
    query = dependency_query(services, datetime.now(UTC) - timedelta(seconds=WINDOW_S))
    deadline = asyncio.get_running_loop().time() + within_s
    while not [e async for e in client.list_workflows(query)]:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no running healing of {services} became visible")
        await asyncio.sleep(0.05)


async def status_of(
    client: Client, workflow_id: str, ready: Callable[[HealingStatus], bool]
) -> HealingStatus:
    handle = client.get_workflow_handle(workflow_id, result_type=HealingStatus)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        status: HealingStatus = await handle.query("status", result_type=HealingStatus)
        if ready(status) or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.1)


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_symptom_of_a_dependency_joins_its_healing(client: Client, route: Router) -> None:
    shop = Shop()
    root = await route(shop.fault(shop.db, "connections_exhausted"), shop.catalog)
    assert root.kind == "started"
    await visible(client, [shop.db])

    symptom = await route(
        shop.fault(shop.checkout, labels={"base_url": "http://evil"}), shop.catalog
    )
    assert symptom.kind == "joined_as_symptom"
    assert symptom.workflow_id == root.workflow_id
    assert symptom.run_id == root.run_id
    assert shop.db in symptom.reason
    # Indirect dependencies count too: web -> checkout -> db.
    transitive = await route(shop.fault(shop.web), shop.catalog)
    assert transitive.kind == "joined_as_symptom"
    assert transitive.workflow_id == root.workflow_id

    status = await status_of(client, root.workflow_id, lambda s: len(s.secondary_faults) == 2)
    assert [f.service for f in status.secondary_faults] == [shop.checkout, shop.web]
    joined = status.secondary_faults[0]
    assert joined.target == f"{shop.checkout}-main"
    assert joined.labels["base_url"] == f"http://{shop.checkout}.internal"
    assert status.fault.service == shop.db
    # `selfheal show` lists them under the primary fault.
    shown = [(e.what, e.detail) for e in timeline(status) if e.what == "secondary symptom"]
    assert shown == [
        ("secondary symptom", f"errors_high on {shop.checkout} (target {shop.checkout}-main)"),
        ("secondary symptom", f"errors_high on {shop.web} (target {shop.web}-main)"),
    ]
    # No healing of its own for either symptom.
    assert not await exists(client, symptom.fault.workflow_id)
    assert not await exists(client, transitive.fault.workflow_id)


async def test_outside_the_window_a_symptom_heals_on_its_own(client: Client, route: Router) -> None:
    shop = Shop()
    root = await route(shop.fault(shop.db), shop.catalog)
    await visible(client, [shop.db])

    later = datetime.now(UTC) + timedelta(seconds=WINDOW_S + 5)
    own = await route(shop.fault(shop.checkout), shop.catalog, now=later)
    assert own.kind == "started"
    assert own.workflow_id == own.fault.workflow_id != root.workflow_id
    assert "no healing of" in own.reason
    status = await status_of(client, root.workflow_id, lambda s: s.occurrences >= 1)
    assert status.secondary_faults == []


async def test_no_dependency_means_a_healing_of_its_own(client: Client, route: Router) -> None:
    shop = Shop()
    root = await route(shop.fault(shop.db), shop.catalog)
    await visible(client, [shop.db])

    unrelated = await route(shop.fault(shop.search), shop.catalog)
    same_service = await route(shop.fault(shop.db, "disk_full"), shop.catalog)
    for result in (unrelated, same_service):
        assert result.kind == "started"
        assert result.workflow_id == result.fault.workflow_id
    assert len({root.workflow_id, unrelated.workflow_id, same_service.workflow_id}) == 3
    assert "depends on no service" in unrelated.reason


async def test_same_fault_twice_is_one_healing(client: Client, route: Router) -> None:
    shop = Shop()
    fault = shop.fault(shop.search, fingerprint="0a1b2c3d4e5f6789")
    first = await route(fault, shop.catalog)
    second = await route(fault, shop.catalog)
    assert (first.kind, second.kind) == ("started", "attached")
    assert first.workflow_id == second.workflow_id == f"heal-0a1b2c3d4e5f6789-{shop.search}-main"
    assert first.run_id == second.run_id
    status = await status_of(client, first.workflow_id, lambda s: s.occurrences == 2)
    assert status.occurrences == 2


async def test_a_running_healing_of_its_own_wins_over_correlation(
    client: Client, route: Router
) -> None:
    shop = Shop()
    own = await route(shop.fault(shop.checkout), shop.catalog)
    assert own.kind == "started"
    root = await route(shop.fault(shop.db), shop.catalog)
    await visible(client, [shop.db])

    repeat = await route(shop.fault(shop.checkout), shop.catalog)
    assert repeat.kind == "attached"
    assert repeat.workflow_id == own.workflow_id
    status = await status_of(client, root.workflow_id, lambda s: s.occurrences >= 1)
    assert status.secondary_faults == []


async def test_refused_faults_start_nothing(client: Client, route: Router) -> None:
    shop = Shop()
    outside = shop.fault(shop.checkout, target="prod-db")
    with pytest.raises(IntakeError, match="'prod-db' is not a target of service"):
        await route(outside, shop.catalog)
    unknown = shop.fault("payments")
    with pytest.raises(IntakeError, match="unknown service 'payments'"):
        await route(unknown, shop.catalog)
    assert not await exists(client, outside.workflow_id)
    assert not await exists(client, unknown.workflow_id)
