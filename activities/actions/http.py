"""``http.request``: call an endpoint of the target, such as a feature-flag switch.

Its inverse depends on the endpoint, so a plan step declares it (``compensation_in_plan``):

    - action: http.request
      params: {method: PUT, url: "http://shop/flags/new_checkout", json: {enabled: false}}
      compensate:
        action: http.request
        params: {method: PUT, url: "http://shop/flags/new_checkout", json: {enabled: true}}

The request carries the step's ``Idempotency-Key`` header; endpoints that set absolute state
(PUT) are idempotent anyway.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from selfheal.activities.actions.heartbeat import heartbeating
from selfheal.activities.actions.registry import Action, ActionContext, Output
from selfheal.domain import RiskLevel, TargetError

IDEMPOTENCY_HEADER = "Idempotency-Key"
BODY_EXCERPT_CHARS = 500
# Statuses that say "try again later" rather than "this request is wrong".
_RETRYABLE_4XX = frozenset({408, 425, 429})


class HttpRequestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    url: str = Field(description="absolute http:// or https:// URL")
    json_body: Any = Field(default=None, alias="json", description="JSON request body")
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[int] = Field(
        default_factory=lambda: list(range(200, 300)),
        min_length=1,
        description="statuses that count as success",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _absolute_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an absolute http:// or https:// URL")
        return value

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        wrong = [s for s in value if not 100 <= s <= 599]
        if wrong:
            raise ValueError(f"expected HTTP statuses between 100 and 599, got {wrong}")
        return value


async def request(ctx: ActionContext, params: HttpRequestParams) -> Output:
    headers = {**params.headers, IDEMPOTENCY_HEADER: ctx.idempotency_key}
    call = f"{params.method} {params.url}"
    try:
        async with httpx.AsyncClient(timeout=params.timeout_s) as client, heartbeating(ctx):
            response = await client.request(
                params.method,
                params.url,
                headers=headers,
                json=params.json_body,
            )
    except httpx.HTTPError as exc:
        raise TargetError(f"{call}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
    body = response.text[:BODY_EXCERPT_CHARS]
    if response.status_code not in params.expect_status:
        status = response.status_code
        raise TargetError(
            f"{call}: HTTP {status}, expected {_describe(params.expect_status)}: {body[:200]}",
            retryable=status >= 500 or status in _RETRYABLE_4XX,
        )
    return {
        "method": params.method,
        "url": params.url,
        "status_code": response.status_code,
        "body": body,
    }


def _describe(statuses: list[int]) -> str:
    if statuses == list(range(statuses[0], statuses[-1] + 1)) and len(statuses) > 2:
        return f"{statuses[0]}-{statuses[-1]}"
    return ", ".join(str(s) for s in statuses)


HTTP_REQUEST = Action(
    name="http.request",
    params_model=HttpRequestParams,
    risk=RiskLevel.MEDIUM,
    run=request,
    compensation_in_plan=True,
    idempotency="Idempotency-Key header; prefer absolute requests (PUT a state)",
    description="Call an HTTP endpoint; the plan step declares the inverse request.",
)
