"""A Postgres server of one test module's own, which its tests may stop and start: a database
outage under a running healing.

The session's server (``postgres_admin_url``) is shared by every other test, which an outage
would fail. This one is the build ``selfheal dev`` runs (``start_embedded_postgres``), in a
short temporary directory and listening on a unix socket inside it only, so it collides with no
other server. ``stop`` and ``start`` run that build's own ``pg_ctl`` with the options the package
started it with: the socket, and so the URL, stay the same across an outage.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import psycopg

from selfheal.core.database import start_embedded_postgres, to_libpq_url
from tests.support import short_tmp_dir

__all__ = ["PrivatePostgres", "outage", "private_postgres_server"]


class PrivatePostgres:
    """An embedded Postgres in ``data_dir``, started on construction."""

    def __init__(self, data_dir: Path) -> None:
        self.admin_url = start_embedded_postgres(data_dir)
        self.pgdata = (data_dir / "postgres").resolve()
        self._log = self.pgdata / "log"
        # The package puts the socket in the data directory when its path is short enough;
        # read where it did, so that a restart listens at the same place.
        info = (self.pgdata / "postmaster.pid").read_text().splitlines()
        self.socket_dir = info[4]
        # Postgres refuses to run as root: the package runs it as the data directory's owner.
        self._user = self.pgdata.owner() if os.geteuid() == 0 else None

    @property
    def running(self) -> bool:
        try:
            with psycopg.connect(to_libpq_url(self.admin_url), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, and new connections fail at once (the socket
        file is gone), as when a database server goes away."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        """Start it again, unless it runs; returns once it accepts connections."""
        if self.running:
            return
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self._log), "start"
        )

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._user,
            timeout=60,
        )


@contextmanager
def private_postgres_server(prefix: str = "shpo-") -> Iterator[PrivatePostgres]:
    """A private server, stopped and deleted afterwards."""
    with short_tmp_dir(prefix) as data_dir:
        server = PrivatePostgres(data_dir)
        try:
            yield server
        finally:
            if server.running:
                server.stop()


@asynccontextmanager
async def outage(server: PrivatePostgres) -> AsyncIterator[None]:
    """``server`` is down inside the block, and up again after it, whatever happens there.
    (``pg_ctl`` runs in a thread: the worker under test shares the event loop.)"""
    await asyncio.to_thread(server.stop)
    try:
        yield
    finally:
        await asyncio.to_thread(server.start)
