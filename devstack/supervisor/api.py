"""The supervisor's HTTP control API, as used by the ``process.restart`` action.

GET  /processes                  {"processes": [status, ...]}
GET  /processes/{name}           status, or 404 {"error", "known"}
POST /processes/{name}/restart   header Idempotency-Key (required, else 400);
                                 the restart result, ``replayed: true`` for a repeated key;
                                 404 unknown process, 409 key used for another process
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse

from selfheal.devstack.supervisor.core import (
    IdempotencyConflict,
    ProcessStatus,
    RestartResult,
    StartFailed,
    Supervisor,
    UnknownProcess,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"


def create_app(supervisor: Supervisor) -> FastAPI:
    app = FastAPI(title="selfheal supervisor", docs_url=None, redoc_url=None, openapi_url=None)

    # Handlers are plain functions: FastAPI runs them in its thread pool, where the
    # supervisor's blocking waits and probes do not stall the event loop.

    @app.get("/processes")
    def list_processes() -> dict[str, list[ProcessStatus]]:
        return {"processes": supervisor.statuses()}

    @app.get("/processes/{name}", response_model=None)
    def get_process(name: str) -> ProcessStatus | JSONResponse:
        try:
            return supervisor.status(name)
        except UnknownProcess as exc:
            return _unknown(exc)

    @app.post("/processes/{name}/restart", response_model=None)
    def restart_process(
        name: str,
        idempotency_key: str | None = Header(default=None, alias=IDEMPOTENCY_HEADER),
    ) -> RestartResult | JSONResponse:
        if not idempotency_key:
            return _error(
                400, f"header {IDEMPOTENCY_HEADER} is required: a key applied at most once"
            )
        try:
            return supervisor.restart(name, idempotency_key)
        except UnknownProcess as exc:
            return _unknown(exc)
        except IdempotencyConflict as exc:
            return _error(409, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        except StartFailed as exc:
            return _error(500, str(exc))

    return app


def _unknown(exc: UnknownProcess) -> JSONResponse:
    return _error(404, str(exc), known=exc.known)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})
