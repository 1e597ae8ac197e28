"""One-line errors for users: a message and exit code 2, never a traceback for a user mistake."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from selfheal.domain import SelfhealError

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

USAGE_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    err_console.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def describe_validation_error(error: ValidationError, *, source: str = "") -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{loc}: {item['msg']}")
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(parts)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn UserError, pydantic ValidationError and selfheal's own errors (a file or an input
    the user can fix, Temporal unreachable or refusing, no such healing, a refused decision)
    into one line and exit code 2: the one translation of failures for every command."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (UserError, SelfhealError) as exc:
            fail(str(exc))
        except ValidationError as exc:
            fail(describe_validation_error(exc))

    return wrapper
