"""Route a fault to its healing: its own, or the one already healing a service it depends on.

``route_fault`` takes a fault already resolved through the service catalog (the door's
``admit``), then:

1. If the fault's own healing is running, the report attaches to it (a repeat is counted there).
2. Else, if a healing of a service this one depends on (directly or not) is running and started
   within ``catalog.correlation_window_s``, the fault joins it as a secondary symptom: a
   ``fault_update`` signal of kind ``symptom``. The nearest dependency wins, then the earliest
   healing: the root of a cascade is usually the deepest dependency that broke first, but the
   nearest one is what this service actually calls.
3. Else the fault starts its own healing (or attaches, when a concurrent report started it).

Dependency healings are found with a Temporal visibility query on ``FaultService`` and
``StartTime``. Visibility is eventually consistent: on a real cluster a healing started a moment
ago (about a second with Elasticsearch; the dev server's SQLite store lists it at once in
practice) may not be listed yet, and a symptom reported in that gap starts its own healing. Two
healings then run for one cascade; the guardrails (per-target concurrency, budgets) keep them
from fighting, and a later report of the symptom, once its own healing ended, joins the root's
while that is still within the window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from selfheal.core.catalog import NAME, NAME_RULE, ServiceCatalog
from selfheal.domain import ConfigError, Fault, FaultUpdate
from selfheal.healings.start import start_healing
from selfheal.workflows.contract import FAULT_SERVICE, OUTCOME, TASK_QUEUE, WORKFLOW_TYPE
from selfheal.workflows.healing import HealingWorkflow

_CANDIDATES = 20  # running healings of dependencies within one window: a handful at most


class RouteResult(BaseModel):
    """Where a fault went. ``fault`` is the fault as resolved through the catalog.

    ``attached`` is certain (the run was running before and still is); ``started`` is what the
    first reports of a fault see, including concurrent ones whose start found the healing
    another had just started: the healing is one either way and counts every report.
    """

    kind: Literal["started", "attached", "joined_as_symptom"]
    workflow_id: str
    run_id: str | None = None
    reason: str
    fault: Fault
    suppressing: bool = False  # attached to a healing that already has its outcome


async def route_fault(
    client: Client,
    fault: Fault,
    catalog: ServiceCatalog,
    *,
    task_queue: str = TASK_QUEUE,
    dry_run: bool = False,
    require_approval: bool = False,
    now: datetime | None = None,
    count: int = 1,
    rpc_timeout: timedelta | None = None,
) -> RouteResult:
    """Start, attach to, or join the healing of ``fault`` (resolved); durable when this returns.

    Raises Temporal's ``RPCError`` when Temporal refuses or cannot be reached.
    """
    own_run, has_outcome = await _running_run(client, fault.workflow_id)
    if own_run is None:
        joined = await _join_dependency(client, fault, catalog, now or datetime.now(UTC))
        if joined is not None:
            return joined
    started = await start_healing(
        client,
        fault,
        task_queue=task_queue,
        dry_run=dry_run,
        require_approval=require_approval,
        count=count,
        rpc_timeout=rpc_timeout,
    )
    if own_run is not None and started.run_id == own_run:
        return RouteResult(
            kind="attached",
            workflow_id=started.workflow_id,
            run_id=started.run_id,
            reason=(
                "the healing of this fault has its outcome and answers for it a while: the "
                "report is counted there, nothing starts"
                if has_outcome
                else "the healing of this fault is running: the report is counted there"
            ),
            fault=fault,
            suppressing=has_outcome,
        )
    return RouteResult(
        kind="started",
        workflow_id=started.workflow_id,
        run_id=started.run_id,
        reason=_why_own(fault, catalog),
        fault=fault,
    )


async def _running_run(client: Client, workflow_id: str) -> tuple[str | None, bool]:
    """The running run of ``workflow_id`` (None: none runs), and whether it has its outcome
    (it is in its suppression window)."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None, False
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        return None, False
    return description.run_id, bool(description.typed_search_attributes.get(OUTCOME))


async def _join_dependency(
    client: Client, fault: Fault, catalog: ServiceCatalog, now: datetime
) -> RouteResult | None:
    dependencies = catalog.dependencies(fault.service)
    if not dependencies:
        return None
    query = dependency_query(dependencies, now - timedelta(seconds=catalog.correlation_window_s))
    found = [execution async for execution in client.list_workflows(query, limit=_CANDIDATES)]

    def rank(execution: WorkflowExecution) -> tuple[int, datetime]:
        service = execution.typed_search_attributes.get(FAULT_SERVICE) or ""
        nearness = dependencies.index(service) if service in dependencies else len(dependencies)
        return nearness, execution.start_time

    for execution in sorted(found, key=rank):
        # Bound to the listed run: a healing that ended since the listing must not be revived.
        handle = client.get_workflow_handle_for(
            HealingWorkflow.run, execution.id, run_id=execution.run_id
        )
        try:
            await handle.signal(
                HealingWorkflow.fault_update,
                FaultUpdate(kind="symptom", fault=fault, at=fault.detected_at),
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue
            raise
        service = execution.typed_search_attributes.get(FAULT_SERVICE) or "?"
        age = (now - execution.start_time).total_seconds()
        return RouteResult(
            kind="joined_as_symptom",
            workflow_id=execution.id,
            run_id=execution.run_id,
            reason=(
                f"{fault.service} depends on {service}, whose healing started {age:.0f}s ago "
                f"(correlation window {catalog.correlation_window_s:g}s)"
            ),
            fault=fault,
        )
    return None


def dependency_query(services: list[str], since: datetime) -> str:
    """Running healings of ``services`` started after ``since`` (a visibility query)."""
    for name in services:
        if not NAME.match(name):
            # Quoted into the query below: a stray quote would change its meaning.
            raise ConfigError(f"service name {name!r} cannot be queried: expected {NAME_RULE}")
    names = ", ".join(f"'{name}'" for name in services)
    return (
        f"WorkflowType='{WORKFLOW_TYPE}' AND ExecutionStatus='Running' "
        f"AND FaultService IN ({names}) AND StartTime > '{since.astimezone(UTC).isoformat()}'"
    )


def _why_own(fault: Fault, catalog: ServiceCatalog) -> str:
    dependencies = catalog.dependencies(fault.service)
    if not dependencies:
        return f"{fault.service} depends on no service: a healing of its own"
    return (
        f"no healing of {', '.join(dependencies)} started within the last "
        f"{catalog.correlation_window_s:g}s: a healing of its own"
    )
