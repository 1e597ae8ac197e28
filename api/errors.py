"""The one translation of failures into HTTP answers: every error is ``{"error": ..., "field":
...}`` with a status that tells the sender what to do (fix the request, retry later)."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from selfheal.api.auth import AuthError
from selfheal.detection.parsers import PayloadError
from selfheal.domain import IntakeError, KnowledgeBaseError
from selfheal.domain.errors import (
    DecisionRefused,
    HealingNotFound,
    TemporalRefused,
    TemporalUnavailable,
)
from selfheal.healings import FilterError

log = structlog.get_logger(__name__)

RETRY_AFTER_S = "5"


class ErrorBody(BaseModel):
    error: str
    field: str | None = None


class HttpProblem(Exception):
    """A request that cannot be served, as its HTTP answer."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def problem(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    body = ErrorBody(error=message, field=field).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers or None)


RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "undecodable body",
        401: "missing or unknown bearer token",
        403: "the token lacks the endpoint's scope",
        404: "no such healing or component",
        409: "the decision was refused (not awaiting approval, already ended)",
        413: "body too large",
        415: "unsupported Content-Type or Content-Encoding",
        422: "a field is wrong (named in `field`), or the fault was refused",
        502: "Temporal refused the call: retry once fixed",
        503: "Temporal (or the database) unreachable: retry",
    }.items()
}


def install(app: FastAPI) -> None:
    """Register the handlers that turn selfheal's errors into answers."""

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return problem(exc.status, exc.message, **headers)

    @app.exception_handler(PayloadError)
    async def _payload(request: Request, exc: PayloadError) -> JSONResponse:
        return problem(exc.status, exc.message, exc.field or "body")

    @app.exception_handler(HttpProblem)
    async def _http(request: Request, exc: HttpProblem) -> JSONResponse:
        return problem(exc.status, exc.message, exc.field)

    @app.exception_handler(FilterError)
    async def _filter(request: Request, exc: FilterError) -> JSONResponse:
        return problem(422, str(exc).removeprefix(f"{exc.field}: "), exc.field)

    @app.exception_handler(IntakeError)
    async def _refused(request: Request, exc: IntakeError) -> JSONResponse:
        return problem(422, str(exc), "fault")

    @app.exception_handler(HealingNotFound)
    async def _not_found(request: Request, exc: HealingNotFound) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(DecisionRefused)
    async def _decision(request: Request, exc: DecisionRefused) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(TemporalUnavailable)
    async def _down(request: Request, exc: TemporalUnavailable) -> JSONResponse:
        log.warning("temporal unreachable", path=request.url.path, error=str(exc))
        return problem(
            503, "Temporal is unreachable; retry later", **{"Retry-After": RETRY_AFTER_S}
        )

    @app.exception_handler(TemporalRefused)
    async def _temporal_refused(request: Request, exc: TemporalRefused) -> JSONResponse:
        # Temporal said no (a namespace or search attribute missing, say): a server-side fault
        # the sender should retry once an operator has fixed it
        log.error("temporal refused", path=request.url.path, error=str(exc))
        return problem(502, str(exc))

    @app.exception_handler(KnowledgeBaseError)
    async def _database(request: Request, exc: KnowledgeBaseError) -> JSONResponse:
        return problem(503, str(exc), **{"Retry-After": RETRY_AFTER_S})

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return problem(422, str(first["msg"]), where)
