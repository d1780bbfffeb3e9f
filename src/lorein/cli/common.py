"""What the commands of ``lorein`` share: a command's parser and its ``--config`` table, the
check of required options, and one-line errors with exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from lorein.config import check_keys, setting_value, table, toml_table
from lorein.settings import AtLeast

Subparsers = argparse._SubParsersAction
"""The ``lorein`` parser's collection of command parsers."""

ERROR_STATUS = 2
"""Exit status of every error: usage, configuration, input files, known run-time failures."""

INTERRUPT_STATUS = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


@dataclass
class Command:
    """A subcommand: its parser and the keys of its table in a ``--config`` file.

    Attributes
    ----------
    name
        Command and table name.
    parser
        The command's parser.
    settings
        Options that the table may set: key (the flag's long name, dashes as underscores) -> the
        option's action, which checks and converts the table's value.
    extra_keys
        Returns further table keys -> what they give; the command reads their values from
        ``args.extra`` (a function, so that the module defining them loads only when needed).
    """

    name: str
    parser: argparse.ArgumentParser
    settings: dict[str, argparse.Action] = field(default_factory=dict)
    extra_keys: Callable[[], Mapping[str, str]] = dict
    ranges: dict[str, AtLeast] = field(default_factory=dict)

    def option(self, *flags: str, at_least: AtLeast | None = None, **kwargs: Any) -> None:
        """Add an option that the command's config table may set too; a numeric one may have a
        range, checked on the table's value and on the flag's (:meth:`check_ranges`)."""
        action = self.parser.add_argument(*flags, **kwargs)
        self.settings[action.dest] = action
        if at_least is not None:
            self.ranges[action.dest] = at_least

    def check_ranges(self, args: argparse.Namespace) -> None:
        """A one-line error naming the flag whose value lies outside its range."""
        for dest, at_least in self.ranges.items():
            value = getattr(args, dest)
            if value is not None:
                at_least.check(value, self.settings[dest].option_strings[-1])

    def table(self, config: Mapping[str, Any], path: Path) -> dict[str, Any]:
        """The command's table of a parsed config file, its keys and values checked."""
        values = table(config, path, self.name)
        extra = self.extra_keys()
        where = f"{path} [{self.name}]"
        check_keys(values, [*self.settings, *extra], where)
        checked = {
            key: value if key in extra else setting_value(self.settings[key], value, where)
            for key, value in values.items()
        }
        for key, at_least in self.ranges.items():
            if key in checked:
                at_least.check(checked[key], f"{where}: {key}")
        return checked

    def toml(self, values: Mapping[str, Any]) -> str:
        """The table as TOML: ``values`` over the defaults, each key under its help text."""
        extra = self.extra_keys()
        current = {key: values.get(key, action.default) for key, action in self.settings.items()}
        current |= {key: values.get(key) for key in extra}
        comments = {
            key: (action.help or "").removeprefix("(config) ")
            for key, action in self.settings.items()
        }
        return toml_table(self.name, current, comments | dict(extra))


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of lorein."""

    def error(self, message: str) -> NoReturn:
        self.exit(ERROR_STATUS, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_command(
    sub: Subparsers,
    name: str,
    run: Callable[[argparse.Namespace], None],
    summary: str,
    description: str,
    config_help: str,
) -> Command:
    """Add the parser of command ``name``, which ``run`` runs, with its ``--config`` option.

    Parameters
    ----------
    sub
        The ``lorein`` parser's command parsers.
    name
        Command name, also the name of its ``--config`` table.
    run
        Runs the command on the parsed arguments.
    summary
        One line for ``lorein --help``.
    description
        Paragraph for ``lorein NAME --help``.
    config_help
        Help of ``--config`` (:func:`config_help`).
    """
    parser = sub.add_parser(name, help=summary, description=description)
    parser.set_defaults(func=run, extra={})
    parser.add_argument("--config", type=Path, metavar="FILE.toml", default=None, help=config_help)
    return Command(name, parser)


def config_help(name: str, more: str = "") -> str:
    """Help of a command's ``--config`` option: its table ``[name]`` sets the (config) options."""
    return (
        f"TOML file whose [{name}] table sets the options marked (config) below (flag name, "
        f"dashes as underscores: see 'lorein config show {name}'); flags given here override it"
        + more
    )


def require(args: argparse.Namespace, *keys: str) -> None:
    """A one-line error naming the options neither the command line nor the config gave."""
    missing = [key for key in keys if getattr(args, key) is None]
    if missing:
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in missing)
        raise ValueError(
            f"missing {flags} (give it on the command line, or {', '.join(missing)} in the "
            f"[{args.command}] table of --config)"
        )


def exit_status(run: Callable[[], None]) -> int:
    """Call ``run``; the exit status: 0, 2 after a one-line error on standard error, or 130
    after Ctrl-C (one line saying how to resume).

    Errors the user can act on (a value, a file, memory, a known run-time failure, with a hint)
    are one line; ``SystemExit`` (``--help``, ``--version``, a usage error already printed) gives
    its own status; any other exception propagates with its traceback. Errors of the HDF5
    library while reading a user's file are such values already
    (:class:`~lorein.data.hdf5_input.ProblemFileError`, naming the file and the field), so a
    ``KeyError``, ``TypeError`` or other ``RuntimeError`` here is a bug and keeps its traceback.
    """
    try:
        run()
    except SystemExit as stop:
        return int(stop.code or 0)
    except KeyboardInterrupt:
        print(
            "lorein: interrupted; a recon keeps its last checkpoint (OUT/checkpoint.pt, written "
            "every two minutes): the same command with --resume continues it",
            file=sys.stderr,
        )
        return INTERRUPT_STATUS
    except (ValueError, OSError, MemoryError) as err:
        print(f"lorein: error: {_one_line(err)}", file=sys.stderr)
        return ERROR_STATUS
    except RuntimeError as err:
        hint = _run_failure_hint(err)
        if hint is None:
            raise
        print(f"lorein: error: {_one_line(err)} ({hint})", file=sys.stderr)
        return ERROR_STATUS
    return 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _run_failure_hint(err: RuntimeError) -> str | None:
    """What to try after a known run-time failure; None for an unexpected error (traceback)."""
    import torch

    from lorein.numerics.optimisation import NonFiniteLossError

    if isinstance(err, torch.OutOfMemoryError):
        return (
            "out of device memory: try --device cpu, fewer virtual coils (coil_compression) "
            "or smaller hash tables (log2_table) in the method's --config table"
        )
    if isinstance(err, NonFiniteLossError):
        return "try a lower lr in the method's --config table"
    return None
