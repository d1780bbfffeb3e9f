"""``lorein config show``: the settings of commands and methods as TOML tables."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from lorein.cli.common import Command, Subparsers
from lorein.config import read_toml, toml_table


def add_parser(sub: Subparsers, commands: Mapping[str, Command]) -> None:
    """Add the ``config`` command, which shows the tables of ``commands`` and of the methods."""
    cfg = sub.add_parser(
        "config",
        help="print the settings of commands or methods as TOML, to edit and pass as --config",
        description="'lorein config show NAME ...' prints, as TOML tables, the default settings "
        "of commands (simulate, import, recon, ...) and the hyper-parameters of methods (lorein, "
        "...); with --config FILE, the values that FILE gives. Save, edit and pass the file to "
        "any command's --config; one file may hold all tables.",
    )
    cfg.add_argument("action", choices=("show",), help="show: print the tables")
    cfg.add_argument(
        "names", nargs="+", metavar="NAME", help="command or method, e.g. recon lorein"
    )
    cfg.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        default=None,
        help="show the values this file gives (checked as the commands check them)",
    )
    cfg.set_defaults(func=partial(run, commands=commands))


def run(args: argparse.Namespace, commands: Mapping[str, Command]) -> None:
    """Print the table of each name of ``args.names``: a command's or a method's."""
    import dataclasses

    from lorein.methods.registry import METHODS
    from lorein.run import load_config

    config = {} if args.config is None else read_toml(args.config)
    parts = []
    for name in args.names:
        if name in commands:
            command = commands[name]
            values = {} if args.config is None else command.table(config, args.config)
            parts.append(command.toml(values))
        elif name in METHODS:
            method = METHODS[name]
            values = dataclasses.asdict(load_config(method, args.config))
            parts.append(f"# {method.name}: {method.description}\n{toml_table(name, values, {})}")
        else:
            raise ValueError(
                f"unknown name {name!r}; commands: {', '.join(commands)}; "
                f"methods: {', '.join(METHODS)}"
            )
    print("\n".join(parts), end="")
