"""The operator CLI against the real Temporal dev server and a worker with stand-in activities:
submit, list, show, approve and reject as an operator types them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from click.testing import Result
from temporalio.client import Client
from typer.testing import CliRunner

from selfheal.cli.main import app
from selfheal.core.settings import get_settings
from selfheal.domain import HealingOutcome, HealingPhase, HealingPolicy, HealingStatus
from selfheal.domain.criteria import ApprovalSpec
from tests.integration.standins import Scenario
from tests.integration.test_workflow_logic import running, status_when

pytestmark = pytest.mark.integration


# The catalog the CLI resolves faults through: service ``checkout``, one target per test.
CATALOG = "services.yaml"


@pytest.fixture
def cli_env(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    monkeypatch.setenv("SELFHEAL_TEMPORAL__ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("SELFHEAL_TEMPORAL__TASK_QUEUE", task_queue)
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    monkeypatch.setenv("SELFHEAL_RUNBOOKS_DIR", str(runbooks))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest_asyncio.fixture
async def worker(client: Client, task_queue: str, cli_env: None) -> AsyncIterator[Scenario]:
    scenario = Scenario()
    async with running(client, task_queue, scenario):
        yield scenario


async def cli(*args: str, stdin: str | None = None) -> Result:
    """The command runs its own event loop: on a thread, so that the worker keeps running."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), input=stdin)


def declare_target() -> str:
    """A new target of ``checkout`` in the catalog of the CLI (SELFHEAL_RUNBOOKS_DIR)."""
    target = f"api-{uuid.uuid4().hex[:8]}"
    catalog = get_settings().runbooks_dir / CATALOG
    lines = (
        catalog.read_text() if catalog.exists() else "services:\n  - name: checkout\n    targets:\n"
    )
    catalog.write_text(lines + f"      - {{name: {target}, kind: process}}\n")
    return target


def fault_file(tmp_path: Path) -> Path:
    path = tmp_path / "fault.yaml"
    path.write_text(
        f"service: checkout\ntype: health_check_failed\ntarget: {declare_target()}\n"
        "summary: probes fail\n"
    )
    return path


async def submitted(*args: str, stdin: str | None = None) -> str:
    result = await cli("fault", "submit", *args, stdin=stdin)
    assert result.exit_code == 0, result.output
    workflow_id = result.stdout.strip()
    assert workflow_id.startswith("heal-")
    return workflow_id


async def listed(phase: str) -> list[dict[str, object]]:
    result = await cli("list", "--phase", phase, "--json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def one_line_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr, result.stderr


async def test_submit_list_show_approve(client: Client, worker: Scenario, tmp_path: Path) -> None:
    workflow_id = await submitted(str(fault_file(tmp_path)), "--require-approval")
    handle = client.get_workflow_handle(workflow_id)
    await status_when(handle, lambda s: s.awaiting_approval)

    # Visibility is eventually consistent: the phase shows up in the list shortly after.
    for _ in range(100):
        rows = await listed("awaiting_approval")
        if any(r["workflow_id"] == workflow_id for r in rows):
            break
        await asyncio.sleep(0.2)
    row = next(r for r in rows if r["workflow_id"] == workflow_id)
    assert row["service"] == "checkout"
    assert row["root_cause"] == "process_crashed"

    shown = await cli("show", workflow_id)
    assert shown.exit_code == 0, shown.output
    assert "awaiting approval: selfheal approve " + workflow_id in shown.stdout
    assert "process_crashed" in shown.stdout

    refused = await cli("approve", workflow_id, "--by", "  ")
    one_line_error(refused, "approve refused: 'by' is required")

    approved = await cli("approve", workflow_id, "--by", "alice", "--reason", "looks right")
    assert approved.exit_code == 0, approved.output
    assert f"approved {workflow_id} by alice" in approved.stdout

    result = await client.get_workflow_handle(workflow_id, result_type=HealingStatus).result()
    assert result.outcome == HealingOutcome.HEALED
    assert worker.journal[0] == "run:restart"

    final = await cli("show", workflow_id, "--json")
    assert final.exit_code == 0, final.output
    status = HealingStatus.model_validate_json(final.stdout)
    assert status.phase == HealingPhase.HEALED
    assert status.approval is not None
    assert (status.approval.by, status.approval.reason) == ("alice", "looks right")

    late = await cli("approve", workflow_id, "--by", "bob")
    one_line_error(late, f"healing {workflow_id} has already ended (completed)")


async def listed_when(workflow_id: str) -> dict[str, object]:
    """The healing's row of ``list --phase awaiting_approval --json``, once visibility has it."""
    for _ in range(100):
        rows = await listed("awaiting_approval")
        found = [r for r in rows if r["workflow_id"] == workflow_id]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} never listed as awaiting approval")


async def test_pending_approvals_are_listed_with_their_wait_and_approvers(
    client: Client, worker: Scenario, tmp_path: Path
) -> None:
    worker.policy = HealingPolicy(
        stabilization_window_s=0,
        probe_interval_s=1,
        approval=ApprovalSpec(approvers=["name:alice", "bob"]),
    )
    workflow_id = await submitted(str(fault_file(tmp_path)), "--require-approval")
    handle = client.get_workflow_handle(workflow_id)
    asked = await status_when(handle, lambda s: s.awaiting_approval)
    await asyncio.sleep(1.1)  # a wait that shows

    row = await listed_when(workflow_id)
    table = await cli("list", "--phase", "awaiting_approval")
    shown = await cli("show", workflow_id)
    refused = await cli("approve", workflow_id, "--by", "mallory")

    assert row["approvers"] == ["bob", "name:alice"]
    assert row["reasons"] == ["approval requested when the healing was started"]
    assert row["waited_since"] == "asked" and asked.awaiting_since is not None
    assert row["awaiting_since"] == asked.awaiting_since.isoformat().replace("+00:00", "Z")
    assert isinstance(row["waited_s"], float) and row["waited_s"] >= 1.0
    assert row["service"] == "checkout" and row["status"] == "RUNNING"  # the listing's row
    assert table.exit_code == 0, table.output
    [line] = [line for line in table.stdout.splitlines() if workflow_id in line]
    assert "bob, name:alice" in line and "approval requested" in line
    assert "decide with: selfheal approve ID --by NAME" in table.stdout
    assert shown.exit_code == 0, shown.output
    assert "may decide: bob, name:alice" in shown.stdout
    one_line_error(refused, "'mallory' may not decide this healing")

    approved = await cli("approve", workflow_id, "--by", "bob")
    assert approved.exit_code == 0, approved.output
    result = await client.get_workflow_handle(workflow_id, result_type=HealingStatus).result()
    assert result.outcome == HealingOutcome.HEALED
    assert result.approval is not None and result.approval.by == "bob"
    # Ended: no longer pending, whatever the visibility store still says.
    rows = await listed("awaiting_approval")
    assert not [r for r in rows if r["workflow_id"] == workflow_id and r["waited_s"] is not None]


async def test_reject_from_stdin_runs_nothing(client: Client, worker: Scenario) -> None:
    fault = {"service": "checkout", "type": "latency_high", "target": declare_target()}
    workflow_id = await submitted("-", "--require-approval", stdin=json.dumps(fault))
    await status_when(client.get_workflow_handle(workflow_id), lambda s: s.awaiting_approval)

    rejected = await cli("reject", workflow_id, "--by", "carol", "--reason", "change freeze")
    assert rejected.exit_code == 0, rejected.output

    result = await client.get_workflow_handle(workflow_id, result_type=HealingStatus).result()
    assert result.outcome == HealingOutcome.REJECTED
    assert "change freeze" in result.outcome_detail
    assert worker.journal == []


async def test_dry_run_submission(client: Client, worker: Scenario, tmp_path: Path) -> None:
    workflow_id = await submitted(str(fault_file(tmp_path)), "--dry-run")
    result = await client.get_workflow_handle(workflow_id, result_type=HealingStatus).result()
    assert result.outcome == HealingOutcome.DRY_RUN
    assert worker.journal == ["run:restart"]  # the stand-in records the dry-run call


async def test_unknown_workflow_id(cli_env: None) -> None:
    for args in (["show", "heal-nope"], ["approve", "heal-nope", "--by", "alice"]):
        one_line_error(await cli(*args), "no healing with id heal-nope")
