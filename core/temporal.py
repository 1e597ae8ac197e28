"""Temporal client factory: one place for address, namespace, TLS, API key, data converter and
tracing."""

from __future__ import annotations

from temporalio.client import Client, Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from selfheal.core.settings import TemporalSettings


def tls_config(settings: TemporalSettings) -> TLSConfig | bool:
    if not settings.tls:
        return False

    def read(path: object) -> bytes | None:
        from pathlib import Path

        return Path(str(path)).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.tls_ca_path),
        client_cert=read(settings.tls_cert_path),
        client_private_key=read(settings.tls_key_path),
    )


async def connect(
    settings: TemporalSettings, *, tracing: bool = True, runtime: Runtime | None = None
) -> Client:
    """A client with selfheal's data converter; with ``tracing`` its workers trace too (the
    OpenTelemetry interceptor on a client is inherited by workers built on it)."""
    interceptors: list[Interceptor] = [TracingInterceptor()] if tracing else []
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        tls=tls_config(settings),
        api_key=settings.api_key,
        data_converter=pydantic_data_converter,
        interceptors=interceptors,
        runtime=runtime,
    )
