"""Request-body schemas for the OpenAPI document, with every ``$ref`` resolvable in it.

A pydantic model's JSON Schema keeps its nested models under its own ``$defs`` and refers to them
as ``#/$defs/<Name>``. Embedded as-is in the OpenAPI document, such a ref points at the document's
root, where there is no ``$defs``. So bodies are generated with refs into
``#/components/schemas/`` and their definitions are added to the document's components by
:func:`install`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"
_DEFINITIONS: dict[str, dict[str, Any]] = {}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema, its nested models referenced in the document's components."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    _DEFINITIONS.update(schema.pop("$defs", {}))
    return schema


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads ``model`` as JSON."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model_schema(model)}}}}


def install(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document carry the definitions the request bodies refer to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in _DEFINITIONS.items():
                schemas.setdefault(name, definition)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
