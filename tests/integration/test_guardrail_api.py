"""The kill switch over HTTP (``/v1/guardrails``), against a real Postgres: tokens and scopes,
pause and resume by the token's identity, the CLI and the API seeing one switch, and the 503s
of an intake without a (reachable) database. Also: a report over HTTP cannot set the labels
that only selfheal's own detectors set."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from typer.testing import CliRunner

from selfheal.api.app import IntakeDeps
from selfheal.cli.main import app as cli_app
from selfheal.core.catalog import CACHE_PREFIX_LABEL
from selfheal.core.database import (
    make_engine,
    make_session_factory,
)
from selfheal.core.settings import get_settings
from selfheal.domain import HealingStatus
from selfheal.models.guardrails import DatabaseKillSwitch, Guardrails
from tests.integration.standins import Scenario
from tests.integration.test_intake_api import (
    APPROVER,
    INGEST,
    awaiting,
    http,
    make_deps,
    service,
)
from tests.integration.test_workflow_logic import running, status_when
from tests.support import free_port, scratch_database, sessions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kill_switch_url(postgres_admin_url: str) -> Iterator[str]:
    """A database of its own: a paused switch must not stop other tests' healings."""
    with scratch_database(postgres_admin_url, "selfheal_api_guard") as url:
        yield url


@pytest.fixture(scope="module")
def session_factory(kill_switch_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(kill_switch_url, pool_size=1) as factory:
        yield factory


@pytest.fixture(autouse=True)
def resumed(session_factory: sessionmaker[Session]) -> None:
    Guardrails(session_factory).set_paused(False, by="fixture")


@pytest_asyncio.fixture
async def api(
    client: Client, task_queue: str, session_factory: sessionmaker[Session]
) -> AsyncIterator[httpx.AsyncClient]:
    async with http(
        make_deps(client, task_queue, kill_switch=DatabaseKillSwitch(session_factory))
    ) as session:
        yield session


async def test_reading_needs_a_token_and_switching_the_approve_scope(
    api: httpx.AsyncClient, session_factory: sessionmaker[Session]
) -> None:
    assert (await api.get("/v1/guardrails")).status_code == 401
    bearer_wrong = {"Authorization": "Bearer wrong"}
    assert (await api.get("/v1/guardrails", headers=bearer_wrong)).status_code == 401
    for path in ("/v1/guardrails/pause", "/v1/guardrails/resume"):
        assert (await api.post(path, json={})).status_code == 401
        denied = await api.post(path, json={}, headers=INGEST)
        assert denied.status_code == 403
        assert "'approve' scope" in denied.json()["error"]
    assert not Guardrails(session_factory).state().paused

    read = await api.get("/v1/guardrails", headers=INGEST)
    assert read.status_code == 200, read.text
    assert read.json()["paused"] is False


async def test_pause_then_resume_by_the_tokens_identity(
    api: httpx.AsyncClient, session_factory: sessionmaker[Session]
) -> None:
    paused = await api.post(
        "/v1/guardrails/pause", json={"reason": " deploy freeze "}, headers=APPROVER
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True

    read = (await api.get("/v1/guardrails", headers=INGEST)).json()
    assert (read["paused"], read["by"], read["reason"]) == (True, "name:alice", "deploy freeze")
    assert read["at"] is not None
    assert Guardrails(session_factory).state().paused  # what every worker's check reads

    resumed = await api.post("/v1/guardrails/resume", headers=APPROVER)
    assert resumed.status_code == 200, resumed.text
    read = (await api.get("/v1/guardrails", headers=INGEST)).json()
    assert (read["paused"], read["by"], read["reason"]) == (False, "name:alice", "")


async def test_a_bad_pause_body_names_the_field_and_pauses_nothing(
    api: httpx.AsyncClient, session_factory: sessionmaker[Session]
) -> None:
    extra = await api.post("/v1/guardrails/pause", json={"why": "x"}, headers=APPROVER)
    assert extra.status_code == 422 and extra.json()["field"] == "why"
    wrong_type = await api.post("/v1/guardrails/pause", json={"reason": 5}, headers=APPROVER)
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "reason"
    not_json = await api.post("/v1/guardrails/pause", content=b"{", headers=APPROVER)
    assert not_json.status_code == 400
    assert not Guardrails(session_factory).state().paused


async def test_the_cli_and_the_api_share_one_switch(
    api: httpx.AsyncClient, kill_switch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SELFHEAL_DATABASE__URL", kill_switch_url)
    get_settings.cache_clear()
    try:
        paused = await api.post(
            "/v1/guardrails/pause", json={"reason": "incident"}, headers=APPROVER
        )
        assert paused.status_code == 200, paused.text

        resumed = CliRunner().invoke(cli_app, ["resume", "--by", "bob"])
        assert resumed.exit_code == 0, resumed.output
        assert resumed.stdout.strip() == (
            "resumed by bob, paused by name:alice: incident (mutating steps may run again)"
        )
        read = (await api.get("/v1/guardrails", headers=INGEST)).json()
        assert (read["paused"], read["by"]) == (False, "bob")

        again = CliRunner().invoke(cli_app, ["pause", "--by", "carol", "--reason", "maintenance"])
        assert again.exit_code == 0, again.output
        read = (await api.get("/v1/guardrails", headers=INGEST)).json()
        assert (read["paused"], read["by"], read["reason"]) == (True, "carol", "maintenance")
    finally:
        get_settings.cache_clear()


async def test_without_a_reachable_database_the_switch_answers_503(
    client: Client, task_queue: str
) -> None:
    async with http(make_deps(client, task_queue)) as api:
        for response in (
            await api.get("/v1/guardrails", headers=INGEST),
            await api.post("/v1/guardrails/pause", json={}, headers=APPROVER),
            await api.post("/v1/guardrails/resume", headers=APPROVER),
        ):
            assert response.status_code == 503
            assert response.json()["error"] == "no database configured on this intake"

    engine = make_engine(f"postgresql://selfheal:pw@127.0.0.1:{free_port()}/none", pool_size=1)
    try:
        deps: IntakeDeps = make_deps(
            client, task_queue, kill_switch=DatabaseKillSwitch(make_session_factory(engine))
        )
        async with http(deps) as api:
            down = await api.post("/v1/guardrails/pause", json={}, headers=APPROVER)
    finally:
        engine.dispose()
    assert down.status_code == 503
    assert down.json()["error"].startswith("cannot set the kill switch")
    assert "pw" not in down.text


async def test_a_report_over_http_cannot_name_the_cache_prefix(
    client: Client, task_queue: str, api: httpx.AsyncClient
) -> None:
    """Only the catalog's label chooses which Redis keys a plan deletes: never a sender."""
    labels = {CACHE_PREFIX_LABEL: "victim:", "pod": "api-1"}
    fault = {"service": service(), "type": "t", "target": "x", "labels": labels}
    async with running(client, task_queue, Scenario(confidence=0.3)):
        response = await api.post("/v1/faults", json=fault, headers=INGEST)
        assert response.status_code == 200, response.text
        handle = client.get_workflow_handle(response.json()["workflow_id"])
        status: HealingStatus = await status_when(handle, awaiting)
    assert status.fault.labels == {"pod": "api-1"}
