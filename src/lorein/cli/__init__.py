"""Command-line interface ``lorein``: simulate, info, import, undersample, export-ismrmrd, recon,
eval, compare, config; one module per command, each adding its parser and running it.

Every command takes ``--config FILE.toml``; the command's table in that file sets its options, and
flags on the command line override the file (:mod:`lorein.config`). Every error is one line on
stderr and exit status 2 (:mod:`lorein.cli.common`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lorein import __version__
from lorein.cli import compare, config, export, import_, info, recon, simulate, undersample
from lorein.cli import eval as evaluate
from lorein.cli.common import Command, Parser, exit_status
from lorein.config import read_toml

COMMAND_MODULES = (simulate, info, import_, undersample, export, recon, evaluate, compare)
"""Modules of the commands that read a ``--config`` table, in the order of ``lorein --help``."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    """The ``lorein`` argument parser and its commands that read a config table, by name."""
    parser = Parser(
        prog="lorein",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Quantitative MRI maps (M0, T1, T2, T2*, B0) from undersampled multi-coil,\n"
        "multi-contrast 3D k-space: LoREIN and the methods it is compared against, on one\n"
        "problem-file format.",
        epilog="typical use:\n"
        "  lorein simulate --preset sim1-small --R 27 -o sim.h5    # or: lorein import raw.h5 "
        "-o sim.h5\n"
        "  lorein recon sim.h5 -o out --config configs/sim1-small.toml\n"
        "  lorein eval out --truth sim.h5\n\n"
        "Every command takes --config FILE.toml: one file with a table per command and per\n"
        "method ('lorein config show NAME' prints the defaults). Sequence times are shown and\n"
        "given in ms, flip angles in degrees; files store SI units (s, rad, Hz). Errors are one\n"
        "line on stderr with exit status 2; 'lorein COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"lorein {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {command.name: command for command in (m.add_parser(sub) for m in COMMAND_MODULES)}
    config.add_parser(sub, commands)
    return parser, commands


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; with ``--config``, the command's table supplies option defaults."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    command = commands.get(args.command)
    if args.config is not None and command is not None:
        values = command.table(read_toml(args.config), args.config)
        extra = {key: values.pop(key) for key in list(values) if key not in command.settings}
        command.parser.set_defaults(extra=extra, **values)
        args = parser.parse_args(argv)
    if command is not None:
        command.check_ranges(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors are one line on stderr, exit status 2."""

    def parse_and_run() -> None:
        args = parse_args(argv)
        args.func(args)

    return exit_status(parse_and_run)
