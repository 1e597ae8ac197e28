"""Helpers shared by fixtures and scripts under tests/."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from selfheal.activities.actions.registry import Action, ActionContext, ActionRegistry
from selfheal.core.catalog import ServiceCatalog, ServiceSpec, TargetSpec
from selfheal.devstack.processes import free_port, free_ports, temporal_binary
from selfheal.domain import RiskLevel
from selfheal.healings import Healings
from selfheal.workflows.contract import SEARCH_ATTRIBUTES

__all__ = ["free_port", "free_ports", "temporal_binary"]

REPO = Path(__file__).resolve().parent.parent


async def start_dev_server() -> WorkflowEnvironment:
    """The real dev server with search attributes and per-workflow time skipping enabled."""
    return await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
    )


@contextmanager
def short_tmp_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory with a short path: the embedded Postgres puts its unix socket in
    its data directory, and socket paths are limited to 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ProcessParams(BaseModel):
    process: str


class NoParams(BaseModel):
    pass


async def _noop(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    return {}


async def _noop_undo(
    ctx: ActionContext, params: BaseModel, output: dict[str, Any]
) -> dict[str, Any]:
    return {}


def sample_registry() -> ActionRegistry:
    """Small actions of every kind, for tests that must not depend on the real drivers."""
    return ActionRegistry(
        [
            Action("test.wait", NoParams, RiskLevel.LOW, _noop, mutating=False),
            Action("test.restart", ProcessParams, RiskLevel.MEDIUM, _noop, compensate=_noop_undo),
            Action("test.call", NoParams, RiskLevel.MEDIUM, _noop, compensation_in_plan=True),
            Action("test.failover", NoParams, RiskLevel.HIGH, _noop, compensable=False),
        ]
    )


def runbooks_for(
    directory: Path,
    target_url: str,
    services: Sequence[str] = ("checkout",),
    *,
    inventory_url: str | None = None,
) -> Path:
    """A copy of runbooks/ whose service catalog points the demo services at ``target_url``
    (and ``inventory`` at ``inventory_url``, as checkout's dependency, when given).

    The intake resolves a fault's health URL and base URL from the catalog, never from labels;
    and a test suite heals far more than an hourly budget allows, so the budget is lifted. Each
    service keeps the shipped catalog's evidence queries (another name for the checkout target
    reads checkout's series)."""
    shutil.copytree(REPO / "runbooks", directory)
    shipped = {
        s["name"]: s.get("evidence", {})
        for s in yaml.safe_load((REPO / "runbooks" / "services.yaml").read_text())["services"]
    }

    def service(name: str, process: str, url: str) -> dict[str, Any]:
        evidence = shipped.get(name)
        if evidence is None:
            evidence = json.loads(json.dumps(shipped["checkout"]).replace("${service}", "checkout"))
        return {
            "name": name,
            "targets": [
                {
                    "name": process,  # the demo's processes (tests/integration/demo_stack)
                    "kind": "process",
                    "health_url": f"{url}/healthz",
                    "base_url": url,
                }
            ],
            "depends_on": ["inventory"] if inventory_url and name != "inventory" else [],
            "allowed_actions": ["process.*", "http.*", "wait", "redis.*"],
            "budget_per_hour": 10_000,
            "cooldown_s": 0,
            "evidence": evidence,
        }

    entries = [service(name, "checkout", target_url) for name in services]
    if inventory_url:
        entries.append(service("inventory", "inventory", inventory_url))
    catalog = {"correlation_window_s": 300, "services": entries}
    (directory / "services.yaml").write_text(json.dumps(catalog))
    return directory


@contextmanager
def scratch_database(admin_url: str, prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A database of its own on the test server (migrated to head unless told not to), dropped
    afterwards: for tests whose state must not meet the rest of the suite's."""
    from selfheal.core.database import drop_database, ensure_database, to_sqlalchemy_url
    from selfheal.models.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = to_sqlalchemy_url(ensure_database(admin_url, name))
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        drop_database(admin_url, name)


@contextmanager
def sessions(url: str, *, pool_size: int = 5) -> Iterator[sessionmaker[Session]]:
    """A session factory on ``url``; its engine is disposed of afterwards."""
    from selfheal.core.database import make_engine, make_session_factory

    engine = make_engine(url, pool_size=pool_size)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def add_service(
    catalog: ServiceCatalog, name: str, *targets: str | TargetSpec, **fields: Any
) -> str:
    """Declare service ``name`` in ``catalog`` with ``targets`` (plain names are processes);
    returns the name. Tests name services per test, so that healings never collide."""
    specs = [
        t if isinstance(t, TargetSpec) else TargetSpec(name=t, kind="process") for t in targets
    ]
    catalog.services.append(ServiceSpec(name=name, targets=specs, **fields))
    return name


def door_for(client: Client, task_queue: str, catalog: ServiceCatalog | None = None) -> Healings:
    """The door on this test's task queue, with ``catalog`` (an empty one by default)."""
    return Healings(
        client, catalog if catalog is not None else ServiceCatalog(), task_queue=task_queue
    )


class TcpProxy:
    """127.0.0.1:<port> forwarding to ``target`` (host:port) until ``close``, which stops
    listening and cuts every connection: a server that goes away under a connected client."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
