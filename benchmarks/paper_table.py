"""The paper's comparison protocol (section III.F, Figs. 4-5) on the CPU-sized presets.

Usage::

    python benchmarks/paper_table.py [--presets sim1-small sim2-small] [--R 27 48]
        [--methods lorein fit] [--seed 0] [--device cpu] [--workdir benchmarks/work]
        [--results benchmarks/results/paper_table] [--timeout-s S] [--report-only]

``sim1-small`` at R = 12, 20, 27, 48 and ``sim2-small`` at R = 160, 480, 960, every registered
method by default. Each case is simulated once (``WORKDIR/PRESET/seedS/R*/problem.h5``) and run
through :func:`lorein.eval.compare.compare` into ``.../compare/`` with ``configs/PRESET.toml``
when that file exists; cases whose ``compare.json`` already lists the requested methods are
skipped (failed runs included), and methods whose output folder holds a finished run are reused,
so an interrupted run resumes where it stopped; delete a case's ``compare/compare.json`` and
``compare/METHOD`` to run that method again, or ``compare/`` to run the whole case again.

Each case's record is merged into ``benchmarks/results/paper_table/PRESET/seedS/R*.json``
(committed; :mod:`records`), and the tables are drawn from those records: on a fresh checkout,
``--methods zero-deepsub --R 160`` runs that one cell and redraws the tables with the others as
they were recorded, and ``--report-only`` redraws them without running anything. After a metric
is added, ``--rescore --workdir W`` scores the finished runs kept in ``W`` again and merges the new
numbers into the records (each run keeps the stamp of when it ran).

A reference row fits ``fit`` to the same phantom fully sampled (R = 1), noiseless, with the true
coil sensitivities stored in the problem: the phantom is rendered on a twice finer grid and
band-limited, so even this case has a partial-volume / Gibbs error floor, which every table cell
should be read against. Its k-space is 0.3 GiB for sim1-small and 6.8 GiB for sim2-small
(``--reference-max-gib`` skips larger ones). Writes the section ``paper_table`` of
docs/BENCHMARKS.md and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import RESULTS, case_path, load, merge  # noqa: E402
from report import README, machine, update_section  # noqa: E402

from lorein import __version__  # noqa: E402
from lorein.data.problem import write_problem  # noqa: E402
from lorein.eval.compare import compare  # noqa: E402
from lorein.methods.registry import METHODS  # noqa: E402
from lorein.sim.presets import Preset, get_preset  # noqa: E402
from lorein.sim.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PROTOCOL: dict[str, tuple[float, ...]] = {
    "sim1-small": (12, 20, 27, 48),
    "sim2-small": (160, 480, 960),
}
"""Preset -> the acceleration factors R of the paper's experiments run on it."""

REFERENCE = "fit, fully sampled, noiseless, true coils"
"""Row label of the error floor."""

CONSTANT = "constant map at the truth's mean (oracle)"
"""Row label of the error of knowing nothing but each map's mean (:func:`constant_map`)."""

MAP_NAMES = {"T2star": "T2*"}
"""Map keys -> how the tables name them (others as they are)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PROTOCOL), choices=list(PROTOCOL))
    parser.add_argument("--R", type=float, nargs="+", help="subset of the protocol's R values")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="registered methods")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantom, sampling, methods")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / "benchmarks" / "work",
        help="problem files and comparison folders",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS / "paper_table",
        help="committed case records the tables are drawn from (benchmarks/records.py)",
    )
    parser.add_argument("--configs", type=Path, default=ROOT / "configs", help="PRESET.toml here")
    parser.add_argument("--timeout-s", type=float, default=None, help="limit per method run [s]")
    parser.add_argument(
        "--reference-max-gib",
        type=float,
        default=8.0,
        help="skip the fully sampled reference when its k-space would exceed this [GiB]",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="print only; leave docs and README alone (the case records are still written)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: draw the tables from the committed records ('-' where none)",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="run nothing: score the finished runs of the work folder again (e.g. after a metric "
        "was added) and merge them into the records; cases without a comparison are left alone",
    )
    parser.add_argument(
        "--note",
        default=None,
        help="a sentence added to the report, e.g. how the runs shared the machine",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if args.R is not None:
        extra = [r for r in args.R if not any(r in PROTOCOL[p] for p in args.presets)]
        if extra:
            parser.error(f"--R {' '.join(f'{r:g}' for r in extra)}: not in the chosen protocol")
    return args


def cases(args: argparse.Namespace) -> dict[str, tuple[float, ...]]:
    """Preset -> the R values to run."""
    return {p: tuple(r for r in PROTOCOL[p] if args.R is None or r in args.R) for p in args.presets}


def simulate_case(
    preset: Preset,
    R: float,
    seed: int,
    path: Path,
    snr: float | None,
    true_coils: bool,
    device: str = "cpu",
) -> None:
    """Write the problem file of one case (with truth), unless it exists already.

    Parameters
    ----------
    R
        Acceleration factor (paper eq. 19).
    snr
        Signal-to-noise ratio (None: the preset's, ``inf``: noiseless).
    true_coils
        Store the true coil sensitivities in the problem (``coils``), for the reference fit.
    device
        Where the simulation's signal model and FFTs run (the same problem to float rounding).
    """
    if path.exists():
        return
    print(f"simulate {preset.name} R = {R:g} -> {path}", flush=True)
    sim = simulate(preset, R, seed=seed, snr=snr, progress=False, device=device)
    problem = dataclasses.replace(sim.problem, coils=sim.truth.coils) if true_coils else sim.problem
    attrs = {
        "preset": preset.name,
        "seed": seed,
        "snr": preset.snr if snr is None else snr,
        "noise_std": sim.noise_std,
        "requested_R": R,
        "lorein_version": __version__,
        **sim.attrs(),
    }
    write_problem(path, problem, truth=sim.truth, attrs=attrs)


def finished_case(out: Path, methods: list[str]) -> dict[str, Any] | None:
    """The ``compare.json`` in ``out`` when it lists every one of ``methods``, else None."""
    done = out / "compare.json"
    if not done.exists():
        return None
    record = json.loads(done.read_text())
    return record if set(methods) <= set(record["methods"]) else None


def run_case(
    problem: Path, methods: list[str], out: Path, config: Path | None, args: argparse.Namespace
) -> dict[str, Any]:
    """``compare.json`` of one case: read if it lists ``methods``, else computed."""
    finished = finished_case(out, methods)
    if finished is not None:
        print(f"skip {out} (done)", flush=True)
        return finished
    done = out / "compare.json"
    if done.exists():
        record = json.loads(done.read_text())
        missing = [m for m in methods if m not in record["methods"]]
        print(
            f"rerun {out}: it lacks {', '.join(missing)} (finished methods are reused)", flush=True
        )
        methods = [*record["methods"], *missing]  # the new record keeps the earlier methods
    print(f"compare {', '.join(methods)} on {problem}", flush=True)
    return compare(
        problem,
        methods,
        out,
        config=config,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
        timeout_s=args.timeout_s,
        reuse=True,
    )


def rescore_case(problem: Path, out: Path) -> dict[str, Any]:
    """``compare.json`` of a finished case scored again from its output folders (nothing runs).

    The methods are those of the case's ``compare.json`` whose output folder holds a finished
    run; :func:`records.merge` keeps each one's ``recorded`` stamp when its scores are unchanged.
    """
    listed = json.loads((out / "compare.json").read_text())["methods"]
    finished = [m for m in listed if (out / m / "report.json").is_file()]
    print(f"score {', '.join(finished)} in {out} again", flush=True)
    return compare(problem, finished, out, progress=False, reuse=True)


def committed_case(
    record: Path,
    preset: Preset,
    R: float,
    problem_seed: int,
    problem: Path,
    out: Path,
    methods: list[str],
    config: Path | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run one case (unless ``args.report_only``), merge it into its committed record, return that.

    Parameters
    ----------
    record
        The committed record (:func:`records.case_path`).
    R
        Acceleration factor; 1 is the fully sampled, noiseless reference with the true coils.
    problem_seed
        Seed of the problem's phantom, sampling and noise (the methods run with ``args.seed``).
    problem
        The case's problem file in the work folder (simulated if missing).
    out
        The comparison folder of the run (:func:`run_case`).
    """
    if args.report_only:
        return load(record)
    if args.rescore:
        return (
            merge(record, rescore_case(problem, out), new_runs=False, add_missing=False)
            if (out / "compare.json").exists()
            else load(record)
        )
    reference = R == 1
    simulate_case(
        preset,
        R,
        problem_seed,
        problem,
        snr=math.inf if reference else None,
        true_coils=reference,
    )
    ran = finished_case(out, methods) is None  # a finished case is only read back
    return merge(record, run_case(problem, methods, out, config, args), new_runs=ran)


def reference_gib(preset: Preset) -> float:
    """Size of the fully sampled k-space of ``preset`` [GiB] (complex64)."""
    nx, ny, nz = preset.matrix
    n_lines = preset.contrast_table().n_contrasts * ny * nz
    return n_lines * preset.n_coils * nx * 8 / 2**30


def table_maps(preset: Preset) -> tuple[str, ...]:
    """Maps whose NRMSE a table cell shows: T1, T2* (and T2 for ``t2ir_gre``)."""
    return ("T1", "T2", "T2star") if preset.signal_model == "t2ir_gre" else ("T1", "T2star")


def cell(record: dict[str, Any], method: str, maps: tuple[str, ...], key: str = "nrmse") -> str:
    """``T1 / T2* (wall s)`` NRMSEs of ``method`` in a case, ``failed``, or ``-`` if not run.

    ``key = "interior"`` or ``"without_csf"``: the errors in the tissue interiors or in the mask
    without its CSF voxels instead, without the wall time (``-`` for a run recorded before that
    metric existed).
    """
    result = record["methods"].get(method)
    if result is None:
        return "-"
    if result["status"] != "ok":
        return "failed"
    scores = result["scores"]
    values = [f"{scores[m][key]:.3f}" if key in scores.get(m, {}) else "-" for m in maps]
    if key != "nrmse":
        return "-" if set(values) == {"-"} else " / ".join(values)
    return f"{' / '.join(values)} ({result['wall_seconds']:.0f} s)"


def constant_cell(record: dict[str, Any], maps: tuple[str, ...]) -> str:
    """NRMSEs of the best constant maps in a case's record (``-`` if it has none)."""
    errors = record.get("constant_map")
    if errors is None:
        return "-"
    return " / ".join(f"{errors[name]:.3f}" for name in maps)


def preset_table(
    preset: Preset,
    records: dict[float, dict[str, Any]],
    reference: dict[str, Any] | str,
    methods: list[str],
) -> list[str]:
    """Markdown lines of one preset: rows are methods, columns R (R = 1: the reference); the
    paper's errors in the truth mask, then the errors in the tissue interiors and in the mask
    without its CSF voxels.

    Parameters
    ----------
    records
        R -> the case's record (a ``compare.json``, :mod:`records`).
    reference
        The record of the fully sampled reference, or why it was skipped.
    """
    maps = table_maps(preset)
    names = " / ".join(MAP_NAMES.get(m, m) for m in maps)
    rs = sorted(records)
    header = ["method", "R = 1", *(f"R = {r:g}" for r in rs)]

    def reference_cell(key: str) -> str:
        return reference if isinstance(reference, str) else cell(reference, "fit", maps, key)

    constants = [constant_cell(records[r], maps) for r in rs]
    rows = [[REFERENCE, reference_cell("nrmse"), *("" for _ in rs)], [CONSTANT, "", *constants]]
    rows += [[m, "", *(cell(records[r], m, maps) for r in rs)] for m in methods]

    def region_rows(key: str) -> list[list[str]]:
        region = [[REFERENCE, reference_cell(key), *("" for _ in rs)]]
        return region + [[m, "", *(cell(records[r], m, maps, key) for r in rs)] for m in methods]

    counts = next(
        (
            rec["problem"]["interior_voxels"]
            for rec in records.values()
            if "interior_voxels" in rec.get("problem", {})
        ),
        None,
    )
    voxels = "" if counts is None else f" ({', '.join(f'{t} {n}' for t, n in counts.items())})"
    nx, ny, nz = preset.matrix
    return [
        f"### {preset.name}: {preset.signal_model}, {nx} x {ny} x {nz}, {preset.n_coils} coils, "
        f"{preset.contrast_table().n_contrasts} contrasts, SNR {preset.snr:g}",
        "",
        f"Cells: NRMSE {names} (capped, inside the truth mask), then the method's wall time.",
        "",
        *_markdown(header, rows),
        "",
        f"Tissue interiors{voxels}: the same NRMSEs in the voxels whose 26 neighbours share "
        "their tissue label, free of the partial-volume floor ('-': recorded before this metric).",
        "",
        *_markdown(header, region_rows("interior")),
        "",
        "Without CSF: the same NRMSEs in the mask's voxels not labelled CSF. CSF's T1 (4.2 s, "
        "capped at 3.5 s) is the largest value in the mask and a TR of 46 ms (sim1) barely "
        "encodes it: on sim1-small CSF is 16 % of the mask's voxels but 64-78 % of LoREIN's and "
        "SUMMIT's squared T1 error ('-': recorded before this metric).",
        "",
        *_markdown(header, region_rows("without_csf")),
    ]


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a markdown table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def report_body(
    args: argparse.Namespace,
    tables: list[list[str]],
    configs: dict[str, Path | None],
) -> str:
    """The docs/BENCHMARKS.md section: protocol, machine, then one table per preset."""
    used = ", ".join(f"{p}: {_shown(c)}" for p, c in configs.items())
    lines = [
        "## Paper protocol at CPU size (`benchmarks/paper_table.py`)",
        "",
        f"Machine: {machine()}; device {args.device}; {datetime.date.today().isoformat()}. "
        f"Seed {args.seed}. Configurations: {used}.",
        "",
        f"Row '{REFERENCE}': `fit` on the same phantom at R = 1 without noise and with the true "
        "coils. The phantom is rendered on a 2x finer grid and band-limited, so this is the "
        "partial-volume / Gibbs floor of a voxel-wise fit; read the other rows against it. "
        f"Row '{CONSTANT}': every voxel set to the mean of the (capped) true map in the mask, "
        "the lowest error a constant map can have; a cell above it says less about the anatomy "
        "than that one number (T2* of these phantoms varies little inside the mask apart from "
        "partial-volume voxels: on sim1-small the fully sampled fit is only 7 % below it). "
        f"Per case, {_shown(args.results / 'PRESET' / 'seedS' / 'R*.json')} (committed) adds "
        "M0, B0, SSIM, per-tissue bias, peak memory and, per method, when and with which "
        "commit it ran (cells recorded before that folder existed keep only the numbers shown); "
        "`WORKDIR/PRESET/seedS/R*/compare/` holds the maps and figure of the "
        "cases run there.",
    ]
    if args.note:
        lines += ["", args.note]
    for table in tables:
        lines += ["", *table]
    return "\n".join(lines)


def readme_tables(tables: list[list[str]]) -> str:
    """The tables as README.md quotes them (its "Results" section, between the markers)."""
    return "\n\n".join("\n".join(table) for table in tables)


def _shown(path: Path | None) -> str:
    """A file or folder as the report names it (relative to the repository)."""
    if path is None:
        return "defaults"
    path = path.resolve()
    return f"`{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tables, configs = [], {}
    for name, rs in cases(args).items():
        preset = get_preset(name)
        config = args.configs / f"{name}.toml"
        configs[name] = config if config.exists() else None
        base = args.workdir / name / f"seed{args.seed}"
        size = reference_gib(preset)
        reference: dict[str, Any] | str = f"skipped: k-space {size:.1f} GiB > --reference-max-gib"
        if size <= args.reference_max_gib:
            path = base / "reference" / "problem.h5"
            record = committed_case(
                case_path(args.results, name, args.seed, "reference"),
                preset,
                1,
                args.seed,
                path,
                path.parent / "compare",
                ["fit"],
                configs[name],
                args,
            )
            reference = record
        records = {}
        for R in rs:
            path = base / f"R{R:g}" / "problem.h5"
            records[R] = committed_case(
                case_path(args.results, name, args.seed, f"R{R:g}"),
                preset,
                R,
                args.seed,
                path,
                path.parent / "compare",
                args.methods,
                configs[name],
                args,
            )
        tables.append(preset_table(preset, records, reference, args.methods))
    body = report_body(args, tables, configs)
    print(body)
    if not args.no_report:
        update_section("paper_table", body)
        update_section("paper_table", readme_tables(tables), README)


if __name__ == "__main__":
    main()
