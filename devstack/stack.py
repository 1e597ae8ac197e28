"""The dev stack (``selfheal dev``) as a library: everything on one machine, nothing installed
beforehand, for the command, the end-to-end tests and the benches.

``start_stack`` starts, in order: the Temporal dev server, Postgres (embedded unless
SELFHEAL_DATABASE__URL), migrations, the knowledge-base import, selfheal's supervisor running the
demo services (``checkout`` on SELFHEAL_DEV__TARGET_PORT and its dependency ``inventory`` on a
free port), the worker (an asyncio task of this process), the door, a health watcher per service
and the intake; each is registered on an ``AsyncExitStack`` so that closing it stops them in
reverse order. Both services push OTLP metrics and traces to the intake every second, with an
``ingest`` token of the intake (the dev token unless SELFHEAL_INTAKE__TOKENS is set). The
embedded Postgres is stopped too if this run started it; one that was already running (a
``selfheal kb`` command leaves it up) keeps running.

Checkout keeps its cache in Redis (settings ``redis.url``) when Redis answers, under a
key prefix of its own per data directory, so that the ``redis.delete_keys`` solution heals a
poisoned cache for real; otherwise in a file, and that solution stays disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import uvicorn
import yaml
from sqlalchemy.orm import Session, sessionmaker

from selfheal.core.catalog import CACHE_PREFIX_LABEL, ServiceCatalog, load_services
from selfheal.core.settings import Settings, TemporalSettings
from selfheal.core.temporal import connect
from selfheal.detection.health import WatchTarget
from selfheal.devstack.processes import (
    DevDatabase,
    DevStackError,
    TemporalDevServer,
    free_port,
    port_in_use,
    stop_leftovers,
)
from selfheal.devstack.watcher import HealthWatcher
from selfheal.domain import ConfigError
from selfheal.healings import Healings

T = TypeVar("T")
P = ParamSpec("P")
Say = Callable[[str], None]
"""Where the stack tells what it is doing, one line at a time."""

TARGET_SERVICE = "checkout"
TARGET_PROCESS = "checkout"
INVENTORY_SERVICE = "inventory"
INVENTORY_PROCESS = "inventory"
WATCH_INTERVAL_S = 1.0
# The demo's validation window: long enough to see a relapse, short enough to wait for.
DEMO_WINDOW_S = 5.0
DEMO_PROBE_INTERVAL_S = 1.0
# The demo's inventory recovers from dependency_slow by itself after this long, and the breaker
# kept over checkout's fallback probes it this often: the fallback is switched off again.
DEMO_SLOW_FOR_S = 15.0
DEMO_BREAKER_OPEN_S = 10.0
# The intake's token when SELFHEAL_INTAKE__TOKENS is unset: dev listens on loopback only.
DEV_TOKEN = "selfheal-dev-token"
DEV_LEAD_S = 2.0
DEV_TRACES_WINDOW_S = 5.0  # detection takes ~3 s: earlier errors are the last demo's
DEV_SHUTDOWN_S = 5.0
# Enabled in the knowledge base only while checkout's cache is in Redis.
REDIS_CACHE_SOLUTION = "delete-poisoned-redis-keys"
REDIS_PING_TIMEOUT_S = 1.0


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while a step of ``selfheal dev`` was under way."""


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
    for port in ("metrics_port", "kb_metrics_port"):
        if port not in chosen:
            # The metrics endpoints bind all interfaces: only when asked for.
            worker[port] = 0
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
        if "breaker_open_s" not in chosen:
            healing["breaker_open_s"] = DEMO_BREAKER_OPEN_S
        update["healing"] = base.healing.model_copy(update=healing)
    if "metrics_lead_s" not in base.evidence.model_fields_set:
        # the watcher probes every second: a fault it reports began about 3 s before
        update["evidence"] = base.evidence.model_copy(update={"metrics_lead_s": DEV_LEAD_S})
    if "traces_window_s" not in base.evidence.model_fields_set:
        # one demo after another: the previous scenario's errors are not this one's
        evidence = update.get("evidence", base.evidence)
        update["evidence"] = evidence.model_copy(update={"traces_window_s": DEV_TRACES_WINDOW_S})
    return base.model_copy(update=update)


# --------------------------------------------------------------------------------- the stack


class Guard:
    """Awaits one step of ``selfheal dev`` unless Ctrl-C comes first or a background task
    (worker, watcher) dies, so that no wait outlives the reason for waiting."""

    def __init__(self, stop: asyncio.Event, say: Say = print) -> None:
        self.stop = stop
        self.say = say
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
                self.say(f"the {name} failed while stopping: {exc}")

    async def blocking(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(asyncio.to_thread(func, *args, **kwargs))


@dataclass(frozen=True)
class DemoCache:
    """Where checkout keeps its cache: Redis keys under ``prefix``, or a file."""

    redis_url: str | None
    prefix: str
    where: str


def demo_cache(settings: Settings) -> DemoCache:
    """Redis at ``settings.redis.url`` when it answers PING, else checkout's file cache."""
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


@dataclass(frozen=True)
class DemoUrls:
    """Where the demo services answer."""

    checkout: str
    inventory: str


@dataclass
class Stack:
    settings: Settings
    temporal: TemporalDevServer
    database_url: str
    door: Healings
    watcher: HealthWatcher
    """checkout's: the service the demo scenarios are seen on"""
    target_url: str
    """checkout's URL"""
    imported: str
    intake_url: str
    cache: DemoCache
    inventory_url: str = ""
    watchers: list[HealthWatcher] = field(default_factory=list)
    """one per demo service, checkout's first"""


def _migrate_and_import(settings: Settings, url: str, *, redis_cache: bool, source: Path) -> str:
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
        f"{len(specs)} solutions from {source}: {len(report.created)} created, "
        f"{len(report.updated)} updated, {len(report.unchanged)} unchanged"
    )


async def until_health(url: str, accept: Callable[[int], bool]) -> None:
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
    from selfheal.core.forecasts import FORECASTS_FILE, load_forecast_rules
    from selfheal.devstack.demo.checkout import checkout_command, inventory_command
    from selfheal.devstack.demo.common import TOKEN_ENV
    from selfheal.devstack.supervisor import Supervisor, create_app, serve_in_thread
    from selfheal.healings.schedules import sync_forecast_schedules
    from selfheal.worker import run_worker

    dev = settings.dev
    if not settings.runbooks_dir.is_dir():
        raise ConfigError(
            f"runbooks directory {settings.runbooks_dir} not found: unset SELFHEAL_RUNBOOKS_DIR "
            "to use the demo's, or point it at a directory of runbooks"
        )
    # A run killed outright may have left processes holding these ports (where children do not
    # die with their parent): stop them first, saying so.
    await guard.blocking(stop_leftovers, dev.data_dir)
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
    guard.say(f"checkout keeps its cache in {cache.where}")
    target_url = f"http://127.0.0.1:{dev.target_port}"
    inventory_url = f"http://127.0.0.1:{free_port()}"
    urls = DemoUrls(target_url, inventory_url)
    # Every process of this stack, and operator commands given SELFHEAL_RUNBOOKS_DIR, resolve
    # faults through one catalog: the runbooks' own, with the demo services where they run now.
    source = settings.runbooks_dir
    runbooks = await guard.blocking(write_runbooks, settings, urls, cache)
    settings = settings.model_copy(update={"runbooks_dir": runbooks})

    temporal = TemporalDevServer(dev.data_dir, port=dev.temporal_port, ui_port=dev.temporal_ui_port)
    exits.callback(temporal.stop)
    guard.say(f"starting the Temporal dev server on {temporal.address} ...")
    await guard.run(temporal.start())
    guard.background["Temporal dev server"] = asyncio.create_task(
        watch_temporal(temporal, guard.stop)
    )
    exits.push_async_callback(guard.finish, "Temporal dev server", 2)

    database = DevDatabase(settings)
    exits.callback(database.stop)
    guard.say("starting Postgres, migrating, importing the runbooks ...")
    url = await guard.blocking(database.start)
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": url})}
    )
    imported = await guard.blocking(
        _migrate_and_import, settings, url, redis_cache=cache.redis_url is not None, source=source
    )
    engine = make_engine(url, pool_size=1)
    exits.callback(engine.dispose)

    supervisor = Supervisor(dev.data_dir / "supervisor")
    otlp_url = f"http://{settings.intake.host}:{settings.intake.port}/v1/otlp"
    # Until the intake listens (it starts last), the services' exports fail silently.
    telemetry = {TOKEN_ENV: ingest_token(settings)}
    supervisor.add(
        INVENTORY_PROCESS,
        inventory_command(
            int(inventory_url.rsplit(":", 1)[1]),
            dev.data_dir / "inventory",
            otlp_url=otlp_url,
            # a slow inventory recovers by itself: the breaker over checkout's fallback closes
            slow_for_s=DEMO_SLOW_FOR_S,
        ),
        health_url=f"{inventory_url}/healthz",
        env=telemetry,
    )
    supervisor.add(
        TARGET_PROCESS,
        checkout_command(
            dev.target_port,
            dev.data_dir / "checkout",
            inventory_url=inventory_url,
            otlp_url=otlp_url,
            redis_url=cache.redis_url,
            redis_prefix=cache.prefix,
        ),
        health_url=f"{target_url}/healthz",
        env=telemetry,
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
    for process, url in ((TARGET_PROCESS, target_url), (INVENTORY_PROCESS, inventory_url)):
        try:
            answers = until_health(url, lambda _: True)
            await guard.run(asyncio.wait_for(answers, 20))
        except TimeoutError:
            raise DevStackError(
                f"the demo service {process} did not answer on {url} within 20s "
                f"(log: {dev.data_dir / 'supervisor' / 'logs' / (process + '.log')})"
            ) from None

    guard.background["worker"] = asyncio.create_task(run_worker(settings, stop=guard.stop))
    exits.push_async_callback(guard.finish, "worker", settings.worker.graceful_shutdown_s + 10)

    client = await guard.run(connect(settings.temporal, tracing=False))
    door = Healings(
        client,
        load_services(settings.runbooks_dir / "services.yaml"),
        task_queue=settings.temporal.task_queue,
        flush_interval_s=settings.intake.flush_interval_s,
    )
    # One Schedule per forecast rule of the runbooks (none shipped for the demo services).
    rules = load_forecast_rules(settings.runbooks_dir / FORECASTS_FILE, catalog=door.catalog)
    synced = await guard.run(
        sync_forecast_schedules(client, rules, task_queue=settings.temporal.task_queue)
    )
    if rules.forecasts or synced.deleted:
        guard.say(f"forecast schedules: {synced.summary()}")
    watchers = [
        HealthWatcher(
            door,
            WatchTarget(service=service, health_url=f"{url}/healthz", target=process),
            interval_s=WATCH_INTERVAL_S,
            timeout_s=settings.probe.timeout_s,
        )
        for service, process, url in (
            (TARGET_SERVICE, TARGET_PROCESS, target_url),
            (INVENTORY_SERVICE, INVENTORY_PROCESS, inventory_url),
        )
    ]
    for watcher in watchers:
        name = f"{watcher.target.service} watcher"
        guard.background[name] = asyncio.create_task(watcher.run(guard.stop))
        exits.push_async_callback(guard.finish, name, 10)

    intake = _intake_server(settings, door, make_session_factory(engine))
    guard.background["intake"] = asyncio.create_task(intake.serve())
    await guard.run(_until(lambda: intake.started))

    async def stop_intake() -> None:
        intake.should_exit = True
        await guard.finish("intake", 10)

    exits.push_async_callback(stop_intake)
    intake_url = f"http://{settings.intake.host}:{settings.intake.port}"
    return Stack(
        settings,
        temporal,
        url,
        door,
        watchers[0],
        target_url,
        imported,
        intake_url,
        cache,
        inventory_url=inventory_url,
        watchers=watchers,
    )


async def watch_temporal(temporal: TemporalDevServer, stop: asyncio.Event) -> None:
    """Returns when ``stop`` is set; raises as soon as the server exits on its own, so that
    ``Guard`` ends the stack instead of every part retrying a dead server."""
    while not stop.is_set():
        code = temporal.exit_code()
        if code is not None:
            raise DevStackError(f"it exited with code {code} (log: {temporal.log_path})")
        await asyncio.sleep(0.5)


def ingest_token(settings: Settings) -> str:
    """A token the intake accepts for OTLP: the first with scope ``ingest``, else the dev token
    (which the dev intake accepts when no tokens are set)."""
    tokens = settings.intake.tokens
    if not tokens:
        return DEV_TOKEN
    return next((t for t, scopes in tokens.items() if "ingest" in scopes), DEV_TOKEN)


def write_runbooks(settings: Settings, urls: DemoUrls, cache: DemoCache) -> Path:
    """A copy of the runbooks under the data directory, whose ``services.yaml`` is
    ``dev_catalog``'s; the directory every part of the stack reads from."""
    source = settings.runbooks_dir
    copy = (settings.dev.data_dir / "runbooks").resolve()
    catalog = dev_catalog(settings, urls, cache)
    if copy != source.resolve():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
    document = catalog.model_dump(mode="json", exclude_defaults=True)
    (copy / "services.yaml").write_text(
        f"# Written by selfheal dev from {source / 'services.yaml'}: checkout at\n"
        f"# {urls.checkout}, inventory at {urls.inventory}. Rewritten at every start; edit the\n"
        "# original.\n" + yaml.safe_dump(document, sort_keys=False)
    )
    return copy


def dev_catalog(settings: Settings, urls: DemoUrls, cache: DemoCache) -> ServiceCatalog:
    """The runbooks' service catalog, with the demo services where this run serves them: their
    health URLs and control endpoints follow the ports, and checkout's cache prefix (the keys a
    plan may delete) is this data directory's when the cache is in Redis. Given a cluster, the
    Kubernetes demos' Deployment too (``devstack/demo/kubernetes.py``)."""
    catalog = load_services(settings.runbooks_dir / "services.yaml")
    where = {TARGET_PROCESS: urls.checkout, INVENTORY_PROCESS: urls.inventory}
    for service in catalog.services:
        for target in service.targets:
            url = where.get(target.name)
            if url is None:
                continue
            target.health_url = f"{url}/healthz"
            target.base_url = url
            if target.name == TARGET_PROCESS and cache.redis_url is not None:
                target.labels[CACHE_PREFIX_LABEL] = cache.prefix
    if settings.kubernetes.kubeconfig is not None or settings.kubernetes.in_cluster:
        from selfheal.devstack.demo.kubernetes import demo_service

        demo = demo_service()
        if all(service.name != demo.name for service in catalog.services):
            catalog.services.append(demo)
    return catalog


def _intake_server(
    settings: Settings, door: Healings, session_factory: sessionmaker[Session]
) -> uvicorn.Server:
    """``selfheal serve`` in this process, on this event loop, sharing the watcher's door, with
    a dev token if none is set."""
    from selfheal.api.app import IntakeDeps, create_app
    from selfheal.detection.detector_config import load_detector_config
    from selfheal.detection.metrics_router import MetricsRouter
    from selfheal.models.guardrails import DatabaseKillSwitch
    from selfheal.models.metric_store import metric_sink
    from selfheal.models.trace_store import TraceStore

    tokens = settings.intake.tokens or {DEV_TOKEN: ["ingest", "approve", "name:dev"]}
    app = create_app(
        IntakeDeps(
            door=door,
            settings=settings.intake.model_copy(update={"tokens": tokens}),
            router=MetricsRouter(load_detector_config(settings.runbooks_dir / "detectors.yaml")),
            kill_switch=DatabaseKillSwitch(session_factory),
            metric_sink=metric_sink(session_factory, settings.evidence),
            trace_sink=TraceStore(
                session_factory,
                max_traces=settings.evidence.traces_max,
                max_age_s=settings.evidence.traces_max_age_s,
            ).add,
        )
    )
    config = uvicorn.Config(
        app,
        host=settings.intake.host,
        port=settings.intake.port,
        log_level="warning",
        log_config=None,  # our logging (core.logging), not uvicorn's handlers
        access_log=False,
    )
    return _EmbeddedServer(config)


class _EmbeddedServer(uvicorn.Server):
    """Signals belong to ``selfheal dev``, which stops this server through ``should_exit``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def operator_env(settings: Settings, *, catalog: bool = False) -> str:
    """What to put before a ``selfheal`` command so that it finds this dev server (and, for
    ``fault submit``, resolves faults through this stack's catalog)."""
    address = settings.temporal.address
    env = "" if address == TemporalSettings().address else f"SELFHEAL_TEMPORAL__ADDRESS={address} "
    if catalog:
        env += f"SELFHEAL_RUNBOOKS_DIR={settings.runbooks_dir} "
    return env
