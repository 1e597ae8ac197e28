"""Learning which solution works, on a real Postgres: per solution and service acted on, with
recency weights; the fallback to a solution's record everywhere; validation criteria kept with
a solution; hypothesis hit rates; ``selfheal kb stats``; the worker's metrics endpoint.

The arithmetic itself (decay, posteriors, Thompson draws, a simulation) is unit-tested in
``tests/unit/test_ranking.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from typer.testing import CliRunner

from selfheal.cli.main import app
from selfheal.core.settings import (
    DatabaseSettings,
    LearningSettings,
    Settings,
    TemporalSettings,
    WorkerSettings,
    get_settings,
)
from selfheal.devstack.processes import free_port
from selfheal.domain import Diagnosis, Fault, HealingOutcome, HealingStatus, SolutionSpec
from selfheal.domain.payloads import RecordOutcomeInput, SolutionAttempt
from selfheal.models import KnowledgeBase
from selfheal.models.knowledge_base import SolutionStats
from selfheal.models.migrate import upgrade
from selfheal.worker.build import run_worker
from selfheal.worker.kb_metrics import serve_kb_metrics
from tests.support import scratch_database, sessions

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
LEARNING = LearningSettings(half_life_s=30 * 86400.0, min_service_attempts=5.0)


@pytest.fixture(scope="module")
def kb_url(postgres_admin_url: str) -> Iterator[str]:
    with scratch_database(postgres_admin_url, "selfheal_learning_kb") as url:
        yield url


@pytest.fixture(scope="module")
def factory(kb_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(kb_url) as made:
        yield made


@pytest.fixture(autouse=True)
def empty_tables(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        session.execute(
            text("TRUNCATE solutions, solution_stats, healings, healing_steps RESTART IDENTITY")
        )


@pytest.fixture
def kb(factory: sessionmaker[Session]) -> KnowledgeBase:
    return KnowledgeBase(factory, learning=LEARNING)


def spec(name: str, *, prior: tuple[int, int] = (0, 0), **extra: Any) -> SolutionSpec:
    fields: dict[str, Any] = {
        "name": name,
        "pattern": "process_crashed",
        "prior_successes": prior[0],
        "prior_attempts": prior[1],
        "steps": [{"action": "test.restart", "params": {"process": "${fault.target}"}}],
    }
    return SolutionSpec.model_validate(fields | extra)


class Recorder:
    """Records healings through ``KnowledgeBase.record_outcome``, each its own workflow."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def heal(
        self,
        attempts: list[tuple[int | None, bool]],
        *,
        service: str = "demo",
        acting_on: str | None = None,
        at: datetime = T0,
        rule: str = "crash",
        root_cause: str = "process_crashed",
        ttr: float | None = 12.0,
        dry_run: bool = False,
    ) -> None:
        healed = any(ok for _, ok in attempts)
        outcome = HealingOutcome.HEALED if healed else HealingOutcome.ESCALATED
        if dry_run:
            outcome = HealingOutcome.DRY_RUN
        elif not attempts:
            outcome = HealingOutcome.REJECTED
        moved = (
            Fault(service=acting_on, type="health_check_failed", target=acting_on)
            if acting_on
            else None
        )
        status = HealingStatus(
            workflow_id=f"heal-{uuid.uuid4().hex[:12]}",
            run_id="run-1",
            phase=outcome.phase,
            fault=Fault(service=service, type="health_check_failed", target=service),
            diagnosis=Diagnosis(
                root_cause=root_cause,
                confidence=0.9,
                rule=rule,
                component=acting_on or service,
                acting_on=moved,
            ),
            outcome=outcome,
            dry_run=dry_run,
            started_at=at - timedelta(seconds=30),
            ended_at=at,
            time_to_recover_s=ttr if healed else None,
        )
        self.kb.record_outcome(
            RecordOutcomeInput(
                status=status,
                attempts=[
                    SolutionAttempt(
                        candidate=n, solution_id=sid, solution_name=f"s{sid}", succeeded=ok
                    )
                    for n, (sid, ok) in enumerate(attempts)
                ],
            )
        )


def ids(kb: KnowledgeBase) -> dict[str, int]:
    return {s.name: s.id for s in kb.list_solutions()}


def rows(kb: KnowledgeBase, now: datetime) -> dict[tuple[str, str], SolutionStats]:
    return {(s.solution, s.service): s for s in kb.stats(now=now).solutions}


# --- per service --------------------------------------------------------------------------


def test_an_attempt_teaches_the_solution_on_the_service_acted_on(kb: KnowledgeBase) -> None:
    kb.import_solutions([spec("restart")])
    restart = ids(kb)["restart"]
    record = Recorder(kb)

    record.heal([(restart, True)], service="checkout", acting_on="inventory", ttr=20.0)
    record.heal([(restart, False)], service="checkout")
    record.heal([(restart, True)], service="checkout", ttr=40.0, at=T0 + timedelta(hours=1))
    record.heal([(restart, True)], service="checkout", dry_run=True)  # teaches nothing
    record.heal([(None, True), (4242, True)], service="checkout")  # rule plan, unknown id

    learned = rows(kb, now=T0 + timedelta(hours=1))
    assert set(learned) == {("restart", "inventory"), ("restart", "checkout")}
    inventory, checkout = learned["restart", "inventory"], learned["restart", "checkout"]
    assert (inventory.attempts, inventory.successes, inventory.mean_time_to_recover_s) == (1, 1, 20)
    assert (checkout.attempts, checkout.successes, checkout.mean_time_to_recover_s) == (2, 1, 40)
    assert checkout.last_used_at == T0 + timedelta(hours=1)
    [solution] = kb.list_solutions()
    assert (solution.attempts, solution.successes) == (3, 2), "the global counters still count"


def test_concurrent_healings_on_one_service_all_count(kb: KnowledgeBase) -> None:
    """Each healing reads, decays and writes the (solution, service) row in its transaction,
    behind the solution's row lock: none of the concurrent updates is lost."""
    kb.import_solutions([spec("restart")])
    restart = ids(kb)["restart"]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def heal(n: int) -> None:
        barrier.wait()
        try:
            Recorder(kb).heal([(restart, n % 2 == 0)], at=T0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=heal, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    learned = rows(kb, now=T0)["restart", "demo"]
    assert (learned.attempts, learned.successes) == (6, 3)
    assert (learned.weighted_attempts, learned.weighted_successes) == (6.0, 3.0)


def test_outcomes_fade_and_a_solution_that_stopped_working_loses_its_rank(
    kb: KnowledgeBase,
) -> None:
    kb.import_solutions([spec("old-faithful"), spec("steady", prior=(6, 10))])
    record = Recorder(kb)
    for _ in range(30):
        record.heal([(ids(kb)["old-faithful"], True)], at=T0)

    at_once = rows(kb, now=T0)["old-faithful", "demo"]
    a_month_later = rows(kb, now=T0 + 30 * DAY)["old-faithful", "demo"]
    assert (at_once.weighted_attempts, at_once.weighted_successes) == (30.0, 30.0)
    assert a_month_later.attempts == 30, "the plain count does not fade"
    assert a_month_later.weighted_attempts == pytest.approx(15.0)

    def firsts(now: datetime) -> Counter[str]:
        rng = np.random.default_rng(11)
        return Counter(
            kb.find_solutions("process_crashed", "demo", now=now, rng=rng)[0].solution.name
            for _ in range(50)
        )

    assert firsts(T0)["old-faithful"] >= 48  # Beta(31, 1) against steady's Beta(7, 5)

    # Ninety days on, it fails twenty times: its successes weigh 30 / 8 = 3.75 against twenty
    # failures (Beta(4.75, 21)); without the fade it would still be a coin flip (Beta(31, 21)).
    later = T0 + 90 * DAY
    for _ in range(20):
        record.heal([(ids(kb)["old-faithful"], False)], at=later)
    faded = rows(kb, now=later)["old-faithful", "demo"]
    assert (faded.attempts, faded.successes) == (50, 30)
    assert faded.weighted_successes == pytest.approx(3.75)
    assert faded.weighted_attempts == pytest.approx(23.75)
    assert faded.success_rate == pytest.approx(4.75 / 25.75)
    assert firsts(later)["steady"] >= 45


def test_outcomes_recorded_out_of_order_weigh_by_when_they_happened(kb: KnowledgeBase) -> None:
    kb.import_solutions([spec("restart")])
    record = Recorder(kb)
    record.heal([(ids(kb)["restart"], True)], at=T0 + 30 * DAY)
    record.heal([(ids(kb)["restart"], False)], at=T0)  # ended earlier, recorded later

    learned = rows(kb, now=T0 + 30 * DAY)["restart", "demo"]
    assert learned.weighted_attempts == pytest.approx(1.5)
    assert learned.weighted_successes == pytest.approx(1.0)
    assert learned.last_used_at == T0 + 30 * DAY


def test_a_service_with_too_little_record_is_ranked_by_the_solutions_record_everywhere(
    kb: KnowledgeBase,
) -> None:
    kb.import_solutions([spec("restart")])
    restart = ids(kb)["restart"]
    record = Recorder(kb)
    for _ in range(10):
        record.heal([(restart, True)], service="web-1")
    for _ in range(2):
        record.heal([(restart, False)], service="web-2")

    def ranked(service: str) -> tuple[str, float, float]:
        [found] = kb.find_solutions("process_crashed", service, now=T0)
        return found.basis, found.weighted_attempts, found.success_rate

    # everywhere: 10 successes in 12 attempts, Beta(11, 3)
    assert ranked("web-2") == ("global", pytest.approx(12.0), pytest.approx(11 / 14))
    assert ranked("web-3") == ("global", pytest.approx(12.0), pytest.approx(11 / 14))
    assert ranked("web-1") == ("service", pytest.approx(10.0), pytest.approx(11 / 12))

    for _ in range(3):
        record.heal([(restart, False)], service="web-2")
    # five attempts on web-2 now: its own record (0 of 5, Beta(1, 6)) decides
    assert ranked("web-2") == ("service", pytest.approx(5.0), pytest.approx(1 / 7))
    assert rows(kb, now=T0)["restart", "web-2"].ranked_by == "service"
    assert rows(kb, now=T0 + 30 * DAY)["restart", "web-2"].ranked_by == "global"  # 2.5 < 5


# --- validation criteria -------------------------------------------------------------------

CRITERIA = [{"kind": "metric", "expr": "error_ratio < 0.01", "name": "errors"},
            {"kind": "rollout", "optional": True}]  # fmt: skip


def test_validation_criteria_are_stored_with_the_solution_and_returned(kb: KnowledgeBase) -> None:
    first = kb.import_solutions([spec("restart", validation=CRITERIA), spec("plain")])
    again = kb.import_solutions([spec("restart", validation=CRITERIA), spec("plain")])
    assert (first.created, again.unchanged) == (["restart", "plain"], ["restart", "plain"])

    stored = {s.name: s for s in kb.list_solutions()}
    assert [c.model_dump(exclude_defaults=True) for c in stored["restart"].validation] == CRITERIA
    assert stored["plain"].validation == []
    found = {r.solution.name: r.solution for r in kb.find_solutions("process_crashed", "demo")}
    assert found["restart"].validation == stored["restart"].validation

    changed = kb.import_solutions([spec("restart", validation=CRITERIA[:1])])
    assert changed.updated == ["restart"], "other criteria: a new version"
    [current] = [s for s in kb.list_solutions() if s.name == "restart"]
    assert (current.version, len(current.validation)) == (2, 1)


# --- hit rates ----------------------------------------------------------------------------


def test_hit_rates_of_the_top_hypothesis_per_rule_and_root_cause(kb: KnowledgeBase) -> None:
    record = Recorder(kb)
    record.heal([(None, True)], rule="crash")
    record.heal([(None, False), (None, False)], rule="crash")
    record.heal([(None, False), (None, True)], rule="crash")  # the second plan recovered it
    record.heal([], rule="crash")  # rejected: nothing ran, nothing decided
    record.heal([(None, True)], rule="crash", dry_run=True)
    record.heal([(None, False)], rule="oom-crash")
    record.heal([(None, True)], rule="slow", root_cause="dependency_degraded")

    stats = kb.stats()
    by_rule = {r.key: (r.healings, r.decided, r.confirmed, r.hit_rate) for r in stats.rules}
    by_cause = {r.key: (r.healings, r.decided, r.confirmed, r.hit_rate) for r in stats.root_causes}
    assert by_rule == {
        "crash": (5, 3, 2, pytest.approx(2 / 3)),
        "oom-crash": (1, 1, 0, 0.0),
        "slow": (1, 1, 1, 1.0),
    }
    assert by_cause == {
        "process_crashed": (6, 4, 2, 0.5),
        "dependency_degraded": (1, 1, 1, 1.0),
    }


# --- selfheal kb stats --------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, kb_url: str) -> Iterator[CliRunner]:
    monkeypatch.setenv("SELFHEAL_DATABASE__URL", kb_url)
    monkeypatch.setenv("COLUMNS", "220")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def recent_record(kb: KnowledgeBase) -> datetime:
    """restart on demo: 3 of 4 (TTR 10, 20, 30 s), a minute ago; hypotheses of two rules."""
    kb.import_solutions([spec("restart", prior=(9, 10)), spec("unused")])
    restart = ids(kb)["restart"]
    record = Recorder(kb)
    at = datetime.now(UTC) - timedelta(minutes=1)
    for ok, ttr in ((True, 10.0), (False, None), (True, 20.0), (True, 30.0)):
        record.heal([(restart, ok)], at=at, ttr=ttr)
    record.heal([(None, False)], rule="oom-crash", at=at)
    return at


def test_kb_stats_json_has_rates_with_their_interval_and_hit_rates(
    cli: CliRunner, kb: KnowledgeBase
) -> None:
    recent_record(kb)

    result = cli.invoke(app, ["kb", "stats", "--json"])

    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["credible_mass"] == 0.9
    [row] = stats["solutions"]  # "unused" was never tried
    assert (row["solution"], row["version"], row["service"]) == ("restart", 1, "demo")
    assert (row["attempts"], row["successes"]) == (4, 3)
    assert row["weighted_attempts"] == pytest.approx(4.0, abs=1e-3)
    # Beta(3 + 9 + 1, 1 + 1 + 1) = Beta(13, 3)
    assert row["success_rate"] == pytest.approx(13 / 16, abs=1e-3)
    assert row["success_rate_lower"] == pytest.approx(0.63, abs=0.02)
    assert row["success_rate_upper"] == pytest.approx(0.94, abs=0.02)
    assert row["mean_time_to_recover_s"] == pytest.approx(20.0)
    assert row["ranked_by"] == "global"  # 4 attempts on demo, below 5
    assert {r["key"]: r["hit_rate"] for r in stats["rules"]} == {"crash": 0.75, "oom-crash": 0.0}
    assert [r["key"] for r in stats["root_causes"]] == ["process_crashed"]


def test_kb_stats_table_for_people(cli: CliRunner, kb: KnowledgeBase) -> None:
    empty = cli.invoke(app, ["kb", "stats"])
    assert empty.exit_code == 0, empty.output
    assert empty.stdout.splitlines() == ["no solution tried yet", "no diagnosed healing yet"]

    recent_record(kb)
    table = cli.invoke(app, ["kb", "stats"])

    assert table.exit_code == 0, table.output
    lines = {cells[0]: cells for cells in map(str.split, table.stdout.splitlines()) if cells}
    assert lines["restart"][1:] == [
        "1", "demo", "3/4", "3.0/4.0", "0.81", lines["restart"][6], "20s", "1m", "ago", "global"
    ]  # fmt: skip
    low, high = map(float, lines["restart"][6].split("-"))
    assert low < 0.81 < high
    assert lines["crash"][1:] == ["3", "4", "4", "0.75"]
    assert lines["oom-crash"][1:] == ["0", "1", "1", "0.00"]
    assert lines["process_crashed"][1:] == ["3", "5", "5", "0.60"]
    assert "an outcome counting half after 30d" in " ".join(table.stdout.split())


def test_kb_stats_on_an_unreachable_database_is_one_line(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SELFHEAL_DATABASE__URL", "postgresql://x:pw@/x?host=/nonexistent/dir")
    get_settings.cache_clear()

    for args in (["kb", "stats"], ["kb", "stats", "--json"]):
        result = cli.invoke(app, args)
        assert result.exit_code == 2, args
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: cannot read the knowledge base's statistics: ")
        assert "pw" not in line


# --- metrics ------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_the_metrics_endpoint_reads_the_figures_at_each_scrape(
    kb: KnowledgeBase, factory: sessionmaker[Session]
) -> None:
    at = recent_record(kb)
    server = serve_kb_metrics(free_port(), factory, LEARNING, addr="127.0.0.1")
    assert server is not None
    try:
        metrics = scrape(server.port)
        restart = labels(solution="restart", version="1", service="demo")
        assert metrics["selfheal_kb_up", labels()] == 1.0
        assert metrics["selfheal_solution_attempts", restart] == 4
        assert metrics["selfheal_solution_successes", restart] == 3
        rate = metrics["selfheal_solution_success_rate", restart]
        assert rate == pytest.approx(13 / 16, abs=1e-3)
        assert (
            metrics["selfheal_solution_success_rate_lower", restart]
            < rate
            < metrics["selfheal_solution_success_rate_upper", restart]
        )
        assert metrics["selfheal_solution_mean_time_to_recover_seconds", restart] == 20.0
        assert metrics["selfheal_solution_last_used_timestamp_seconds", restart] == pytest.approx(
            at.timestamp()
        )
        assert metrics["selfheal_hypothesis_hit_rate_by_rule", labels(rule="crash")] == 0.75
        assert metrics["selfheal_hypothesis_decided_by_rule", labels(rule="oom-crash")] == 1
        cause = labels(root_cause="process_crashed")
        assert metrics["selfheal_hypothesis_hit_rate_by_root_cause", cause] == 0.6

        Recorder(kb).heal([(ids(kb)["restart"], True)], at=at, ttr=20.0)
        assert scrape(server.port)["selfheal_solution_attempts", restart] == 5
    finally:
        server.close()


def test_the_metrics_endpoint_says_when_the_knowledge_base_cannot_be_read() -> None:
    unreachable = "postgresql+psycopg://x@/x?host=/nonexistent/dir"
    with sessions(unreachable) as broken:
        server = serve_kb_metrics(free_port(), broken, addr="127.0.0.1")
        assert server is not None
        try:
            metrics = scrape(server.port)
        finally:
            server.close()
    assert metrics["selfheal_kb_up", labels()] == 0.0
    assert not any(name.startswith("selfheal_solution_") for name, _ in metrics)
    assert serve_kb_metrics(0, broken) is None, "port 0: no endpoint"


def test_a_taken_port_leaves_the_worker_without_the_endpoint(
    factory: sessionmaker[Session],
) -> None:
    first = serve_kb_metrics(free_port(), factory, addr="127.0.0.1")
    assert first is not None
    try:
        assert serve_kb_metrics(first.port, factory, addr="127.0.0.1") is None
    finally:
        first.close()


async def test_the_worker_serves_the_knowledge_base_metrics(
    client: Client, task_queue: str, kb_url: str, kb: KnowledgeBase
) -> None:
    recent_record(kb)
    port = free_port()
    settings = Settings(
        temporal=TemporalSettings(
            address=client.service_client.config.target_host, task_queue=task_queue
        ),
        database=DatabaseSettings(url=kb_url),
        worker=WorkerSettings(metrics_port=0, kb_metrics_port=port, graceful_shutdown_s=1),
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop))
    try:
        metrics: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for _ in range(100):
            if worker.done():
                break
            try:
                metrics = await asyncio.to_thread(scrape, port)
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        restart = labels(solution="restart", version="1", service="demo")
        assert metrics["selfheal_kb_up", labels()] == 1.0
        assert metrics["selfheal_solution_attempts", restart] == 4
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=30)
    with pytest.raises(httpx.TransportError):
        scrape(port)  # stopped with the worker


# --- migration ----------------------------------------------------------------------------


OLD_SOLUTION = text(
    "INSERT INTO solutions (name, version, current, pattern, description, steps, risk,"
    " prior_successes, prior_attempts, attempts, successes, enabled, content_hash)"
    " VALUES (:name, 1, true, 'process_crashed', '', '[]', 'medium', 0, 0, 0, 0, true, 'x')"
)
OLD_HEALING = text(
    "INSERT INTO healings (workflow_id, run_id, fault_fingerprint, fault_service, fault_type,"
    " fault, diagnosis, solutions_tried, approval_required, outcome_detail, dry_run, started_at,"
    " ended_at, time_to_recover_s) VALUES (:workflow_id, 'r', 'f', :service, 't', '{}',"
    " CAST(:diagnosis AS jsonb), CAST(:tried AS jsonb), false, '', :dry_run, :ended, :ended,"
    " :ttr)"
)


def old_healing(
    tried: list[tuple[int | None, bool]],
    *,
    acting_on: str | None = None,
    dry_run: bool = False,
    ttr: float | None = None,
    ended: datetime = T0,
) -> dict[str, Any]:
    """The parameters of ``OLD_HEALING``: a healing of checkout as revision 0003 audited it."""
    diagnosis = {
        "root_cause": "process_crashed",
        "confidence": 0.9,
        "rule": "crash",
        "acting_on": {"service": acting_on} if acting_on else None,
    }
    attempts = [
        {"candidate": i, "solution_id": sid, "solution_name": "s", "succeeded": ok}
        for i, (sid, ok) in enumerate(tried)
    ]
    return {
        "workflow_id": f"heal-{uuid.uuid4().hex[:12]}",
        "service": "checkout",
        "diagnosis": json.dumps(diagnosis),
        "tried": json.dumps(attempts),
        "dry_run": dry_run,
        "ended": ended,
        "ttr": ttr,
    }


def test_the_migration_fills_the_records_per_service_from_the_audit(
    postgres_admin_url: str,
) -> None:
    """Counted attempts of the audit, on the service acted on; dry runs, rule plans and unknown
    solutions left out; past outcomes in full as of the latest."""
    with scratch_database(postgres_admin_url, "selfheal_0004", migrate=False) as url:
        upgrade(url, "0003")
        with sessions(url) as before, before() as session, session.begin():
            session.execute(OLD_SOLUTION, [{"name": "restart"}, {"name": "flush"}])  # ids 1, 2
            session.execute(
                OLD_HEALING,
                [
                    old_healing([(1, False), (2, True)], ttr=30.0),
                    old_healing([(1, True)], acting_on="inventory", ttr=10.0, ended=T0 + HOUR),
                    old_healing([(1, True)], dry_run=True, ended=T0 + 2 * HOUR),
                    old_healing([(None, True), (999, True)], ttr=5.0),
                ],
            )
        upgrade(url)
        with sessions(url) as after:
            learned = rows(KnowledgeBase(after, learning=LEARNING), now=T0 + HOUR)

    summary = {
        key: (s.attempts, s.successes, s.weighted_attempts, s.mean_time_to_recover_s)
        for key, s in learned.items()
    }
    an_hour_old = pytest.approx(0.5 ** (1 / (30 * 24)))  # healings that ended at T0
    assert summary == {
        ("restart", "checkout"): (1, 0, an_hour_old, None),
        ("flush", "checkout"): (1, 1, an_hour_old, 30.0),
        ("restart", "inventory"): (1, 1, 1.0, 10.0),
    }
    assert learned["restart", "inventory"].last_used_at == T0 + HOUR
