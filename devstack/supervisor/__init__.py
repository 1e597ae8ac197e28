"""selfheal's process supervisor: named processes, idempotent restarts, an HTTP control API."""

from selfheal.devstack.supervisor.api import IDEMPOTENCY_HEADER, create_app
from selfheal.devstack.supervisor.core import (
    IdempotencyConflict,
    ProcessState,
    ProcessStatus,
    RestartResult,
    StartFailed,
    Supervisor,
    SupervisorError,
    UnknownProcess,
)
from selfheal.devstack.supervisor.serving import ServerHandle, serve_in_thread

__all__ = [
    "IDEMPOTENCY_HEADER",
    "IdempotencyConflict",
    "ProcessState",
    "ProcessStatus",
    "RestartResult",
    "ServerHandle",
    "StartFailed",
    "Supervisor",
    "SupervisorError",
    "UnknownProcess",
    "create_app",
    "serve_in_thread",
]
