"""``lorein info``: summarise a problem file."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorein.cli.common import Command, Subparsers, add_command

DISPLAY_UNITS = {
    "flip_angle": (180 / 3.141592653589793, "deg"),
    "echo_time": (1e3, "ms"),
    "repetition_time": (1e3, "ms"),
    "prep_time": (1e3, "ms"),
}
"""Contrast columns shown in CLI units: (factor from SI, unit)."""


def add_parser(sub: Subparsers) -> Command:
    """Add the ``info`` command, which has no settings."""
    info = add_command(
        sub,
        "info",
        run,
        "summarise a problem file: matrix, coils, contrasts, R, sequence parameters",
        "Print a problem file's signal model, matrix, voxel size, coils, contrasts, acquired "
        "lines, acceleration R and the range of each sequence parameter (times in ms, flip "
        "angles in degrees).",
        "TOML file shared with the other commands (info has no settings: its [info] table, if "
        "any, must be empty)",
    )
    info.parser.add_argument("problem", type=Path, help="problem file (.h5)")
    return info


def run(args: argparse.Namespace) -> None:
    """Print the problem file's summary, one aligned ``key  value`` line per item."""
    from lorein.data.problem import problem_summary

    summary = problem_summary(args.problem)
    ranges = summary.pop("contrast_ranges", {})
    for name, (lo, hi) in ranges.items():
        factor, unit = DISPLAY_UNITS.get(name, (1.0, ""))
        summary[f"{name} range"] = f"{lo * factor:.4g} - {hi * factor:.4g} {unit}".rstrip()
    summary["empty_contrasts"] = _index_ranges(summary["empty_contrasts"], summary["n_contrasts"])
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {_format_value(value)}")


def _format_value(value: object) -> str:
    """Readable value for ``lorein info``: 4 significant digits, lists inline."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items())
    return str(value)


def _index_ranges(indices: list[int], total: int, shown: int = 8) -> str:
    """``"428 of 1280: 4-7, 16-19, ..."``: a count and the first runs of sorted indices."""
    if not indices:
        return "none"
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:shown])
    more = ", ..." if len(runs) > shown else ""
    return f"{len(indices)} of {total}: {text}{more}"
