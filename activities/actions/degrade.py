"""``http.degrade``: switch a service into a degraded mode through its control endpoint.

    - action: http.degrade
      params: {base_url: "${fault.labels.base_url}", mode: fallback}

The control API a service exposes for it (the demo target implements it):

    GET /control/degradation   200 {"mode": "normal"|"fallback"|"circuit_break"|"rate_limit",
                                    "rate_limit_rps": number|null,
                                    "updated_by": <Idempotency-Key of the last PUT>|null,
                                    "previous": {"mode", "rate_limit_rps"}|null}
    PUT /control/degradation   body {"mode", "rate_limit_rps"} (absolute state), header
                               Idempotency-Key; answers like GET. A PUT repeating the key of the
                               last applied one changes nothing, so "previous" stays the state
                               that PUT replaced.

Modes: ``fallback`` serves from a fallback path instead of the failing dependency,
``circuit_break`` stops calling it and fails fast, ``rate_limit`` sheds load above
``rate_limit_rps``.

The action reads the state first and saves it in its output; its compensation PUTs that saved
state back, exactly. A retry after the PUT was applied (the worker died before reporting) would
read the degraded state as "before": when the service reports the retry's own key in
``updated_by``, the action takes the state it replaced from ``previous`` instead. Services that
do not report ``updated_by`` still work, without that protection.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfheal.activities.actions.heartbeat import heartbeating
from selfheal.activities.actions.registry import Action, ActionContext, Output
from selfheal.domain import RiskLevel, TargetError

IDEMPOTENCY_HEADER = "Idempotency-Key"
CONTROL_PATH = "/control/degradation"

Mode = Literal["normal", "fallback", "circuit_break", "rate_limit"]


class DegradationState(BaseModel):
    """The absolute state of a service's degradation switch."""

    model_config = ConfigDict(extra="ignore")

    mode: Mode
    rate_limit_rps: float | None = None


class DegradeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="the service's base URL, e.g. ${fault.labels.base_url}")
    mode: Literal["fallback", "circuit_break", "rate_limit"]
    rate_limit_rps: float | None = Field(
        default=None, gt=0, description="requests per second allowed; mode rate_limit only"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("base_url")
    @classmethod
    def _absolute_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an absolute http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _rate(self) -> DegradeParams:
        if self.mode == "rate_limit" and self.rate_limit_rps is None:
            raise ValueError("mode rate_limit needs rate_limit_rps")
        if self.mode != "rate_limit" and self.rate_limit_rps is not None:
            raise ValueError(f"rate_limit_rps applies to mode rate_limit only, not {self.mode}")
        return self


async def degrade(ctx: ActionContext, params: DegradeParams) -> Output:
    wanted = DegradationState(mode=params.mode, rate_limit_rps=params.rate_limit_rps)
    async with _client(params) as client, heartbeating(ctx):
        current = await _call(client, "GET")
        if current.get("updated_by") == ctx.idempotency_key and current.get("previous"):
            before = _state(client, current["previous"])  # our own PUT, applied before a retry
        else:
            before = _state(client, current)
        await _call(client, "PUT", wanted, ctx.idempotency_key)
    return {
        "base_url": params.base_url,
        "previous": before.model_dump(mode="json"),
        "applied": wanted.model_dump(mode="json"),
    }


async def restore(ctx: ActionContext, params: DegradeParams, output: Output) -> Output:
    saved = output.get("previous")
    if not isinstance(saved, dict):
        raise TargetError(
            "http.degrade compensation: the step's output holds no saved 'previous' state",
            retryable=False,
        )
    async with _client(params) as client, heartbeating(ctx):
        state = _state(client, saved)
        await _call(client, "PUT", state, ctx.idempotency_key)
    return {"base_url": params.base_url, "restored": state.model_dump(mode="json")}


def _client(params: DegradeParams) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=params.base_url, timeout=params.timeout_s)


def _endpoint(client: httpx.AsyncClient) -> str:
    return str(client.base_url).rstrip("/") + CONTROL_PATH


def _state(client: httpx.AsyncClient, data: Any) -> DegradationState:
    try:
        return DegradationState.model_validate(data)
    except ValidationError as exc:
        raise TargetError(
            f"{_endpoint(client)}: unexpected degradation state {str(data)[:200]}: "
            'expected {"mode": "normal"|"fallback"|"circuit_break"|"rate_limit", '
            '"rate_limit_rps": number|null}',
            retryable=False,
        ) from exc


async def _call(
    client: httpx.AsyncClient,
    method: str,
    state: DegradationState | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    call = f"{method} {_endpoint(client)}"
    try:
        response = await client.request(
            method,
            CONTROL_PATH,
            json=state.model_dump(mode="json") if state is not None else None,
            headers={IDEMPOTENCY_HEADER: key} if key else None,
        )
    except httpx.HTTPError as exc:
        raise TargetError(f"{call}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
    if not response.is_success:
        raise TargetError(
            f"{call}: HTTP {response.status_code}: {response.text[:200]}",
            # 404: the service has no control endpoint; retrying will not grow one.
            retryable=response.status_code >= 500 or response.status_code in (408, 429),
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TargetError(
            f"{call}: expected a JSON object, got {response.text[:200]!r}", retryable=False
        )
    return data


HTTP_DEGRADE = Action(
    name="http.degrade",
    params_model=DegradeParams,
    risk=RiskLevel.MEDIUM,
    run=degrade,
    compensate=restore,
    idempotency="absolute PUT with the Idempotency-Key; a retry keeps the state found first",
    description="Switch a service to fallback, circuit_break or rate_limit via its control API.",
)
