"""The processes of ``selfheal dev``, for real: the Temporal dev server on a reused data
directory, a port already taken, and an embedded Postgres stopped only by the run that started
it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from selfheal.core.database import to_libpq_url
from selfheal.core.settings import DatabaseSettings, DevSettings, Settings
from selfheal.devstack.processes import DevDatabase, DevStackError, TemporalDevServer
from selfheal.devstack.stack import watch_temporal
from selfheal.workflows.contract import SEARCH_ATTRIBUTES
from tests.support import free_ports, short_tmp_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_tmp_dir("shds-") as path:
        yield path


async def registered_attributes(address: str) -> set[str]:
    client = await Client.connect(address)
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    return set(response.custom_attributes)


async def test_dev_server_restarts_on_its_data_dir(data_dir: Path) -> None:
    port, ui_port = free_ports(2)
    for _ in range(2):
        server = TemporalDevServer(data_dir, port=port, ui_port=ui_port)
        await server.start()
        try:
            assert set(SEARCH_ATTRIBUTES) <= await registered_attributes(server.address)
        finally:
            server.stop()
        with pytest.raises(RuntimeError):
            await Client.connect(server.address)
    assert (data_dir / "temporal.db").exists()


async def test_the_stack_notices_its_temporal_server_dying(data_dir: Path) -> None:
    port, ui_port = free_ports(2)
    server = TemporalDevServer(data_dir, port=port, ui_port=ui_port)
    await server.start()
    stop = asyncio.Event()
    try:
        watching = asyncio.create_task(watch_temporal(server, stop))
        await asyncio.sleep(0.7)
        assert not watching.done()  # alive: nothing to say
        os.killpg(server._process._process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        with pytest.raises(DevStackError, match=r"exited with code -9 \(log: .*temporal.log\)"):
            await asyncio.wait_for(watching, 5)
    finally:
        server.stop()
    quiet = asyncio.create_task(watch_temporal(server, stop))
    stop.set()
    assert await asyncio.wait_for(quiet, 2) is None  # a stopped stack: the watch just ends


async def test_port_in_use_is_named(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TemporalDevServer(data_dir, port=port, ui_port=free_ports(1)[0])
        with pytest.raises(DevStackError, match=f"port {port} .* SELFHEAL_DEV__TEMPORAL_PORT"):
            await server.start()


def answers(url: str) -> bool:
    try:
        with psycopg.connect(to_libpq_url(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def test_embedded_postgres_is_stopped_only_by_its_starter(data_dir: Path) -> None:
    settings = Settings(dev=DevSettings(data_dir=data_dir), database=DatabaseSettings())
    starter = DevDatabase(settings)
    url = starter.start()
    try:
        assert answers(url)
        reuser = DevDatabase(settings)
        assert reuser.start() == url
        reuser.stop()
        assert answers(url), "a run that found the server running must leave it running"
    finally:
        starter.stop()
    assert not answers(url)
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
