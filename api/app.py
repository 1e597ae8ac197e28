"""The HTTP intake (``selfheal serve``): Alertmanager, OTLP, heartbeats and faults in; healings
listed, shown, approved and rejected; the guardrails' kill switch read, paused and resumed.

Safety, in the order a request meets it: a bearer token with the endpoint's scope (401/403), a
body size limit (413, also after gzip), a payload that parses into Faults (400/422 naming the
field; nothing is started when any part is malformed), then the door (``selfheal.healings``),
which resolves every fault through the service catalog (422 when it refuses). A 2xx is sent only
once every fault's workflow is durably started or signalled; Temporal unreachable is 503, so
that Alertmanager and OTLP exporters retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from selfheal.api import errors
from selfheal.api.auth import TokenAuthority
from selfheal.api.deps import DecisionBody
from selfheal.api.intake import Intake, IntakeDeps
from selfheal.api.openapi import add_component_schemas
from selfheal.api.routes import guardrails, healings, operations, signals
from selfheal.domain import Fault

__all__ = ["IntakeDeps", "create_app"]


def create_app(deps: IntakeDeps) -> FastAPI:
    intake = Intake(deps)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(intake.sweep_forever()) if deps.router else None
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper

    app = FastAPI(
        title="selfheal intake",
        version="1",
        description="Signals in (Alertmanager, OTLP, heartbeats, faults); healings out.",
        lifespan=lifespan,
        responses=errors.RESPONSES,
        redirect_slashes=False,  # an API client gets 404, not a redirect it may not follow
    )
    app.state.intake = intake
    app.state.authority = TokenAuthority(deps.settings.tokens)
    errors.install(app)
    for module in (signals, healings, guardrails, operations):
        app.include_router(module.router)
    add_component_schemas(app, [Fault, DecisionBody])
    return app
