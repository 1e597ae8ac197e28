"""Mean time to recover of each demo scenario, end to end, on the `selfheal dev` stack.

    .venv/bin/python -m bench.mttr [--repeats 3] [--scenarios crash,hang,...]

One stack (Temporal dev server with SQLite in WAL mode, Postgres, worker, supervisor, the demo
services checkout and inventory, a watcher per service on a 1 s interval, a 5 s stabilization
window) serves every run. Each run resets both services to normal, injects the scenario through
checkout and follows the healing checkout's watcher starts, approving it when it asks (as
``selfheal dev --demo --auto-approve``). Time from injection to validated recovery is split into:

- detection: injection → the watcher reports the fault (3 failed probes, 1 s apart);
- diagnosis+planning: detection → the first step starts (evidence, rules, knowledge base, gate,
  the automatic approval);
- execution: the time steps and compensations ran, every candidate included;
- validation: the time spent validating (the stabilization window, and failed validations);
- other: what is left (Temporal round trips between activities, recording).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine_facts, write_results
from selfheal.core.logging import configure_logging
from selfheal.core.settings import DevSettings, IntakeSettings, Settings
from selfheal.detection.health import Detection
from selfheal.devstack.demo.scenarios import SCENARIOS, get_scenario
from selfheal.devstack.processes import free_ports
from selfheal.devstack.scenario_run import DemoRun, run_scenario
from selfheal.devstack.stack import (
    INVENTORY_PROCESS,
    TARGET_PROCESS,
    Guard,
    Stack,
    dev_settings,
    start_stack,
    until_health,
)
from selfheal.devstack.supervisor.api import IDEMPOTENCY_HEADER
from selfheal.devstack.watcher import HealthWatcher
from selfheal.domain import HealingOutcome, HealingStatus

# Per run, injection to outcome: the slowest healing measured takes about 25 s.
RUN_TIMEOUT_S = 180.0

PARTS = (
    "total_s",
    "detection_s",
    "diagnosis_planning_s",
    "execution_s",
    "validation_s",
    "other_s",
)


@dataclass
class Run:
    scenario: str
    outcome: str
    root_cause: str
    solution: str
    total_s: float
    detection_s: float
    diagnosis_planning_s: float
    execution_s: float
    validation_s: float
    other_s: float


def split(scenario: str, injected: datetime, found: Detection, status: HealingStatus) -> Run:
    forward = status.steps
    spans = [(v.started_at, v.ended_at) for v in status.validations]
    validations = [(start, end) for start, end in spans if start and end]
    recovered = validations[-1][1] if validations else status.ended_at
    assert recovered is not None and forward, f"{scenario}: no steps or no end"
    total = (recovered - injected).total_seconds()
    detection = (found.detected_at - injected).total_seconds()
    planning = (forward[0].started_at - found.detected_at).total_seconds()
    execution = sum((s.ended_at - s.started_at).total_seconds() for s in forward)
    validation = sum((end - start).total_seconds() for start, end in validations)
    return Run(
        scenario=scenario,
        outcome=status.outcome.value if status.outcome else status.phase.value,
        root_cause=status.diagnosis.root_cause if status.diagnosis else "",
        solution=status.solution_name or "",
        total_s=total,
        detection_s=detection,
        diagnosis_planning_s=planning,
        execution_s=execution,
        validation_s=validation,
        other_s=total - detection - planning - execution - validation,
    )


async def reset(url: str) -> None:
    # Some faults outlive their healing on purpose (a fallback hides the slow dependency):
    # every run starts from a normal target, or a repeat would find nothing to detect.
    async with httpx.AsyncClient() as http:
        (await http.post(f"{url}/admin/reset", timeout=5)).raise_for_status()


async def to_normal(stack: Stack, guard: Guard) -> None:
    """Both demo services up, answering and reset. A healing that did not heal may leave one
    crashed or hung, where ``/admin/reset`` cannot reach it: the supervisor restarts it first
    (its flags and settings survive a restart; the reset puts them back)."""
    services = ((TARGET_PROCESS, stack.target_url), (INVENTORY_PROCESS, stack.inventory_url))
    async with httpx.AsyncClient() as http:
        for process, url in services:
            try:
                await http.get(f"{url}/healthz", timeout=2)
                continue
            except httpx.HTTPError:
                pass
            restart = f"{stack.settings.supervisor.url}/processes/{process}/restart"
            key = {IDEMPOTENCY_HEADER: f"bench-{uuid.uuid4().hex}"}
            (await http.post(restart, headers=key, timeout=30)).raise_for_status()
            await guard.run(asyncio.wait_for(until_health(url, lambda _: True), 30))
    await guard.run(reset(stack.target_url))
    for _, url in services:
        await guard.run(asyncio.wait_for(until_health(url, lambda s: s == 200), 60))
    # The watchers must have seen the recovery too (and told the last healing): else the next
    # injection is, to them, the same outage going on, and starts nothing new.
    for watcher in stack.watchers:
        await guard.run(asyncio.wait_for(_recovered(watcher), 30))
    # ...and the last healing must have ended: one still validating would take the next fault
    # for its own relapse (same target, same fingerprint) and answer for it.
    with contextlib.suppress(TimeoutError):
        await guard.run(asyncio.wait_for(_watcher_healings_ended(stack), 60))


async def _watcher_healings_ended(stack: Stack) -> None:
    """Until no healing of a watcher's fault runs (the detectors' own may go on suppressing)."""
    while any(
        row.status == "RUNNING" and row.fault_type == "health_check_failed"
        for row in await stack.door.list(limit=20)
    ):
        await asyncio.sleep(0.5)


async def _recovered(watcher: HealthWatcher) -> None:
    while watcher.current is not None:
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def demo_stack(prefix: str) -> AsyncIterator[tuple[Stack, Guard]]:
    """The ``selfheal dev --demo`` stack on free ports and a fresh data directory, for as long as
    the block lasts. Quiet once started (logging at WARNING): a bench prints its own line per
    run."""
    configure_logging("WARNING", fmt="console")
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    # Free ports: the bench must not collide with a `selfheal dev` running on the defaults.
    temporal, ui, target, supervisor, intake = free_ports(5)
    ports = DevSettings(
        temporal_port=temporal, temporal_ui_port=ui, target_port=target, supervisor_port=supervisor
    )
    settings = dev_settings(
        Settings(dev=ports, intake=IntakeSettings(port=intake)), data_dir, demo=True
    )
    stop = asyncio.Event()
    guard = Guard(stop)
    async with contextlib.AsyncExitStack() as exits:
        stack = await start_stack(settings, guard, exits)
        guard.say = lambda _: None
        try:
            yield stack, guard
        finally:
            stop.set()


async def demo_run(stack: Stack, guard: Guard, name: str) -> DemoRun:
    """One run of scenario ``name``, as ``selfheal dev --demo NAME --auto-approve`` does it, from
    a target reset to normal; ``DemoFailed`` when its healing does not end in time."""
    await to_normal(stack, guard)
    return await run_scenario(
        stack, guard, get_scenario(name), timeout_s=RUN_TIMEOUT_S, auto_approve=True
    )


async def one_run(stack: Stack, guard: Guard, name: str) -> Run:
    demo = await demo_run(stack, guard, name)
    run = split(name, demo.injected_at, demo.detection, demo.status)
    print(
        f"{name:16} {run.outcome:9} total {run.total_s:5.1f}s  detect {run.detection_s:4.1f}  "
        f"plan {run.diagnosis_planning_s:4.1f}  exec {run.execution_s:4.1f}  "
        f"validate {run.validation_s:4.1f}  ({run.solution})",
        flush=True,
    )
    return run


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r.scenario for r in runs):
        mine = [r for r in runs if r.scenario == name]
        row: dict[str, Any] = {
            "scenario": name,
            "runs": len(mine),
            "healed": sum(r.outcome == HealingOutcome.HEALED for r in mine),
        }
        for part in PARTS:
            values = [getattr(r, part) for r in mine]
            row[f"{part}_median"] = round(statistics.median(values), 2)
            row[f"{part}_max"] = round(max(values), 2)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], settings: Settings) -> str:
    lines = [
        "# MTTR of the demo scenarios (selfheal dev stack)",
        "",
        f"Watcher: 1 s probes, 3 failures; validation window "
        f"{settings.healing.stabilization_window_s:g} s, probe every "
        f"{settings.healing.probe_interval_s:g} s. Seconds, median (max).",
        "",
        "| scenario | healed | injection → recovered | detection | diagnosis+planning "
        "| execution | validation | other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[p + '_median']:.1f} ({r[p + '_max']:.1f})" for p in PARTS]
        lines.append(f"| {r['scenario']} | {r['healed']}/{r['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


async def main(scenarios: list[str], repeats: int) -> int:
    runs: list[Run] = []
    async with demo_stack("selfheal-mttr-") as (stack, guard):
        settings = stack.settings
        for _ in range(repeats):
            for name in scenarios:
                runs.append(await one_run(stack, guard, name))
    rows = summarize(runs)
    text = markdown(rows, settings)
    print(text)
    write_results(
        "mttr",
        {
            "settings": {
                "repeats": repeats,
                "stabilization_window_s": settings.healing.stabilization_window_s,
                "probe_interval_s": settings.healing.probe_interval_s,
            },
            "summary": rows,
            "runs": [asdict(r) for r in runs],
            "machine": machine_facts(),
        },
        text,
    )
    return 0 if all(r.outcome == HealingOutcome.HEALED for r in runs) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    names = [n for n in args.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or args.repeats < 1:
        parser.error(
            f"--scenarios: unknown {unknown}; known {list(SCENARIOS)}"
            if unknown
            else "--repeats: expected at least 1"
        )
    code = asyncio.run(main(names, args.repeats))
    sys.stdout.flush()
    os._exit(code)  # temporalio may abort at interpreter exit (sdk-python#300)
