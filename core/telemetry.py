"""Tracing setup. The Temporal client's TracingInterceptor (core/temporal.py) writes spans for
every workflow and activity to the global tracer provider installed here."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from selfheal.core.settings import TelemetrySettings


def setup_tracing(
    settings: TelemetrySettings, *, processor: SpanProcessor | None = None
) -> TracerProvider | None:
    """Install a tracer provider exporting to the OTLP endpoint (or to ``processor``).

    With neither configured, tracing stays the API's no-op: nothing is collected or sent.
    """
    if processor is None and settings.otlp_endpoint is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider
