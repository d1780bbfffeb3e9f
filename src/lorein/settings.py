"""One validator for every setting: method configurations, their nested tables and CLI options.

A setting's type is its dataclass annotation (``int``, ``float``, ``bool``, ``str``, a
``Literal`` of choices, ``X | None``, ``dict[str, float]``, ``list[int]`` or a nested frozen
dataclass); a number may carry its range as ``Annotated[float, AtLeast(0)]`` (the aliases
:data:`Positive`, :data:`NonNegative`, :data:`Count`, :data:`PositiveCount` and
:data:`Fraction`), so that a value no run can use (``lr = -1``) is refused where the
configuration is read, not in the run.
:func:`typed` checks one value against it, :func:`validate` every field of a configuration
(its ``__post_init__`` calls it, so a configuration built in Python is checked as one read from
TOML), and :func:`merge` lays a partial TOML table over a configuration: keys it
does not name keep their values, nested tables merge the same way, and an unknown key or a value
of the wrong type is a one-line ``ValueError`` naming where it was found (file, table, key).

Chosen over pydantic: the configurations are plain dataclasses written to reports with
``dataclasses.asdict`` and compared with ``==``; a hundred lines keep that and add no
dependency.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}
"""Scalar types, as error messages name them."""


@dataclass(frozen=True)
class AtLeast:
    """The range of a numeric setting, attached to its type: ``Annotated[int, AtLeast(1)]``.

    Attributes
    ----------
    low
        Smallest value allowed (excluded when ``strict``); a real number must also be finite.
    strict
        Whether ``low`` itself is excluded.
    below
        When set, values must also lie below it (excluded).
    """

    low: float
    strict: bool = False
    below: float | None = None

    def check(self, value: float, key: str) -> None:
        """Raise ``"KEY = VALUE: expected ..."`` unless ``value`` lies in the range."""
        inside = value > self.low if self.strict else value >= self.low
        if self.below is not None:
            inside = inside and value < self.below
        if not (inside and math.isfinite(value)):
            bound = f"above {_number(self.low)}" if self.strict else f"at least {_number(self.low)}"
            if self.below is not None:
                bound += f" and below {_number(self.below)}"
            kind = "" if isinstance(value, int) else "a finite number "
            raise ValueError(f"{key} = {value!r}: expected {kind}{bound}")


def _number(x: float) -> float | int:
    """A bound as messages write it (1, not 1.0)."""
    return int(x) if float(x).is_integer() else x


Positive = Annotated[float, AtLeast(0.0, strict=True)]
"""A finite real setting above 0 (learning rates, times)."""

NonNegative = Annotated[float, AtLeast(0.0)]
"""A finite real setting of at least 0 (loss weights)."""

Count = Annotated[int, AtLeast(0)]
"""A number of steps or items that may be 0."""

PositiveCount = Annotated[int, AtLeast(1)]
"""A size or number of steps of at least 1."""

Fraction = Annotated[float, AtLeast(0.0, below=1.0)]
"""A share of a whole: at least 0 and below 1."""


def typed(value: Any, kind: Any, key: str) -> Any:
    """``value`` checked against the annotation ``kind`` (an integer passes as a float).

    Parameters
    ----------
    value
        The given value (from TOML, a command line or Python).
    kind
        The setting's type annotation (resolved, not a string).
    key
        The setting's name in messages (``table.key`` for nested ones).

    Returns
    -------
    The value, converted where the annotation allows (int to float, a table to its dataclass).

    Raises
    ------
    ValueError
        ``"KEY = VALUE: expected ..."`` naming the expected type or the choices.
    """
    origin = typing.get_origin(kind)
    if origin is Annotated:
        base, *extras = typing.get_args(kind)
        value = typed(value, base, key)
        for extra in extras:
            if isinstance(extra, AtLeast):
                extra.check(value, key)
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return typed(value, option, key)
            except ValueError as err:
                errors.append(str(err).split(": expected ", 1)[-1])
        raise ValueError(f"{key} = {value!r}: expected {' or '.join(errors)}")
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ValueError(f"{key} = {value!r}: expected one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} = {value!r}: expected a table")
        return merge(kind(), value, key)
    if origin in (dict, Mapping):
        return _typed_dict(value, kind, key)
    if origin in (list, tuple):
        return _typed_list(value, kind, key)
    return _typed_scalar(value, kind, key)


def _typed_scalar(value: Any, kind: Any, key: str) -> Any:
    if kind is Any:
        return value
    if kind is float and type(value) is int:
        return float(value)
    if kind in _NAMES and type(value) is not kind:
        raise ValueError(f"{key} = {value!r}: expected {_NAMES[kind]}")
    if kind not in _NAMES and not isinstance(value, kind):
        raise ValueError(f"{key} = {value!r}: expected {getattr(kind, '__name__', kind)}")
    return value


def _typed_dict(value: Any, kind: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} = {value!r}: expected a table")
    _, item = typing.get_args(kind) or (str, Any)
    return {k: typed(v, item, f"{key}.{k}") for k, v in value.items()}


def _typed_list(value: Any, kind: Any, key: str) -> Any:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{key} = {value!r}: expected a list")
    args = typing.get_args(kind)
    item = args[0] if args else Any
    items = [typed(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(kind) is tuple else items


def validate(config: Any) -> None:
    """Check (and convert in place) every field of the dataclass instance ``config``.

    Called from a configuration's ``__post_init__``; a nested table given as a dict is merged
    over the field's default.
    """
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            default = f.default_factory() if callable(f.default_factory) else kind()
            value = merge(default, value, f.name)
        else:
            value = typed(value, kind, f.name)
        object.__setattr__(config, f.name, value)


def merge(config: Any, table: Mapping[str, Any], where: str) -> Any:
    """A copy of the dataclass ``config`` with the keys of ``table`` replaced.

    Keys absent from ``table`` keep their values; a nested dataclass field given as a table is
    merged the same way (``{log2_table = 16}`` changes only that entry). ``where`` prefixes
    messages (``FILE [TABLE]`` or ``TABLE.KEY``).

    Raises
    ------
    ValueError
        For a key the configuration does not have (listing the valid ones) or a value of the
        wrong type.
    """
    names = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(type(config), include_extras=True)
    values: dict[str, Any] = {}
    for key, value in table.items():
        current = getattr(config, key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            values[key] = merge(current, value, f"{where}.{key}" if where else key)
        else:
            try:
                values[key] = typed(value, hints[key], key)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
    try:
        return dataclasses.replace(config, **values)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
