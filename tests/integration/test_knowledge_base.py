"""The knowledge base on a real Postgres: import, ranking, learning, audit, activities, CLI.

Learning per service, recency, statistics and their metrics: ``test_solution_learning.py``.

The module has its own database (the session's shared one is used by workflow tests), emptied
before every test.
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from selfheal.activities.knowledge import KnowledgeBaseActivities
from selfheal.cli.main import app
from selfheal.core.database import (
    make_engine,
    make_session_factory,
)
from selfheal.core.settings import get_settings
from selfheal.domain import (
    Approval,
    Diagnosis,
    Fault,
    HealingOutcome,
    HealingStatus,
    RecoveryStep,
    RiskLevel,
    SolutionSpec,
    StepResult,
    StepStatus,
)
from selfheal.domain.payloads import FindSolutionsInput, RecordOutcomeInput, SolutionAttempt
from selfheal.models import KnowledgeBase
from selfheal.models.knowledge_base import RankedSolution
from selfheal.models.migrate import head_revision
from selfheal.models.tables import HealingRow, HealingStepRow, SolutionRow
from tests.support import sample_registry, scratch_database, sessions

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def kb_url(postgres_admin_url: str) -> Iterator[str]:
    with scratch_database(postgres_admin_url, "selfheal_kb") as url:
        yield url


@pytest.fixture(scope="module")
def session_factory(kb_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(kb_url) as factory:
        yield factory


@pytest.fixture(autouse=True)
def empty_tables(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            text("TRUNCATE solutions, solution_stats, healings, healing_steps RESTART IDENTITY")
        )


@pytest.fixture
def kb(session_factory: sessionmaker[Session]) -> KnowledgeBase:
    return KnowledgeBase(session_factory)


def spec(
    name: str,
    pattern: str = "process_crashed",
    *,
    service: str | None = None,
    prior: tuple[int, int] = (0, 0),
    **extra: Any,
) -> SolutionSpec:
    fields: dict[str, Any] = {
        "name": name,
        "pattern": pattern,
        "service": service,
        "prior_successes": prior[0],
        "prior_attempts": prior[1],
        "steps": [{"action": "test.restart", "params": {"process": "${fault.target}"}}],
    }
    return SolutionSpec.model_validate(fields | extra)


def count(session_factory: sessionmaker[Session], table: type[Any]) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def fault() -> Fault:
    return Fault(service="demo", type="health_check_failed", target="demo-app")


def status(
    workflow_id: str = "heal-abc",
    run_id: str = "run-1",
    *,
    outcome: HealingOutcome = HealingOutcome.HEALED,
    time_to_recover_s: float | None = 12.0,
    approval: Approval | None = None,
    dry_run: bool = False,
    started_at: datetime = T0,
) -> HealingStatus:
    step = StepResult(
        candidate=0,
        order=0,
        name="restart",
        action="test.restart",
        params={"process": "demo-app"},
        status=StepStatus.SUCCEEDED,
        output={"pid": 42},
        started_at=started_at,
        ended_at=started_at + timedelta(seconds=2),
    )
    undo = step.model_copy(update={"status": StepStatus.COMPENSATED, "compensation": True})
    return HealingStatus(
        workflow_id=workflow_id,
        run_id=run_id,
        phase=outcome.phase,
        fault=fault(),
        diagnosis=Diagnosis(root_cause="process_crashed", confidence=0.9, rule="crash"),
        approval_required=approval is not None,
        approval=approval,
        steps=[step, undo],
        outcome=outcome,
        outcome_detail="detail",
        solution_name="restart",
        dry_run=dry_run,
        started_at=started_at,
        ended_at=started_at + timedelta(seconds=30),
        time_to_recover_s=time_to_recover_s,
    )


def attempt(solution_id: int | None, *, succeeded: bool, candidate: int = 0) -> SolutionAttempt:
    return SolutionAttempt(
        candidate=candidate,
        solution_id=solution_id,
        solution_name=f"solution-{solution_id}",
        succeeded=succeeded,
    )


def by_name(kb: KnowledgeBase) -> dict[str, Any]:
    return {s.name: s for s in kb.list_solutions()}


# --- import -------------------------------------------------------------------------------


def test_importing_the_same_catalog_twice_changes_nothing(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    specs = [spec("a"), spec("b", service="demo")]

    first = kb.import_solutions(specs)
    before = by_name(kb)
    second = kb.import_solutions(specs)

    assert (first.created, first.updated, first.unchanged) == (["a", "b"], [], [])
    assert (second.created, second.updated, second.unchanged) == ([], [], ["a", "b"])
    assert by_name(kb) == before
    assert count(session_factory, SolutionRow) == 2


def test_a_changed_spec_becomes_a_new_version_and_the_old_one_is_kept(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    kb.import_solutions([spec("a", prior=(9, 10)), spec("untouched")])
    v1 = by_name(kb)["a"]
    kb.record_outcome(
        RecordOutcomeInput(status=status(), attempts=[attempt(v1.id, succeeded=True)])
    )

    report = kb.import_solutions([spec("a", prior=(9, 10), risk="high")])

    assert (report.created, report.updated, report.unchanged) == ([], ["a"], [])
    current = by_name(kb)
    v2 = current["a"]
    assert (v2.version, v2.risk) == (2, RiskLevel.HIGH)
    assert v2.id != v1.id
    # The new version learns afresh and keeps the spec's priors.
    assert (v2.attempts, v2.successes, v2.prior_successes, v2.prior_attempts) == (0, 0, 9, 10)
    assert current["untouched"].version == 1, "a solution missing from an import is left alone"
    with session_factory() as session:
        old = session.get(SolutionRow, v1.id)
        assert old is not None
        assert (old.version, old.current, old.attempts, old.successes) == (1, False, 1, 1)

    kb.import_solutions([spec("a", prior=(9, 10))])
    assert by_name(kb)["a"].version == 3, "going back to old content is still a change"


def test_spelling_out_defaults_is_not_a_change(kb: KnowledgeBase) -> None:
    kb.import_solutions([spec("a")])
    report = kb.import_solutions([spec("a", risk="medium", enabled=True, description="")])
    assert report.unchanged == ["a"]


# --- ranking ------------------------------------------------------------------------------


def names(ranked: list[RankedSolution]) -> list[str]:
    return [r.solution.name for r in ranked]


def test_solutions_are_ranked_by_draws_from_their_posterior_priors_included(
    kb: KnowledgeBase,
) -> None:
    kb.import_solutions(
        [
            spec("untried"),  # Beta(1, 1)
            spec("proven", prior=(9, 10)),  # Beta(10, 2): mean 10/12
            spec("flaky", prior=(1, 10)),  # Beta(2, 10): mean 2/12
            spec("other-cause", "disk_full", prior=(100, 100)),
            spec("disabled", prior=(100, 100), enabled=False),
        ]
    )

    found = kb.find_solutions("process_crashed", "demo", rng=np.random.default_rng(3))
    assert sorted(names(found)) == ["flaky", "proven", "untried"]
    assert [r.sampled for r in found] == sorted((r.sampled for r in found), reverse=True)
    rates = {r.solution.name: r.success_rate for r in found}
    assert rates == pytest.approx({"untried": 0.5, "proven": 10 / 12, "flaky": 2 / 12})
    assert {r.basis for r in found} == {"global"}  # nothing learned on demo yet
    again = kb.find_solutions("process_crashed", "demo", rng=np.random.default_rng(3))
    assert names(again) == names(found), "a seeded generator gives the same ranking"
    assert len(kb.find_solutions("process_crashed", "demo", limit=2)) == 2

    rng = np.random.default_rng(0)
    firsts = Counter(names(kb.find_solutions("process_crashed", "demo", rng=rng))[0]
                     for _ in range(300))  # fmt: skip
    # P(first): proven ~0.83, untried ~0.17, flaky ~0.0001
    assert firsts["proven"] > firsts["untried"] > firsts["flaky"]
    assert firsts["untried"] > 20, "an untried solution is explored"

    # Twenty failures of "proven" and twenty successes of "untried" on demo: the order is now
    # near-certain (Beta(10, 22) against Beta(21, 1)).
    ids = {r.solution.name: r.solution.id for r in found}
    for n in range(20):
        kb.record_outcome(
            RecordOutcomeInput(
                status=status(run_id=f"fail-{n}", outcome=HealingOutcome.FAILED),
                attempts=[attempt(ids["proven"], succeeded=False)],
            )
        )
        kb.record_outcome(
            RecordOutcomeInput(
                status=status(run_id=f"ok-{n}"), attempts=[attempt(ids["untried"], succeeded=True)]
            )
        )
    soon = T0 + timedelta(hours=1)  # the outcomes ended at T0 + 30 s: hardly decayed yet
    for _ in range(50):
        ranked = kb.find_solutions("process_crashed", "demo", rng=rng, now=soon)
        assert names(ranked)[0] == "untried"
    assert {r.solution.name: r.basis for r in ranked} == {
        "untried": "service",
        "proven": "service",
        "flaky": "global",
    }


def test_the_service_selector_picks_solutions_for_the_faulty_service(kb: KnowledgeBase) -> None:
    kb.import_solutions(
        [
            spec("any"),
            spec("demo-only", service="demo"),
            spec("web-family", service="web-*"),
            spec("glob-pattern", "process_*", service="db"),
        ]
    )

    def found(service: str) -> set[str]:
        return set(names(kb.find_solutions("process_crashed", service)))

    assert found("demo") == {"demo-only", "any"}
    assert found("web-1") == {"web-family", "any"}
    assert found("db") == {"glob-pattern", "any"}
    assert found("Demo") == {"any"}


# --- record_outcome -----------------------------------------------------------------------


def test_recording_writes_the_audit_and_teaches_once(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    kb.import_solutions([spec("first"), spec("second")])
    ids = {s.name: s.id for s in kb.list_solutions()}
    approval = Approval(approved=True, by="alice", reason="looks right", at=T0)
    record = RecordOutcomeInput(
        status=status(approval=approval),
        attempts=[
            attempt(ids["first"], succeeded=False, candidate=0),
            attempt(ids["second"], succeeded=True, candidate=1),
        ],
    )

    first = kb.record_outcome(record)
    again = kb.record_outcome(record)

    assert not first.already_recorded
    assert again.already_recorded
    assert again.healing_id == first.healing_id
    assert count(session_factory, HealingRow) == 1
    assert count(session_factory, HealingStepRow) == 2
    learned = by_name(kb)
    assert (learned["first"].attempts, learned["first"].successes) == (1, 0)
    assert (learned["second"].attempts, learned["second"].successes) == (1, 1)
    assert learned["second"].last_used_at == T0 + timedelta(seconds=30)

    healing = kb.get_healing("heal-abc")
    assert healing is not None
    assert healing.id == first.healing_id
    assert healing.solution_id == ids["second"]
    assert (healing.approval_decision, healing.approved_by) == ("approved", "alice")
    assert (healing.outcome, healing.root_cause, healing.fault_service) == (
        "healed",
        "process_crashed",
        "demo",
    )
    assert [s["succeeded"] for s in healing.solutions_tried] == [False, True]
    assert [(s.status, s.compensation, s.output) for s in healing.steps] == [
        ("succeeded", False, {"pid": 42}),
        ("compensated", True, {"pid": 42}),
    ]


def test_concurrent_records_of_one_healing_count_once(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    kb.import_solutions([spec("a")])
    [solution] = kb.list_solutions()
    record = RecordOutcomeInput(status=status(), attempts=[attempt(solution.id, succeeded=True)])
    results = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        results.append(kb.record_outcome(record))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.already_recorded for r in results) == [False, True, True, True]
    assert len({r.healing_id for r in results}) == 1
    assert count(session_factory, HealingRow) == 1
    assert (by_name(kb)["a"].attempts, by_name(kb)["a"].successes) == (1, 1)


def test_mean_time_to_recover_is_the_mean_over_successes(kb: KnowledgeBase) -> None:
    kb.import_solutions([spec("a")])
    [solution] = kb.list_solutions()
    assert solution.mean_time_to_recover_s is None

    for run_id, ttr, ok in [("r1", 10.0, True), ("r2", 99.0, False), ("r3", 20.0, True)]:
        kb.record_outcome(
            RecordOutcomeInput(
                status=status(run_id=run_id, time_to_recover_s=ttr),
                attempts=[attempt(solution.id, succeeded=ok)],
            )
        )
    kb.record_outcome(
        RecordOutcomeInput(
            status=status(run_id="r4", time_to_recover_s=30.0),
            attempts=[attempt(solution.id, succeeded=True)],
        )
    )

    learned = by_name(kb)["a"]
    assert (learned.attempts, learned.successes) == (4, 3)
    assert learned.mean_time_to_recover_s == pytest.approx(20.0)


def test_a_dry_run_is_audited_but_teaches_nothing(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    kb.import_solutions([spec("a")])
    [solution] = kb.list_solutions()

    kb.record_outcome(
        RecordOutcomeInput(
            status=status(outcome=HealingOutcome.DRY_RUN, dry_run=True, time_to_recover_s=None),
            attempts=[attempt(solution.id, succeeded=True)],
        )
    )

    assert count(session_factory, HealingRow) == 1
    assert (by_name(kb)["a"].attempts, by_name(kb)["a"].last_used_at) == (0, None)


def test_attempts_of_rule_plans_and_unknown_solutions_are_audited_only(
    kb: KnowledgeBase,
) -> None:
    result = kb.record_outcome(
        RecordOutcomeInput(
            status=status(outcome=HealingOutcome.APPROVAL_TIMEOUT),
            attempts=[attempt(None, succeeded=True), attempt(12345, succeeded=True)],
        )
    )
    healing = kb.get_healing("heal-abc")
    assert healing is not None
    assert healing.id == result.healing_id
    assert healing.solution_id is None
    assert healing.approval_decision == "timeout"
    assert len(healing.solutions_tried) == 2


def test_get_healing_returns_the_latest_run(kb: KnowledgeBase) -> None:
    kb.record_outcome(RecordOutcomeInput(status=status(run_id="old", started_at=T0)))
    kb.record_outcome(
        RecordOutcomeInput(
            status=status(
                run_id="new",
                started_at=T0 + timedelta(hours=1),
                outcome=HealingOutcome.REJECTED,
                approval=Approval(approved=False, by="bob", reason="not now", at=T0),
            )
        )
    )

    latest = kb.get_healing("heal-abc")
    assert latest is not None
    assert (latest.run_id, latest.approval_decision, latest.approval_reason) == (
        "new",
        "rejected",
        "not now",
    )
    assert kb.get_healing("heal-unknown") is None


# --- activities ---------------------------------------------------------------------------


def find_input(
    default_plan: list[RecoveryStep] | None = None, limit: int = 3
) -> FindSolutionsInput:
    diagnosis = Diagnosis(
        root_cause="process_crashed",
        confidence=0.8,
        rule="crash-rule",
        default_plan=default_plan or [],
        default_risk=RiskLevel.LOW,
    )
    return FindSolutionsInput(fault=fault(), diagnosis=diagnosis, limit=limit)


async def test_find_solutions_turns_solutions_into_plans_with_their_risk(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    validation = [{"kind": "metric", "expr": "error_ratio < 0.01"}, {"kind": "alert_resolved"}]
    kb.import_solutions(
        [
            spec("restart", prior=(9, 10), risk="low", validation=validation),
            # Beta(1, 21) against restart's Beta(10, 2): second, but for a ~1e-6 chance
            spec("failover", prior=(0, 20), risk="low", steps=[{"action": "test.failover"}]),
            spec("retired-action", prior=(50, 50), steps=[{"action": "test.gone"}]),
            spec("elsewhere", service="billing"),
        ]
    )
    activities = KnowledgeBaseActivities(
        session_factory, sample_registry(), rng=np.random.default_rng(5)
    )

    result = await activities.find_solutions(
        find_input(default_plan=[RecoveryStep(action="test.wait")])
    )

    assert [(p.solution_name, p.risk, p.source) for p in result.plans] == [
        ("restart", RiskLevel.MEDIUM, "knowledge_base"),  # the action's risk wins over "low"
        ("failover", RiskLevel.HIGH, "knowledge_base"),
    ]
    restart, failover = result.plans
    assert restart.solution_version == 1
    assert restart.solution_id == by_name(kb)["restart"].id
    assert restart.success_rate == pytest.approx(10 / 12)
    assert restart.sampled is not None and failover.sampled is not None
    assert restart.sampled > failover.sampled
    assert [c.model_dump(exclude_defaults=True) for c in restart.validation] == validation
    assert failover.validation == []
    assert result.default_plan is not None
    assert result.default_plan.source == "rule_default"
    assert result.default_plan.solution_name == "rule:crash-rule"
    assert result.default_plan.solution_id is None
    assert result.default_plan.risk is RiskLevel.LOW
    assert result.default_plan.sampled is None


async def test_find_solutions_limits_runnable_plans_and_skips_an_unrunnable_default(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    kb.import_solutions(
        [
            spec("retired-action", prior=(50, 50), steps=[{"action": "test.gone"}]),
            spec("good", prior=(5, 5)),
            spec("fine", prior=(0, 10)),  # Beta(1, 11) against Beta(6, 1): below, but for ~1e-4
        ]
    )
    activities = KnowledgeBaseActivities(
        session_factory, sample_registry(), rng=np.random.default_rng(5)
    )

    result = await activities.find_solutions(
        find_input(default_plan=[RecoveryStep(action="test.gone")], limit=1)
    )

    assert [p.solution_name for p in result.plans] == ["good"]
    assert result.default_plan is None
    assert (await activities.find_solutions(find_input())).default_plan is None


async def test_record_outcome_activity_records_once(
    kb: KnowledgeBase, session_factory: sessionmaker[Session]
) -> None:
    kb.import_solutions([spec("a")])
    [solution] = kb.list_solutions()
    activities = KnowledgeBaseActivities(session_factory, sample_registry())
    record = RecordOutcomeInput(status=status(), attempts=[attempt(solution.id, succeeded=True)])
    env = ActivityEnvironment()

    first = await env.run(activities.record_outcome, record)
    again = await env.run(activities.record_outcome, record)

    assert (first.already_recorded, again.already_recorded) == (False, True)
    assert by_name(kb)["a"].attempts == 1


async def test_an_unreachable_database_is_a_retryable_knowledge_base_error() -> None:
    engine = make_engine("postgresql+psycopg://selfheal@/selfheal?host=/nonexistent/socket-dir")
    activities = KnowledgeBaseActivities(make_session_factory(engine), sample_registry())
    try:
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(activities.find_solutions, find_input())
    finally:
        engine.dispose()
    assert caught.value.type == "KnowledgeBaseError"
    assert not caught.value.non_retryable
    assert caught.value.message.startswith("cannot find solutions: ")


# --- CLI ----------------------------------------------------------------------------------


CATALOG = """\
solutions:
  - name: restart-crashed-process
    pattern: process_crashed
    service: demo
    risk: medium
    prior_successes: 9
    prior_attempts: 10
    steps:
      - name: restart the process
        action: test.restart
        params: {process: "${fault.target}"}
  - name: wait-it-out
    pattern: process_crashed
    steps:
      - action: test.wait
"""


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, kb_url: str) -> Iterator[CliRunner]:
    monkeypatch.setenv("SELFHEAL_DATABASE__URL", kb_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
def test_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI validates against ``default_registry()``; these tests bring their own actions."""
    monkeypatch.setattr("selfheal.cli.kb.default_registry", sample_registry)


def write_catalog(root: Path, content: str = CATALOG) -> Path:
    (root / "solutions").mkdir(parents=True, exist_ok=True)
    (root / "solutions" / "demo.yaml").write_text(textwrap.dedent(content))
    (root / "rules.yaml").write_text("rules: []\n")
    return root


@pytest.mark.usefixtures("test_actions")
def test_cli_imports_and_lists_the_catalog(cli: CliRunner, tmp_path: Path) -> None:
    runbooks = write_catalog(tmp_path)

    first = cli.invoke(app, ["kb", "import", str(runbooks)])
    again = cli.invoke(app, ["kb", "import", str(runbooks)])
    listed = cli.invoke(app, ["kb", "list", "--json"])

    assert first.exit_code == 0, first.output
    assert "2 created, 0 updated (new version), 0 unchanged" in first.stdout
    assert "0 created, 0 updated (new version), 2 unchanged" in again.stdout
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"restart-crashed-process", "wait-it-out"}
    assert rows["restart-crashed-process"]["success_rate"] == pytest.approx(10 / 12)
    assert rows["restart-crashed-process"]["service"] == "demo"
    assert rows["wait-it-out"]["steps"][0]["action"] == "test.wait"


@pytest.mark.usefixtures("test_actions")
def test_cli_table_shows_learning_and_priors_apart(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kb: KnowledgeBase
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.invoke(app, ["kb", "import", str(write_catalog(tmp_path))]).exit_code == 0
    solution = by_name(kb)["restart-crashed-process"]
    recent = datetime.now(UTC) - timedelta(hours=3, minutes=1)
    kb.record_outcome(
        RecordOutcomeInput(
            status=status(started_at=recent - timedelta(seconds=30), time_to_recover_s=12.0),
            attempts=[attempt(solution.id, succeeded=True)],
        )
    )

    table = cli.invoke(app, ["kb", "list"])

    assert table.exit_code == 0, table.output
    lines = {cells[0]: cells for cells in map(str.split, table.stdout.splitlines()) if cells}
    assert lines["restart-crashed-process"][1:] == [
        "1",
        "process_crashed",
        "demo",
        "medium",
        "1/1",
        "9/10",
        "0.85",
        "12s",
        "3h",
        "ago",
    ]
    assert lines["wait-it-out"][1:] == [
        "1",
        "process_crashed",
        "*",
        "medium",
        "0/0",
        "0/0",
        "0.50",
        "-",
        "never",
    ]
    assert "rate = (successes + prior successes + 1)" in table.stdout


@pytest.mark.usefixtures("test_actions")
def test_cli_bad_yaml_is_one_line_naming_file_and_field(cli: CliRunner, tmp_path: Path) -> None:
    runbooks = write_catalog(
        tmp_path,
        "solutions:\n  - name: broken\n    pattern: p\n    steps:\n      - name: no action\n",
    )

    result = cli.invoke(app, ["kb", "import", str(runbooks)])

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {runbooks}/solutions/demo.yaml:5: solutions[0] (broken): steps.0.action: "
        "Field required"
    ]
    assert "Traceback" not in result.output


def test_cli_refuses_an_action_no_driver_registers(cli: CliRunner, tmp_path: Path) -> None:
    runbooks = write_catalog(
        tmp_path, "solutions:\n  - {name: x, pattern: p, steps: [{action: no.such.action}]}\n"
    )

    result = cli.invoke(app, ["kb", "import", str(runbooks)])

    assert result.exit_code == 2
    assert (
        f"{runbooks}/solutions/demo.yaml:2: solutions[0] (x): steps.0.action: "
        "unknown action 'no.such.action'"
    ) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_unreachable_database_is_one_line(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SELFHEAL_DATABASE__URL", "postgresql://x:pw@/x?host=/nonexistent/socket-dir"
    )
    get_settings.cache_clear()

    for args in (["kb", "list"], ["db", "upgrade"]):
        result = cli.invoke(app, args)
        assert result.exit_code == 2, args
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: cannot ")
        assert "pw" not in line


def test_cli_migrates_a_database_up_and_down(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, postgres_admin_url: str
) -> None:
    with scratch_database(postgres_admin_url, "selfheal_cli", migrate=False) as url:
        monkeypatch.setenv("SELFHEAL_DATABASE__URL", url)
        get_settings.cache_clear()
        up = cli.invoke(app, ["db", "upgrade"])
        down = cli.invoke(app, ["db", "downgrade", "base"])
        bad = cli.invoke(app, ["db", "upgrade", "--revision", "nope"])

    assert up.exit_code == 0, up.output
    assert up.stdout.strip().endswith(f"schema at revision {head_revision()}")
    assert down.exit_code == 0, down.output
    assert down.stdout.strip().endswith("schema at revision base")
    assert bad.exit_code == 2
    assert "cannot upgrade to 'nope'" in bad.stderr
