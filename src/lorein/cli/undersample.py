"""``lorein undersample``: retrospective undersampling of a fully sampled problem file."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorein.cli.common import Command, Subparsers, add_command, config_help, require
from lorein.settings import AtLeast


def add_parser(sub: Subparsers) -> Command:
    """Add the ``undersample`` command: R, pattern, calibration region, echo lines, seed."""
    cmd = add_command(
        sub,
        "undersample",
        run,
        "keep the lines of a sampling pattern of a fully sampled problem (test on your own scan)",
        "Read a fully sampled problem file (every contrast at every ky-kz location, e.g. an "
        "imported fully sampled scan) and write the problem with only the lines that the "
        "package's variable-density pattern keeps at acceleration R (paper eq. 19), "
        "complementary across contrasts and echoes unless --shared-echo-lines. With one slice "
        "(nz = 1) only ky is undersampled. Provenance attributes and the truth, if any, are "
        "copied.",
        config_help("undersample"),
    )
    cmd.parser.add_argument("problem", type=Path, help="fully sampled problem file (.h5)")
    cmd.parser.add_argument(
        "-o", "--output", type=Path, required=True, help="problem file to write (.h5)"
    )
    cmd.option(
        "--R",
        type=float,
        at_least=AtLeast(1.0),
        help="(config) acceleration factor (all contrasts' k-space samples / kept samples), "
        "e.g. 3; required",
    )
    cmd.option(
        "--pattern",
        choices=("vd-random", "poisson"),
        default="vd-random",
        help="(config) ky-kz sampling: variable-density random or Poisson disc (default: "
        "vd-random)",
    )
    cmd.option(
        "--calib",
        type=int,
        nargs=2,
        default=None,
        metavar=("CCY", "CCZ"),
        help="(config) central region kept in the union of all contrasts (default: 10 %% of ny "
        "and of nz, at least 1)",
    )
    cmd.option(
        "--shared-echo-lines",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) echoes of one excitation share their lines, as a multi-echo acquisition "
        "samples them (default: every contrast its own, complementary lines)",
    )
    cmd.option(
        "--seed",
        type=int,
        default=0,
        at_least=AtLeast(0),
        help="(config) seed of the pattern (default: 0)",
    )
    return cmd


def run(args: argparse.Namespace) -> None:
    """Undersample the problem and write it with the input's provenance and truth."""
    from lorein.data.problem import read_problem, read_provenance, read_truth, write_problem
    from lorein.data.undersample import undersample

    require(args, "R")
    problem = read_problem(args.problem)
    kept = undersample(
        problem,
        args.R,
        pattern=args.pattern,
        calibration=None if args.calib is None else tuple(args.calib),
        shared_echo_lines=args.shared_echo_lines,
        seed=args.seed,
    )
    attrs, has_truth = read_provenance(args.problem)
    attrs.pop("lorein_version", None)
    truth = read_truth(args.problem) if has_truth else None
    attrs |= {
        "undersampled_from": str(args.problem),
        "undersampling_R": args.R,
        "undersampling_pattern": args.pattern,
        "undersampling_seed": args.seed,
        "undersampling_shared_echo_lines": args.shared_echo_lines,
    }
    write_problem(args.output, kept, truth, attrs=attrs)
    print(
        f"wrote {args.output}: {kept.n_lines} of {problem.n_lines} lines, R = "
        f"{kept.acceleration:.2f} (requested {args.R:g}), {args.pattern}"
    )
