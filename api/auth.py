"""Bearer tokens of the intake.

Configuration is ``{token: [scopes]}`` (``SELFHEAL_INTAKE__TOKENS``). Scopes are ``ingest``
(signals in) and ``approve`` (approve/reject). The identity recorded as approver is
``name:<NAME>`` when the scopes list holds an entry ``name:<NAME>``, else
``token:<first 8 hex digits of the token's sha256>``: stable, and never the token itself.
Tokens are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

INGEST = "ingest"
APPROVE = "approve"
SCOPES = (INGEST, APPROVE)
_NAME_PREFIX = "name:"


@dataclass(frozen=True)
class Principal:
    identity: str
    scopes: frozenset[str]


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def identity_of(token: str, scopes: list[str]) -> str:
    for scope in scopes:
        if scope.startswith(_NAME_PREFIX) and len(scope) > len(_NAME_PREFIX):
            return scope
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:8]


class TokenAuthority:
    def __init__(self, tokens: dict[str, list[str]]) -> None:
        self._principals = [
            (token.encode(), Principal(identity_of(token, scopes), frozenset(scopes)))
            for token, scopes in tokens.items()
            if token
        ]

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` header; AuthError 401 else."""
        if not authorization:
            raise AuthError(401, "missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "expected Authorization: Bearer <token>")
        presented = token.strip().encode()
        found: Principal | None = None
        # every token compared, so that timing does not tell which one nearly matched
        for known, principal in self._principals:
            if hmac.compare_digest(known, presented):
                found = principal
        if found is None:
            raise AuthError(401, "unknown token")
        return found

    def authorize(self, authorization: str | None, scope: str) -> Principal:
        principal = self.authenticate(authorization)
        if scope not in principal.scopes:
            raise AuthError(403, f"this token lacks the {scope!r} scope")
        return principal
