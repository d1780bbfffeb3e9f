"""Fuzz the problem-file reader and the ISMRMRD importer with many random corruptions.

Usage::

    python benchmarks/fuzz_inputs.py [--examples 1000] [--seed 0] [--limit-s 10] [--report]

The corruptions and the reading are those of tests/data/test_fuzz_inputs.py
(:mod:`tests.data.fuzz`: small valid files changed by random h5py and byte edits, each read in a
worker killed after ``--limit-s`` seconds), here with ``--examples`` per reader drawn from
``--seed`` instead of the test's few hundred derandomized ones, and without stopping at a
failure: every outcome is counted (``ok``, one-line error, traceback, crash, hang), with the slowest
read. The first failures are printed; ``--report`` writes the table to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.data.fuzz
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, update_section  # noqa: E402

from tests.data.fuzz import READERS, Reader, corrupt, corruptions, valid_files  # noqa: E402

READER_NAMES = {
    "problem": "problem file (`lorein info`, truth of `lorein eval`)",
    "raw": "ISMRMRD importer (`lorein import`)",
}


def fuzz(
    kind: str, valid: Path, reader: Reader, examples: int, seed_value: int, folder: Path
) -> dict[str, Any]:
    """Read ``examples`` random corruptions of ``valid``; counts, slowest read, failures."""
    target = folder / f"corrupted-{kind}.h5"
    outcomes: Counter[str] = Counter()
    slowest = [0.0]
    failures: list[str] = []

    @seed(seed_value)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(corruptions(kind))
    def read_corrupted(edits: list[tuple]) -> None:
        corrupt(valid, edits, target)
        outcome = reader.read(kind, target)
        outcomes[outcome.kind] += 1
        slowest[0] = max(slowest[0], outcome.seconds)
        if outcome.kind not in ("ok", "error"):
            failures.append(f"{outcome.kind}: edits {edits}: {outcome.text}")

    start = time.perf_counter()
    read_corrupted()
    return {
        "examples": sum(outcomes.values()),
        "outcomes": outcomes,
        "slowest_s": slowest[0],
        "wall_s": time.perf_counter() - start,
        "failures": failures,
    }


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "## Fuzzing the input readers (`benchmarks/fuzz_inputs.py`)",
        "",
        f"`python benchmarks/fuzz_inputs.py --examples {args.examples} --seed {args.seed} "
        f"--limit-s {args.limit_s:g}`: random corruptions of a small valid problem file and of "
        "its ISMRMRD export (tests/data/fuzz.py: bytes overwritten, truncation, attributes and "
        "datasets replaced by random data, shapes, dtypes and declared sizes changed, links to "
        "themselves, ISMRMRD heads and XML edited), each read in a worker killed after the time "
        "limit. Expected: only `ok` and one-line errors naming the file.",
        "",
        "| reader | examples | ok | one-line error | traceback | crash | hang | slowest read "
        "| wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in results.items():
        o = r["outcomes"]
        lines.append(
            f"| {READER_NAMES[kind]} | {r['examples']} | {o['ok']} | {o['error']} | "
            f"{o['traceback']} | {o['crash']} | {o['hang']} | {r['slowest_s']:.2f} s | "
            f"{r['wall_s']:.0f} s |"
        )
    lines += ["", f"Machine: {machine()}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="examples per reader")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    parser.add_argument("--limit-s", type=float, default=10.0, help="time limit of one read [s]")
    parser.add_argument("--report", action="store_true", help="write docs/BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = valid_files(folder)
        reader = Reader(args.limit_s)
        try:
            results = {
                kind: fuzz(kind, files[kind], reader, args.examples, args.seed, folder)
                for kind in READERS
            }
        finally:
            reader.close()
    text = table(results, args)
    print(text)
    for kind, r in results.items():
        for failure in r["failures"][:5]:
            print(f"{kind}: {failure}")
    if args.report:
        update_section("fuzz_inputs", text)


if __name__ == "__main__":
    main()
