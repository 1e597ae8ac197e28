"""``selfheal kb ...`` and ``selfheal db ...`` (owned by the knowledge-base work)."""

from __future__ import annotations

import typer

kb_app = typer.Typer(help="The knowledge base of solutions.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
