"""LoREIN (and any other method) on the paper-sized presets: wall time, peak memory, accuracy.

Usage::

    python benchmarks/full_size.py [--preset sim1] [--R 27] [--methods lorein summit]
        [--iterations N] [--seed 0] [--device cpu] [--workdir benchmarks/work]
        [--config configs/sim1.toml]

Issue targets (LoREIN): ``sim1`` end to end in at most 30 minutes with at most 8 GB on a 2-core
CPU; on a GPU ``sim1`` in at most 5 minutes and ``sim2`` in at most 15. The case is simulated once
(``WORKDIR/PRESET/seedS/R*/problem.h5``) and run through :func:`lorein.eval.compare.compare`
(each method in its own process: 'process' time includes start-up, data loading and writing the
outputs; peak memory is that process's). ``--iterations N`` runs only N optimisation steps (the
warm-up stages as configured) to measure the step time where a whole run does not fit in the
time at hand; the row then also gives the end-to-end time the configured number of steps would
take (warm-up + steps x seconds per step). Rows go to the section ``full_size`` of
docs/BENCHMARKS.md, one per (preset, R, method, device, steps), newer rows replacing older ones.
A finished case is not run again (its row keeps the date it ran): delete
``WORKDIR/PRESET/seedS/R*/compare-DEVICE[-Nsteps]`` to measure again after a code change.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import ROOT, run_case, simulate_case  # noqa: E402
from report import BENCHMARKS, machine, update_section  # noqa: E402

from lorein.config import read_toml, toml_table  # noqa: E402
from lorein.methods.registry import METHODS, get_method  # noqa: E402
from lorein.run import load_config  # noqa: E402
from lorein.sim.presets import PRESETS, get_preset  # noqa: E402

SECTION = "full_size"
KEY = ("preset", "R", "method", "device", "steps")
COLUMNS = (
    *KEY,
    "machine",
    "warm-up [s]",
    "s / step",
    "recon [s]",
    "process [s]",
    "configured steps: est. [s]",
    "peak [GiB]",
    "M0",
    "T1",
    "T2",
    "T2*",
    "B0 RMSE [Hz]",
    "T1 no CSF",
    "T2* no CSF",
    "date",
)
MAPS = ("M0", "T1", "T2", "T2star")
WITHOUT_CSF = ("T1", "T2star")
"""Maps whose error in the mask without CSF (``without_csf`` of the scores) gets a column."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sim1", choices=sorted(PRESETS))
    parser.add_argument("--R", type=float, default=27.0, help="acceleration factor")
    parser.add_argument("--methods", nargs="+", default=["lorein"], choices=list(METHODS))
    parser.add_argument("--iterations", type=int, default=None, help="steps to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work")
    parser.add_argument(
        "--config", type=Path, default=None, help="default: configs/PRESET.toml if it exists"
    )
    parser.add_argument("--timeout-s", type=float, default=None, help="limit per method run [s]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs alone")
    return parser.parse_args(argv)


def shortened_config(config: Path | None, methods: list[str], steps: int, path: Path) -> Path:
    """A copy of ``config`` whose method tables run ``steps`` optimisation steps."""
    tables = read_toml(config) if config is not None else {}
    for method in methods:
        tables[method] = dict(tables.get(method, {}), iterations=steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(toml_table(name, values, {}) for name, values in tables.items()))
    return path


def _rows(text: str) -> dict[tuple[str, ...], str]:
    """Existing table rows of the section, keyed by (preset, R, method, device, steps).

    Rows written before the 'no CSF' columns existed get '-' there.
    """
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > len(KEY) and cells[0] in PRESETS:
            if len(cells) == len(COLUMNS) - len(WITHOUT_CSF):
                cells[-1:-1] = ["-"] * len(WITHOUT_CSF)
            rows[tuple(cells[: len(KEY)])] = "| " + " | ".join(cells) + " |"
    return rows


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 10 else f"{value:.0f}"


def row(
    key: tuple[str, ...],
    result: dict[str, Any],
    report: dict[str, Any],
    planned: int | None,
    date: str,
) -> str:
    """One table row from a method's ``compare.json`` entry and its ``report.json``."""
    scores = result.get("scores", {})
    warm, per_step = report.get("warm_up_seconds"), report.get("seconds_per_step")
    estimate = None if None in (warm, per_step, planned) else warm + planned * per_step
    status = "" if result["status"] == "ok" else f" ({result['status']})"
    cells = [
        *key,
        machine() + status,
        _seconds(warm),
        _seconds(per_step),
        _seconds(result.get("wall_seconds")),
        "reused" if result.get("reused") else _seconds(result.get("process_seconds")),
        "-" if estimate is None else f"{planned}: {estimate:.0f}",
        f"{result.get('peak_memory_gib', float('nan')):.2f}",
        *(f"{scores[m]['nrmse']:.3f}" if m in scores else "-" for m in MAPS),
        f"{scores['B0']['rmse_hz']:.2f}" if "B0" in scores else "-",
        *(
            f"{scores[m]['without_csf']:.3f}" if "without_csf" in scores.get(m, {}) else "-"
            for m in WITHOUT_CSF
        ),
        date,
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    preset = get_preset(args.preset)
    config = args.config or ROOT / "configs" / f"{preset.name}.toml"
    config = config if config.exists() else None
    case = args.workdir / preset.name / f"seed{args.seed}" / f"R{args.R:g}"
    simulate_case(preset, args.R, args.seed, case / "problem.h5", None, False, device=args.device)
    out = case / f"compare-{args.device}"
    used = config
    if args.iterations is not None:
        out = case / f"compare-{args.device}-{args.iterations}steps"
        used = shortened_config(config, args.methods, args.iterations, out / "config.toml")
    record = run_case(case / "problem.h5", args.methods, out, used, args)

    previous = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    match = re.search(rf"<!-- begin {SECTION} -->(.*?)<!-- end {SECTION} -->", previous, re.S)
    rows = _rows(match.group(1)) if match else {}
    for method in args.methods:
        report_file = out / method / "report.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        planned = getattr(load_config(get_method(method), config), "iterations", None)
        steps = report.get("iterations", args.iterations)
        key = (preset.name, f"{args.R:g}", method, args.device, str(steps))
        date = str(record.get("finished") or datetime.date.today().isoformat())[:10]
        rows[key] = row(key, record["methods"][method], report, planned, date)
    body = "\n".join(
        [
            "## Paper-sized presets (`benchmarks/full_size.py`)",
            "",
            "One method per process (`lorein compare`). 'warm-up': everything before the "
            "optimisation loop (data scaling, coil warm-up, subspace, warm start); 's / step': "
            "mean wall time of a loop step; 'recon': the reconstruction's wall time; 'process': "
            "from process start to the written output folder; 'configured steps: est.': warm-up "
            "+ the configuration's number of steps x s / step, for rows that ran fewer steps. "
            "Peak memory of the process (RSS on CPU, allocator peak on GPU); NRMSE in the truth "
            "mask as `lorein eval` computes it; 'no CSF': the same in the mask without its CSF "
            "voxels ('-': the run predates the column). 'machine': where the row ran (CPU, cores, "
            "memory, GPU; Python and torch). Configuration: `configs/PRESET.toml` of the row's "
            "preset.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
            *sorted(rows.values()),
        ]
    )
    print(body)
    if not args.no_report:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
