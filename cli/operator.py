"""Operator commands: ``fault submit``, ``approve``, ``reject``, ``list``, ``show``."""

from __future__ import annotations

import typer

fault_app = typer.Typer(help="Faults.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    pass
