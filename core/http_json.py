"""One bounded HTTP GET of a JSON document, for the evidence sources (Prometheus' and
Alertmanager's APIs): bounded in time and in response bytes, every failure one line."""

from __future__ import annotations

import json
from typing import Any

import httpx


class FetchError(Exception):
    """The document could not be fetched; the message names the URL and why, in one line."""


async def get_json(
    http: httpx.AsyncClient,
    url: str,
    params: dict[str, str],
    *,
    timeout_s: float,
    max_bytes: int,
    too_big_hint: str = "",
) -> tuple[int, Any]:
    """(HTTP status, the decoded body). The body is read as it streams and refused past
    ``max_bytes``; a body that is not JSON is an error whatever the status."""
    try:
        async with http.stream("GET", url, params=params, timeout=timeout_s) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > max_bytes:
                    hint = f" ({too_big_hint})" if too_big_hint else ""
                    raise FetchError(f"{url}: response over {max_bytes} bytes{hint}")
            status = response.status_code
    except httpx.TimeoutException:
        raise FetchError(f"{url}: no answer within {timeout_s:g}s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
    try:
        return status, json.loads(body)
    except ValueError:
        raise FetchError(f"{url}: HTTP {status}, not JSON") from None
