"""NUL characters (U+0000) in text: Postgres stores them in neither ``text`` nor ``jsonb``, so
they are refused where text comes in (a request, an event), with the field that holds one."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

NUL = "\x00"
_ESCAPED = b"\\u0000"


def nul_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (a key or a value) in ``value`` that holds a NUL."""
    if isinstance(value, str):
        return (path or "<root>") if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and NUL in key:
                return here
            if (found := nul_path(item, here)) is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{index}]")) is not None:
                return found
    return None


def json_nul_path(raw: bytes) -> str | None:
    """:func:`nul_path` of a JSON document; parses it only if its text escapes a NUL (``\\u0000``)."""
    if _ESCAPED not in raw:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    return nul_path(document)


def parse_request(request_type: type[M], raw: bytes) -> M:
    """A request/reply question as ``request_type``; ValueError for invalid JSON or fields, and
    for text holding a NUL (naming the field), which would otherwise fail raw in Postgres."""
    if (where := json_nul_path(raw)) is not None:
        raise ValueError(nul_detail(where))
    return request_type.model_validate_json(raw)


def nul_detail(where: str) -> str:
    """The problem text for a NUL found at ``where``."""
    return f"{where} contains a NUL character (U+0000), which cannot be stored; remove it"
