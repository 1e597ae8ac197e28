"""The Temporal Schedules of the forecast rules: one per rule of ``runbooks/forecasts.yaml``,
``forecast-<rule>``, that starts the ``ForecastWorkflow`` every ``rule.every``.

``sync_forecast_schedules(client, rules, task_queue=...)`` makes the Schedules match the rules:

- a rule without its Schedule gets one (created);
- a Schedule whose action or interval differs from its rule is updated in place; its state is
  kept, so a Schedule an operator paused (``temporal schedule toggle --pause``) stays paused;
- a Schedule of ours whose rule is gone is deleted.

*Ours* is a Schedule whose id starts with ``forecast-`` **and** whose action starts a
``ForecastWorkflow``: any other Schedule, whatever its id, is left alone, and a rule whose id is
taken by a Schedule that is not ours is reported (``conflicts``), not overwritten.

Each Schedule starts ``ForecastWorkflow(RunForecastInput(rule=name))`` with workflow id
``forecast-<rule>`` (Temporal appends the scheduled time) on the worker's task queue, every
``every`` (aligned to the epoch, as Temporal's intervals are). Overlap policy SKIP: a forecast
still running when the next is due is not doubled. The catch-up window is one interval: after an
outage of the Temporal server the missed forecasts are not replayed, one is made.

Listing Schedules goes through Temporal's visibility, which can lag behind a create by a moment:
a Schedule created an instant before a sync may be deleted only at the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleListActionStartWorkflow,
    ScheduleListDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from selfheal.core.temporal import temporal_errors
from selfheal.domain.forecast import ForecastRule, ForecastRules, RunForecastInput
from selfheal.workflows.contract import (
    FORECAST_ID_PREFIX,
    FORECAST_WORKFLOW,
    forecast_schedule_id,
)


class ScheduleSync(BaseModel):
    """What a sync did (or, with ``dry_run``, would do), by Schedule id."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    conflicts: list[str] = Field(
        default_factory=list, description="'<id>: why': a rule's id taken by a Schedule not ours"
    )
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def summary(self) -> str:
        """One line: how many of each, e.g. "1 created, 0 updated, 2 unchanged, 0 deleted"."""
        counts = [
            f"{len(self.created)} created",
            f"{len(self.updated)} updated",
            f"{len(self.unchanged)} unchanged",
            f"{len(self.deleted)} deleted",
        ]
        if self.conflicts:
            counts.append(f"{len(self.conflicts)} conflict(s): " + "; ".join(self.conflicts))
        return ", ".join(counts)


class ForecastSchedule(BaseModel):
    """One of our Schedules, as ``selfheal schedules list`` shows it."""

    id: str
    rule: str
    every_s: float | None = Field(description="the interval; None: not an interval Schedule")
    paused: bool
    note: str | None = None
    next_at: datetime | None = None
    last_at: datetime | None = Field(default=None, description="the latest forecast started")
    last_workflow_id: str | None = None


def forecast_schedule(rule: ForecastRule, *, task_queue: str) -> Schedule:
    """The Schedule of ``rule``."""
    every = timedelta(seconds=rule.every_s)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            FORECAST_WORKFLOW,
            RunForecastInput(rule=rule.name),
            id=forecast_schedule_id(rule.name),
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
    )


def is_ours(entry: ScheduleListDescription) -> bool:
    action = entry.schedule.action if entry.schedule is not None else None
    return (
        entry.id.startswith(FORECAST_ID_PREFIX)
        and isinstance(action, ScheduleListActionStartWorkflow)
        and action.workflow == FORECAST_WORKFLOW
    )


async def sync_forecast_schedules(
    client: Client, rules: ForecastRules, *, task_queue: str, dry_run: bool = False
) -> ScheduleSync:
    """Create, update and delete our Schedules so that they match ``rules`` (see the module).
    Temporal unreachable or refusing raises selfheal's ``TemporalUnavailable`` /
    ``TemporalRefused``."""
    result = ScheduleSync(dry_run=dry_run)
    wanted = {forecast_schedule_id(rule.name): rule for rule in rules.forecasts}
    with temporal_errors(client):
        for schedule_id, rule in wanted.items():
            await _put(client, schedule_id, forecast_schedule(rule, task_queue=task_queue), result)
        async for entry in await client.list_schedules():
            if entry.id in wanted or not is_ours(entry):
                continue
            if not dry_run:
                try:
                    await client.get_schedule_handle(entry.id).delete()
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    continue  # deleted meanwhile: nothing left to do
            result.deleted.append(entry.id)
    return result


async def _put(client: Client, schedule_id: str, schedule: Schedule, result: ScheduleSync) -> None:
    """Update ``schedule_id`` to ``schedule`` if it differs; create it if it does not exist."""
    wanted = _shape(schedule, await _encoded_args(client, schedule))
    outcome = "unchanged"

    async def updater(update: ScheduleUpdateInput) -> ScheduleUpdate | None:
        nonlocal outcome
        current = update.description.schedule
        action = current.action
        if not (
            isinstance(action, ScheduleActionStartWorkflow) and action.workflow == FORECAST_WORKFLOW
        ):
            kind = (
                f"workflow {action.workflow}"
                if isinstance(action, ScheduleActionStartWorkflow)
                else type(action).__name__
            )
            outcome = f"conflict: it is not ours (its action: {kind})"
            return None
        if _shape(current, list(action.args)) == wanted:
            return None
        outcome = "updated"
        if result.dry_run:
            return None
        # The operator's pause (and its note) survive an edit of the rule.
        return ScheduleUpdate(
            schedule=Schedule(
                action=schedule.action,
                spec=schedule.spec,
                policy=schedule.policy,
                state=current.state,
            )
        )

    handle = client.get_schedule_handle(schedule_id)
    try:
        await handle.update(updater)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        outcome = "created"
        if not result.dry_run:
            try:
                await client.create_schedule(schedule_id, schedule)
            except ScheduleAlreadyRunningError:
                # created meanwhile (another sync): make it ours on the next sync
                outcome = "conflict: created meanwhile by someone else; sync again"
    if outcome == "created":
        result.created.append(schedule_id)
    elif outcome == "updated":
        result.updated.append(schedule_id)
    elif outcome == "unchanged":
        result.unchanged.append(schedule_id)
    else:
        result.conflicts.append(f"{schedule_id}: {outcome.removeprefix('conflict: ')}")


async def _encoded_args(client: Client, schedule: Schedule) -> list[Any]:
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    return list(await client.data_converter.encode(list(action.args)))


def _shape(schedule: Schedule, args: Sequence[Any]) -> tuple[Any, ...]:
    """What a sync sets, comparable between a Schedule built here and one described (whose
    arguments are payloads)."""
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    spec = schedule.spec
    return (
        action.workflow,
        action.id,
        action.task_queue,
        list(args),
        [(i.every, i.offset or timedelta(0)) for i in spec.intervals],
        list(spec.calendars),
        list(spec.cron_expressions),
        schedule.policy.overlap,
        schedule.policy.catchup_window,
    )


async def list_forecast_schedules(client: Client) -> list[ForecastSchedule]:
    """Our Schedules, by id."""
    found: list[ForecastSchedule] = []
    with temporal_errors(client):
        async for entry in await client.list_schedules():
            if not is_ours(entry) or entry.schedule is None:
                continue
            intervals = entry.schedule.spec.intervals
            recent = entry.info.recent_actions if entry.info is not None else []
            last = max(recent, key=lambda r: r.started_at) if recent else None
            upcoming = entry.info.next_action_times if entry.info is not None else []
            started = getattr(last.action, "workflow_id", None) if last is not None else None
            found.append(
                ForecastSchedule(
                    id=entry.id,
                    rule=entry.id.removeprefix(FORECAST_ID_PREFIX),
                    every_s=intervals[0].every.total_seconds() if len(intervals) == 1 else None,
                    paused=entry.schedule.state.paused,
                    note=entry.schedule.state.note or None,
                    next_at=min(upcoming) if upcoming else None,
                    last_at=last.started_at if last is not None else None,
                    last_workflow_id=started,
                )
            )
    return sorted(found, key=lambda s: s.id)
