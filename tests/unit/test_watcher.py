"""The watcher's decisions, without a network: when a run of failed checks becomes a fault, and
when a reported fault is over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from selfheal.detection.health import Action, Check, WatchState, WatchTarget, build_fault, decide

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def checks(pattern: str) -> list[Check]:
    """'x' a failed check, '.' a good one, one second apart."""
    return [
        Check(ok=c == ".", at=T0 + timedelta(seconds=i), detail="HTTP 503", status=503)
        for i, c in enumerate(pattern)
    ]


def actions(pattern: str, **thresholds: int) -> tuple[WatchState, list[Action]]:
    state = WatchState()
    taken = []
    for check in checks(pattern):
        state, action = decide(state, check, **thresholds)
        taken.append(action)
    return state, taken


def test_third_consecutive_failure_reports_once() -> None:
    state, taken = actions("xxxxx")
    assert taken == [Action.NONE, Action.NONE, Action.REPORT_FAULT, Action.NONE, Action.NONE]
    assert state.reported
    assert state.consecutive_failures == 5
    assert state.first_failure_at == T0


def test_a_short_blip_is_forgotten() -> None:
    state, taken = actions("xx.xx.")
    assert Action.REPORT_FAULT not in taken
    assert state == WatchState(consecutive_successes=1)


def test_recovery_after_a_report_resolves_and_resets() -> None:
    state, taken = actions("xxx.")
    assert taken[-1] is Action.REPORT_RESOLVED
    assert state == WatchState()


def test_recovery_threshold_needs_consecutive_successes() -> None:
    _, taken = actions("xxx.x..", recovery_threshold=2)
    # the failure between the good checks keeps the outage open: no second report
    assert taken == [
        Action.NONE,
        Action.NONE,
        Action.REPORT_FAULT,
        Action.NONE,
        Action.NONE,
        Action.NONE,
        Action.REPORT_RESOLVED,
    ]


def test_a_new_outage_after_resolution_reports_again() -> None:
    _, taken = actions("xxx.xxx", failure_threshold=3)
    assert taken.count(Action.REPORT_FAULT) == 2


def test_threshold_one_reports_on_first_failure() -> None:
    _, taken = actions("x", failure_threshold=1)
    assert taken == [Action.REPORT_FAULT]


@given(st.text(alphabet="x.", max_size=60), st.integers(min_value=1, max_value=5))
def test_one_report_per_long_enough_run_of_failures(pattern: str, threshold: int) -> None:
    _, taken = actions(pattern, failure_threshold=threshold)
    runs = [len(run) for run in pattern.split(".") if run]
    long_runs = sum(1 for n in runs if n >= threshold)
    assert taken.count(Action.REPORT_FAULT) == long_runs
    # every reported outage that is followed by a good check is resolved
    followed = pattern.rstrip("x").split(".")
    assert taken.count(Action.REPORT_RESOLVED) == sum(1 for r in followed if len(r) >= threshold)


def test_fault_names_the_failures_and_keeps_its_identity_across_outages() -> None:
    target = WatchTarget(
        service="demo",
        health_url="http://127.0.0.1:8780/healthz",
        target="demo-target",
        labels={"base_url": "http://127.0.0.1:8780"},
    )
    state, _ = actions("xxx")
    now = T0 + timedelta(seconds=2)
    fault = build_fault(target, state, now)
    assert fault.type == "health_check_failed"
    assert fault.source == "watcher"
    assert fault.target == "demo-target"
    assert fault.health_url == target.health_url
    assert fault.values == {"consecutive_failures": 3.0, "http_status": 503.0}
    assert fault.detected_at == now
    assert "3 consecutive failed checks (HTTP 503)" in fault.summary
    assert fault.labels == {"base_url": "http://127.0.0.1:8780"}
    later, _ = actions("xxxx")
    assert build_fault(target, later, now + timedelta(hours=1)).workflow_id == fault.workflow_id


def test_a_persisting_outage_is_reported_again_every_repeat_interval() -> None:
    _, taken = actions("x" * 12 + "..", repeat_after_s=5)
    reports = [i for i, action in enumerate(taken) if action is Action.REPORT_FAULT]
    assert reports == [2, 7]  # the first after 3 failures, then every 5 s while it lasts
    assert taken[12] is Action.REPORT_RESOLVED
    _, once = actions("x" * 12)  # without a repeat interval: once per outage
    assert once.count(Action.REPORT_FAULT) == 1
