"""From a Fault to its healing: start it, or attach to the one already running.

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
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from selfheal.domain import Fault, FaultUpdate, HealingInput, HealingStatus
from selfheal.workflows.contract import TASK_QUEUE, WORKFLOW_TYPE

FAULT_UPDATE_SIGNAL = "fault_update"


@dataclass(frozen=True)
class Started:
    workflow_id: str
    run_id: str | None
    started: bool = True  # False: the report was counted on the running healing


def initial_search_attributes(fault: Fault) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword("HealingPhase"), "diagnosing"),
            SearchAttributePair(SearchAttributeKey.for_keyword("FaultService"), fault.service),
            SearchAttributePair(SearchAttributeKey.for_keyword("FaultType"), fault.type),
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
    handle: WorkflowHandle[object, HealingStatus] = await client.start_workflow(
        WORKFLOW_TYPE,
        HealingInput(fault=fault, dry_run=dry_run, require_approval=require_approval),
        id=fault.workflow_id,
        task_queue=task_queue,
        result_type=HealingStatus,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=FAULT_UPDATE_SIGNAL,
        start_signal_args=[
            FaultUpdate(kind="fired", count=count, fault=fault, at=fault.detected_at)
        ],
        search_attributes=initial_search_attributes(fault),
        rpc_timeout=rpc_timeout,
    )
    return Started(workflow_id=handle.id, run_id=handle.result_run_id, started=_was_started(handle))


def _was_started(handle: WorkflowHandle[object, HealingStatus]) -> bool:
    # The server's answer to signal-with-start says whether it started a run or signalled the
    # running one; the SDK keeps it on the handle without a public accessor.
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


async def report_resolved(client: Client, fault: Fault, note: str = "") -> None:
    """Tell the running healing of ``fault`` that its source says it is over."""
    handle = client.get_workflow_handle(fault.workflow_id)
    await handle.signal(FAULT_UPDATE_SIGNAL, FaultUpdate(kind="resolved", fault=fault, note=note))
