"""Temporal client factory (address, namespace, TLS, API key, data converter, tracing) and the one
translation of Temporal's failures into selfheal's errors.

Temporal says "unreachable" in two ways: ``Client.connect`` raises a bare ``RuntimeError`` from
its native core (only here, so ``connect`` turns it into ``TemporalUnavailable`` by type and
place, never by its text), and a call on a connected client raises ``RPCError`` with a status
code. ``translate_rpc_error`` maps the codes; every command and the HTTP app go through these
two, by way of the door (``selfheal.healings``) or ``temporal_errors``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client, Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from selfheal.core.settings import TemporalSettings
from selfheal.domain.errors import (
    ConfigError,
    HealingNotFound,
    SelfhealError,
    TemporalRefused,
    TemporalUnavailable,
)

# The server is down, unreachable or overloaded.
SERVER_DOWN = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.RESOURCE_EXHAUSTED})
# The call's time ran out (the SDK reports its own client-side timeout as CANCELLED): for a query
# or an update, most often because no worker polls the task queue.
TIMED_OUT = frozenset({RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED})
HINT = "start one with 'selfheal dev' or set SELFHEAL_TEMPORAL__ADDRESS"


def tls_config(settings: TemporalSettings) -> TLSConfig | bool:
    if not settings.tls:
        return False

    def read(path: Path | None, variable: str) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"SELFHEAL_TEMPORAL__{variable}: {path}: {exc.strerror or exc}"
            ) from None

    return TLSConfig(
        server_root_ca_cert=read(settings.tls_ca_path, "TLS_CA_PATH"),
        client_cert=read(settings.tls_cert_path, "TLS_CERT_PATH"),
        client_private_key=read(settings.tls_key_path, "TLS_KEY_PATH"),
    )


async def connect(
    settings: TemporalSettings, *, tracing: bool = True, runtime: Runtime | None = None
) -> Client:
    """A client with selfheal's data converter; with ``tracing`` its workers trace too (the
    OpenTelemetry interceptor on a client is inherited by workers built on it)."""
    interceptors: list[Interceptor] = [TracingInterceptor()] if tracing else []
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            tls=tls_config(settings),
            api_key=settings.api_key,
            data_converter=pydantic_data_converter,
            interceptors=interceptors,
            runtime=runtime,
        )
    except RuntimeError as exc:
        # The native client's only way of saying it could not connect (or handshake). Its text
        # is shown, never inspected: the gRPC status message when there is one, for one line.
        found = re.search(r'message: "([^"]+)"', str(exc))
        reason = found.group(1) if found else " ".join(str(exc).split())
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.address} (namespace {settings.namespace}): "
            f"{reason}; {HINT}"
        ) from exc


def translate_rpc_error(
    exc: RPCError, *, address: str, namespace: str, workflow_id: str | None = None
) -> SelfhealError:
    """What a failed call means, as one of selfheal's errors (raise it ``from None``)."""
    message = " ".join(exc.message.split())
    if exc.status == RPCStatusCode.NOT_FOUND:
        if "namespace" in message.lower():
            return TemporalRefused(f"namespace {namespace!r} not found on {address}: {message}")
        if workflow_id is not None:
            return HealingNotFound(f"no healing with id {workflow_id}")
    if exc.status in SERVER_DOWN:
        return TemporalUnavailable(f"Temporal at {address} does not answer ({message}); {HINT}")
    if exc.status in TIMED_OUT:
        return TemporalUnavailable(
            f"Temporal at {address} or a worker did not answer in time ({message}); "
            "is 'selfheal worker' running?"
        )
    return TemporalRefused(f"Temporal refused: {message}")


@contextmanager
def temporal_errors(client: Client, *, workflow_id: str | None = None) -> Iterator[None]:
    """Calls on ``client`` inside raise selfheal's errors instead of ``RPCError``."""
    try:
        yield
    except RPCError as exc:
        raise translate_rpc_error(
            exc,
            address=client.service_client.config.target_host,
            namespace=client.namespace,
            workflow_id=workflow_id,
        ) from None
