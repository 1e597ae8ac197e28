"""The CLI's answer to bad input and to an unreachable Temporal: one line naming what is wrong,
exit code 2, never a traceback. No service is needed: each case fails before or at connecting."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from selfheal.cli.main import app, main
from selfheal.core.settings import get_settings


@pytest.fixture(autouse=True)
def closed_temporal(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the CLI at a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    monkeypatch.setenv("SELFHEAL_TEMPORAL__ADDRESS", address)
    get_settings.cache_clear()
    yield address
    get_settings.cache_clear()


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("type: health_check_failed\n", ["service", "Field required"]),
        ("service: shop\ntype: x\nseverity: urgent\n", ["severity", "'info', 'warning'"]),
        ("service: shop\ntype: x\ncolour: red\n", ["colour", "Extra inputs are not permitted"]),
        ("service: shop\ntype: x\nvalues: {latency: fast}\n", ["values.latency"]),
        ("service: shop\ntype: x\nfingerprint: 'has spaces'\n", ["fingerprint"]),
        ("service: shop\ntype: x\nmetric: {url: http://m}\n", ["metric.name", "metric.max"]),
        ("service: [unclosed\n", [":2: not valid YAML"]),
        ("- service: shop\n", ["expected a mapping of Fault fields", "got list"]),
        # the one YAML loader: a key given twice would silently heal the second service
        ("service: demo\ntype: x\nservice: other\n", [":3:", "key 'service' appears twice"]),
        # URLs selfheal would fetch are http(s) URLs
        ("service: shop\ntype: x\nhealth_url: notaurl\n", [":3: health_url", "http"]),
        ("service: shop\ntype: x\nmetric: {url: file:///etc/passwd, name: m, max: 1}\n",
         ["metric.url", "http"]),
        # bounded strings: Temporal's search attributes never see an over-long one
        (f"service: shop\ntype: {'x' * 5000}\n", [":2: type", "at most 128 characters"]),
        (f"service: {'s' * 129}\ntype: x\n", [":1: service", "at most 128 characters"]),
        (f"service: shop\ntype: x\nlabels: {{team: {'t' * 1025}}}\n",
         ["labels.team", "at most 1024 characters"]),
    ],
)  # fmt: skip
def test_malformed_fault_file_names_the_field(
    tmp_path: Path, content: str, fragments: list[str]
) -> None:
    path = tmp_path / "fault.yaml"
    path.write_text(content)
    assert_one_line_error(run("fault", "submit", str(path)), str(path), *fragments)


def test_malformed_json_on_stdin_names_the_field() -> None:
    result = run("fault", "submit", "-", stdin='{"service": "shop", "type": ""}')
    assert_one_line_error(result, "-:1: type", "at least 1 character")


def test_duplicate_key_in_json_on_stdin_is_refused_with_its_line() -> None:
    text = '{\n  "service": "demo",\n  "type": "x",\n  "service": "other"\n}'
    result = run("fault", "submit", "-", stdin=text)
    assert_one_line_error(result, "-:4:", "key 'service' appears twice")


def test_over_long_field_is_one_short_line() -> None:
    result = run("fault", "submit", "-", stdin=f'{{"service": "shop", "type": "{"x" * 5000}"}}')
    assert_one_line_error(result, "-:1: type", "at most 128 characters")
    assert len(result.stderr) < 200, result.stderr  # the value is not echoed back


def test_missing_fault_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    assert_one_line_error(run("fault", "submit", str(missing)), f"{missing}: no such file")


def test_unknown_phase_is_refused_before_connecting() -> None:
    assert_one_line_error(run("list", "--phase", "sleeping"), "--phase", "awaiting_approval")


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["show", "heal-abc"],
        ["approve", "heal-abc", "--by", "alice"],
        ["reject", "heal-abc", "--by", "alice", "--reason", "no"],
    ],
)
def test_unreachable_temporal_is_one_line(closed_temporal: str, args: list[str]) -> None:
    assert_one_line_error(run(*args), f"cannot reach Temporal at {closed_temporal}", "refused")


def test_valid_fault_with_unreachable_temporal(tmp_path: Path, closed_temporal: str) -> None:
    path = tmp_path / "fault.json"
    path.write_text('{"service": "shop", "type": "health_check_failed", "target": "api"}')
    assert_one_line_error(run("fault", "submit", str(path)), "cannot reach Temporal")


def test_unknown_demo_scenario() -> None:
    assert_one_line_error(run("dev", "--demo", "meteor"), "unknown demo scenario 'meteor'", "crash")


def test_demo_list_needs_no_services() -> None:
    result = run("dev", "--demo", "list")
    assert result.exit_code == 0, result.output
    for name in ("error_burst", "hang", "crash", "poisoned_cache", "process_crashed"):
        assert name in result.stdout


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The `selfheal` entry point as installed (main(), not the Typer app CliRunner calls)."""
    monkeypatch.setattr("sys.argv", ["selfheal", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["forecast", "x.csv", "--threshold", "ten"], ["'--threshold'", "valid number"]),
        (["detect", "--frobnicate"], ["No such option: --frobnicate", "selfheal detect --help"]),
        (["detect"], ["Missing argument 'file'"]),
        (["heal-everything"], ["No such command 'heal-everything'", "selfheal --help"]),
        (["kb", "stats", "--json", "extra"], ["unexpected extra argument"]),
    ],
)
def test_parser_mistakes_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragments: list[str],
) -> None:
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_entry_point_keeps_help_and_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run_main(monkeypatch, capsys, "--help")
    assert (code, err) == (0, "")
    assert "Usage: selfheal" in out and "forecast" in out
    # alone, a group prints its help (exit 2, as Click does), not an error line
    code, out, err = run_main(monkeypatch, capsys, "kb")
    assert code == 2
    assert "Usage: selfheal kb" in out + err and "error:" not in out + err
    # a command's own one-line error keeps its code through main()
    code, out, err = run_main(monkeypatch, capsys, "detect", str(tmp_path / "absent.csv"))
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {tmp_path / 'absent.csv'}: cannot read: No such file or directory"
    ]
    # and success is 0
    series = tmp_path / "s.csv"
    series.write_text("timestamp,value\n" + "".join(f"{i * 60},{i % 7}\n" for i in range(50)))
    code, out, err = run_main(monkeypatch, capsys, "detect", str(series))
    assert code == 0, err
    assert out.splitlines()[0] == "timestamp,value,anomaly_score"
