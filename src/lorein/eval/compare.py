"""Side-by-side comparison of reconstruction methods on one problem file (paper Figs. 4-5).

Each method runs as ``python -m lorein recon`` in its own process, so that its peak memory is its
own and a crash of one method leaves the others running. Every successful output folder is scored
against the problem's ground truth: the paper's capped NRMSE per map (M0 after a least-squares
scale, B0 as RMSE [Hz]) and SSIM (:func:`lorein.eval.evaluate.evaluate_maps`), the same errors in
the pure-tissue voxels (purity >= 0.9, when the truth records purity:
:func:`lorein.eval.evaluate.pure_voxels`; the headline), in the tissue interiors (voxels whose 26
neighbours, 8 in a single slice, share their label, free of the phantom's partial-volume floor;
:func:`lorein.eval.metrics.interior_mask`) and in the mask without its CSF voxels
(:func:`lorein.eval.evaluate.without_csf_voxels`), and per-tissue mean and bias in white matter,
cortical grey matter, deep grey matter and CSF.

Layout of ``OUT/``:

- ``METHOD/``: the method's output folder (``maps.h5``, ``nifti/``, ``report.json``);
- ``METHOD.log``: its standard output and error (progress bars, error message);
- ``compare.md``: tables of pure-tissue errors (first, when the truth records purity; their
  voxels in ``compare.json``'s ``problem.pure_voxels``), errors in the whole mask (the paper's
  protocol) with time and memory, interior errors, errors without CSF and tissue
  statistics (the interior voxels per tissue class in ``compare.json``'s
  ``problem.interior_voxels``, the mask's voxels in ``problem.mask_voxels``); the whole-mask error
  table ends with the errors of the best constant maps (``compare.json``'s ``constant_map``:
  each map set to its truth's mean), the level below which a method's map says more than that
  one number;
- ``compare.png``: truth row, then a map row and an error row per successful method;
- ``compare.json``: everything above, machine-readable. Written last and atomically, so its
  presence means the comparison finished.
"""

from __future__ import annotations

import datetime
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lorein import __version__
from lorein.data.output import write_text_atomic
from lorein.data.problem import Truth, problem_summary, read_truth
from lorein.eval.evaluate import (
    EVALUATED,
    constant_map_errors,
    evaluate_maps,
    interior_voxels,
    pure_voxels,
    read_maps,
)
from lorein.eval.figures import LABELS, comparison_figure
from lorein.eval.metrics import PURE_THRESHOLD, least_squares_scale
from lorein.eval.tables import HEADLINE, REGIONS, error_key, markdown_table, number
from lorein.methods.registry import METHODS
from lorein.sim.phantom import TISSUE_GROUPS, TISSUES

FORMAT = "lorein-compare"
"""Value of ``format`` in ``compare.json``."""

FORMAT_VERSION = 1
"""``format_version`` of ``compare.json``."""

CONSTANT_ROW = "constant map at the truth's mean"
"""Row of ``compare.md`` with the errors of ``compare.json``'s ``constant_map``: each map set to
the mean of its (capped) truth in the mask, the lowest error a map without anatomy can have."""

TISSUE_CLASSES: dict[str, tuple[str, ...]] = {
    "WM": ("wm",),
    "GM": ("gm",),
    "deep GM": TISSUE_GROUPS["deep_gm"],
    "CSF": ("csf",),
}
"""Tissue classes of the per-tissue statistics -> phantom tissues (:data:`TISSUES`) they join."""

TISSUE_UNITS: dict[str, tuple[float, str]] = {
    "M0": (1.0, "a.u."),
    "T1": (1e3, "ms"),
    "T2": (1e3, "ms"),
    "T2star": (1e3, "ms"),
    "B0": (1.0, "Hz"),
}
"""Map -> (factor from SI, unit) in the per-tissue table of ``compare.md``."""

_TAIL_BYTES = 8192  # standard-error bytes kept for the error message of a failed method


def compare(
    problem: Path,
    methods: Sequence[str],
    out: Path,
    config: Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    timeout_s: float | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """Run several methods on one problem, score them against its truth and write ``out/``.

    Parameters
    ----------
    problem
        Problem file (HDF5) with a ``truth/`` group.
    methods
        Names in :data:`lorein.methods.registry.METHODS`, in the order of the tables and figure
    rows. out
        Output folder (created); see the module docstring for its layout.
    config
        TOML file passed to every method as ``lorein recon --config`` (each method reads its
        own table of it).
    device
        ``cpu`` or ``cuda``, for every method.
    seed
        Seed of every method's random initialisation.
    progress
        Show the methods' progress bars and one status line per method on standard error.
    timeout_s
        Wall-clock limit of each method [s]; a method past it is stopped and counted as failed.
    reuse
        Score, without running it again, each method whose output folder ``out/METHOD`` already
        holds a finished run (its ``report.json``): resumes an interrupted comparison, or reruns
        only the methods whose folders were deleted.

    Returns
    -------
    The content of ``out/compare.json``: ``problem`` (summary), ``methods`` (per method:
    ``status`` ``"ok"`` with ``scores``, ``tissues``, ``wall_seconds``, ``peak_memory_gib``, or
    ``"failed"`` with ``error``), ``notes`` and provenance.

    Raises
    ------
    ValueError
        One line: an unknown method (listing the known ones), no methods, or a problem file that is
        invalid or has no ``truth/`` group (naming the file).
    FileNotFoundError
        ``config`` is given but is not a file.
    """
    names = _check_methods(methods)
    summary = problem_summary(problem)
    if not summary["has_truth"]:
        raise ValueError(
            f"{problem}: no truth/ group; compare scores methods against the ground truth, so it "
            "needs a simulated problem file"
        )
    truth = read_truth(problem)
    if config is not None and not Path(config).is_file():
        raise FileNotFoundError(f"{config}: configuration file not found")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").unlink(missing_ok=True)
    started = _now()
    results: dict[str, dict[str, Any]] = {}
    maps: dict[str, dict[str, torch.Tensor]] = {}
    for i, name in enumerate(names):
        if progress:
            print(f"compare: [{i + 1}/{len(names)}] {name}", file=sys.stderr, flush=True)
        command = recon_command(problem, name, out / name, config, device, seed, progress)
        if reuse and (out / name / "report.json").is_file():
            command = None
        results[name], method_maps = _run_and_score(command, out, name, truth, progress, timeout_s)
        if method_maps is not None:
            maps[name] = method_maps
        if progress:
            print(f"compare: {name}: {_status_line(results[name])}", file=sys.stderr, flush=True)
    notes = []
    if "labels" not in truth.extra:
        notes.append("truth/ has no labels: per-tissue statistics skipped")
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "problem": _problem_record(summary, truth),
        "config": None if config is None else str(config),
        "device": device,
        "seed": seed,
        "timeout_s": timeout_s,
        "lorein_version": __version__,
        "started": started,
        "finished": _now(),
        "notes": notes,
        "methods": results,
        "constant_map": constant_map_errors(truth),
    }
    if maps:
        comparison_figure(out / "compare.png", truth.maps(), truth.mask, maps, _scores(results))
    else:
        notes.append("no method succeeded: no figure")
    write_text_atomic(out / "compare.md", comparison_markdown(record))
    write_text_atomic(out / "compare.json", json.dumps(record, indent=2) + "\n")
    return record


def _check_methods(methods: Sequence[str]) -> list[str]:
    """The method names without repeats; a one-line error on an unknown name or none."""
    known = ", ".join(METHODS)
    if not methods:
        raise ValueError(f"no methods to compare; known methods: {known}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known methods: {known}")
    return list(dict.fromkeys(methods))


def recon_command(
    problem: Path,
    method: str,
    out: Path,
    config: Path | None,
    device: str,
    seed: int,
    progress: bool,
) -> list[str]:
    """The ``python -m lorein recon`` command line of one method."""
    command = [sys.executable, "-m", "lorein", "recon", str(problem), "-o", str(out)]
    command += ["--method", method, "--device", device, "--seed", str(seed)]
    if config is not None:
        command += ["--config", str(config)]
    if not progress:
        command.append("--quiet")
    return command


def _run_and_score(
    command: list[str] | None,
    out: Path,
    name: str,
    truth: Truth,
    progress: bool,
    timeout_s: float | None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Run one method's command (None: reuse the finished run) and score ``out/name``.

    Returns
    -------
    The method's record and, when it succeeded, its maps (``[nz, ny, nx]``, SI units).
    """
    log = out / f"{name}.log"
    start = time.perf_counter()
    error = None
    if command is not None:
        error = run_logged(command, log, echo=progress, timeout_s=timeout_s)
    record: dict[str, Any] = {
        "output": name,
        "log": log.name,
        "process_seconds": time.perf_counter() - start,
        "reused": command is None,
    }
    if error is not None:
        return {"status": "failed", "error": error, **record}, None
    try:
        maps = read_maps(out / name)
        report = json.loads((out / name / "report.json").read_text())
        if not isinstance(report, dict):
            raise ValueError(f"{out / name / 'report.json'}: expected a JSON object")
    except (OSError, ValueError) as err:  # ProblemFileError, JSONDecodeError are ValueErrors
        return {"status": "failed", "error": str(err) or type(err).__name__, **record}, None
    record.update(
        status="ok",
        wall_seconds=report.get("wall_seconds"),
        peak_memory_gib=report.get("peak_memory_gib"),
        device_name=report.get("device_name"),
        iterations=report.get("iterations"),
        scores=evaluate_maps(maps, truth),
        tissues=tissue_stats(maps, truth) if "labels" in truth.extra else None,
    )
    return record, maps


def run_logged(
    command: list[str], log: Path, echo: bool = False, timeout_s: float | None = None
) -> str | None:
    """Run a command with its output in ``log``; standard error is also echoed when ``echo``.

    Returns
    -------
    None on exit status 0; otherwise the error: the last non-empty line of standard error, or
    ``"timed out after N s"`` when the command ran past ``timeout_s`` (it is then killed).
    """
    tail = bytearray()
    with open(log, "wb") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        pump = threading.Thread(target=_pump, args=(proc.stderr, f, tail, echo), daemon=True)
        pump.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            pump.join()
            proc.stderr.close()
    if code == 0:
        return None
    if code is None:
        return f"timed out after {timeout_s:g} s"
    return last_line(tail.decode(errors="replace")) or f"exit status {code}, no error message"


def _pump(pipe: io.BufferedReader, log: io.BufferedWriter, tail: bytearray, echo: bool) -> None:
    """Copy ``pipe`` to ``log`` (and standard error when ``echo``), keeping its last bytes."""
    while chunk := pipe.read1(4096):
        log.write(chunk)
        log.flush()
        tail.extend(chunk)
        del tail[:-_TAIL_BYTES]
        if echo:
            sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (progress-bar carriage returns end lines too)."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", text)]
    return next((line for line in reversed(lines) if line), "")


def tissue_stats(
    maps: dict[str, torch.Tensor], truth: Truth
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and bias of each map in white matter, grey matter, deep grey matter and CSF.

    Voxels of a class are those whose label in ``truth.extra["labels"]`` belongs to it
    (:data:`TISSUE_CLASSES`). M0 is first scaled by the least-squares factor of its NRMSE (inside
    the truth mask), since its absolute scale is not identifiable.

    Parameters
    ----------
    maps
        Map name -> ``[nz, ny, nx]`` (SI units: T1, T2, T2star [s], B0 [Hz]).
    truth
        Ground truth with ``extra["labels"]`` (int ``[nz, ny, nx]``, labels of :data:`TISSUES`).

    Returns
    -------
    ``{tissue: {map: {"mean": m, "true_mean": t, "bias": m - t}}}`` in SI units, for the maps in
    both ``maps`` and ``truth`` (:data:`~lorein.eval.evaluate.EVALUATED`); tissues without voxels
    are left out.
    """
    labels = truth.extra["labels"]
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for tissue, members in TISSUE_CLASSES.items():
        region = torch.isin(labels, torch.tensor([TISSUES[t].label for t in members]))
        if not region.any():
            continue
        stats[tissue] = {}
        for name in EVALUATED:
            ref = getattr(truth, name)
            if name not in maps or ref is None:
                continue
            x = maps[name].float()
            if name == "M0":
                x = least_squares_scale(x, ref, truth.mask) * x
            mean, true_mean = float(x[region].mean()), float(ref[region].mean())
            stats[tissue][name] = {"mean": mean, "true_mean": true_mean, "bias": mean - true_mean}
    return stats


def _problem_record(summary: dict[str, Any], truth: Truth) -> dict[str, Any]:
    """What ``compare.json`` says about the problem: provenance (with ``simulation``, None for
    files written before it was recorded), size, R, tissue and region voxel counts."""
    attrs = summary["attrs"]
    record = {
        key: summary[key]
        for key in (
            "path",
            "signal_model",
            "matrix",
            "voxel_size",
            "n_coils",
            "n_contrasts",
            "n_lines",
            "acceleration",
        )
    }
    provenance = ("preset", "seed", "snr", "requested_R", "simulation")
    record.update({key: attrs.get(key) for key in provenance})
    pure = pure_voxels(truth)
    if pure is not None:
        record["pure_voxels"] = int(pure.sum())
    interior = interior_voxels(truth)
    if "labels" in truth.extra:
        labels = truth.extra["labels"]
        classes = {
            tissue: torch.isin(labels, torch.tensor([TISSUES[t].label for t in members]))
            for tissue, members in TISSUE_CLASSES.items()
        }
        record["tissue_voxels"] = {tissue: int(region.sum()) for tissue, region in classes.items()}
        record["mask_voxels"] = int(truth.mask.bool().sum())
        if interior is not None:
            record["interior_voxels"] = {
                tissue: int((region & interior).sum()) for tissue, region in classes.items()
            }
    return record


def _scores(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    return {name: r["scores"] for name, r in results.items() if r["status"] == "ok"}


def _status_line(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"failed: {result['error']}"
    return f"ok, {result['wall_seconds']:.1f} s, peak {result['peak_memory_gib']:.2f} GiB"


def comparison_markdown(record: dict[str, Any]) -> str:
    """``compare.md``: the problem, then tables of errors, SSIM and tissue statistics.

    Parameters
    ----------
    record
        The content of ``compare.json`` (:func:`compare`).
    """
    p = record["problem"]
    results = record["methods"]
    scored = _scores(results)
    columns = [n for n in EVALUATED if any(n in s for s in scored.values())]
    lines = [
        f"# Comparison on `{Path(p['path']).name}`",
        "",
        f"Problem: {p['preset'] or 'no preset'}, {p['signal_model']}, "
        f"matrix {' x '.join(map(str, p['matrix']))}, R = {p['acceleration']:.1f}, "
        f"{p['n_coils']} coils, {p['n_contrasts']} contrasts"
        f"{', simulation ' + p['simulation'] if p.get('simulation') else ''}. "
        f"Seed {record['seed']}, device "
        f"{record['device']}, configuration "
        f"{'`' + record['config'] + '`' if record['config'] else 'defaults'}.",
        "",
    ]
    headline = _region_lines(record, columns, HEADLINE)  # opens with an empty line
    lines += [*headline[1:], ""] if headline else []
    lines += [
        "Paper protocol: errors inside the whole truth mask, NRMSE with T1, T2, T2* capped to "
        "0-3.5 s, 0-0.2 s, 0-0.1 s, M0 after a least-squares scale; B0 as RMSE [Hz].",
        "",
    ]
    lines += markdown_table(
        ["method", "status", *_error_names(columns), "wall time [s]", "peak memory [GiB]"],
        [
            [
                name,
                r["status"],
                *_cells(r.get("scores", {}), columns),
                number(r.get("wall_seconds"), 1),
                number(r.get("peak_memory_gib"), 2),
            ]
            for name, r in results.items()
        ]
        + _constant_row(record, columns),
    )
    failed = [f"- {name}: {r['error']}" for name, r in results.items() if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed methods (last line of `METHOD.log`):", "", *failed]
    if scored:
        lines += ["", "SSIM (capped maps, inside the truth mask):", ""]
        lines += markdown_table(
            ["method", *[LABELS[n] for n in columns]],
            [[m, *_cells(s, columns, "ssim")] for m, s in scored.items()],
        )
    for key in REGIONS:
        if key != HEADLINE:
            lines += _region_lines(record, columns, key)
    lines += _tissue_lines(record, columns)
    notes = [f"- {note}" for note in record["notes"]]
    return "\n".join([*lines, *(["", "Notes:", "", *notes] if notes else [])]) + "\n"


def _constant_row(record: dict[str, Any], columns: list[str]) -> list[list[str]]:
    """The error table's oracle row."""
    errors = record["constant_map"]
    return [[CONSTANT_ROW, "oracle", *[number(errors.get(n), 3) for n in columns], "-", "-"]]


def _cells(
    scores: dict[str, dict[str, float]], columns: list[str], key: str | None = None
) -> list[str]:
    """One method's score ``key`` (default: its error, :func:`error_key`) of each map in
    ``columns``."""
    return [number(scores.get(n, {}).get(key or error_key(n)), 3) for n in columns]


def _region_lines(record: dict[str, Any], columns: list[str], key: str) -> list[str]:
    """The error table over one region of the truth mask, after an empty line: ``key``
    ``"pure"`` (the pure-tissue voxels, :func:`~lorein.eval.evaluate.pure_voxels`),
    ``"interior"`` (the tissue interiors, :func:`~lorein.eval.metrics.interior_mask`) or
    ``"without_csf"`` (the mask without its CSF voxels,
    :func:`~lorein.eval.evaluate.without_csf_voxels`); no lines when no method has its scores."""
    scored = {
        m: s for m, s in _scores(record["methods"]).items() if any(key in v for v in s.values())
    }
    if not scored:
        return []
    problem = record["problem"]
    if key == "pure":
        intro = (
            f"Errors in the pure-tissue voxels (purity >= {PURE_THRESHOLD:g}: at least "
            f"{PURE_THRESHOLD:.0%} of a voxel's fine-grid samples carry its dominant tissue "
            "label; no partial-volume floor), capped as in the paper's protocol below: "
            f"{problem.get('pure_voxels', '-')} voxels."
        )
    elif key == "interior":
        counts = problem["interior_voxels"]
        intro = (
            "The same errors in the tissue interiors, voxels whose 26 neighbours share their "
            "tissue label (no partial-volume floor; at coarse voxels mostly white matter): "
            f"{', '.join(f'{t} {n}' for t, n in counts.items())} voxels."
        )
    else:
        csf = problem.get("tissue_voxels", {}).get("CSF")
        kept = (
            problem["mask_voxels"] - csf if "mask_voxels" in problem and csf is not None else None
        )
        intro = (
            "The same errors in the mask without its CSF voxels (CSF's capped T1 is the largest "
            "value in the mask and dominates its T1 error)"
            + (f": {kept} voxels." if kept is not None else ".")
        )
    rows = [[m, *_cells(s, columns, key)] for m, s in scored.items()]
    return ["", intro, "", *markdown_table(["method", *_error_names(columns)], rows)]


def _error_names(columns: list[str]) -> list[str]:
    """Column headers of the error tables."""
    return ["B0 RMSE [Hz]" if n == "B0" else f"NRMSE {LABELS[n]}" for n in columns]


def _tissue_lines(record: dict[str, Any], columns: list[str]) -> list[str]:
    """The per-tissue table: truth rows, then per method ``mean (bias)`` in display units."""
    stats = {
        m: r["tissues"]
        for m, r in record["methods"].items()
        if r["status"] == "ok" and r["tissues"] is not None
    }
    if not stats:
        return []
    first = next(iter(stats.values()))
    header = [f"{LABELS[n]} [{TISSUE_UNITS[n][1]}]" for n in columns]
    rows = [
        [
            "truth",
            tissue,
            *[_display(n, first[tissue].get(n, {}).get("true_mean")) for n in columns],
        ]
        for tissue in first
    ]
    for method, tissues in stats.items():
        for tissue, values in tissues.items():
            cells = [
                f"{_display(n, values[n]['mean'])} ({_display(n, values[n]['bias'], sign=True)})"
                if n in values
                else "-"
                for n in columns
            ]
            rows.append([method, tissue, *cells])
    intro = (
        "Per-tissue mean (bias = method mean - true mean); M0 after the least-squares scale; "
        f"voxels: {', '.join(f'{t} {n}' for t, n in record['problem']['tissue_voxels'].items())}."
    )
    return ["", intro, "", *markdown_table(["method", "tissue", *header], rows)]


def _display(name: str, value: float | None, sign: bool = False) -> str:
    """A per-tissue value in display units (ms, Hz, a.u.)."""
    if value is None:
        return "-"
    factor, unit = TISSUE_UNITS[name]
    digits = 3 if unit == "a.u." else 1
    return f"{value * factor:{'+' if sign else ''}.{digits}f}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
