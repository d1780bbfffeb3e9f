"""Committed records of benchmark cases, from which the tables of docs/BENCHMARKS.md are drawn.

A case's ``compare.json`` (:func:`lorein.eval.compare.compare`) lives in the work folder, which is
not committed; its record is also merged into ``benchmarks/results/TABLE/PRESET/seedS/CASE.json``
(committed, a few kB each). A fresh checkout can therefore redraw a table, or run one missing
cell and redraw the table around it, without rerunning the cells it already has.

Merging keeps the committed methods that the new record lacks and replaces the others; each method
entry carries ``recorded`` (the comparison's finish time, the package version and the commit of
this repository that wrote it into the record), so a table mixing runs of different sessions says
which is which. A reused run scored again (same output folder, a metric added since) keeps the
``recorded`` of the run and says when it was scored again in ``rescored``; only a run of the
merging process replaces a committed one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from lorein import __version__

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _without_stamps(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without what changes when the same run is scored again: its stamps and the
    scoring process's own time."""
    return {k: v for k, v in entry.items() if k not in ("recorded", "rescored", "process_seconds")}


def _rescored(kept: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether ``entry`` is the run of ``kept`` scored again: a reused output whose wall time and
    every score ``kept`` has are unchanged (``entry`` may add metrics)."""
    if not entry.get("reused") or kept.get("status") != "ok" or entry.get("status") != "ok":
        return False
    if kept.get("wall_seconds") != entry.get("wall_seconds"):
        return False
    new = entry.get("scores", {})
    return all(
        key in new.get(name, {}) and new[name][key] == value
        for name, values in kept.get("scores", {}).items()
        for key, value in values.items()
    )


def case_path(results: Path, preset: str, seed: int, case: str) -> Path:
    """Where the record of one case is kept.

    Parameters
    ----------
    results
        Folder of one table's records, e.g. ``benchmarks/results/paper_table``.
    case
        ``R27``-style name of the case, or ``reference``.
    """
    return results / preset / f"seed{seed}" / f"{case}.json"


def load(path: Path) -> dict[str, Any]:
    """The committed record at ``path`` (no methods when there is none)."""
    return json.loads(path.read_text()) if path.exists() else {"methods": {}}


def commit() -> str:
    """Short hash of this repository's ``HEAD`` (``-dirty`` with uncommitted changes outside the
    records themselves), or ``unknown`` outside a git checkout."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        records = f":(exclude){RESULTS.relative_to(ROOT).as_posix()}"
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", records)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def _git(*args: str) -> str:
    """Standard output of a git command in this repository, stripped."""
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


RUN_COMMIT = commit()
"""The checkout this process started from, i.e. the code that its runs used (records are
written hours later, when the tree may have moved on)."""


def merge(
    path: Path, record: dict[str, Any], new_runs: bool = True, add_missing: bool = True
) -> dict[str, Any]:
    """Merge a comparison record into the committed one at ``path`` and write it.

    A committed run is replaced only by a run of this process; an entry that is the committed
    run scored again (:func:`_rescored`) keeps its ``recorded`` stamp and gains ``rescored``;
    any other entry (a reused output that is not the committed run) leaves the committed one as
    it is, so a work folder left by another session cannot overwrite the records silently.

    Parameters
    ----------
    record
        Content of a ``compare.json``. The methods at ``path`` that it lacks are kept; its other
        keys (problem, constant map, ...) replace the committed ones.
    new_runs
        Whether the entries of ``record`` not marked ``reused`` ran in this process (False for a
        comparison read back from the work folder, or scored again).
    add_missing
        Whether methods that ``path`` lacks are added; when they did not run in this process
        their stamp's commit is ``"unknown"``.

    Returns
    -------
    The merged record, as written.
    """
    old = load(path)
    stamp = {
        "finished": record.get("finished"),
        "lorein_version": __version__,
        "commit": RUN_COMMIT,
    }
    methods = dict(old["methods"])
    for name, entry in record["methods"].items():
        kept = methods.get(name)
        ran_here = new_runs and not entry.get("reused")
        if kept is not None and _without_stamps(kept) == _without_stamps(entry):
            methods[name] = kept
        elif kept is not None and _rescored(kept, entry):
            methods[name] = {**entry, "recorded": kept["recorded"], "rescored": stamp}
        elif ran_here:
            methods[name] = {**entry, "recorded": stamp}
        elif kept is None and add_missing:
            methods[name] = {**entry, "recorded": {**stamp, "commit": "unknown"}}
        else:
            why = "not in the record" if kept is None else "not the recorded run"
            print(f"{path}: {name} is {why}: record left as it is", flush=True)
    merged = {**old, **record, "methods": methods}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged
