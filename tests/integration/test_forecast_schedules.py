"""The forecast rules' Temporal Schedules on the real dev server: created from the rules, updated
in place when a rule changes (a paused one stays paused), deleted when a rule goes, and every
Schedule that is not ours left alone. Nothing waits for a Schedule to fire."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
)
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner, Result

from selfheal.cli.main import app
from selfheal.core.settings import get_settings
from selfheal.domain.forecast import ForecastRule, ForecastRules, RunForecastInput
from selfheal.healings.schedules import list_forecast_schedules, sync_forecast_schedules
from selfheal.workflows.contract import FORECAST_WORKFLOW, forecast_schedule_id

pytestmark = pytest.mark.integration

VISIBLE_WITHIN_S = 15.0


def rule(name: str, every: str = "1h") -> ForecastRule:
    return ForecastRule(
        name=name, service="db", kind="disk_fill", metric="disk_used", threshold=90, every=every
    )


def rules(*items: ForecastRule) -> ForecastRules:
    return ForecastRules(forecasts=list(items))


@pytest_asyncio.fixture
async def names(client: Client) -> AsyncIterator[list[str]]:
    """Rule names for this test; whatever Schedules of theirs are left are deleted after it."""
    suffix = uuid.uuid4().hex[:8]
    made = [f"{n}-{suffix}" for n in ("disk", "memory", "queue")]
    yield made
    for schedule_id in [forecast_schedule_id(n) for n in made] + [f"other-{suffix}"]:
        try:
            await client.get_schedule_handle(schedule_id).delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise


async def listed(client: Client, *ids: str) -> None:
    """Wait until visibility lists ``ids`` (it may lag behind a create)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + VISIBLE_WITHIN_S
    while True:
        seen = {entry.id async for entry in await client.list_schedules()}
        if set(ids) <= seen:
            return
        assert loop.time() < deadline, f"not listed within {VISIBLE_WITHIN_S}s: {set(ids) - seen}"
        await asyncio.sleep(0.2)


async def exists(client: Client, schedule_id: str) -> bool:
    try:
        await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_rules_become_schedules_and_an_edited_rule_updates_its_own(
    client: Client, names: list[str], task_queue: str
) -> None:
    disk, memory, _ = names
    first = await sync_forecast_schedules(
        client, rules(rule(disk), rule(memory, "30m")), task_queue=task_queue
    )
    assert sorted(first.created) == sorted([f"forecast-{disk}", f"forecast-{memory}"])
    assert first.updated == first.deleted == first.unchanged == first.conflicts == []

    described = await client.get_schedule_handle(f"forecast-{disk}").describe()
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.id, action.task_queue) == (
        FORECAST_WORKFLOW,
        f"forecast-{disk}",
        task_queue,
    )
    [payload] = action.args
    [decoded] = await client.data_converter.decode([payload], [RunForecastInput])
    assert decoded == RunForecastInput(rule=disk)
    assert [i.every for i in described.schedule.spec.intervals] == [timedelta(hours=1)]
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert described.schedule.policy.catchup_window == timedelta(hours=1)

    again = await sync_forecast_schedules(
        client, rules(rule(disk), rule(memory, "30m")), task_queue=task_queue
    )
    assert sorted(again.unchanged) == sorted([f"forecast-{disk}", f"forecast-{memory}"])
    assert again.created == again.updated == again.deleted == []

    # an operator pauses memory's; then both rules change
    await client.get_schedule_handle(f"forecast-{memory}").pause(note="disk swap tonight")
    edited = await sync_forecast_schedules(
        client, rules(rule(disk, "2h"), rule(memory, "45m")), task_queue=task_queue
    )
    assert sorted(edited.updated) == sorted([f"forecast-{disk}", f"forecast-{memory}"])
    assert edited.created == edited.deleted == []

    disk_now = await client.get_schedule_handle(f"forecast-{disk}").describe()
    assert [i.every for i in disk_now.schedule.spec.intervals] == [timedelta(hours=2)]
    assert disk_now.schedule.policy.catchup_window == timedelta(hours=2)
    assert disk_now.info.created_at == described.info.created_at  # updated in place
    memory_now = await client.get_schedule_handle(f"forecast-{memory}").describe()
    assert [i.every for i in memory_now.schedule.spec.intervals] == [timedelta(minutes=45)]
    assert memory_now.schedule.state.paused is True
    assert memory_now.schedule.state.note == "disk swap tonight"

    await listed(client, f"forecast-{disk}", f"forecast-{memory}")
    shown = {s.id: s for s in await list_forecast_schedules(client)}
    assert shown[f"forecast-{disk}"].every_s == 7200 and not shown[f"forecast-{disk}"].paused
    assert shown[f"forecast-{memory}"].rule == memory and shown[f"forecast-{memory}"].paused


async def test_a_removed_rule_is_deleted_and_schedules_not_ours_are_left_alone(
    client: Client, names: list[str], task_queue: str
) -> None:
    disk, memory, queue = names
    suffix = disk.rsplit("-", 1)[1]
    # not ours: a ForecastWorkflow under another id, and forecast-<queue> starting another type
    foreign = [
        (f"other-{suffix}", FORECAST_WORKFLOW, f"other-{suffix}"),
        (f"forecast-{queue}", "Nightly", f"nightly-{suffix}"),
    ]
    for schedule_id, workflow, workflow_id in foreign:
        action = ScheduleActionStartWorkflow(workflow, id=workflow_id, task_queue=task_queue)
        spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))])
        await client.create_schedule(schedule_id, Schedule(action=action, spec=spec))

    await sync_forecast_schedules(client, rules(rule(disk), rule(memory)), task_queue=task_queue)
    await listed(client, f"forecast-{disk}", f"forecast-{memory}", f"other-{suffix}")

    dry = await sync_forecast_schedules(
        client, rules(rule(disk)), task_queue=task_queue, dry_run=True
    )
    assert dry.deleted == [f"forecast-{memory}"] and dry.dry_run
    assert await exists(client, f"forecast-{memory}")

    # queue's rule names a Schedule id that is taken by one that is not ours
    result = await sync_forecast_schedules(
        client, rules(rule(disk), rule(queue)), task_queue=task_queue
    )
    assert result.deleted == [f"forecast-{memory}"]
    assert result.unchanged == [f"forecast-{disk}"]
    assert result.conflicts == [f"forecast-{queue}: it is not ours (its action: workflow Nightly)"]
    assert not await exists(client, f"forecast-{memory}")
    for schedule_id, workflow, workflow_id in foreign:
        described = await client.get_schedule_handle(schedule_id).describe()
        kept = described.schedule.action
        assert isinstance(kept, ScheduleActionStartWorkflow)
        assert (kept.workflow, kept.id) == (workflow, workflow_id)


async def test_a_dry_run_creates_nothing(client: Client, names: list[str], task_queue: str) -> None:
    disk = names[0]
    result = await sync_forecast_schedules(
        client, rules(rule(disk)), task_queue=task_queue, dry_run=True
    )
    assert result.created == [f"forecast-{disk}"] and result.dry_run
    assert not await exists(client, f"forecast-{disk}")


# --- the CLI ----------------------------------------------------------------------------------

SERVICES = "services:\n  - name: db\n    targets: [{name: db-1, kind: postgres}]\n"


@pytest.fixture
def runbooks(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Path]:
    monkeypatch.setenv("SELFHEAL_TEMPORAL__ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("SELFHEAL_TEMPORAL__TASK_QUEUE", task_queue)
    monkeypatch.setenv("SELFHEAL_RUNBOOKS_DIR", str(tmp_path))
    (tmp_path / "services.yaml").write_text(SERVICES)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def forecasts_yaml(*items: tuple[str, str]) -> str:
    lines = ["forecasts:"]
    for name, every in items:
        lines += [
            f"  - name: {name}",
            "    service: db",
            "    kind: disk_fill",
            "    metric: 'disk_used{}'",
            "    threshold: 90",
            f"    every: {every}",
        ]
    return "\n".join(lines) + "\n"


async def cli(*args: str) -> Result:
    """The command runs its own event loop: on a thread."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_schedules_sync_and_list_from_the_command_line(
    client: Client, names: list[str], runbooks: Path, task_queue: str
) -> None:
    disk, memory, _ = names
    (runbooks / "forecasts.yaml").write_text(forecasts_yaml((disk, "1h"), (memory, "15m")))
    result = await cli("schedules", "sync")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"forecast-{disk}: created (every 1h)",
        f"forecast-{memory}: created (every 15m)",
        f"{runbooks / 'forecasts.yaml'}: 2 rules; 2 created, 0 updated, 0 deleted, 0 unchanged "
        f"(task queue {task_queue})",
    ]

    await listed(client, f"forecast-{disk}", f"forecast-{memory}")
    result = await cli("schedules", "list", "--json")
    assert result.exit_code == 0, result.output
    shown = {row["id"]: row for row in json.loads(result.output)}
    assert shown[f"forecast-{memory}"]["every_s"] == 900
    assert shown[f"forecast-{memory}"]["paused"] is False
    assert shown[f"forecast-{memory}"]["next_at"] is not None
    result = await cli("schedules", "list")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if f"forecast-{memory}" in line)
    assert "15m" in row and "active" in row

    (runbooks / "forecasts.yaml").write_text(forecasts_yaml((disk, "2h")))
    result = await cli("schedules", "sync", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"forecast-{disk}: would be updated (every 2h)" in result.output
    assert f"forecast-{memory}: would be deleted" in result.output
    assert await exists(client, f"forecast-{memory}")


async def test_schedules_sync_refuses_rules_that_do_not_check(runbooks: Path) -> None:
    (runbooks / "forecasts.yaml").write_text(
        forecasts_yaml(("disk", "1h")).replace("service: db", "service: dbs")
    )
    result = await cli("schedules", "sync")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {runbooks / 'forecasts.yaml'}:3: forecasts[0] (disk): service: unknown service "
        "'dbs' (known: db)"
    )
