"""runbooks/detectors.yaml loads, and every mistake names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.detection.detector_config import load_detector_config, parse_detector_config
from selfheal.detection.detectors import DETECTORS, EwmaParams
from selfheal.domain import ConfigError

RUNBOOK = Path(__file__).resolve().parents[2] / "runbooks" / "detectors.yaml"

GOOD = """\
metrics:
  - name: errors
    metric: demo_error_ratio
    detector: ewma
    params: {alpha: 0.2}
    fault: {type: error_rate_high, service: demo}
"""


def test_the_shipped_runbook_loads_with_the_entries_the_demo_needs() -> None:
    config = load_detector_config(RUNBOOK)
    by_metric = {rule.metric: rule for rule in config.metrics}
    errors = by_metric["demo_error_ratio"]
    assert errors.detector == "ewma"
    assert (errors.fault.type, errors.fault.service) == ("error_rate_high", "checkout")
    assert by_metric["http.server.request.duration"].fault.service_label == "service.name"
    assert any(rule.detector == "zscore" for rule in config.metrics)
    for rule in config.metrics:
        assert isinstance(rule.detector_params(), DETECTORS[rule.detector].params)
    heartbeats = config.heartbeats
    assert heartbeats.params.threshold == 8
    assert heartbeats.params.max_sample_size == 1000
    assert heartbeats.params.min_std_deviation == 0.1
    assert heartbeats.params.acceptable_heartbeat_pause == 3
    assert heartbeats.component("checkout") is not None


def test_params_become_the_detectors_own_model() -> None:
    config = parse_detector_config(GOOD, "t.yaml")
    params = config.metrics[0].detector_params()
    assert isinstance(params, EwmaParams)
    assert params.alpha == 0.2
    assert config.metrics[0].threshold == 0.5
    assert config.max_series == 10_000


def test_label_matchers_exact_and_regex() -> None:
    config = parse_detector_config(
        GOOD.replace(
            "    detector: ewma\n",
            "    labels: {job: demo, route: {regex: '/api/.*'}}\n    detector: ewma\n",
        ),
        "t.yaml",
    )
    rule = config.metrics[0]
    assert rule.matches({"job": "demo", "route": "/api/pay", "extra": "x"})
    assert not rule.matches({"job": "demo", "route": "/health"})
    assert not rule.matches({"job": "other", "route": "/api/pay"})
    assert not rule.matches({"route": "/api/pay"})


def test_an_empty_file_is_an_empty_config() -> None:
    config = parse_detector_config("", "t.yaml")
    assert config.metrics == []
    assert config.heartbeats.components == []


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (GOOD.replace("detector: ewma", "detector: magic"),
         ["t.yaml:4:", "metrics[0] (errors): detector", "unknown detector 'magic'", "zscore"]),
        (GOOD.replace("{alpha: 0.2}", "{alpha: 2}"),
         ["t.yaml:5:", "metrics[0] (errors): params.alpha", "less than or equal to 1"]),
        (GOOD.replace("{alpha: 0.2}", "\n      alpha: 0.2\n      colour: red"),
         ["t.yaml:7:", "params.colour", "Extra inputs"]),
        (GOOD.replace("service: demo", "severity: critical"),
         ["t.yaml:6:", "fault", "'service'", "'service_label'"]),
        (GOOD.replace("    detector:", "    labels: {job: {regex: '('}}\n    detector:"),
         ["t.yaml:4:", "metrics[0] (errors): labels.job.regex: not a valid regular expression"]),
        (GOOD.replace("    detector:", "    labels: {job: 3}\n    detector:"),
         ["t.yaml:4: metrics[0] (errors): labels.job: Input should be a valid string"]),
        (GOOD.replace("    detector:", "    labels: {job: {rgx: a}}\n    detector:"),
         ["t.yaml:4:", "labels.job.regex: Field required", "labels.job.rgx: Extra inputs"]),
        (GOOD + "    threshold: 3\n", ["t.yaml:7:", "threshold", "less than or equal to 1"]),
        (GOOD + "    metric: again\n", ["t.yaml:7:", "not valid YAML: key 'metric' appears twice"]),
        (GOOD + GOOD.removeprefix("metrics:\n"), ["t.yaml:7:", "metrics[1] (errors): name",
                                                  "appears twice"]),
        (GOOD.replace("    metric: demo_error_ratio\n", ""),
         ["t.yaml:2:", "metrics[0] (errors): metric", "Field required"]),
        ("heartbeats:\n  params:\n    threshold: -1\n",
         ["t.yaml:3:", "heartbeats.params.threshold", "greater than 0"]),
        ("heartbeats:\n  components:\n    - match: x\n", ["t.yaml:3:", "components.0.service"]),
        ("metrics: [\n", ["t.yaml:2:", "not valid YAML"]),
        ("- a\n- b\n", ["t.yaml:1: expected a mapping with 'metrics' and 'heartbeats', got list"]),
        ("max_series: 0\n", ["t.yaml:1:", "max_series", "greater than or equal to 1"]),
        ("rules: []\n", ["t.yaml:1:", "rules", "Extra inputs"]),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_field(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_detector_config(text, "t.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert "RegexMatch" not in message and ".str" not in message  # pydantic's union tags
    for fragment in fragments:
        assert fragment in message, message


def test_load_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "detectors.yaml"
    path.write_text(GOOD.replace("{alpha: 0.2}", "{window: 1}").replace("ewma", "zscore"))
    with pytest.raises(ConfigError, match=rf"{path}:5: .*params.window"):
        load_detector_config(path)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=rf"^{missing}: cannot read the detector config: "):
        load_detector_config(missing)
