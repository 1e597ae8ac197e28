"""What ``selfheal dev`` hands to every part of its stack, and the timeline it prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from selfheal.cli.render import Prelude, timeline
from selfheal.core.settings import Settings
from selfheal.devstack.stack import (
    DEMO_PROBE_INTERVAL_S,
    DEMO_WINDOW_S,
    DEV_SHUTDOWN_S,
    dev_settings,
)
from selfheal.domain import (
    Approval,
    Diagnosis,
    Fault,
    HealingOutcome,
    HealingPhase,
    HealingStatus,
    RecoveryPlan,
    RecoveryStep,
    RiskLevel,
    StepResult,
    StepStatus,
    ValidationResult,
)


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_addresses_follow_the_dev_ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = settings_from_env(
        monkeypatch,
        SELFHEAL_DEV__TEMPORAL_PORT="17001",
        SELFHEAL_DEV__SUPERVISOR_PORT="17002",
        SELFHEAL_TEMPORAL__ADDRESS="temporal.prod:7233",
    )
    settings = dev_settings(base, tmp_path / "data", demo=False)
    assert settings.temporal.address == "127.0.0.1:17001"
    assert settings.supervisor.url == "http://127.0.0.1:17002"
    assert settings.dev.data_dir == (tmp_path / "data").resolve()
    assert settings.worker.metrics_port == settings.worker.kb_metrics_port == 0
    assert settings.worker.graceful_shutdown_s == DEV_SHUTDOWN_S
    assert settings.healing == base.healing


def test_demo_shortens_validation_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = dev_settings(Settings(), None, demo=True)
    assert demo.healing.stabilization_window_s == DEMO_WINDOW_S
    assert demo.healing.probe_interval_s == DEMO_PROBE_INTERVAL_S
    chosen = settings_from_env(monkeypatch, SELFHEAL_HEALING__STABILIZATION_WINDOW_S="12")
    kept = dev_settings(chosen, None, demo=True)
    assert kept.healing.stabilization_window_s == 12
    assert kept.healing.probe_interval_s == DEMO_PROBE_INTERVAL_S


def test_worker_settings_kept_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    base = settings_from_env(
        monkeypatch,
        SELFHEAL_WORKER__METRICS_PORT="9999",
        SELFHEAL_WORKER__GRACEFUL_SHUTDOWN_S="60",
    )
    worker = dev_settings(base, None, demo=False).worker
    assert (worker.metrics_port, worker.graceful_shutdown_s) == (9999, 60)


def test_timeline_tells_the_healing_in_order() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    step = RecoveryStep(name="restart", action="process.restart")
    status = HealingStatus(
        workflow_id="heal-x",
        run_id="r",
        phase=HealingPhase.HEALED,
        fault=Fault(service="demo", type="health_check_failed", target="p", detected_at=at(3)),
        diagnosis=Diagnosis(root_cause="process_crashed", confidence=0.9, rule="process-crashed"),
        candidates=[
            RecoveryPlan(
                source="knowledge_base",
                solution_name="restart-first",
                steps=[step],
                risk=RiskLevel.MEDIUM,
            ),
            RecoveryPlan(
                source="knowledge_base", solution_name="flush", steps=[step], risk=RiskLevel.HIGH
            ),
        ],
        current_candidate=0,
        approval_required=True,
        approval=Approval(approved=True, by="alice", reason="ok", at=at(4)),
        steps=[
            StepResult(
                candidate=0,
                order=0,
                name="restart",
                action="process.restart",
                status=StepStatus.SUCCEEDED,
                started_at=at(5),
                ended_at=at(5.5),
            ),
            StepResult(
                candidate=0,
                order=0,
                name="restart",
                action="process.restart",
                status=StepStatus.COMPENSATED,
                compensation=True,
                output={"skipped": "not compensable"},
                started_at=at(6),
                ended_at=at(6),
            ),
        ],
        validations=[
            ValidationResult(
                healthy=False,
                checks=1,
                failures=1,
                window_s=5,
                started_at=at(5.6),
                ended_at=at(5.9),
            )
        ],
        outcome=HealingOutcome.HEALED,
        outcome_detail="healed by restart-first",
        started_at=at(3.1),
        ended_at=at(11),
        time_to_recover_s=8.0,
    )
    events = timeline(status, Prelude(injected_at=t0, injected="crash", first_failure_at=at(1)))
    assert [e.what for e in events] == [
        "injected",
        "first failed check",
        "detected",
        "healing started",
        "diagnosis",
        "plan 1",
        "plan 2 (not tried)",
        "approval",
        "plan 1 step 1: restart",
        "validation",
        "undo plan 1 step 1: restart",
        "outcome: healed",
    ]
    detail = {e.what: e.detail for e in events}
    assert "process_crashed (confidence 0.90" in detail["diagnosis"]
    assert detail["approval"] == "approved by alice: ok"
    assert detail["plan 1 step 1: restart"] == "process.restart succeeded in 0.5s"
    assert detail["undo plan 1 step 1: restart"].startswith(
        "process.restart skipped (not compensable)"
    )
    # timed: between the step and the compensation it caused
    assert detail["validation"].startswith("unhealthy after 0.3s: 1 checks, 1 failed")
    assert "time to recover 8.0s" in detail["outcome: healed"]
