"""Typed frozen records that validate themselves against their type hints and field constraints, read
and write plain JSON, and describe themselves as JSON Schema. The protocol's messages are built on them.

Supported field types: bool, int, float (finite; ints accepted), str, ``Literal`` of strings,
``X | None``, ``tuple[X, ...]``, fixed ``tuple[X, Y, ...]``, ``dict[str, Any]`` (any JSON object) and other
records. Constraints use JSON Schema's names (``constrained(minimum=0)``) and land in the schema as is.
Pure: no I/O, no numpy, no pipeline.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import numbers
import re
import types
import typing
from dataclasses import field
from typing import Any, ClassVar, Literal


class ProtocolError(ValueError):
    """A message that is not valid protocol. ``code`` is the ``error`` code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def constrained(default: Any = dataclasses.MISSING, **constraints: Any) -> Any:
    """A field with JSON-Schema-named constraints (minimum, maximum, exclusiveMinimum, exclusiveMaximum,
    minLength, maxLength, pattern, maxItems, contentEncoding) checked on construct and decode."""
    return field(default=default, metadata=constraints)


class Record:
    """Base of every record: construction checks types and constraints (and turns lists into tuples)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _coerce(_hints(type(self))[f.name], getattr(self, f.name), f.metadata, f.name)
            object.__setattr__(self, f.name, value)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; every field is written, ``None`` as ``null``."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Any:
        """Build from a decoded JSON object; ProtocolError naming the field when it does not fit."""
        where = where or getattr(cls, "TYPE", cls.__name__)
        if not isinstance(data, dict):
            raise ProtocolError("bad_message", f"{where}: expected an object, got {json_type(data)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ProtocolError("bad_message", f"{where}: unknown field(s) {unknown}")
        missing = [n for n, f in fields.items() if n not in data and _required(f)]
        if missing:
            raise ProtocolError("bad_message", f"{where}: missing field(s) {missing}")
        hints = _hints(cls)
        values = {n: _coerce(hints[n], v, fields[n].metadata, f"{where}.{n}") for n, v in data.items()}
        try:
            return cls(**values)
        except ProtocolError as err:
            raise ProtocolError(err.code, f"{where}: {err}") from None


# ------------------------------------------------------------------------------------- type machinery

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def json_type(value: object) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _coerce(tp: Any, value: Any, meta: typing.Mapping[str, Any], where: str) -> Any:
    """Check ``value`` against type ``tp`` and the field constraints; return its normalised form
    (ints as floats for float fields, lists as tuples, objects as records)."""

    def bad(expected: str) -> ProtocolError:
        return ProtocolError("bad_message", f"{where}: expected {expected}, got {json_type(value)} {_preview(value)}")

    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, meta, where)
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp) or not isinstance(value, str):
            raise bad(f"one of {list(typing.get_args(tp))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("a boolean")
        return value
    if tp is int:  # numbers.Integral/Real: numpy scalars from the server side become plain numbers
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad("an integer")
        _check_range(int(value), meta, where)
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad("a finite number")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range: JSON numbers may have any number of digits
            raise bad("a finite number") from None
        if not math.isfinite(number):
            raise bad("a finite number")
        _check_range(number, meta, where)
        return number
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        _check_string(value, meta, where)
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad("an array")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, {}, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad(f"an array of {len(args)} items")
        return tuple(_coerce(a, v, {}, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad("an object")
        try:  # what encode() must write back: strict JSON (finite numbers) as UTF-8 (no lone surrogates)
            json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as err:
            raise ProtocolError("bad_message", f"{where}: not a JSON object that can be sent ({err})") from None
        return value
    if isinstance(tp, type) and issubclass(tp, Record):
        if isinstance(value, tp):
            return value
        return tp.from_json(value, where)
    raise TypeError(f"{where}: records have no rule for type {tp!r}")  # a bug in a record definition


def _preview(value: Any) -> str:
    """The start of ``value``'s repr for an error message; a container is not walked (it may be huge or
    nested deeper than repr can recurse)."""
    if isinstance(value, (dict, list, tuple)):
        return f"of {len(value)} item(s)"
    return f"{value!r:.60}"


def _check_range(value: float, meta: typing.Mapping[str, Any], where: str) -> None:
    rules = [
        ("minimum", lambda lim: value >= lim, ">="),
        ("maximum", lambda lim: value <= lim, "<="),
        ("exclusiveMinimum", lambda lim: value > lim, ">"),
        ("exclusiveMaximum", lambda lim: value < lim, "<"),
    ]
    for key, ok, sign in rules:
        if key in meta and not ok(meta[key]):
            raise ProtocolError("bad_message", f"{where}: must be {sign} {meta[key]}, got {value!r}")


def _check_string(value: str, meta: typing.Mapping[str, Any], where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON may escape a lone surrogate ("\\ud800"); no text can hold one
        raise ProtocolError("bad_message", f"{where}: not valid Unicode text (a lone surrogate)") from None
    if "minLength" in meta and len(value) < meta["minLength"]:
        raise ProtocolError("bad_message", f"{where}: must have at least {meta['minLength']} characters")
    if "maxLength" in meta and len(value) > meta["maxLength"]:
        raise ProtocolError("bad_message", f"{where}: must have at most {meta['maxLength']} characters")
    if "pattern" in meta and not re.search(meta["pattern"], value):
        raise ProtocolError("bad_message", f"{where}: {value!r:.60} does not match {meta['pattern']}")
    if meta.get("contentEncoding") == "base64":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("bad_message", f"{where}: not valid base64") from None


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------- JSON Schema


def _schema_of(tp: Any, meta: typing.Mapping[str, Any]) -> dict[str, Any]:
    if _is_union(tp):
        (arg,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return {"anyOf": [_schema_of(arg, meta), {"type": "null"}]}
    origin = typing.get_origin(tp)
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(tp))}
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_of(args[0], {})}
        items = [_schema_of(a, {}) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if origin is dict:
        return {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, Record):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": simple[tp], **dict(meta)}


def record_schema(cls: type[Record], const: dict[str, Any] | None = None) -> dict[str, Any]:
    """The object schema of ``cls``; ``const`` adds fixed leading properties (e.g. a message's type)."""
    hints = _hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, value in (const or {}).items():
        props[name] = {"const": value}
        required.append(name)
    for f in fields:
        props[f.name] = _schema_of(hints[f.name], f.metadata)
        if _required(f):
            required.append(f.name)
    doc = " ".join((cls.__doc__ or "").split())
    return {
        "description": doc,
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


class MessageRecord(Record):
    """Base of every websocket message record: ``TYPE`` is its ``type`` on the wire."""

    TYPE: ClassVar[str]
