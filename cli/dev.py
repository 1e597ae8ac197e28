"""``selfheal dev``: everything on one machine, nothing installed beforehand.

It starts, in order: the Temporal dev server, Postgres (embedded unless SELFHEAL_DATABASE__URL),
migrations, the knowledge-base import, selfheal's supervisor running the demo target, the worker
(an asyncio task of this process) and the health watcher. Ctrl-C, or the end of a demo, stops
them in reverse order. The embedded Postgres is stopped too if this run started it; one that was
already running (a ``selfheal kb`` command leaves it up) keeps running.

The demo target keeps its cache in Redis (settings ``redis.url``) when Redis answers, under a
key prefix of its own per data directory, so that the ``redis.delete_keys`` solution heals a
poisoned cache for real; otherwise in a file, and that solution stays disabled.

``--demo SCENARIO`` injects a fault into the demo target, follows its healing, prints the
timeline and exits 0 only if the fault was healed and the target's /healthz answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import typer
import uvicorn
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)

from selfheal.cli.errors import UserError, fail, user_errors
from selfheal.cli.operator import release_clients
from selfheal.cli.render import Prelude, make_console, timeline_table
from selfheal.core.settings import Settings, TemporalSettings, get_settings
from selfheal.detection.gateway import CACHE_PREFIX_LABEL
from selfheal.detection.watcher import Detection, HealthWatcher, WatchTarget
from selfheal.devstack.demo.scenarios import SCENARIOS, Scenario, UnknownScenario, get_scenario
from selfheal.devstack.processes import DevDatabase, DevStackError, TemporalDevServer, port_in_use
from selfheal.domain import ApprovalDecision, HealingOutcome, HealingStatus, SelfhealError

T = TypeVar("T")
P = ParamSpec("P")

TARGET_SERVICE = "demo"
TARGET_PROCESS = "demo-target"
WATCH_INTERVAL_S = 1.0
# The demo's validation window: long enough to see a relapse, short enough to wait for.
DEMO_WINDOW_S = 5.0
DEMO_PROBE_INTERVAL_S = 1.0
AUTO_APPROVER = "selfheal-dev"
# The intake's token when SELFHEAL_INTAKE__TOKENS is unset: dev listens on loopback only.
DEV_TOKEN = "selfheal-dev-token"
DEV_SHUTDOWN_S = 5.0
INTERRUPTED = 130
# Enabled in the knowledge base only while the demo target's cache is in Redis.
REDIS_CACHE_SOLUTION = "delete-poisoned-redis-keys"
REDIS_PING_TIMEOUT_S = 1.0

console = make_console()


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while a step of ``selfheal dev`` was under way."""


class DemoTimeout(Exception):
    """The demo's healing did not end within ``--timeout``."""


def dev_settings(base: Settings, data_dir: Path | None, *, demo: bool) -> Settings:
    """The settings every part of the dev stack shares: addresses of the processes it starts,
    and for a demo a short validation window unless SELFHEAL_HEALING__* chose one."""
    dev = base.dev.model_copy(update={"data_dir": (data_dir or base.dev.data_dir).resolve()})
    update: dict[str, Any] = {
        "dev": dev,
        "temporal": TemporalSettings(
            address=f"127.0.0.1:{dev.temporal_port}", task_queue=base.temporal.task_queue
        ),
        "supervisor": base.supervisor.model_copy(
            update={"url": f"http://127.0.0.1:{dev.supervisor_port}"}
        ),
        "runbooks_dir": base.runbooks_dir.resolve(),
    }
    chosen = base.worker.model_fields_set
    worker: dict[str, float] = {}
    if "metrics_port" not in chosen:
        # The SDK's metrics endpoint binds all interfaces: only when asked for.
        worker["metrics_port"] = 0
    if "graceful_shutdown_s" not in chosen:
        # Ctrl-C should be quick; an interrupted step is retried when dev runs again.
        worker["graceful_shutdown_s"] = DEV_SHUTDOWN_S
    update["worker"] = base.worker.model_copy(update=worker)
    if demo:
        chosen = base.healing.model_fields_set
        healing: dict[str, float] = {}
        if "stabilization_window_s" not in chosen:
            healing["stabilization_window_s"] = DEMO_WINDOW_S
        if "probe_interval_s" not in chosen:
            healing["probe_interval_s"] = DEMO_PROBE_INTERVAL_S
        update["healing"] = base.healing.model_copy(update=healing)
    return base.model_copy(update=update)


# --------------------------------------------------------------------------------- the stack


class Guard:
    """Awaits one step of ``selfheal dev`` unless Ctrl-C comes first or a background task
    (worker, watcher) dies, so that no wait outlives the reason for waiting."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.background: dict[str, asyncio.Task[None]] = {}
        self._reported: set[str] = set()

    async def run(self, awaitable: Awaitable[T]) -> T:
        main = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait(
                {main, stopper, *self.background.values()}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        if main in done:
            return main.result()
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await main
        if self.stop.is_set():
            raise Interrupted
        for name, task in self.background.items():
            if task in done:
                self._reported.add(name)
                error = " ".join(str(task.exception() or "it returned").split())
                raise DevStackError(f"the {name} stopped: {error}")
        raise AssertionError("unreachable")

    async def finish(self, name: str, timeout_s: float) -> None:
        """Wait for a background task that ``stop`` ends; cancel it if it overstays."""
        try:
            await asyncio.wait_for(self.background[name], timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            pass
        except Exception as exc:
            if name not in self._reported:
                console.print(f"the {name} failed while stopping: {exc}", markup=False)

    async def blocking(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(asyncio.to_thread(func, *args, **kwargs))


@dataclass(frozen=True)
class DemoCache:
    """Where the demo target keeps its cache: Redis keys under ``prefix``, or a file."""

    redis_url: str | None
    prefix: str
    where: str


def demo_cache(settings: Settings) -> DemoCache:
    """Redis at ``settings.redis.url`` when it answers PING, else the target's file cache."""
    from selfheal.activities.actions.redis import display_url

    url = settings.redis.url
    # Two dev stacks sharing one Redis must not see (or flush) each other's cache.
    digest = hashlib.sha256(str(settings.dev.data_dir).encode()).hexdigest()[:12]
    prefix = f"selfheal-dev:{digest}:cache:"
    problem = _redis_problem(url)
    if problem is None:
        return DemoCache(url, prefix, f"Redis at {display_url(url)}, keys {prefix}*")
    return DemoCache(
        None,
        prefix,
        f"a file: Redis at {display_url(url)} does not answer ({problem}); "
        "SELFHEAL_REDIS__URL names another",
    )


def _redis_problem(url: str) -> str | None:
    """Why Redis at ``url`` does not answer PING; None when it does."""
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_timeout=REDIS_PING_TIMEOUT_S, socket_connect_timeout=REDIS_PING_TIMEOUT_S
        )
    except ValueError as exc:
        return f"invalid URL: {exc}"
    try:
        client.ping()
    except redis.RedisError as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    finally:
        client.close()
    return None


@dataclass
class Stack:
    settings: Settings
    temporal: TemporalDevServer
    database_url: str
    client: Client
    watcher: HealthWatcher
    target_url: str
    imported: str
    intake_url: str
    cache: DemoCache


def _migrate_and_import(settings: Settings, url: str, *, redis_cache: bool) -> str:
    from selfheal.activities.actions import default_registry
    from selfheal.core.database import make_engine, make_session_factory
    from selfheal.models import KnowledgeBase, load_catalog
    from selfheal.models.migrate import upgrade

    upgrade(url)
    specs = [
        spec.model_copy(update={"enabled": True})
        if spec.name == REDIS_CACHE_SOLUTION and redis_cache
        else spec
        for spec in load_catalog(settings.runbooks_dir, registry=default_registry())
    ]
    engine = make_engine(url)
    try:
        report = KnowledgeBase(make_session_factory(engine)).import_solutions(specs)
    finally:
        engine.dispose()
    return (
        f"{len(specs)} solutions from {settings.runbooks_dir}: {len(report.created)} created, "
        f"{len(report.updated)} updated, {len(report.unchanged)} unchanged"
    )


async def _until_health(url: str, accept: Callable[[int], bool]) -> None:
    """Poll ``url``/healthz until it answers with a status ``accept`` takes."""
    async with httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if accept((await http.get(f"{url}/healthz", timeout=1.0)).status_code):
                    return
            await asyncio.sleep(0.1)


async def _until(condition: Callable[[], bool]) -> None:
    # uvicorn announces readiness as a plain flag (Server.started), not an event
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def start_stack(settings: Settings, guard: Guard, exits: contextlib.AsyncExitStack) -> Stack:
    from selfheal.core.database import make_engine, make_session_factory
    from selfheal.core.temporal import connect
    from selfheal.devstack.demo.target import target_command
    from selfheal.devstack.supervisor import Supervisor, create_app, serve_in_thread
    from selfheal.worker import run_worker

    dev = settings.dev
    if not settings.runbooks_dir.is_dir():
        raise UserError(
            f"runbooks directory {settings.runbooks_dir} not found: run selfheal dev from the "
            "project checkout or set SELFHEAL_RUNBOOKS_DIR"
        )
    for port, variable in (
        (dev.target_port, "DEV__TARGET_PORT"),
        (dev.supervisor_port, "DEV__SUPERVISOR_PORT"),
        (settings.intake.port, "INTAKE__PORT"),
    ):
        if port_in_use("127.0.0.1", port):
            raise DevStackError(
                f"port {port} on 127.0.0.1 is already in use; choose another with "
                f"SELFHEAL_{variable}"
            )
    dev.data_dir.mkdir(parents=True, exist_ok=True)
    cache = await guard.blocking(demo_cache, settings)
    console.print(f"the demo target keeps its cache in {cache.where}", markup=False)

    temporal = TemporalDevServer(dev.data_dir, port=dev.temporal_port, ui_port=dev.temporal_ui_port)
    exits.callback(temporal.stop)
    console.print(f"starting the Temporal dev server on {temporal.address} ...", markup=False)
    await guard.run(temporal.start())

    database = DevDatabase(settings)
    exits.callback(database.stop)
    console.print("starting Postgres, migrating, importing the runbooks ...", markup=False)
    url = await guard.blocking(database.start)
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": url})}
    )
    imported = await guard.blocking(
        _migrate_and_import, settings, url, redis_cache=cache.redis_url is not None
    )
    engine = make_engine(url, pool_size=1)
    exits.callback(engine.dispose)

    target_url = f"http://127.0.0.1:{dev.target_port}"
    supervisor = Supervisor(dev.data_dir / "supervisor")
    supervisor.add(
        TARGET_PROCESS,
        target_command(
            dev.target_port,
            dev.data_dir / "target",
            redis_url=cache.redis_url,
            redis_prefix=cache.prefix,
        ),
        health_url=f"{target_url}/healthz",
    )
    exits.callback(supervisor.stop_all)
    supervisor.start_all()
    try:
        api = serve_in_thread(create_app(supervisor), "127.0.0.1", dev.supervisor_port)
    except OSError as exc:
        raise DevStackError(
            f"the supervisor API cannot listen on {dev.supervisor_port}: {exc}"
        ) from None
    exits.callback(api.stop)
    try:
        answers = _until_health(target_url, lambda _: True)
        await guard.run(asyncio.wait_for(answers, 20))
    except TimeoutError:
        raise DevStackError(
            f"the demo target did not answer on {target_url} within 20s "
            f"(log: {dev.data_dir / 'supervisor' / 'logs' / (TARGET_PROCESS + '.log')})"
        ) from None

    guard.background["worker"] = asyncio.create_task(run_worker(settings, stop=guard.stop))
    exits.push_async_callback(guard.finish, "worker", settings.worker.graceful_shutdown_s + 10)

    client = await guard.run(connect(settings.temporal, tracing=False))
    watcher = HealthWatcher(
        client,
        WatchTarget(
            service=TARGET_SERVICE,
            health_url=f"{target_url}/healthz",
            target=TARGET_PROCESS,
            labels={"base_url": target_url}
            | ({CACHE_PREFIX_LABEL: cache.prefix} if cache.redis_url else {}),
        ),
        interval_s=WATCH_INTERVAL_S,
        timeout_s=settings.probe.timeout_s,
        task_queue=settings.temporal.task_queue,
    )
    guard.background["watcher"] = asyncio.create_task(watcher.run(guard.stop))
    exits.push_async_callback(guard.finish, "watcher", 10)

    intake = _intake_server(settings, client, target_url, make_session_factory(engine))
    guard.background["intake"] = asyncio.create_task(intake.serve())
    await guard.run(_until(lambda: intake.started))

    async def stop_intake() -> None:
        intake.should_exit = True
        await guard.finish("intake", 10)

    exits.push_async_callback(stop_intake)
    intake_url = f"http://{settings.intake.host}:{settings.intake.port}"
    return Stack(settings, temporal, url, client, watcher, target_url, imported, intake_url, cache)


def _intake_server(
    settings: Settings, client: Client, target_url: str, session_factory: sessionmaker[Session]
) -> uvicorn.Server:
    """``selfheal serve`` in this process, on this event loop, with a dev token if none is set.

    The demo target's catalog entry follows the port dev runs it on."""
    from selfheal.detection.app import IntakeDeps, create_app
    from selfheal.detection.detector_config import load_detector_config
    from selfheal.detection.metrics_router import MetricsRouter
    from selfheal.detection.services import load_services
    from selfheal.models.guardrails import DatabaseKillSwitch

    catalog = load_services(settings.runbooks_dir / "services.yaml")
    for service in catalog.services:
        for target in service.targets:
            if target.name == TARGET_PROCESS:
                target.health_url = f"{target_url}/healthz"
                target.base_url = target_url
    tokens = settings.intake.tokens or {DEV_TOKEN: ["ingest", "approve", "name:dev"]}
    app = create_app(
        IntakeDeps(
            client=client,
            settings=settings.intake.model_copy(update={"tokens": tokens}),
            task_queue=settings.temporal.task_queue,
            router=MetricsRouter(load_detector_config(settings.runbooks_dir / "detectors.yaml")),
            catalog=catalog,
            kill_switch=DatabaseKillSwitch(session_factory),
        )
    )
    config = uvicorn.Config(
        app,
        host=settings.intake.host,
        port=settings.intake.port,
        log_level="warning",
        access_log=False,
    )
    return _EmbeddedServer(config)


class _EmbeddedServer(uvicorn.Server):
    """Signals belong to ``selfheal dev``, which stops this server through ``should_exit``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _print_started(stack: Stack) -> None:
    from selfheal.models.base import display_url

    settings = stack.settings
    dev = settings.dev
    table = Table.grid(padding=(0, 2))
    table.add_row("Temporal", stack.temporal.address, f"UI {stack.temporal.ui_url}")
    table.add_row("Postgres", display_url(stack.database_url), "")
    table.add_row("knowledge base", stack.imported, "")
    table.add_row("worker", f"task queue {settings.temporal.task_queue}", "in this process")
    table.add_row("supervisor", settings.supervisor.url, f"runs {TARGET_PROCESS}")
    table.add_row("demo target", stack.target_url, "/healthz /metrics POST /inject/<scenario>")
    table.add_row("demo cache", stack.cache.where, "")
    token = "SELFHEAL_INTAKE__TOKENS" if settings.intake.tokens else f"token {DEV_TOKEN}"
    table.add_row("intake", stack.intake_url, f"Alertmanager, OTLP, faults; {token}")
    table.add_row(
        "watcher",
        f"{stack.target_url}/healthz every {WATCH_INTERVAL_S:g}s",
        f"{stack.watcher.failure_threshold} failures start a healing",
    )
    console.print(f"selfheal dev is running; data in {dev.data_dir}")
    console.print(table)


def operator_env(address: str) -> str:
    """What to put before a ``selfheal`` command so that it finds this dev server."""
    return "" if address == TemporalSettings().address else f"SELFHEAL_TEMPORAL__ADDRESS={address} "


def _print_try(stack: Stack) -> None:
    address = stack.temporal.address
    env = operator_env(address)
    lines = [
        "Try, in another terminal:",
        f"  curl -X POST {stack.target_url}/inject/crash      (scenarios: {', '.join(SCENARIOS)})",
        f"  {env}selfheal list",
        f"  {env}selfheal show heal-<fingerprint>",
        f"  {env}selfheal approve heal-<fingerprint> --by you --reason 'looks right'",
        f"  temporal workflow list --address {address} --query \"WorkflowType='HealingWorkflow'\"",
        f"  open {stack.temporal.ui_url}",
        "Ctrl-C stops everything this command started.",
    ]
    console.print("\n".join(lines), markup=False)


# ---------------------------------------------------------------------------------- the demo


async def _wait_detection(watcher: HealthWatcher, since: datetime) -> Detection:
    while True:
        for detection in watcher.detections:
            if detection.detected_at >= since:
                return detection
        await asyncio.sleep(0.1)


async def _query(handle: WorkflowHandle[Any, HealingStatus]) -> HealingStatus | None:
    try:
        status: HealingStatus = await handle.query(
            "status", result_type=HealingStatus, rpc_timeout=timedelta(seconds=5)
        )
    except Exception:
        # Not answerable yet (no workflow task ran) or a blip: the next poll asks again.
        return None
    return status


async def follow(
    client: Client, workflow_id: str, *, auto_approve: bool, started: float, env: str
) -> HealingStatus:
    """Show the healing's phase until it ends; approve it when asked to. Its final status."""
    handle: WorkflowHandle[Any, HealingStatus] = client.get_workflow_handle(
        workflow_id, result_type=HealingStatus
    )
    result = asyncio.ensure_future(handle.result())
    last_phase = ""
    decided = False
    try:
        with console.status(f"healing {workflow_id}") as spinner:
            while not result.done():
                status = await _query(handle)
                elapsed = time.monotonic() - started
                if status is not None:
                    if status.phase.value != last_phase:
                        last_phase = status.phase.value
                        console.print(f"{elapsed:6.1f}s  phase {last_phase}", markup=False)
                    spinner.update(f"healing {workflow_id}: {last_phase} ({elapsed:.0f}s)")
                    if status.awaiting_approval and not decided:
                        decided = True
                        await _on_approval(handle, status, auto_approve, env)
                await asyncio.wait({result}, timeout=0.5)
    finally:
        if not result.done():
            result.cancel()
    return result.result()


async def _on_approval(
    handle: WorkflowHandle[Any, HealingStatus], status: HealingStatus, auto_approve: bool, env: str
) -> None:
    reasons = "; ".join(status.approval_reasons)
    if not auto_approve:
        console.print(
            f"awaiting approval ({reasons}): {env}selfheal approve {handle.id} --by NAME, "
            "or run the demo with --auto-approve",
            markup=False,
        )
        return
    try:
        await handle.execute_update(
            "approve",
            ApprovalDecision(by=AUTO_APPROVER, reason="selfheal dev --auto-approve"),
        )
    except WorkflowUpdateFailedError as exc:
        console.print(f"auto-approval refused: {exc.cause or exc}", markup=False)
        return
    console.print(f"approved by {AUTO_APPROVER} ({reasons})", markup=False)


async def _health_status(url: str) -> int | None:
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(f"{url}/healthz", timeout=3.0)).status_code
        except httpx.HTTPError:
            return None


async def run_demo(
    stack: Stack, guard: Guard, scenario: Scenario, *, timeout_s: float, auto_approve: bool
) -> int:
    started = time.monotonic()

    async def within_deadline(awaitable: Awaitable[T], what: str) -> T:
        remaining = timeout_s - (time.monotonic() - started)
        try:
            return await guard.run(asyncio.wait_for(awaitable, max(remaining, 0.1)))
        except TimeoutError:
            raise DemoTimeout(f"timed out after {timeout_s:g}s {what}") from None

    try:
        await within_deadline(
            _until_health(stack.target_url, lambda status: status == 200),
            "waiting for a healthy target",
        )
        injected_at = datetime.now(UTC)
        await guard.blocking(scenario.inject, stack.target_url)
        console.print(f"injected {scenario.name}: {scenario.description}", markup=False)
        detection = await within_deadline(
            _wait_detection(stack.watcher, injected_at), "waiting for the watcher to detect it"
        )
        console.print(
            f"detected after {(detection.detected_at - injected_at).total_seconds():.1f}s: "
            f"{detection.workflow_id}",
            markup=False,
        )
        status = await within_deadline(
            follow(
                stack.client,
                detection.workflow_id,
                auto_approve=auto_approve,
                started=started,
                env=operator_env(stack.temporal.address),
            ),
            f"waiting for healing {detection.workflow_id} to end",
        )
    except DemoTimeout as exc:
        console.print(f"demo failed: {exc}", markup=False, style="bold red")
        return 1
    except WorkflowFailureError as exc:
        console.print(f"demo failed: the healing workflow failed: {exc.cause}", markup=False)
        return 1

    health = await _health_status(stack.target_url)
    prelude = Prelude(
        injected_at=injected_at,
        injected=f"{scenario.name}: {scenario.description}",
        first_failure_at=detection.first_failure_at,
    )
    console.print(timeline_table(status, prelude))
    return _verdict(status, scenario, health)


def _verdict(status: HealingStatus, scenario: Scenario, health: int | None) -> int:
    diagnosed = status.diagnosis.root_cause if status.diagnosis else "none"
    match = "as expected" if diagnosed == scenario.root_cause else "expected " + scenario.root_cause
    console.print(f"root cause: {diagnosed} ({match})", markup=False)
    console.print(f"target /healthz: {health if health is not None else 'no answer'}")
    healed = status.outcome == HealingOutcome.HEALED and health == 200
    outcome = status.outcome.value if status.outcome else status.phase.value
    if healed:
        ttr = status.time_to_recover_s
        console.print(
            f"outcome: {outcome}" + (f" in {ttr:.1f}s after detection" if ttr is not None else ""),
            style="bold green",
            markup=False,
        )
        return 0
    console.print(f"outcome: {outcome}: {status.outcome_detail}", style="bold red", markup=False)
    return 1


# ------------------------------------------------------------------------------- the command


async def run_dev(
    settings: Settings, scenario: Scenario | None, *, timeout_s: float, auto_approve: bool
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    guard = Guard(stop)
    try:
        async with contextlib.AsyncExitStack() as exits:
            try:
                stack = await start_stack(settings, guard, exits)
                if scenario is None:
                    _print_started(stack)
                    _print_try(stack)
                    await guard.run(stop.wait())
                    code = 0
                else:
                    console.print(
                        f"running on {stack.temporal.address} (UI {stack.temporal.ui_url}), "
                        f"data in {settings.dev.data_dir}\nknowledge base: {stack.imported}",
                        markup=False,
                    )
                    code = await run_demo(
                        stack, guard, scenario, timeout_s=timeout_s, auto_approve=auto_approve
                    )
            except Interrupted:
                code = INTERRUPTED
            console.print("stopping ...", markup=False)
            stop.set()
        return code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _scenarios_table() -> Table:
    table = Table()
    for column in ("scenario", "what happens", "expected root cause", "heals by"):
        table.add_column(column)
    for s in SCENARIOS.values():
        table.add_row(s.name, s.description, s.root_cause, s.heals_by)
    return table


@user_errors
def dev(
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="state of every process (default: SELFHEAL_DEV__DATA_DIR, .selfheal)",
    ),
    demo: str | None = typer.Option(
        None, "--demo", help="inject SCENARIO, heal it, exit 0 if healed; 'list' lists them"
    ),
    timeout: float = typer.Option(
        180.0, "--timeout", min=1, help="seconds a demo may take, from injection to outcome"
    ),
    auto_approve: bool = typer.Option(
        False, "--auto-approve", help=f"approve a healing that asks for it (as {AUTO_APPROVER})"
    ),
) -> None:
    """Run Temporal, Postgres, the worker, the supervisor, a demo target and the watcher."""
    if demo == "list":
        console.print(_scenarios_table())
        return
    try:
        scenario = get_scenario(demo) if demo is not None else None
    except UnknownScenario as exc:
        fail(str(exc))
    settings = dev_settings(get_settings(), data_dir, demo=scenario is not None)
    try:
        code = asyncio.run(
            run_dev(settings, scenario, timeout_s=timeout, auto_approve=auto_approve)
        )
    except (DevStackError, SelfhealError) as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        code = INTERRUPTED
    release_clients()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)
