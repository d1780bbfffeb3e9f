"""Run-to-run spread of the methods: one problem, several method seeds, NRMSE mean and spread;
or (``--vary problem``) the spread over problems: several sampling draws, one run each.

Usage::

    python benchmarks/seed_spread.py [--preset sim1-small] [--R 27] [--methods lorein summit]
        [--seeds 0 1 2] [--problem-seed 0] [--vary method|problem] [--device cpu]
        [--workdir benchmarks/work]

The INR methods start from random weights and hash tables, so one run of each is one draw: this
script answers whether a difference between two methods in the paper table is larger than what a
different initialisation alone does. The problem (phantom, sampling, noise) is the paper table's
case ``WORKDIR/PRESET/seedP/R*/problem.h5`` (simulated if missing) and stays fixed; only the
methods' seed changes. Method seed ``P`` is the paper table's own run (``.../compare/``, reused or
completed), every other seed ``S`` runs in ``.../compare-seedS/`` with the same configuration
(``configs/PRESET.toml``); finished runs are reused. Each run is merged into a committed record
(:mod:`records`): the paper table's own runs into ``benchmarks/results/paper_table/``, the other
method seeds into ``benchmarks/results/seed_spread/PRESET/seedP/R*-methodS.json``, and the section
is drawn from those records (``--report-only`` redraws it without running). Writes the section
``seed_spread-PRESET-RR`` of docs/BENCHMARKS.md: per method and map the mean, standard deviation
and range over the seeds, and per pair of methods how many seeds the first has the lower error.

With ``--vary problem`` each seed ``S`` is the paper table's case of seed ``S`` (phantom, sampling
and noise drawn with ``S``; ``WORKDIR/PRESET/seedS/R*/``, simulated if missing) run with method
seed ``S`` in its ``compare/``, exactly as ``paper_table.py --seed S`` would: seed 0 reuses the
paper table's runs. This answers whether a cell of the paper table is typical of the preset at
that R or one lucky or unlucky draw (sim2-small at R >= 480 acquires each ky-kz location at most
once, and which ones depends on the draw). Writes the section ``draw_spread-PRESET-RR``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import MAP_NAMES, ROOT, committed_case, table_maps  # noqa: E402
from records import RESULTS, case_path  # noqa: E402
from report import machine, update_section  # noqa: E402

from lorein.methods.registry import METHODS  # noqa: E402
from lorein.sim.presets import get_preset  # noqa: E402

REGIONS = {"interior": " interior", "without_csf": " no CSF"}
"""Score keys of the other regions the section shows (when recorded) -> column suffix."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sim1-small", help="a preset of lorein.sim.presets")
    parser.add_argument("--R", type=float, default=27.0, help="acceleration factor")
    parser.add_argument("--methods", nargs="+", default=["lorein", "summit"], choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="method seeds")
    parser.add_argument("--problem-seed", type=int, default=0, help="seed of the problem")
    parser.add_argument(
        "--vary",
        choices=("method", "problem"),
        default="method",
        help="what --seeds are: method seeds on one problem, or problem (and method) seeds",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="committed case records (benchmarks/records.py): paper_table/ and seed_spread/",
    )
    parser.add_argument("--configs", type=Path, default=ROOT / "configs", help="PRESET.toml here")
    parser.add_argument("--timeout-s", type=float, default=None, help="limit per method run [s]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="print only; leave docs alone (the case records are still written)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: draw the section from the committed records ('-' where none)",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="run nothing: score the finished runs again (e.g. after a metric was added) and "
        "merge them into the records (paper_table.py --rescore)",
    )
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 2:
        parser.error("--seeds: give at least two different seeds")
    return args


def nrmse_by_seed(
    records: dict[int, dict[str, Any]], method: str, key: str, metric: str = "nrmse"
) -> dict[int, float | None]:
    """Seed -> NRMSE of map ``key`` for ``method``: None where the run failed; seeds where it did
    not run, or whose finished run has no such map or metric, are left out.

    ``metric = "interior"`` or ``"without_csf"``: the error in the tissue interiors or in the
    mask without its CSF voxels instead of the mask's.
    """
    values: dict[int, float | None] = {}
    for seed, record in records.items():
        result = record["methods"].get(method)
        if result is None:
            continue
        if result["status"] != "ok":
            values[seed] = None
        elif metric in result["scores"].get(key, {}):
            values[seed] = result["scores"][key][metric]
    return values


def spread_cell(values: dict[int, float | None]) -> str:
    """``mean +- sd (min - max)`` of the finished runs and how many failed; ``-`` if no map."""
    if not values:
        return "-"
    done = [v for v in values.values() if v is not None]
    if not done:
        return "failed"
    cell = f"{statistics.fmean(done):.3f}"
    if len(done) > 1:
        cell += f" +- {statistics.stdev(done):.3f} ({min(done):.3f} - {max(done):.3f})"
    failed = len(values) - len(done)
    return cell + (f", {failed} failed" if failed else "")


def wins(a: dict[int, float | None], b: dict[int, float | None]) -> str:
    """``k / n``: seeds where ``a`` has a lower NRMSE than ``b`` among those where both ran."""
    both = [s for s in a if a[s] is not None and b.get(s) is not None]
    return f"{sum(a[s] < b[s] for s in both)} / {len(both)}"


def report(args: argparse.Namespace, records: dict[int, dict[str, Any]]) -> str:
    """The docs/BENCHMARKS.md section of one case."""
    preset = get_preset(args.preset)
    maps = table_maps(preset)
    columns = [(m, "nrmse") for m in maps]
    for metric in REGIONS:
        if any(
            metric in score
            for record in records.values()
            for result in record["methods"].values()
            for score in result.get("scores", {}).values()
        ):
            columns += [(m, metric) for m in maps]
    header = ["method", *(MAP_NAMES.get(m, m) + REGIONS.get(metric, "") for m, metric in columns)]
    seeds = ", ".join(map(str, args.seeds))
    if args.vary == "problem":
        title = "Spread over sampling draws"
        which = (
            f"Problem seeds {seeds} (phantom, sampling and noise; seed 0 is the paper table's "
            "case), each run once with the same seed as the paper table would"
        )
        over = "problems"
    else:
        title = "Run-to-run spread"
        which = f"Problem seed {args.problem_seed} (the paper table's case); method seeds {seeds}"
        over = "method seeds"
    lines = [
        f"## {title}: {args.preset}, R = {args.R:g} (`benchmarks/seed_spread.py`)",
        "",
        f"Machine: {machine()}; device {args.device}; {datetime.date.today().isoformat()}. "
        f"{which}. NRMSE (capped, truth mask; 'interior': in the tissue interiors, voxels whose "
        "26 neighbours share their label; 'no CSF': in the mask without its CSF voxels): mean "
        f"+- standard deviation (min - max) over the {over}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    by_method = {
        method: {column: nrmse_by_seed(records, method, *column) for column in columns}
        for method in args.methods
    }
    for method, values in by_method.items():
        lines.append(f"| {method} | " + " | ".join(spread_cell(values[c]) for c in columns) + " |")
    recorded = {m: sum(m in r["methods"] for r in records.values()) for m in args.methods}
    if any(n < len(args.seeds) for n in recorded.values()):
        counts = ", ".join(f"{m} {n} of {len(args.seeds)}" for m, n in recorded.items())
        lines += ["", f"Not every seed has a recorded run; runs per method: {counts}."]
    if len(args.methods) > 1:
        lines += ["", "Seeds on which the first method has the lower NRMSE:", ""]
        lines += ["| pair | " + " | ".join(header[1:]) + " |", "|" + "---|" * len(header)]
        for a, b in combinations(args.methods, 2):
            cells = [wins(by_method[a][c], by_method[b][c]) for c in columns]
            lines.append(f"| {a} < {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    preset = get_preset(args.preset)
    config = args.configs / f"{args.preset}.toml"
    config_file = config if config.exists() else None
    records = {}
    for seed in args.seeds:
        problem_seed = seed if args.vary == "problem" else args.problem_seed
        base = args.workdir / args.preset / f"seed{problem_seed}" / f"R{args.R:g}"
        own = seed == problem_seed  # the paper table's own run of that problem
        case = f"R{args.R:g}" if own else f"R{args.R:g}-method{seed}"
        records[seed] = committed_case(
            case_path(
                args.results / ("paper_table" if own else "seed_spread"),
                args.preset,
                problem_seed,
                case,
            ),
            preset,
            args.R,
            problem_seed,
            base / "problem.h5",
            base / ("compare" if own else f"compare-seed{seed}"),
            args.methods,
            config_file,
            argparse.Namespace(**{**vars(args), "seed": seed}),
        )
    body = report(args, records)
    print(body)
    if not args.no_report:
        section = "draw_spread" if args.vary == "problem" else "seed_spread"
        update_section(f"{section}-{args.preset}-R{args.R:g}", body)


if __name__ == "__main__":
    main()
