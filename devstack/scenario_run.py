"""One demo scenario on a running dev stack: inject it through checkout (healthy, and inventory
healthy too), wait for checkout's watcher to report it, follow the healing through the door
(approving it when asked to), and say what became of it and which hypotheses the diagnosis
weighed. ``selfheal dev --demo`` and ``bench/mttr.py`` run it. A Kubernetes scenario
(``devstack/demo/kubernetes.py``) brings its fault on the cluster instead and posts its alert
to the intake, as Alertmanager would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx

from selfheal.detection.health import Detection
from selfheal.devstack.demo.kubernetes import NAMESPACE as KUBE_NAMESPACE
from selfheal.devstack.demo.kubernetes import (
    KubeDemo,
    KubeDemoError,
    KubeScenario,
    alert_body,
    post_alert,
)
from selfheal.devstack.demo.scenarios import Scenario
from selfheal.devstack.stack import Guard, Say, Stack, ingest_token, operator_env, until_health
from selfheal.devstack.watcher import HealthWatcher
from selfheal.domain import HealingOutcome, HealingStatus, SelfhealError
from selfheal.domain.errors import HealingError
from selfheal.healings import Healings

T = TypeVar("T")

AUTO_APPROVER = "selfheal-dev"


class DemoFailed(Exception):
    """The demo's healing did not end (in time, or at all); the message says why."""


@dataclass(frozen=True)
class DemoRun:
    scenario: Scenario
    injected_at: datetime
    detection: Detection
    status: HealingStatus
    health: int | None
    """checkout's /healthz status once the healing ended (None: no answer); for a Kubernetes
    demo, 200 when its Deployment is healthy"""
    checked: str | None = None
    """what was checked once the healing ended, when not checkout's /healthz"""

    @property
    def healed(self) -> bool:
        return self.status.outcome == HealingOutcome.HEALED and self.health == 200

    @property
    def diagnosed_as_expected(self) -> bool:
        """The scenario's root cause, on its component (a diagnosis naming no component means
        the fault's own service)."""
        diagnosis = self.status.diagnosis
        if diagnosis is None or diagnosis.root_cause != self.scenario.root_cause:
            return False
        return (diagnosis.component or self.status.fault.service) == self.scenario.component


def hypothesis_lines(status: HealingStatus, evidence_max: int = 4) -> list[str]:
    """The diagnosis's hypotheses, best first, each with what it rests on."""
    diagnosis = status.diagnosis
    if diagnosis is None or not diagnosis.hypotheses:
        return ["hypotheses: none recorded"]
    lines = ["hypotheses, best first:"]
    for rank, h in enumerate(diagnosis.hypotheses, 1):
        rule = f", rule {h.rule}" if h.rule else ""
        lines.append(f"  {rank}. {h.root_cause} on {h.component} ({h.confidence:.2f}{rule})")
        lines += [f"       {line}" for line in h.evidence[:evidence_max]]
        if len(h.evidence) > evidence_max:
            lines.append(f"       ... {len(h.evidence) - evidence_max} more")
    return lines


async def wait_detection(watcher: HealthWatcher, since: datetime) -> Detection:
    """The first outage the watcher reported at or after ``since``."""
    while True:
        for detection in watcher.detections:
            if detection.detected_at >= since:
                return detection
        await asyncio.sleep(0.1)


async def follow(
    door: Healings,
    workflow_id: str,
    *,
    auto_approve: bool,
    started: float,
    env: str,
    say: Say,
) -> HealingStatus:
    """Tell the healing's phases until it ends; approve it (as ``AUTO_APPROVER``) when it asks
    and ``auto_approve``. Its final status."""
    result = asyncio.ensure_future(door.outcome(workflow_id))
    last_phase = ""
    decided = False
    try:
        while not result.done():
            try:
                status: HealingStatus | None = await door.show(workflow_id)
            except SelfhealError:
                # Not answerable yet (no workflow task ran) or a blip: the next poll asks again.
                status = None
            if status is not None:
                if status.phase.value != last_phase:
                    last_phase = status.phase.value
                    say(f"{time.monotonic() - started:6.1f}s  phase {last_phase}")
                if status.awaiting_approval and not decided:
                    decided = True
                    await _on_approval(door, status, auto_approve, env, say)
            await asyncio.wait({result}, timeout=0.5)
    finally:
        if not result.done():
            result.cancel()
    return result.result()


async def _on_approval(
    door: Healings, status: HealingStatus, auto_approve: bool, env: str, say: Say
) -> None:
    reasons = "; ".join(status.approval_reasons)
    if not auto_approve:
        say(
            f"awaiting approval ({reasons}): {env}selfheal approve {status.workflow_id} --by NAME, "
            "or run the demo with --auto-approve"
        )
        return
    try:
        await door.decide(
            status.workflow_id, "approve", by=AUTO_APPROVER, reason="selfheal dev --auto-approve"
        )
    except SelfhealError as exc:
        say(f"auto-approval refused: {exc}")
        return
    say(f"approved by {AUTO_APPROVER} ({reasons})")


async def health_status(url: str) -> int | None:
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(f"{url}/healthz", timeout=3.0)).status_code
        except httpx.HTTPError:
            return None


class _Deadline:
    """Awaits one step of a demo within what is left of ``timeout_s`` (Ctrl-C still wins)."""

    def __init__(self, guard: Guard, timeout_s: float) -> None:
        self.guard = guard
        self.timeout_s = timeout_s
        self.started = time.monotonic()

    def remaining(self) -> float:
        return self.timeout_s - (time.monotonic() - self.started)

    async def run(self, awaitable: Awaitable[T], what: str) -> T:
        try:
            return await self.guard.run(asyncio.wait_for(awaitable, max(self.remaining(), 0.1)))
        except TimeoutError:
            raise DemoFailed(f"timed out after {self.timeout_s:g}s {what}") from None


async def _follow_to_end(
    stack: Stack, deadline: _Deadline, workflow_id: str, *, auto_approve: bool
) -> HealingStatus:
    """Follow the healing to its end within the deadline, then say how it ended and which
    hypotheses its diagnosis weighed."""
    say = deadline.guard.say
    try:
        status = await deadline.run(
            follow(
                stack.door,
                workflow_id,
                auto_approve=auto_approve,
                started=deadline.started,
                env=operator_env(stack.settings),
                say=say,
            ),
            f"waiting for healing {workflow_id} to end",
        )
    except HealingError as exc:
        raise DemoFailed(str(exc)) from None
    outcome = status.outcome.value if status.outcome else status.phase.value
    say(f"healing {workflow_id} ended: {outcome}")
    for line in hypothesis_lines(status):
        say(line)
    return status


async def run_scenario(
    stack: Stack, guard: Guard, scenario: Scenario, *, timeout_s: float, auto_approve: bool
) -> DemoRun:
    """Inject ``scenario`` and follow its healing to the end; ``DemoFailed`` when it does not
    end within ``timeout_s`` of the start, or the workflow fails."""
    deadline = _Deadline(guard, timeout_s)
    say = guard.say
    for url in (stack.target_url, stack.inventory_url or stack.target_url):
        await deadline.run(
            until_health(url, lambda status: status == 200), f"waiting for {url} to be healthy"
        )
    injected_at = datetime.now(UTC)
    await guard.blocking(scenario.inject, stack.target_url)
    say(f"injected {scenario.name}: {scenario.description}")
    detection = await deadline.run(
        wait_detection(stack.watcher, injected_at), "waiting for the watcher to detect it"
    )
    say(
        f"detected after {(detection.detected_at - injected_at).total_seconds():.1f}s: "
        f"{detection.workflow_id}"
    )
    status = await _follow_to_end(stack, deadline, detection.workflow_id, auto_approve=auto_approve)
    return DemoRun(scenario, injected_at, detection, status, await health_status(stack.target_url))


async def run_kube_scenario(
    stack: Stack, guard: Guard, scenario: KubeScenario, *, timeout_s: float, auto_approve: bool
) -> DemoRun:
    """Bring ``scenario``'s fault on the cluster of the stack's settings, post its alert to the
    intake and follow the healing; then wait (within the deadline) for the Deployment to be
    healthy. ``DemoFailed`` when the cluster cannot run it or the deadline passes."""
    deadline = _Deadline(guard, timeout_s)
    say = guard.say
    try:
        demo = KubeDemo.connect(stack.settings)
    except KubeDemoError as exc:
        raise DemoFailed(str(exc)) from None
    try:
        say(f"preparing {KUBE_NAMESPACE}: a simulated node and a healthy Deployment ...")
        await deadline.run(demo.prepare(scenario), "preparing the Deployment")
        injected_at = datetime.now(UTC)
        labels = await deadline.run(demo.bring_fault(scenario), "bringing the fault")
        shown_at = datetime.now(UTC)
        say(f"injected {scenario.name}: {scenario.description}")
        say(await demo.state())
        body = alert_body(scenario, labels)
        workflow_id = await deadline.run(
            post_alert(stack.intake_url, ingest_token(stack.settings), body), "posting the alert"
        )
        say(f"posted {scenario.alert} to {stack.intake_url}/v1/alertmanager: {workflow_id}")
        status = await _follow_to_end(stack, deadline, workflow_id, auto_approve=auto_approve)
        healthy = await guard.run(demo.healthy(min(max(deadline.remaining(), 1.0), 30.0)))
        checked = healthy or await demo.state()
    except KubeDemoError as exc:
        raise DemoFailed(str(exc)) from None
    finally:
        demo.stop()
    detection = Detection(status.fault, workflow_id, injected_at, shown_at)
    return DemoRun(scenario, injected_at, detection, status, 200 if healthy else None, checked)
