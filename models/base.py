"""The declarative base and how database failures are reported.

One metadata with a naming convention, so that Alembic names every constraint and index the
same way in the models and in the migrations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import unquote

from sqlalchemy import DateTime, MetaData, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase

from selfheal.domain import KnowledgeBaseError

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
    }


def knowledge_base_error(doing: str, exc: SQLAlchemyError) -> KnowledgeBaseError:
    """One line for operators: the driver's first line, without SQLAlchemy's boilerplate."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return KnowledgeBaseError(f"{doing}: {first_line}")


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return unquote(make_url(url).render_as_string(hide_password=True))
    except ArgumentError:
        return "<invalid database URL>"
