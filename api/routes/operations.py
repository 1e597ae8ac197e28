"""Operations: liveness, readiness (Temporal and the database answer) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import generate_latest as render_metrics

from selfheal.api.deps import IntakeDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(intake: IntakeDep) -> JSONResponse:
    """Ready when Temporal and the database answer."""
    checks = {"temporal": intake.door.check_health, **intake.deps.ready_checks}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=5)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"unreachable: {type(exc).__name__}"
    ok = all(v == "ok" for v in results.values())
    return JSONResponse(results, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(intake: IntakeDep) -> Response:
    return Response(render_metrics(intake.metrics.registry), media_type=CONTENT_TYPE_LATEST)
