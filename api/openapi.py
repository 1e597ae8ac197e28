"""The OpenAPI document: bodies that routes read by hand (for size limits and field-naming
errors) still get schemas, and every /v1/ operation declares its bearer token."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


def request_body(model: type[BaseModel] | None, description: str, *media: str) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body by hand."""
    schema: dict[str, Any] = (
        {"$ref": f"#/components/schemas/{model.__name__}"} if model else {"type": "string"}
    )
    if not model:
        schema["format"] = "binary"
    content = {m: {"schema": schema} for m in media}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def add_component_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            full = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(full.pop("$defs", {}))
            components[model.__name__] = full
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "intake token"}
        }
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_json(app: FastAPI) -> str:
    """The OpenAPI document as committed in docs/openapi.json."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
