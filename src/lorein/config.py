"""One TOML configuration file for every command (``lorein COMMAND --config FILE.toml``).

A file holds a table per command and a table per reconstruction method::

    [simulate]          # options of 'lorein simulate': flag names, dashes as underscores
    preset = "sim1-small"
    R = 27

    [import]            # options of 'lorein import' and the keys of a --sidecar file
    [export-ismrmrd]
    [info]              # no settings; accepted so that one file serves every command
    [recon]             # options of 'lorein recon' (method, device, seed, ...)
    [eval]
    [lorein]            # hyper-parameters of the method lorein

Each command reads only its own table (and ``recon`` the table of its method). Keys outside any
table are the hyper-parameters of the method being run, as in the one-method files of
``configs/``. A flag on the command line overrides the file, which overrides the defaults that
``lorein config show NAME`` prints. A key a table does not know is an error naming the file, the
table and the valid keys.
"""

from __future__ import annotations

import argparse
import textwrap
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from lorein.settings import typed

COMMANDS = (
    "simulate",
    "info",
    "import",
    "undersample",
    "export-ismrmrd",
    "recon",
    "eval",
    "compare",
)
"""Commands with a table in a configuration file (``config`` itself has none)."""


def read_toml(path: Path, what: str = "configuration file") -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a one-line error naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        message = f"{path}: not UTF-8 text (byte {err.start}); expected a TOML file"
        raise ValueError(message) from None


def check_keys(values: Mapping[str, Any], valid: Iterable[str], where: str) -> None:
    """Raise a one-line ``ValueError`` if ``values`` has a key outside ``valid``."""
    valid = sorted(valid)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}"
        )


def table(config: Mapping[str, Any], path: Path, name: str) -> dict[str, Any]:
    """The table ``[name]`` of a parsed file (empty if absent)."""
    values = config.get(name, {})
    if not isinstance(values, dict):
        raise ValueError(f"{path}: {name} must be a table [{name}], found {values!r}")
    return values


def method_table(
    config: Mapping[str, Any], path: Path, method: str, methods: Iterable[str]
) -> tuple[dict[str, Any], str]:
    """A method's hyper-parameters in a parsed file, and where they were found.

    They are the table ``[method]`` if the file has one, else the keys outside the command and
    method tables (a file for one method). Keys outside the tables next to ``[method]`` are an
    error, since no method would read them.
    """
    tables = {*COMMANDS, *methods}
    loose = {key: value for key, value in config.items() if key not in tables}
    if method not in config:
        return loose, f"{path} (keys outside the tables)"
    if loose:
        raise ValueError(
            f"{path}: key(s) {', '.join(sorted(loose))} outside any table while the file has "
            f"[{method}]; move them into [{method}]"
        )
    return table(config, path, method), f"{path} [{method}]"


def setting_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A config-file value for the option ``action``, checked and converted like the flag's.

    Booleans for on/off flags, lists of ``nargs`` items for multi-value flags, numbers for
    ``int`` / ``float`` flags (an integer is accepted as a float), strings otherwise; values of
    flags with choices must be among them. The check is :func:`lorein.settings.typed`, the one
    that method configurations use.
    """
    key = f"{where}: {action.dest}"
    if isinstance(action, argparse.BooleanOptionalAction):
        return typed(value, bool, key)
    kind = action.type or str
    item: Any = {int: int, float: float}.get(kind, str)
    if action.choices is not None:
        item = Literal[tuple(action.choices)]
    if action.nargs is None:
        return kind(typed(value, item, key))
    count = action.nargs if isinstance(action.nargs, int) else None
    if not isinstance(value, list) or (count is not None and len(value) != count):
        raise ValueError(
            f"{key} = {_toml_value(value)}: expected a list of {count or 'one or more'} values"
        )
    return [kind(v) for v in typed(value, list[item], key)]


def toml_table(name: str, values: Mapping[str, Any], comments: Mapping[str, str]) -> str:
    """Values as a TOML table ``[name]`` (the format ``--config`` reads).

    Unset (``None``) values are written as comments; ``comments[key]`` goes above ``key``,
    wrapped to 100 characters.
    """
    lines = [f"[{name}]"]
    for key, value in values.items():
        lines += [f"# {line}" for line in textwrap.wrap(comments.get(key, ""), 98)]
        lines.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)
