"""``redis.delete_keys`` against the real Redis on 127.0.0.1:6379 (started by .ci/services.sh),
each test under its own random key prefix; and the demo target's Redis-backed cache."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from selfheal.activities.actions.redis import REDIS_DELETE_KEYS, REDIS_URL, DeleteKeysParams
from selfheal.activities.actions.registry import ActionContext
from selfheal.devstack.demo.checkout import POISONED_KEY, checkout_command
from selfheal.domain import InvalidParams, TargetError
from tests.integration.demo_stack import wait_until
from tests.support import free_port

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"selfheal-test:{uuid.uuid4().hex[:12]}:"
    yield value
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=value + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


def context(key: str = "heal-x/run/0/0", **services: object) -> ActionContext:
    return ActionContext(
        idempotency_key=key, workflow_id="heal-x", services={REDIS_URL: URL, **services}
    )


def params(**kw: object) -> DeleteKeysParams:
    return REDIS_DELETE_KEYS.parse(kw)


def fill(db: redis.Redis, prefix: str, count: int) -> None:
    db.mset({f"{prefix}{i}": "v" for i in range(count)})


def count(db: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in db.scan_iter(match=pattern))


async def test_deletes_every_matching_key_in_batches_and_nothing_else(
    db: redis.Redis, prefix: str
) -> None:
    fill(db, f"{prefix}cache:", 57)
    fill(db, f"{prefix}keep:", 5)

    output = await REDIS_DELETE_KEYS.run(
        context(), params(pattern=f"{prefix}cache:*", batch_size=7)
    )

    assert (output["matched"], output["deleted"]) == (57, 57)
    assert len(output["sample_keys"]) == 10
    assert all(k.startswith(f"{prefix}cache:") for k in output["sample_keys"])
    assert count(db, f"{prefix}cache:*") == 0
    assert count(db, f"{prefix}keep:*") == 5


async def test_a_retry_with_the_same_key_deletes_once(db: redis.Redis, prefix: str) -> None:
    fill(db, f"{prefix}cache:", 12)
    step = params(pattern=f"{prefix}cache:*")

    first = await REDIS_DELETE_KEYS.run(context("heal-x/run/0/1"), step)
    db.set(f"{prefix}keep", "v")
    again = await REDIS_DELETE_KEYS.run(context("heal-x/run/0/1"), step)

    assert first["deleted"] == 12
    assert (again["matched"], again["deleted"], again["sample_keys"]) == (0, 0, [])
    assert db.get(f"{prefix}keep") == b"v"


async def test_more_matches_than_the_bound_is_a_hard_stop(db: redis.Redis, prefix: str) -> None:
    fill(db, prefix, 25)

    with pytest.raises(TargetError, match=r"refused: more than 10 keys match") as raised:
        await REDIS_DELETE_KEYS.run(
            context(), params(pattern=f"{prefix}*", max_keys=10, batch_size=5)
        )

    assert raised.value.retryable is False
    assert count(db, f"{prefix}*") == 25  # nothing deleted, not even a first batch


async def test_the_url_param_wins_and_one_is_needed(db: redis.Redis, prefix: str) -> None:
    db.set(f"{prefix}a", "v")
    no_service = ActionContext(idempotency_key="k", workflow_id="w")

    with pytest.raises(TargetError, match="needs a 'url' param or the worker service 'redis_url'"):
        await REDIS_DELETE_KEYS.run(no_service, params(pattern=f"{prefix}*"))
    output = await REDIS_DELETE_KEYS.run(no_service, params(pattern=f"{prefix}*", url=URL))

    assert output["deleted"] == 1


async def test_an_unreachable_server_is_retryable_and_hides_the_password() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"

    with pytest.raises(TargetError) as raised:
        await REDIS_DELETE_KEYS.run(context(), params(pattern="x:*", url=url, timeout_s=1))

    assert raised.value.retryable is True
    assert "s3cret" not in str(raised.value) and ":***@127.0.0.1" in str(raised.value)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"pattern": "*"}, "pattern: Value error, a pattern of wildcards only"),
        ({"pattern": "a:*", "url": "http://127.0.0.1:6379"}, "url: Value error, expected a redis"),
        ({"pattern": "a:*", "max_keys": 0}, "max_keys: Input should be greater than or equal"),
        ({"pattern": "a:*", "keys": ["a"]}, "keys: Extra inputs are not permitted"),
    ],
)
def test_bad_params_name_the_field(given: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParams, match=f"redis.delete_keys params: {message}"):
        REDIS_DELETE_KEYS.parse(given)


def test_declared_not_compensable() -> None:
    assert (REDIS_DELETE_KEYS.mutating, REDIS_DELETE_KEYS.compensable) == (True, False)


@pytest.fixture
def redis_target(tmp_path: Path, prefix: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # No inventory and no synthetic traffic: this is about the cache alone.
    command = checkout_command(
        port,
        tmp_path / "state",
        inventory_url="http://127.0.0.1:9",
        redis_url=URL,
        redis_prefix=prefix,
        traffic_rps=0,
    )
    proc = subprocess.Popen(command)

    def answers() -> bool:  # not healthy: without inventory every checkout fails
        try:
            return httpx.get(f"{url}/flags", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, what="checkout with a Redis cache")
        yield url
    finally:
        proc.kill()
        proc.wait()


async def test_delete_keys_clears_the_demo_targets_poisoned_redis_cache(
    redis_target: str, db: redis.Redis, prefix: str
) -> None:
    db.set(f"{prefix}price:sku-7", '{"value": 7}')
    async with httpx.AsyncClient(base_url=redis_target) as http:
        assert (await http.post("/inject/poisoned_cache")).status_code == 202
        assert db.get(prefix + POISONED_KEY) is not None  # the cache lives in Redis
        failed = await http.get("/")
        assert failed.status_code == 500 and "CacheCorruption" in failed.json()["error"]

        output = await REDIS_DELETE_KEYS.run(context(), params(pattern=f"{prefix}*"))

        assert output["deleted"] == 2
        assert (await http.get("/")).status_code != 500  # past the cache (inventory is absent)


def test_the_flush_endpoint_empties_the_redis_cache(
    redis_target: str, db: redis.Redis, prefix: str
) -> None:
    assert httpx.post(f"{redis_target}/inject/poisoned_cache").status_code == 202

    flushed = httpx.post(f"{redis_target}/admin/cache/flush").json()

    assert flushed == {"flushed": 1}
    assert count(db, f"{prefix}*") == 0
    assert httpx.get(redis_target).status_code != 500  # past the cache (inventory is absent)
