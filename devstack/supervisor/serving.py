"""Serve an ASGI app with uvicorn on a background thread (for ``selfheal dev`` and tests)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp


@dataclass
class ServerHandle:
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"server on {self.url} did not stop within {timeout_s}s")


def serve_in_thread(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, ready_timeout_s: float = 10.0
) -> ServerHandle:
    """Start serving and return once the server accepts connections. ``port=0`` picks one."""
    # Binding here rather than in uvicorn makes the real port known before the thread starts
    # and turns "address in use" into an exception in the caller.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws="none",
        loop="asyncio",
        access_log=False,
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    handle = ServerHandle(server, thread, sock, host, sock.getsockname()[1])
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"server on {handle.url} did not start")
        time.sleep(0.01)
    return handle
