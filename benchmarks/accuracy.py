"""Pure-tissue accuracy over several problem draws, beside the fully sampled floors of each draw.

Usage::

    python benchmarks/accuracy.py [--preset sim1-small] [--R 27] [--draws 1 2 3]
        [--methods lorein summit lrt fit] [--config configs/sim1-small.toml]
        [--set lorein.warm_start=0 ...] [--label NAME] [--workdir benchmarks/work/accuracy]
        [--report SECTION]

For each draw ``d`` (phantom anatomy, sampling and noise all seeded by ``d``) the script simulates
the preset at R and, on the same phantom, fully sampled with and without noise; the floors are the
``fit`` baseline (CG-SENSE images with ESPIRiT coils from the data, then the voxel fit) on the two
fully sampled problems, with all coils: what a voxel-wise estimate reaches when nothing is missing.
Every method runs with method seed ``d`` on the undersampled problem; errors are the pure-tissue
NRMSE of :func:`lorein.eval.evaluate.evaluate_maps` (B0: RMSE in Hz). Nothing a method sees
depends on the truth.

Each run is a JSON record ``RESULTS/accuracy/PRESET/R*/LABEL/METHOD-drawD.json`` (committed, a few
hundred bytes; a record that exists is reused unless ``--rerun``): the errors in every region, the
wall time and the configuration overrides. The table (mean +- sd over the draws, per method and
map, floors first) is printed, and with ``--report SECTION`` written to docs/BENCHMARKS.md.
Labels keep probes apart: ``default`` is the configuration as committed; a probe names its own.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import RESULTS, ROOT  # noqa: E402
from report import README, machine, update_section  # noqa: E402

from lorein.data.problem import (  # noqa: E402
    Truth,  # noqa: E402
    read_problem,
    read_truth,
    write_problem,
)
from lorein.eval.evaluate import evaluate_maps, pure_voxels  # noqa: E402
from lorein.eval.metrics import constant_map, map_error  # noqa: E402
from lorein.methods.baselines.fit import FitConfig  # noqa: E402
from lorein.methods.registry import METHODS, get_method, reconstruct  # noqa: E402
from lorein.run import load_config  # noqa: E402
from lorein.sim.presets import get_preset  # noqa: E402
from lorein.sim.simulate import simulate  # noqa: E402

MAPS = ("M0", "T1", "T2", "T2star", "B0")
FLOORS = {"floor-noiseless": math.inf, "floor-noisy": None}
"""Floor rows -> the SNR of their fully sampled problem (None: the preset's)."""
CONSTANT = "constant (oracle)"
"""Reference row: per map the best constant over the pure-tissue voxels (from the truth), the
error of a method that recovers no contrast between tissues at all."""


def constant_scores(truth: Truth) -> dict[str, dict[str, float]]:
    """The :data:`CONSTANT` row's scores: each map's error in the pure-tissue voxels of the
    constant map at the truth's mean there (:func:`lorein.eval.metrics.constant_map`)."""
    pure = pure_voxels(truth)
    scores = {}
    for name in MAPS:
        ref = getattr(truth, name)
        if ref is not None and pure is not None:
            scores[name] = {"pure": map_error(name, constant_map(name, ref, pure), ref, pure)}
    return scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sim1-small")
    parser.add_argument("--R", type=float, default=27.0)
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="*", default=[], choices=METHODS)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML of settings (default: none, the settings each method chooses for the problem)",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD.KEY=VALUE")
    parser.add_argument("--label", default="default")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work" / "accuracy")
    parser.add_argument("--rerun", action="store_true", help="run again even if recorded")
    parser.add_argument("--no-floors", action="store_true")
    parser.add_argument(
        "--report", action="store_true", help="write the table to docs/BENCHMARKS.md"
    )
    parser.add_argument("--readme", action="store_true", help="and to README.md's results")
    parser.add_argument("--keep", action="store_true", help="save the maps in the workdir")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def problem_file(workdir: Path, preset: str, draw: int, R: float, snr: float | None) -> Path:
    """The simulated case (with truth), simulated once and kept in ``workdir``."""
    tag = f"R{R:g}" + ("" if snr is None else f"-snr{snr:g}")
    path = workdir / "cases" / preset / f"draw{draw}" / tag / "problem.h5"
    if not path.exists():
        sim = simulate(get_preset(preset), R, seed=draw, snr=snr, progress=False)
        write_problem(path, sim.problem, sim.truth, attrs=dict(sim.attrs(), seed=draw))
    return path


def overrides(settings: list[str], method: str) -> dict[str, Any]:
    """``METHOD.KEY=VALUE`` settings of ``method`` as typed-by-TOML values."""
    values: dict[str, Any] = {}
    for item in settings:
        key, _, text = item.partition("=")
        name, _, field = key.partition(".")
        if name == method:
            values[field] = tomllib.loads(f"v = {text}")["v"]
    return values


def record_path(args: argparse.Namespace, row: str, draw: int) -> Path:
    label = "floors" if row.startswith("floor") else args.label
    return RESULTS / "accuracy" / args.preset / f"R{args.R:g}" / label / f"{row}-draw{draw}.json"


def run_row(args: argparse.Namespace, row: str, draw: int) -> dict[str, Any]:
    """Run (or reuse) one method or floor on one draw; returns its record."""
    path = record_path(args, row, draw)
    if path.exists() and not args.rerun:
        return json.loads(path.read_text())
    if row == CONSTANT:
        truth = read_truth(problem_file(args.workdir, args.preset, draw, args.R, None))
        return {
            "row": row,
            "draw": draw,
            "label": "floors",
            "seconds": 0.0,
            "scores": constant_scores(truth),
        }
    if row in FLOORS:
        case = problem_file(args.workdir, args.preset, draw, 1.0, FLOORS[row])
        method, config, settings = "fit", FitConfig(), {}
    else:
        case = problem_file(args.workdir, args.preset, draw, args.R, None)
        method, settings = row, overrides(args.set, row)
    problem, truth = read_problem(case), read_truth(case)
    if row not in FLOORS:
        config = load_config(get_method(method), args.config, settings, problem)
    start = time.perf_counter()
    maps = reconstruct(method, problem, config, seed=draw, progress=False)
    seconds = time.perf_counter() - start
    record = {
        "row": row,
        "draw": draw,
        "label": args.label,
        "overrides": settings,
        "seconds": round(seconds, 1),
        "seconds_per_step": maps.extras.get("seconds_per_step"),
        "relative_residual": maps.extras.get("relative_residual"),
        "scores": evaluate_maps(maps.values, truth),
    }
    if args.keep:
        kept = args.workdir / "maps" / path.relative_to(RESULTS / "accuracy")
        kept.parent.mkdir(parents=True, exist_ok=True)
        torch.save(maps.values, kept.with_suffix(".pt"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def score(record: dict[str, Any], name: str) -> float | None:
    entry = record["scores"].get(name)
    return None if entry is None else entry.get("pure")


def table(records: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per row, mean +- sd over the draws of each map's pure-tissue error."""
    estimated = [r for row, rs in records.items() if row != CONSTANT for r in rs]
    present = [m for m in MAPS if any(score(r, m) is not None for r in estimated)]
    head = (
        "| row | draws | "
        + " | ".join("B0 [Hz]" if m == "B0" else m for m in present)
        + " | time [s] |"
    )
    lines = [head, "|" + "---|" * (len(present) + 3)]
    for row, recs in records.items():
        cells = []
        for m in present:
            values = [v for r in recs if (v := score(r, m)) is not None]
            if not values:
                cells.append("")
                continue
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            digits = 2 if m == "B0" else 3
            cells.append(f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}")
        seconds = statistics.mean(r["seconds"] for r in recs)
        lines.append(f"| {row} | {len(recs)} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)


def paired(records: dict[str, list[dict[str, Any]]], first: str, second: str) -> str | None:
    """One Markdown table row comparing two rows draw by draw: per map the mean relative
    difference of ``first`` against ``second`` and on how many draws ``first`` is lower (None
    when either row is missing)."""
    if first not in records or second not in records:
        return None
    cells = []
    for m in MAPS:
        pairs = [
            (a, b)
            for ra, rb in zip(records[first], records[second], strict=True)
            if (a := score(ra, m)) is not None and (b := score(rb, m)) is not None
        ]
        if pairs:
            change = statistics.mean(a / b - 1 for a, b in pairs)
            lower = sum(a < b for a, b in pairs)
            cells.append(f"{change:+.0%} ({lower}/{len(pairs)} lower)")
    return f"| {first} against {second} | " + " | ".join(cells) + " |"


def comparisons(records: dict[str, list[dict[str, Any]]]) -> str:
    """LoREIN against the other methods that have rows, draw by draw (:func:`paired`)."""
    present = [m for m in MAPS if any(score(r, m) is not None for r in records.get("lorein", []))]
    others = [name for name in records if name not in (CONSTANT, *FLOORS, "lorein")]
    rows = [row for other in others if (row := paired(records, "lorein", other)) is not None]
    if not rows:
        return ""
    head = "| pair | " + " | ".join("B0" if m == "B0" else m for m in present) + " |"
    return "\n".join([head, "|" + "---|" * (len(present) + 1), *rows])


def recorded(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every committed record of the preset and R that has all of ``args.draws``, by row name:
    the reference rows first, then each label's methods (``METHOD`` for the label ``default``,
    ``METHOD (LABEL)`` otherwise)."""
    base = RESULTS / "accuracy" / args.preset / f"R{args.R:g}"
    found: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for path in sorted(base.glob("*/*-draw*.json")):
        record = json.loads(path.read_text())
        key = (path.parent.name, record["row"])
        found.setdefault(key, {})[record["draw"]] = record
    rows: dict[str, list[dict[str, Any]]] = {}
    if not args.no_floors:
        rows[CONSTANT] = [run_row(args, CONSTANT, d) for d in args.draws]
    order = sorted(found, key=lambda k: (k[0] != "floors", k[0] != "default", k))
    for label, row in order:
        if all(d in found[label, row] for d in args.draws):
            name = row if label in ("floors", "default") else f"{row} ({label})"
            rows[name] = [found[label, row][d] for d in args.draws]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = ([] if args.no_floors else list(FLOORS)) + args.methods
    for row in rows:
        for draw in args.draws:
            rec = run_row(args, row, draw)
            pure = {m: score(rec, m) for m in MAPS}
            print(json.dumps({"row": row, "label": args.label, "draw": draw, "pure": pure}))
    records = recorded(args)
    text = table(records)
    pairs = comparisons(records)
    if pairs:
        text += "\n\nLoREIN's error relative to each other row, draw by draw (mean of the per-draw "
        text += "ratios minus one; how many draws LoREIN is lower):\n\n" + pairs
    print(text)
    header = (
        f"{args.preset}, R = {args.R:g}, draws {', '.join(map(str, args.draws))} (phantom, "
        "sampling and noise drawn with the draw's seed; each method seeded with it too): "
        "pure-tissue NRMSE (voxels at least 90 % one tissue; B0: RMSE in Hz), mean ± sd over "
        "the draws, and mean wall time. Floors: the `fit` baseline (CG-SENSE, ESPIRiT coils from "
        "the data, voxel fit) on the fully sampled problem of the same draw, noiseless and at the "
        "preset's SNR. Methods without a label ran with the settings they choose for the problem "
        "(`lorein recon` without `--config`); a label names other settings (`preset`: "
        f"configs/{args.preset}.toml). Drawn by `python benchmarks/accuracy.py --preset "
        f"{args.preset} --R {args.R:g} --draws {' '.join(map(str, args.draws))} --methods` "
        "from the records in benchmarks/results/accuracy/. Times are each run's wall time as "
        "recorded, on a 2-core CPU often shared with other jobs (up to 3x slower): compare them "
        f"only roughly. Error against wall time: docs/figures/accuracy-time-{args.preset}-"
        f"R{args.R:g}.png (`python benchmarks/accuracy_time.py --preset {args.preset} --R "
        f"{args.R:g} --draws {' '.join(map(str, args.draws))}`). {machine()}."
    )
    section = f"accuracy-{args.preset}-R{args.R:g}"
    if args.report:
        update_section(section, header + "\n\n" + text + "\n")
    if args.readme:
        update_section(section, header + "\n\n" + text + "\n", README)
    return 0


if __name__ == "__main__":
    sys.exit(main())
