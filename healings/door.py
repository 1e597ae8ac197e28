"""The door: the one client that starts, signals, lists, shows and decides healings.

Every way a fault comes in (the HTTP intake's Alertmanager, OTLP, heartbeat and fault endpoints,
``selfheal fault submit``, the health watcher, the benches) goes through ``Healings.report``, and
every approval or rejection (HTTP, CLI, ``selfheal dev --auto-approve``) through
``Healings.decide``. So the safety rules hold whatever the door:

1. ``admit``: the fault is resolved through the service catalog (an unknown service or a target
   the service does not declare is refused with the reason, before anything is started); where
   to act (target, health URL, metric, ``base_url``, ``namespace``, internal labels such as
   ``cache_prefix``) comes from the catalog only, never from the report.
2. Concurrent reports of one fault fold into one Temporal call carrying their count: at most
   one call per fingerprint per ``flush_interval_s`` (a report waits at most that long).
3. A fault whose own healing is not running joins the running healing of a service it depends
   on, within the catalog's correlation window; else it starts (or attaches to) its own.

Temporal's failures come out as selfheal's errors (``core.temporal``): ``TemporalUnavailable``,
``TemporalRefused``, ``HealingNotFound``, ``DecisionRefused``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from datetime import timedelta
from typing import Literal

import structlog
from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)

from selfheal.core.catalog import ServiceCatalog, load_services, resolve_fault
from selfheal.core.settings import Settings
from selfheal.core.temporal import connect, temporal_errors
from selfheal.domain import (
    Approval,
    ApprovalDecision,
    ConfigError,
    Fault,
    HealingStatus,
    IntakeError,
)
from selfheal.domain.errors import (
    DecisionRefused,
    HealingError,
    HealingNotFound,
    TemporalUnavailable,
)
from selfheal.healings.coalesce import Coalescer, Joined
from selfheal.healings.correlation import RouteResult, route_fault
from selfheal.healings.queries import (
    WORKER_ANSWER_TIMEOUT,
    HealingRow,
    describe_healing,
    fetch_status,
    healing_row,
    query_status,
    update_failure_message,
    visibility_query,
)
from selfheal.healings.start import report_resolved
from selfheal.workflows.contract import TASK_QUEUE
from selfheal.workflows.healing import HealingWorkflow

log = structlog.get_logger(__name__)

Verdict = Literal["approve", "reject"]


class Report(BaseModel):
    """Where one report went, once it is durable."""

    kind: Literal["started", "attached", "joined_as_symptom"]
    workflow_id: str
    run_id: str | None = None
    reason: str = ""
    fault: Fault = Field(description="the fault as the catalog resolved it")
    coalesced: bool = Field(
        default=False, description="this report rode on a Temporal call made for another one"
    )

    @property
    def started(self) -> bool:
        """This report started the healing (not one folded into another's call)."""
        return self.kind == "started" and not self.coalesced


class _Routing(BaseModel):
    fault: Fault
    dry_run: bool
    require_approval: bool

    @property
    def key(self) -> Hashable:
        """Reports fold by this: the same healing, with the same flags."""
        return (self.fault.workflow_id, self.dry_run, self.require_approval)


class Healings:
    """The door (see the module's docstring). One per process: it folds that process's
    concurrent reports; processes share nothing but Temporal."""

    def __init__(
        self,
        client: Client,
        catalog: ServiceCatalog | None,
        *,
        task_queue: str = TASK_QUEUE,
        rpc_timeout_s: float = 10.0,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.client = client
        self._catalog = catalog
        self.task_queue = task_queue
        self.rpc_timeout = timedelta(seconds=rpc_timeout_s)
        self._flush_interval_s = flush_interval_s
        self._coalescer: Coalescer[_Routing, RouteResult] = Coalescer(
            self._route, interval_s=flush_interval_s
        )

    @classmethod
    async def connect(cls, settings: Settings, *, with_catalog: bool = True) -> Healings:
        """The door of a process: a client of ``settings.temporal`` and, unless the process only
        reads and decides, the catalog of ``settings.runbooks_dir``. ``ConfigError`` for a
        catalog that does not load, ``TemporalUnavailable`` when Temporal does not answer."""
        catalog = load_services(settings.runbooks_dir / "services.yaml") if with_catalog else None
        client = await connect(settings.temporal, tracing=False)
        return cls(
            client,
            catalog,
            task_queue=settings.temporal.task_queue,
            flush_interval_s=settings.intake.flush_interval_s,
        )

    @property
    def catalog(self) -> ServiceCatalog:
        if self._catalog is None:
            raise ConfigError("this door was opened without a service catalog: it reports nothing")
        return self._catalog

    # -------------------------------------------------------------------------------- faults

    def admit(self, fault: Fault) -> Fault:
        """The fault as it will be healed: resolved through the catalog, internal labels only
        from there. ``IntakeError`` (with the reason) when the catalog refuses it."""
        return resolve_fault(fault, self.catalog)

    async def report(
        self,
        fault: Fault,
        *,
        dry_run: bool = False,
        require_approval: bool = False,
        count: int = 1,
    ) -> Report:
        """Start, attach to or join the healing of ``fault``; returns once that is durable.

        ``dry_run`` (or the fault's own) makes a new healing plan and gate without acting;
        ``require_approval`` (or the fault's own) makes it wait for a human whatever the risk.
        ``count`` reports travel as one. Raises ``IntakeError`` before anything is started when
        the catalog refuses the fault."""
        admitted = self.admit(fault)
        # Flags may only make a healing safer: the report's or the fault's, whichever says so.
        dry_run = dry_run or admitted.dry_run
        require_approval = require_approval or admitted.require_approval
        admitted = admitted.model_copy(
            update={"dry_run": dry_run, "require_approval": require_approval}
        )
        routing = _Routing(fault=admitted, dry_run=dry_run, require_approval=require_approval)
        with temporal_errors(self.client):
            joined: Joined[RouteResult] = await self._coalescer.fire(routing.key, routing, count)
        routed = joined.result
        if not joined.coalesced:  # once per Temporal call, not once per report of a storm
            log.info(
                "fault reported",
                workflow_id=routed.workflow_id,
                fingerprint=admitted.fingerprint,
                kind=routed.kind,
                source=admitted.source,
                reports=count,
            )
        return Report(
            kind=routed.kind,
            workflow_id=routed.workflow_id,
            run_id=routed.run_id,
            reason=routed.reason,
            fault=admitted if routed.kind != "joined_as_symptom" else routed.fault,
            coalesced=joined.coalesced,
        )

    async def _route(self, routing: _Routing, count: int) -> RouteResult:
        routed = await self._route_once(routing, count)
        # A healing that has its outcome only counts repeats: fold them over twice the interval,
        # which halves what a storm adds to its history (each call is a signal and a task).
        slower = 2 * self._flush_interval_s if routed.suppressing else None
        self._coalescer.slow_down(routing.key, slower)
        return routed

    async def _route_once(self, routing: _Routing, count: int) -> RouteResult:
        return await route_fault(
            self.client,
            routing.fault,
            self.catalog,
            task_queue=self.task_queue,
            dry_run=routing.dry_run,
            require_approval=routing.require_approval,
            count=count,
            rpc_timeout=self.rpc_timeout,
        )

    async def resolved(self, fault: Fault, note: str = "") -> bool:
        """Tell the running healing of ``fault`` that its source says it is over. False when
        there is none (it ended, never started, or the catalog refuses the fault)."""
        try:
            admitted = self.admit(fault)
        except IntakeError:
            return False  # a fault the catalog refuses has no healing to tell
        try:
            with temporal_errors(self.client, workflow_id=admitted.workflow_id):
                await report_resolved(self.client, admitted, note=note)
        except HealingNotFound:
            return False
        return True

    # ----------------------------------------------------------------------------- decisions

    async def decide(
        self, workflow_id: str, verdict: Verdict, *, by: str, reason: str = ""
    ) -> Approval:
        """Approve or reject a healing that awaits approval (the workflow's update, which
        validates it: an empty ``by`` or a healing not awaiting approval is refused).

        Raises ``HealingNotFound``, ``DecisionRefused`` (with the workflow's reason), or
        ``TemporalUnavailable`` when no worker answers."""
        handle = self.client.get_workflow_handle_for(HealingWorkflow.run, workflow_id)
        update = HealingWorkflow.approve if verdict == "approve" else HealingWorkflow.reject
        with temporal_errors(self.client, workflow_id=workflow_id):
            description = await describe_healing(handle)
            if description.status != WorkflowExecutionStatus.RUNNING:
                state = description.status.name.lower() if description.status else "closed"
                raise DecisionRefused(
                    f"healing {workflow_id} has already ended ({state}): nothing to {verdict}"
                )
            try:
                return await handle.execute_update(
                    update,
                    ApprovalDecision(by=by, reason=reason),
                    rpc_timeout=WORKER_ANSWER_TIMEOUT,
                )
            except WorkflowUpdateFailedError as exc:
                raise DecisionRefused(f"{verdict} refused: {update_failure_message(exc)}") from None
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                raise TemporalUnavailable(
                    f"no worker answered the {verdict} update of {workflow_id} within "
                    f"{WORKER_ANSWER_TIMEOUT.total_seconds():g}s; is a worker polling task "
                    f"queue {self.task_queue!r}?"
                ) from None

    # ---------------------------------------------------------------------------------- reads

    async def list(self, phase: str | None = None, limit: int = 50) -> list[HealingRow]:
        """Healings, newest first; ``FilterError`` for an unknown phase."""
        query = visibility_query(phase)
        with temporal_errors(self.client):
            return [healing_row(e) async for e in self.client.list_workflows(query, limit=limit)]

    async def show(self, workflow_id: str) -> HealingStatus:
        """One healing's status: the ``status`` query while it runs, its result once ended."""
        with temporal_errors(self.client, workflow_id=workflow_id):
            return await fetch_status(self.client, workflow_id)

    async def outcome(self, workflow_id: str, *, poll_s: float = 0.5) -> HealingStatus:
        """Wait for the healing's outcome; its status then. (The workflow itself may go on
        answering for its fingerprint a while: its result comes only after that.)"""
        handle = self.client.get_workflow_handle_for(HealingWorkflow.run, workflow_id)
        while True:
            with temporal_errors(self.client, workflow_id=workflow_id):
                description = await describe_healing(handle)
                if description.status == WorkflowExecutionStatus.COMPLETED:
                    return await handle.result(follow_runs=False)
            if description.status != WorkflowExecutionStatus.RUNNING:
                state = description.status.name.lower() if description.status else "closed"
                raise HealingError(f"healing {workflow_id} ended without an outcome ({state})")
            try:
                with temporal_errors(self.client, workflow_id=workflow_id):
                    status = await query_status(handle)  # described above: running
            except TemporalUnavailable:
                pass  # not answerable yet (no workflow task ran) or a blip: ask again
            else:
                if status.outcome is not None:
                    return status
            await asyncio.sleep(poll_s)

    async def check_health(self, timeout_s: float = 2.0) -> None:
        """Raises when Temporal does not answer (for readiness checks)."""
        with temporal_errors(self.client):
            await self.client.service_client.check_health(timeout=timedelta(seconds=timeout_s))
