"""``lorein export-ismrmrd``: write a problem file as ISMRMRD raw data."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorein.cli.common import Command, Subparsers, add_command, config_help


def add_parser(sub: Subparsers) -> Command:
    """Add the ``export-ismrmrd`` command: with or without truth, calibration region."""
    exp = add_command(
        sub,
        "export-ismrmrd",
        run,
        "write a problem file as ISMRMRD raw data (for BART, Gadgetron, 'lorein import')",
        "Write a problem file's acquired lines as an ISMRMRD dataset: one acquisition per line, "
        "the sequence parameters in the XML header (ms, degrees), readable by BART, Gadgetron "
        "or 'lorein import'.",
        config_help("export-ismrmrd"),
    )
    exp.parser.add_argument("problem", type=Path, help="problem file (.h5)")
    exp.parser.add_argument(
        "-o", "--output", type=Path, required=True, help="ISMRMRD file to write (.h5)"
    )
    exp.option(
        "--with-truth",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) also write the problem's truth/ maps as ISMRMRD images (default: off)",
    )
    exp.option(
        "--calibration",
        type=int,
        nargs=2,
        metavar=("CCY", "CCZ"),
        help="(config) flag the lines in this central ky x kz region as calibration lines",
    )
    return exp


def run(args: argparse.Namespace) -> None:
    """Write the problem's acquired lines (and, on request, its truth) as an ISMRMRD file."""
    from lorein.data.ismrmrd_io import export_ismrmrd
    from lorein.data.problem import read_problem, read_truth

    problem = read_problem(args.problem)
    truth = read_truth(args.problem) if args.with_truth else None
    calibration = tuple(args.calibration) if args.calibration else None
    export_ismrmrd(problem, args.output, truth=truth, calibration=calibration)
    print(f"wrote {args.output}: {problem.n_lines} acquisitions")
