"""Personal fields in the event catalogue, for crypto-shredding (``docs/erasure.md``).

A payload field annotated :data:`PERSONAL` holds personal data the business needs (a customer's
name, the text they wrote) and no pattern redaction can find. The field annotated
:data:`DATA_SUBJECT` names whose data it is (a customer id). On publish the kernel encrypts every
personal field with that data subject's key and stores a :func:`token` in its place; destroying
the key erases the field in every stored copy while the log's bytes, and so its hash chain, stay
as they are. The JSON Schema in ``contracts/`` carries ``x-agentos-personal`` and
``x-agentos-data-subject`` on those fields.

Rules (checked by :func:`personal_plan`): personal fields are ``str`` or ``str | None`` with no
length or pattern constraint (a token must validate where the plaintext did); at most one data
subject field per payload, itself not personal.

Pure: no I/O, no cryptography (that is the kernel's ``agentos_kernel.shred``).
"""

from __future__ import annotations

import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, NamedTuple

PERSONAL_KEY = "x-agentos-personal"
DATA_SUBJECT_KEY = "x-agentos-data-subject"
#: What a personal field reads as once its data subject's key is destroyed (or cannot open it).
ERASED = "[ERASED]"
#: Prefix of an encrypted field value: ``agentos-enc:v1:<key name>.<key revision>:<base64url>``.
TOKEN_PREFIX = "agentos-enc:v1:"
_TOKEN = re.compile(r"^agentos-enc:v1:([0-9a-f]{32})\.([0-9]{1,19}):([A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class _Marker:
    key: str

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        schema[self.key] = True
        return schema


#: ``name: Annotated[str | None, PERSONAL] = None`` — stored encrypted with the data subject's key.
PERSONAL = _Marker(PERSONAL_KEY)
#: ``customer_id: Annotated[str | None, DATA_SUBJECT] = None`` — whose personal data the event holds.
DATA_SUBJECT = _Marker(DATA_SUBJECT_KEY)


class PersonalPlan(NamedTuple):
    """Which fields of one payload class are personal, and which names the data subject."""

    fields: tuple[str, ...]
    subject_field: str | None


def _is_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation))
        return args == {str, type(None)}
    return False


@functools.cache
def personal_plan(cls: type[Any]) -> PersonalPlan | None:
    """The personal fields of a pydantic payload class (None when it has none)."""
    fields: list[str] = []
    subject: str | None = None
    for name, info in cls.model_fields.items():
        marks = {m.key for m in info.metadata if isinstance(m, _Marker)}
        if PERSONAL_KEY in marks:
            if DATA_SUBJECT_KEY in marks:
                raise TypeError(f"{cls.__name__}.{name}: the data subject field cannot itself be personal")
            if not _is_text(info.annotation):
                raise TypeError(
                    f"{cls.__name__}.{name}: personal fields must be str or str | None, not {info.annotation!r}"
                )
            constrained = ("MinLen", "MaxLen", "_PydanticGeneralMetadata")
            if any(type(m).__name__ in constrained for m in info.metadata):
                raise TypeError(
                    f"{cls.__name__}.{name}: personal fields cannot carry length or pattern "
                    "constraints (the stored value is a ciphertext token)"
                )
            fields.append(name)
        if DATA_SUBJECT_KEY in marks:
            if subject is not None:
                raise TypeError(f"{cls.__name__}: two data subject fields ({subject}, {name})")
            subject = name
    if not fields:
        return None
    return PersonalPlan(tuple(fields), subject)


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def parse_token(value: str) -> tuple[str, int, str] | None:
    """``(key name, key revision, base64url blob)`` of a token; None if ``value`` is not one."""
    found = _TOKEN.match(value)
    if found is None:
        return None
    return found.group(1), int(found.group(2)), found.group(3)


def token(key_name: str, revision: int, blob: str) -> str:
    return f"{TOKEN_PREFIX}{key_name}.{revision}:{blob}"


def render_erased(data: dict[str, Any], plan: PersonalPlan, erased: typing.Mapping[str, int]) -> bool:
    """Replace, in a payload dict, the personal tokens sealed with a key destroyed at or before the
    revision in ``erased`` (key name -> last erased revision) by :data:`ERASED`; True if any was."""
    changed = False
    for name in plan.fields:
        value = data.get(name)
        if not isinstance(value, str):
            continue
        parsed = parse_token(value)
        if parsed is not None and parsed[1] <= erased.get(parsed[0], 0):
            data[name] = ERASED
            changed = True
    return changed


__all__ = [
    "DATA_SUBJECT",
    "DATA_SUBJECT_KEY",
    "ERASED",
    "PERSONAL",
    "PERSONAL_KEY",
    "TOKEN_PREFIX",
    "PersonalPlan",
    "is_token",
    "parse_token",
    "personal_plan",
    "render_erased",
    "token",
]
