"""The Temporal contract of a healing: every name that crosses the wire between the workflow and
its clients (the door, the CLI, the ``temporal`` CLI, the dev stack) and its activities.

One module, imported by the workflow and by every client, so that a name is written once:

- the workflow type, task queue and id scheme;
- the names of its query, signals and updates (clients may also name the handlers by method,
  ``HealingWorkflow.approve``; the names here are for places that only have a string, such as
  ``start_signal`` or the ``temporal`` CLI);
- the search attribute keys, typed.

Pure: importing it does no I/O (the workflow sandbox imports it for every run).
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "selfheal"
WORKFLOW_TYPE = "HealingWorkflow"

QUERY_STATUS = "status"
SIGNAL_FAULT_UPDATE = "fault_update"
UPDATE_APPROVE = "approve"
UPDATE_REJECT = "reject"
# Signals of the same names as the updates exist for clients that cannot send updates.
SIGNAL_APPROVE = UPDATE_APPROVE
SIGNAL_REJECT = UPDATE_REJECT

PHASE = SearchAttributeKey.for_keyword("HealingPhase")
FAULT_SERVICE = SearchAttributeKey.for_keyword("FaultService")
FAULT_TYPE = SearchAttributeKey.for_keyword("FaultType")
ROOT_CAUSE = SearchAttributeKey.for_keyword("RootCause")
RISK_LEVEL = SearchAttributeKey.for_keyword("RiskLevel")
OUTCOME = SearchAttributeKey.for_keyword("HealingOutcome")

SEARCH_ATTRIBUTE_KEYS: tuple[SearchAttributeKey[Any], ...] = (
    PHASE,
    FAULT_SERVICE,
    FAULT_TYPE,
    ROOT_CAUSE,
    RISK_LEVEL,
    OUTCOME,
)
"""Every key a healing sets (all Keyword), registered by ``selfheal dev`` and documented for
real clusters."""

SEARCH_ATTRIBUTES: tuple[str, ...] = tuple(key.name for key in SEARCH_ATTRIBUTE_KEYS)
