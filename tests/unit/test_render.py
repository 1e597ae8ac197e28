"""What `selfheal show` tells an operator about refusals and waits, and the CLI's tables outside
a terminal: their natural width, never wrapped at 80 columns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from rich.table import Table
from typer.testing import CliRunner

from selfheal.cli import kb
from selfheal.cli.main import app
from selfheal.cli.render import CliConsole, healings_table, make_console, timeline
from selfheal.devstack.demo.kubernetes import KUBE_SCENARIOS
from selfheal.devstack.demo.scenarios import SCENARIOS
from selfheal.domain import (
    Fault,
    HealingPhase,
    HealingStatus,
    RecoveryStep,
    RiskLevel,
    Solution,
    StepResult,
    StepStatus,
)
from selfheal.healings.queries import HealingRow

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def status(**fields: object) -> HealingStatus:
    base: dict[str, object] = {
        "workflow_id": "heal-x",
        "run_id": "r",
        "phase": HealingPhase.EXECUTING,
        "fault": Fault(service="demo", type="t", detected_at=T0),
        "started_at": T0,
    }
    base.update(fields)
    return HealingStatus.model_validate(base)


def test_a_refused_step_names_its_rule() -> None:
    refused = StepResult(
        candidate=0,
        order=1,
        name="drain",
        action="kubernetes.cordon",
        status=StepStatus.REFUSED,
        error="allowlist: kubernetes.cordon is not allowed for service demo",
        started_at=T0,
        ended_at=T0,
    )
    events = timeline(status(steps=[refused]))
    step = next(e for e in events if e.what == "plan 1 step 2: drain")
    assert "refused" in step.detail and "allowlist: kubernetes.cordon" in step.detail
    assert step.style == "magenta"


def test_a_healing_waiting_on_a_guardrail_says_which() -> None:
    events = timeline(status(waiting_on="kill_switch: paused by alice: freeze"))
    assert (
        events[-1].detail
        == "in progress, waiting on guardrail kill_switch: paused by alice: freeze"
    )


# ------------------------------------------------------------------ tables outside a terminal


def piped(*args: str) -> str:
    """The command's stdout as a pipe gets it (CliRunner is no terminal), even where the
    environment says the terminal is 80 columns wide."""
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def header_cells(output: str, first: str) -> list[str]:
    """The cells of the header row that starts with ``first``: all of them on one line."""
    line = next(line for line in output.splitlines() if first in line)
    return [cell.strip() for cell in line.strip("┃│ ").replace("┃", "│").split("│")]


def test_piped_tables_keep_headers_and_rows_whole() -> None:
    output = piped("dev", "--demo", "list")
    assert header_cells(output, "scenario") == [
        "scenario",
        "what happens",
        "expected root cause",
        "heals by",
    ]
    lines = output.splitlines()
    every = [*SCENARIOS.values(), *KUBE_SCENARIOS.values()]
    assert len(lines) == len(every) + 4, output  # top, header, rule, rows, bottom
    for scenario in every:
        row = next(line for line in lines if f" {scenario.name} " in line)
        assert scenario.description in row and scenario.heals_by in row, output


def rendered(table: Table) -> str:
    console = make_console()
    with console.capture() as captured:
        console.print(table)
    return captured.get()


def test_the_healings_table_takes_its_natural_width() -> None:
    row = HealingRow(
        workflow_id="heal-" + "0123456789abcdef" * 2,
        status="RUNNING",
        phase="awaiting_approval",
        service="checkout-service-of-the-shop",
        fault_type="KubernetesPodCrashLooping",
        root_cause="deployment_regression_of_the_checkout_service",
        risk="high",
        outcome="-",
        started_at=T0,
        closed_at=None,
    )
    output = rendered(healings_table([row]))
    assert len(output.splitlines()) == 5, output  # top, header, rule, one row, bottom
    assert header_cells(output, "workflow id")[-2:] == ["started (UTC)", "status"]
    assert "deployment_regression_of_the_checkout_service" in output


def test_a_terminal_keeps_its_width() -> None:
    console = CliConsole(force_terminal=True, _environ={"COLUMNS": "60"})
    assert console.width == 60
    console.width = 100
    assert console.width == 100


@contextmanager
def knowledge_base(solutions: list[Solution]) -> Iterator[object]:
    class Listing:
        def list_solutions(self) -> list[Solution]:
            return solutions

    yield Listing()


def test_kb_list_piped_keeps_its_headers_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    solution = Solution(
        id=1,
        name="restart-the-demo-target-process-and-wait-for-health",
        version=3,
        pattern="process_crashed",
        service="demo",
        risk=RiskLevel.MEDIUM,
        steps=[RecoveryStep(action="process.restart")],
        attempts=12,
        successes=11,
        mean_time_to_recover_s=7.0,
    )
    monkeypatch.setattr(kb, "_knowledge_base", lambda: knowledge_base([solution]))
    output = piped("kb", "list")
    headers = ["name", "v", "pattern", "service", "risk", "learned", "prior", "rate", "TTR", "used"]
    header = next(line for line in output.splitlines() if line.lstrip().startswith("name"))
    assert header.split() == headers, output
    assert any(solution.name in line and "11/12" in line for line in output.splitlines()), output


def test_show_says_how_many_reports_came_after_the_outcome() -> None:
    from datetime import timedelta

    from selfheal.domain import HealingOutcome

    ended = status(
        phase=HealingPhase.HEALED,
        outcome=HealingOutcome.HEALED,
        ended_at=T0,
        reports_after_outcome=2_741,
        suppressed_until=T0 + timedelta(minutes=10),
    )
    [after] = [e for e in timeline(ended) if e.what == "after the outcome"]
    assert "2741 more report(s) counted, nothing started" in after.detail
    assert "until 12:10:00" in after.detail
    assert not [e for e in timeline(status()) if e.what == "after the outcome"]
