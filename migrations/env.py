"""Alembic environment.

The URL is ``config.attributes["url"]`` when called through ``models.migrate``, else selfheal's
settings. Migrations hold a transaction-scoped advisory lock, so that workers starting together
migrate one after the other instead of racing on the same DDL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from selfheal.core.database import resolve_database_url, to_sqlalchemy_url
from selfheal.core.logging import configure_logging
from selfheal.core.settings import get_settings
from selfheal.models import Base

MIGRATION_LOCK = 0x5E1F_4EA1  # an arbitrary constant shared by every selfheal process

config = context.config
target_metadata = Base.metadata

if config.cmd_opts is not None:
    # Run by the ``alembic`` command (a developer's autogenerate), not by selfheal, which has
    # configured logging already: alembic's "Detected added column ..." lines come out as ours.
    _settings = get_settings()
    configure_logging(_settings.log_level, fmt=_settings.log_format or "console")


def database_url() -> str:
    url = config.attributes.get("url")
    if url:
        return to_sqlalchemy_url(str(url))
    return resolve_database_url(get_settings())


def run_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection, target_metadata=target_metadata, compare_type=True
            )
            with context.begin_transaction():
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
