"""The action registry's rules and the built-in actions' declarations (no services)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from selfheal.activities.actions import Action, ActionContext, ActionRegistry, default_registry
from selfheal.domain import ActionNotFound, InvalidParams, RecoveryStep, RiskLevel, StepCall

REGISTRY = default_registry()


class NoParams(BaseModel):
    pass


async def noop(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    return {}


def test_default_registry_holds_the_first_actions() -> None:
    assert {"http.request", "process.restart", "wait"} <= set(REGISTRY.names())
    assert {"http.degrade", "redis.delete_keys", "postgres.terminate_backends"} <= set(
        REGISTRY.names()
    )


def test_mutating_action_without_a_way_back_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'x.mutate'.*compensation or compensable=False"):
        Action(name="x.mutate", params_model=NoParams, risk=RiskLevel.LOW, run=noop)
    Action(name="x.ok", params_model=NoParams, risk=RiskLevel.LOW, run=noop, compensable=False)
    Action(name="x.read", params_model=NoParams, risk=RiskLevel.LOW, run=noop, mutating=False)


def test_an_action_registered_twice_is_refused() -> None:
    registry = ActionRegistry([default_registry().get("wait")])
    with pytest.raises(ValueError, match="twice"):
        registry.register(default_registry().get("wait"))


def test_declarations_of_the_built_in_actions() -> None:
    restart, http, wait = (REGISTRY.get(n) for n in ("process.restart", "http.request", "wait"))
    assert (restart.risk, restart.mutating, restart.compensable) == (RiskLevel.MEDIUM, True, False)
    assert (http.risk, http.mutating, http.compensation_in_plan) == (RiskLevel.MEDIUM, True, True)
    assert http.compensate is None
    assert (wait.risk, wait.mutating) == (RiskLevel.LOW, False)


FLAG_URL = "http://shop/flags/new_checkout"


def flag_step(**kw: Any) -> RecoveryStep:
    params = {"method": "PUT", "url": FLAG_URL, "json": {"enabled": False}}
    return RecoveryStep(action="http.request", params=params, **kw)


def test_check_step_wants_the_inverse_of_an_http_request() -> None:
    with pytest.raises(InvalidParams, match=r"'http.request' needs a 'compensate' call"):
        REGISTRY.check_step(flag_step())
    undo = StepCall(action="http.request", params={"method": "PUT", "url": FLAG_URL})
    REGISTRY.check_step(flag_step(compensate=undo))
    REGISTRY.check_step(flag_step(compensable=False))


def test_check_step_knows_the_actions() -> None:
    REGISTRY.check_step(RecoveryStep(action="process.restart", params={"process": "web"}))
    REGISTRY.check_step(RecoveryStep(action="wait", params={"seconds": 5}))
    with pytest.raises(ActionNotFound, match=r"'reboot'.*known: .*http.request, .*process.restart"):
        REGISTRY.check_step(RecoveryStep(action="reboot"))
    with pytest.raises(ActionNotFound, match=r"'undo.magic'"):
        REGISTRY.check_step(flag_step(compensate=StepCall(action="undo.magic")))


def test_plan_risk_is_the_riskiest_part() -> None:
    wait = RecoveryStep(action="wait", params={"seconds": 1})
    restart = RecoveryStep(action="process.restart", params={"process": "web"})
    assert REGISTRY.plan_risk([wait], RiskLevel.LOW) is RiskLevel.LOW
    assert REGISTRY.plan_risk([wait, restart], RiskLevel.LOW) is RiskLevel.MEDIUM
    assert REGISTRY.plan_risk([wait, restart], RiskLevel.HIGH) is RiskLevel.HIGH
    assert REGISTRY.plan_risk([], RiskLevel.MEDIUM) is RiskLevel.MEDIUM


@pytest.mark.parametrize(
    ("action", "params", "names"),
    [
        ("process.restart", {}, "process: Field required"),
        ("process.restart", {"process": "web", "force": True}, "force: Extra inputs"),
        ("process.restart", {"process": "web", "wait_healthy_s": -1}, "wait_healthy_s"),
        ("http.request", {"method": "PUT", "url": "shop/flags"}, "url: Value error, expected an"),
        ("http.request", {"method": "BREW", "url": FLAG_URL}, "method: Input should be"),
        ("http.request", {"method": "GET", "url": FLAG_URL, "body": {}}, "body: Extra inputs"),
        ("http.request", {"method": "GET", "url": FLAG_URL, "expect_status": [700]}, "700"),
        ("http.request", {"method": "GET", "url": FLAG_URL, "timeout_s": 0}, "timeout_s"),
        ("wait", {"seconds": 0}, "seconds: Input should be greater than 0"),
        ("wait", {"seconds": 3601}, "seconds: Input should be less than or equal to 3600"),
    ],
)
def test_bad_params_name_the_field(action: str, params: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidParams, match=f"^{action} params: .*{names}"):
        REGISTRY.get(action).parse(params)


def test_http_request_defaults_and_json_alias() -> None:
    parsed = REGISTRY.get("http.request").parse(
        {"method": "PUT", "url": FLAG_URL, "json": {"enabled": True}}
    )
    dumped = parsed.model_dump(mode="json", by_alias=True)
    assert dumped["json"] == {"enabled": True}
    assert dumped["expect_status"] == list(range(200, 300))
    assert dumped["headers"] == {} and dumped["timeout_s"] == 10.0
