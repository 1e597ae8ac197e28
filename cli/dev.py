"""``selfheal dev``: everything on one machine."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
