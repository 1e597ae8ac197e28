"""What a route needs, as typed dependencies: the intake's state, the authenticated principal
(checked before a byte of the body is read: strangers do not get to send bytes), and the body,
bounded in size on the wire and once decompressed."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfheal.api.auth import APPROVE, INGEST, Principal, TokenAuthority
from selfheal.api.errors import HttpProblem
from selfheal.api.intake import Intake
from selfheal.detection.parsers import describe_errors, parse_json_object


def get_intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


def get_authority(request: Request) -> TokenAuthority:
    authority: TokenAuthority = request.app.state.authority
    return authority


IntakeDep = Annotated[Intake, Depends(get_intake)]


def require(scope: str | None) -> Callable[..., Principal]:
    """A dependency: the bearer token's principal, which must hold ``scope`` (any token when
    None); 401 without a known token, 403 without the scope."""

    def principal(
        request: Request, authority: Annotated[TokenAuthority, Depends(get_authority)]
    ) -> Principal:
        header = request.headers.get("authorization")
        if scope is None:
            return authority.authenticate(header)
        return authority.authorize(header, scope)

    return principal


Reader = Annotated[Principal, Depends(require(None))]
Ingester = Annotated[Principal, Depends(require(INGEST))]
Approver = Annotated[Principal, Depends(require(APPROVE))]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes on the wire and after gzip (413 beyond)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpProblem(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding != "gzip":
        raise HttpProblem(415, f"Content-Encoding {coding!r} is not supported; use gzip")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpProblem(400, f"body is not valid gzip: {exc}") from None
    if len(plain) > limit:
        raise HttpProblem(413, f"body larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise HttpProblem(400, "body is not valid gzip: truncated")
    return plain


async def ingest_body(request: Request, intake: IntakeDep, _: Ingester) -> bytes:
    """The body of a signal, read only once the token holds ``ingest``."""
    return await read_body(request, intake.deps.settings.max_body_bytes)


IngestBody = Annotated[bytes, Depends(ingest_body)]


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


async def decision_body(request: Request, intake: IntakeDep, _: Approver) -> DecisionBody:
    """``{"reason": ...}`` (optional), read only once the token holds ``approve``."""
    body = await read_body(request, intake.deps.settings.max_body_bytes)
    data = parse_json_object(body or b"{}")
    try:
        return DecisionBody.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(exc) from None


Decision = Annotated[DecisionBody, Depends(decision_body)]
