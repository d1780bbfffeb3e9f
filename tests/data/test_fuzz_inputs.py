"""Property-based fuzzing of the problem-file reader (``lorein info``, the truth of ``lorein
eval``) and the ISMRMRD importer: random corruptions of small valid files (:mod:`tests.data.fuzz`:
bytes overwritten, truncation, attributes and datasets replaced, shapes, dtypes and declared sizes
changed, ISMRMRD heads and XML edited) end in success or the one-line ``ProblemFileError`` naming
the file, never in another exception, and every read ends within the time limit (each runs in a
worker that is killed past it). benchmarks/fuzz_inputs.py runs thousands of the same examples."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.data.fuzz import Reader, corrupt, corruptions, valid_files

EXAMPLES = {"problem": 150, "raw": 120}
"""Examples per reader in the test suite (deterministic: hypothesis derandomized)."""

LIMIT_S = 10.0
"""Time limit of one read [s]; a valid file reads in milliseconds."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return valid_files(tmp_path_factory.mktemp("valid"))


@pytest.fixture(scope="module")
def reader() -> Reader:
    worker = Reader(LIMIT_S)
    yield worker
    worker.close()


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_corrupted_files_end_in_one_line_errors_never_in_tracebacks_or_hangs(
    kind: str, files: dict[str, Path], reader: Reader, tmp_path: Path
) -> None:
    assert reader.read(kind, files[kind]).kind == "ok"
    target = tmp_path / f"{kind}.h5"
    outcomes: Counter[str] = Counter()
    messages: set[str] = set()

    @settings(
        max_examples=EXAMPLES[kind],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(corruptions(kind))
    def read_corrupted(edits: list[tuple]) -> None:
        corrupt(files[kind], edits, target)
        outcome = reader.read(kind, target)
        outcomes[outcome.kind] += 1
        assert outcome.kind in ("ok", "error"), f"edits {edits}: {outcome.kind}: {outcome.text}"
        if outcome.kind == "error":
            messages.add(re.sub(r"\d+", "N", outcome.text.removeprefix(f"{target}: ")))

    read_corrupted()
    # the corruptions reach the checks: most files are refused, for many different reasons
    assert outcomes["error"] >= EXAMPLES[kind] // 2, outcomes
    assert len(messages) >= 20, sorted(messages)
