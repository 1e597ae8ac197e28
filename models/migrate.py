"""Schema migrations, callable from code: ``selfheal db``, ``selfheal dev``, the test fixtures.

Alembic is configured from the ``migrations`` package's own files, so this works from an
installed package as well as from the repository.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import SQLAlchemyError

from selfheal import migrations
from selfheal.core.database import to_sqlalchemy_url
from selfheal.domain import ConfigError
from selfheal.models.base import Base, display_url, knowledge_base_error

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent

# Alembic's ``context`` is process-global: two threads must not migrate at once. Processes are
# serialised by the advisory lock in ``migrations/env.py``.
_ALEMBIC = threading.Lock()


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # An attribute, not a main option: ConfigParser would read '%' in a password.
        config.attributes["url"] = to_sqlalchemy_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    _run(command.upgrade, url, revision, "upgrade")


def downgrade(url: str, revision: str = "base") -> None:
    _run(command.downgrade, url, revision, "downgrade")


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigError(f"no migrations in {MIGRATIONS_DIR}")
    return head


def current_revision(url: str) -> str | None:
    """The database's revision; None for an empty database."""
    engine = create_engine(to_sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise knowledge_base_error(f"cannot read the revision of {display_url(url)}", exc) from exc
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[Any]:
    """What ``alembic revision --autogenerate`` would write: empty when the models match."""
    engine = create_engine(to_sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences: list[Any] = compare_metadata(context, Base.metadata)
            return differences
    finally:
        engine.dispose()


def _run(operation: Callable[[Config, str], None], url: str, revision: str, verb: str) -> None:
    try:
        with _ALEMBIC:
            operation(alembic_config(url), revision)
    except CommandError as exc:
        raise ConfigError(f"cannot {verb} to {revision!r}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise knowledge_base_error(f"cannot {verb} {display_url(url)}", exc) from exc
