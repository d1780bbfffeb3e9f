"""Command-line interface: ``lorein simulate``, ``lorein info``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lorein import __version__


def _cmd_simulate(args: argparse.Namespace) -> None:
    from lorein.data.problem import write_problem
    from lorein.sim.presets import get_preset
    from lorein.sim.simulate import simulate

    preset = get_preset(args.preset)
    sim = simulate(preset, args.R, seed=args.seed, snr=args.snr, pattern=args.pattern)
    attrs = {
        "preset": preset.name,
        "seed": args.seed,
        "snr": preset.snr if args.snr is None else args.snr,
        "noise_std": sim.noise_std,
        "requested_R": args.R,
        "lorein_version": __version__,
    }
    write_problem(args.output, sim.problem, truth=sim.truth, attrs=attrs)
    print(
        f"wrote {args.output}: {preset.name}, R = {sim.problem.acceleration:.2f} "
        f"(requested {args.R:g}), {sim.problem.n_lines} lines, {sim.seconds:.1f} s"
    )


def _cmd_info(args: argparse.Namespace) -> None:
    from lorein.data.problem import problem_summary

    summary = problem_summary(args.problem)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")


def build_parser() -> argparse.ArgumentParser:
    """The ``lorein`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lorein",
        description="Quantitative MRI maps from undersampled multi-contrast k-space (LoREIN).",
    )
    parser.add_argument("--version", action="version", version=f"lorein {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="simulate a problem file from a preset",
        description="Simulate undersampled multi-coil k-space of a brain phantom and write a "
        "problem file (acquired lines only, with the ground truth under truth/).",
    )
    sim.add_argument("--preset", required=True, help="sim1, sim2, sim1-small or sim2-small")
    sim.add_argument("--R", type=float, required=True, help="acceleration factor (paper eq. 19)")
    sim.add_argument("--seed", type=int, default=0, help="seed of anatomy, sampling and noise")
    sim.add_argument(
        "--snr", type=float, default=None, help="signal-to-noise ratio (default: preset)"
    )
    sim.add_argument(
        "--pattern", choices=("vd-random", "poisson"), default="vd-random", help="ky-kz pattern"
    )
    sim.add_argument("-o", "--output", type=Path, required=True, help="problem file to write (.h5)")
    sim.set_defaults(func=_cmd_simulate)

    info = sub.add_parser("info", help="summarise a problem file")
    info.add_argument("problem", type=Path, help="problem file (.h5)")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors are one line on stderr, exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, KeyError) as err:
        message = str(err) or type(err).__name__
        print(f"lorein: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
