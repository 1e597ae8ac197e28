"""Migrations on a real Postgres: empty → head matches the models, down and up again."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, pool

from selfheal.core.database import drop_database, ensure_database, to_sqlalchemy_url
from selfheal.domain import ConfigError, KnowledgeBaseError
from selfheal.models.migrate import (
    current_revision,
    downgrade,
    head_revision,
    schema_differences,
    upgrade,
)

pytestmark = pytest.mark.integration

TABLES = {
    "solutions",
    "healings",
    "healing_steps",
    "guardrail_state",
    "target_locks",
    "healing_actions",
    "guardrail_decisions",
    "metric_samples",
    "trace_spans",
    "solution_stats",
}


@pytest.fixture
def empty_url(postgres_admin_url: str) -> Iterator[str]:
    name = f"selfheal_migrations_{uuid.uuid4().hex[:10]}"
    url = to_sqlalchemy_url(ensure_database(postgres_admin_url, name))
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, name)


def tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_empty_database_to_head_matches_the_models_and_survives_down_and_up(
    empty_url: str,
) -> None:
    assert current_revision(empty_url) is None

    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    assert tables(empty_url) == TABLES
    assert schema_differences(empty_url) == []

    downgrade(empty_url, "base")
    assert current_revision(empty_url) is None
    assert tables(empty_url) == set()

    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    assert schema_differences(empty_url) == []


def test_an_empty_database_differs_from_the_models(empty_url: str) -> None:
    """The comparison the test above relies on does see a missing schema."""
    differences = schema_differences(empty_url)
    assert {d[1].name for d in differences if d[0] == "add_table"} == TABLES


def test_workers_starting_together_migrate_one_after_the_other(empty_url: str) -> None:
    script = "import sys; from models.migrate import upgrade; upgrade(sys.argv[1])"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_url], stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    failures = []
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        if worker.returncode != 0:
            failures.append(stderr)

    assert failures == []
    assert current_revision(empty_url) == head_revision()
    assert schema_differences(empty_url) == []


def test_threads_of_one_process_migrate_one_after_the_other(empty_url: str) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(empty_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert current_revision(empty_url) == head_revision()


def test_an_unknown_revision_is_a_config_error(empty_url: str) -> None:
    with pytest.raises(ConfigError, match="cannot upgrade to 'nope'"):
        upgrade(empty_url, "nope")


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    url = "postgresql+psycopg://selfheal:s3cret@/selfheal?host=/nonexistent/socket-dir"
    with pytest.raises(KnowledgeBaseError) as caught:
        upgrade(url)
    message = str(caught.value)
    assert message.startswith("cannot upgrade postgresql+psycopg://selfheal:***@/selfheal")
    assert "s3cret" not in message
    assert "\n" not in message
