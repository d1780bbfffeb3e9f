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

TABLE_HEADINGS = {
    "echo_time": "TE ms",
    "repetition_time": "TR ms",
    "flip_angle": "flip deg",
    "prep_time": "prep ms",
    "segment": "segment",
}
"""Contrast-table columns of ``lorein info``, in display order, with their headings."""

ROWS_SHOWN = 40
"""Contrast-table rows printed without ``--all-contrasts``."""


def add_parser(sub: Subparsers) -> Command:
    """Add the ``info`` command, which has no settings."""
    info = add_command(
        sub,
        "info",
        run,
        "summarise a problem file: matrix, coils, contrasts, R, sequence parameters",
        "Print a problem file's signal model, matrix, voxel size, coils, contrasts, acquired "
        "lines, acceleration R and the range of each sequence parameter, then the contrast "
        "table: one row per contrast with the raw-data counters it came from (files written "
        "by lorein import), TE, TR, flip angle, T2-preparation time, readout number and "
        "acquired lines (times in ms, flip angles in degrees).",
        "TOML file shared with the other commands (info has no settings: its [info] table, if "
        "any, must be empty)",
    )
    info.parser.add_argument("problem", type=Path, help="problem file (.h5)")
    info.parser.add_argument(
        "--all-contrasts",
        action="store_true",
        help=f"print every row of the contrast table (default: the first {ROWS_SHOWN})",
    )
    return info


def run(args: argparse.Namespace) -> None:
    """Print the problem file's summary, one aligned ``key  value`` line per item."""
    from lorein.data.ismrmrd_io import COUNTER_ATTR_PREFIX, ROW_COUNTERS
    from lorein.data.problem import problem_summary

    summary = problem_summary(args.problem)
    attrs = summary["attrs"]
    counters = {
        name: attrs.pop(f"{COUNTER_ATTR_PREFIX}{name}")
        for name in ROW_COUNTERS
        if f"{COUNTER_ATTR_PREFIX}{name}" in attrs
    }
    ranges = summary.pop("contrast_ranges", {})
    for name, (lo, hi) in ranges.items():
        factor, unit = DISPLAY_UNITS.get(name, (1.0, ""))
        summary[f"{name} range"] = f"{lo * factor:.4g} - {hi * factor:.4g} {unit}".rstrip()
    summary["empty_contrasts"] = _index_ranges(summary["empty_contrasts"], summary["n_contrasts"])
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {_format_value(value)}")
    shown = None if args.all_contrasts else ROWS_SHOWN
    for line in contrast_table(args.problem, counters, shown):
        print(line)


def contrast_table(
    path: Path, counters: dict[str, list[int]], shown: int | None = None
) -> list[str]:
    """Lines of the contrast table: one row per contrast (``row``), aligned columns.

    Parameters
    ----------
    path
        A validated problem file.
    counters
        Raw-data counter name -> its value in each contrast row (the file's ``counter_<name>``
        attributes), shown before the sequence parameters.
    shown
        Rows printed (None: all); a last line says how many were left out.
    """
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        columns = {n: f[f"contrasts/{n}"][()] for n in TABLE_HEADINGS if n in f["contrasts"]}
        rows = f["kspace/contrast"][()]
    n_contrasts = len(next(iter(columns.values())))
    lines = np.bincount(rows, minlength=n_contrasts)
    headings = ["row", *counters, *(TABLE_HEADINGS[n] for n in columns), "lines"]
    cells = []
    for t in range(n_contrasts if shown is None else min(shown, n_contrasts)):
        row = [str(t), *(str(v[t]) for v in counters.values())]
        for name, column in columns.items():
            factor, _ = DISPLAY_UNITS.get(name, (1.0, ""))
            value = column[t] * factor
            row.append(str(int(value)) if name == "segment" else f"{value:.4g}")
        cells.append([*row, str(lines[t])])
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headings)]
    out = [
        "contrast table:",
        "  " + "  ".join(h.rjust(w) for h, w in zip(headings, widths, strict=True)),
    ]
    out += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    if len(cells) < n_contrasts:
        out.append(f"  ... {n_contrasts - len(cells)} more rows (--all-contrasts prints them)")
    return out


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
