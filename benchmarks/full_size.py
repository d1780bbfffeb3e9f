"""LoREIN (and any other method) on the paper-sized presets: wall time, peak memory, accuracy.

Usage::

    python benchmarks/full_size.py [--preset sim1] [--R 27] [--methods lorein summit]
        [--seed 0] [--device cpu] [--workdir benchmarks/work] [--config configs/sim1.toml]

Issue targets (LoREIN): ``sim1`` end to end in at most 30 minutes with at most 8 GB on a 2-core
CPU; on a GPU ``sim1`` in at most 5 minutes and ``sim2`` in at most 15. The case is simulated once
(``WORKDIR/PRESET/seedS/R*/problem.h5``) and run through :func:`lorein.eval.compare.compare`
(each method in its own process: wall time includes start-up, data loading and writing the
outputs; peak memory is that process's). Results are appended to the section ``full_size`` of
docs/BENCHMARKS.md, one row per (preset, R, method, device), newer rows replacing older ones.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import ROOT, run_case, simulate_case  # noqa: E402
from report import BENCHMARKS, machine, update_section  # noqa: E402

from lorein.recon.run import METHODS  # noqa: E402
from lorein.sim.presets import PRESETS, get_preset  # noqa: E402

SECTION = "full_size"
COLUMNS = ("preset", "R", "method", "device", "machine", "process [s]", "recon [s]", "peak [GiB]")
MAPS = ("M0", "T1", "T2", "T2star")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sim1", choices=sorted(PRESETS))
    parser.add_argument("--R", type=float, default=27.0, help="acceleration factor")
    parser.add_argument("--methods", nargs="+", default=["lorein"], choices=list(METHODS))
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


def _rows(text: str) -> dict[tuple[str, ...], str]:
    """Existing table rows of the section, keyed by (preset, R, method, device)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 4 and cells[0] in PRESETS:
            rows[tuple(cells[:4])] = line
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    preset = get_preset(args.preset)
    config = args.config or ROOT / "configs" / f"{preset.name}.toml"
    config = config if config.exists() else None
    path = args.workdir / preset.name / f"seed{args.seed}" / f"R{args.R:g}" / "problem.h5"
    simulate_case(preset, args.R, args.seed, path, snr=None, true_coils=False)
    record = run_case(path, args.methods, path.parent / f"compare-{args.device}", config, args)

    where = machine() if args.device == "cpu" else f"{args.device}: {machine()}"
    previous = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    match = re.search(rf"<!-- begin {SECTION} -->(.*?)<!-- end {SECTION} -->", previous, re.S)
    rows = _rows(match.group(1)) if match else {}
    for method in args.methods:
        result = record["methods"][method]
        key = (preset.name, f"{args.R:g}", method, args.device)
        scores = result.get("scores", {})
        nrmse = [f"{scores[m]['nrmse']:.3f}" if m in scores else "-" for m in MAPS]
        b0 = f"{scores['B0']['rmse_hz']:.2f}" if "B0" in scores else "-"
        status = result["status"] if result["status"] != "ok" else ""
        cells = [
            *key,
            where.split(";")[0] + (f" ({status})" if status else ""),
            "reused" if result.get("reused") else f"{result.get('process_seconds', 0):.0f}",
            f"{result.get('wall_seconds', float('nan')):.0f}",
            f"{result.get('peak_memory_gib', float('nan')):.2f}",
            *nrmse,
            b0,
            datetime.date.today().isoformat(),
        ]
        rows[key] = "| " + " | ".join(cells) + " |"
    header = [*COLUMNS, "M0", "T1", "T2", "T2*", "B0 RMSE [Hz]", "date"]
    config_name = config.relative_to(ROOT) if config and config.is_relative_to(ROOT) else config
    body = "\n".join(
        [
            "## Paper-sized presets (`benchmarks/full_size.py`)",
            "",
            "One method per process (`lorein compare`): 'process' is the wall time from process "
            "start to the written output folder, 'recon' the reconstruction's own wall time "
            "(warm-ups included), peak memory that of the process (RSS on CPU, allocator peak "
            "on GPU); NRMSE in the truth mask as `lorein eval` computes it. Configuration of the "
            f"latest rows: `{config_name or 'defaults'}`. Software: "
            f"{machine().split('; ')[-1]}.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *sorted(rows.values()),
        ]
    )
    print(body)
    print(json.dumps({m: record["methods"][m].get("scores", {}) for m in args.methods}))
    if not args.no_report:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
