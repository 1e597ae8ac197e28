"""Temporal's half of the door: start a healing or signal the running one, tell it its fault is
over. Nothing here resolves a fault through the catalog: call these through ``Healings`` (the
door), except in tests of the workflow itself.

Every report is delivered as a ``fault_update`` signal of kind ``fired`` through
signal-with-start, so the healing counts each report and a second report of a running fault
never starts a second healing (id conflict policy USE_EXISTING). Once a healing has ended, the
same fault may start a new one (id reuse ALLOW_DUPLICATE); loop protection is the cooldown's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from selfheal.domain import Fault, FaultUpdate, HealingInput, HealingStatus
from selfheal.workflows.contract import (
    FAULT_SERVICE,
    FAULT_TYPE,
    PHASE,
    SIGNAL_FAULT_UPDATE,
    TASK_QUEUE,
)
from selfheal.workflows.healing import HealingWorkflow


@dataclass(frozen=True)
class Started:
    workflow_id: str
    run_id: str | None


def initial_search_attributes(fault: Fault) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(PHASE, "diagnosing"),
            SearchAttributePair(FAULT_SERVICE, fault.service),
            SearchAttributePair(FAULT_TYPE, fault.type),
        ]
    )


async def start_healing(
    client: Client,
    fault: Fault,
    *,
    task_queue: str = TASK_QUEUE,
    dry_run: bool = False,
    require_approval: bool = False,
    count: int = 1,
    rpc_timeout: timedelta | None = None,
) -> Started:
    """Start the healing of ``fault`` or signal the running one; durable when this returns.

    ``count`` reports of the fault travel in this one call (an intake folds repeats)."""
    handle: WorkflowHandle[HealingWorkflow, HealingStatus] = await client.start_workflow(
        HealingWorkflow.run,
        HealingInput(fault=fault, dry_run=dry_run, require_approval=require_approval),
        id=fault.workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=SIGNAL_FAULT_UPDATE,
        start_signal_args=[
            FaultUpdate(kind="fired", count=count, fault=fault, at=fault.detected_at)
        ],
        search_attributes=initial_search_attributes(fault),
        rpc_timeout=rpc_timeout,
    )
    return Started(workflow_id=handle.id, run_id=handle.result_run_id)


async def report_resolved(client: Client, fault: Fault, note: str = "") -> None:
    """Tell the running healing of ``fault`` that its source says it is over."""
    handle = client.get_workflow_handle_for(HealingWorkflow.run, fault.workflow_id)
    await handle.signal(
        HealingWorkflow.fault_update, FaultUpdate(kind="resolved", fault=fault, note=note)
    )
