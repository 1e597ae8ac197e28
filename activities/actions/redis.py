"""``redis.delete_keys``: delete the keys that match a pattern, such as a poisoned cache.

    - action: redis.delete_keys
      params: {pattern: "shop:cache:price:*", max_keys: 500}
      compensable: false

Keys are found with SCAN in batches, never KEYS, which blocks the server while it walks the
whole keyspace. The count is bounded by ``max_keys``, and the bound is a hard stop: when more
keys match than it allows, nothing is deleted and the step fails without retry. A pattern that
matches more than its author expected is a wrong plan, and half a flush of a cache is the worst
of both (the load of a cold cache and the poisoned entries possibly still there).

The Redis URL is the step's ``url`` or the worker's ``redis_url`` service (settings
``redis.url``); prefer the latter, so that no password lands in a plan, its history and its
audit. Deleting is idempotent: a retry finds fewer keys, or none, and deletes those.
Deleted data cannot be restored, hence ``compensable=False``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis import asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from selfheal.activities.actions.registry import Action, ActionContext, Output
from selfheal.domain import RiskLevel, TargetError

REDIS_URL = "redis_url"
SAMPLE_KEYS = 10
_SCHEMES = ("redis", "rediss", "unix")


class DeleteKeysParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(
        min_length=1, description="a Redis glob pattern (SCAN MATCH), e.g. 'cache:price:*'"
    )
    max_keys: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="refuse, deleting nothing, when more keys than this match",
    )
    batch_size: int = Field(default=500, ge=1, le=10_000, description="SCAN COUNT and UNLINK size")
    url: str | None = Field(
        default=None,
        description="redis://, rediss:// or unix:// URL; default: the worker's redis_url",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=300, description="per Redis command")

    @field_validator("pattern")
    @classmethod
    def _not_everything(cls, value: str) -> str:
        if not value.strip("*?"):
            raise ValueError("a pattern of wildcards only would match every key; name a prefix")
        return value

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in _SCHEMES:
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value


async def delete_keys(ctx: ActionContext, params: DeleteKeysParams) -> Output:
    url = params.url or ctx.services.get(REDIS_URL)
    if not url:
        raise TargetError(
            f"redis.delete_keys needs a 'url' param or the worker service {REDIS_URL!r}",
            retryable=False,
        )
    where = display_url(str(url))
    client = aioredis.from_url(
        str(url), socket_timeout=params.timeout_s, socket_connect_timeout=params.timeout_s
    )
    try:
        keys = await _matching(client, ctx, params, where)
        deleted = 0
        for start in range(0, len(keys), params.batch_size):
            deleted += int(await client.unlink(*keys[start : start + params.batch_size]))
            ctx.heartbeat({"deleted": deleted, "of": len(keys)})
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise TargetError(f"redis at {where}: {type(exc).__name__}: {exc}") from exc
    except (AuthenticationError, ResponseError) as exc:
        raise TargetError(f"redis at {where}: {exc}", retryable=False) from exc
    except RedisError as exc:
        raise TargetError(f"redis at {where}: {type(exc).__name__}: {exc}") from exc
    finally:
        await client.aclose()
    return {
        "url": where,
        "pattern": params.pattern,
        "matched": len(keys),
        # Fewer than matched when a key expired or was deleted between the scan and the unlink.
        "deleted": deleted,
        "sample_keys": [k.decode(errors="replace") for k in keys[:SAMPLE_KEYS]],
    }


async def _matching(
    client: aioredis.Redis, ctx: ActionContext, params: DeleteKeysParams, where: str
) -> list[bytes]:
    """Every key that matches, or a refusal as soon as more than ``max_keys`` do."""
    found: set[bytes] = set()  # SCAN may return a key more than once
    cursor: Any = 0
    while True:
        cursor, batch = await client.scan(cursor, match=params.pattern, count=params.batch_size)
        found.update(k.encode() if isinstance(k, str) else k for k in batch)
        ctx.heartbeat({"scanned_matches": len(found)})
        if len(found) > params.max_keys:
            raise TargetError(
                f"refused: more than {params.max_keys} keys match {params.pattern!r} at {where}; "
                "nothing was deleted (narrow the pattern or raise max_keys)",
                retryable=False,
            )
        if int(cursor) == 0:
            return sorted(found)


def display_url(url: str) -> str:
    """The URL without its password, for outputs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


REDIS_DELETE_KEYS = Action(
    name="redis.delete_keys",
    params_model=DeleteKeysParams,
    risk=RiskLevel.MEDIUM,
    run=delete_keys,
    compensable=False,
    idempotency="deleting is idempotent: a retry finds fewer keys, or none",
    description="Delete the keys matching a pattern (SCAN, bounded by max_keys; all or nothing).",
)
