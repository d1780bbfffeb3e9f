"""The accuracy table of benchmarks/accuracy.py, on hand-made records."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import accuracy  # noqa: E402


def rec(row: str, draw: int, t1: float, m0: float | None = None, seconds: float = 10.0) -> dict:
    scores = {"T1": {"nrmse": 9.0, "pure": t1}}
    if m0 is not None:
        scores["M0"] = {"pure": m0}
    return {"row": row, "draw": draw, "seconds": seconds, "scores": scores}


def test_table_gives_mean_and_sd_over_draws() -> None:
    records = {
        "floor-noisy": [rec("floor-noisy", 1, 0.05, 0.02), rec("floor-noisy", 2, 0.07, 0.04)],
        "lorein": [rec("lorein", 1, 0.10, None, 100), rec("lorein", 2, 0.12, None, 120)],
    }
    lines = accuracy.table(records).splitlines()
    assert lines[0] == "| row | draws | M0 | T1 | time [s] |"
    assert lines[2] == "| floor-noisy | 2 | 0.030 ± 0.014 | 0.060 ± 0.014 | 10 |"
    assert lines[3] == "| lorein | 2 |  | 0.110 ± 0.014 | 110 |"


def test_pairs_compare_draw_by_draw() -> None:
    records = {
        "lorein": [rec("lorein", 1, 0.08), rec("lorein", 2, 0.12)],
        "summit": [rec("summit", 1, 0.10), rec("summit", 2, 0.16)],
        "floor-noisy": [rec("floor-noisy", 1, 0.05), rec("floor-noisy", 2, 0.05)],
    }
    expected = "| lorein against summit | -23% (2/2 lower) |"  # draws: -20 % and -25 %
    assert accuracy.paired(records, "lorein", "summit") == expected
    assert accuracy.paired(records, "lorein", "lrt") is None
    pairs = accuracy.comparisons(records).splitlines()
    assert len(pairs) == 3 and "floor" not in accuracy.comparisons(records)


def test_recorded_keeps_rows_with_every_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accuracy, "RESULTS", tmp_path)
    base = tmp_path / "accuracy" / "p" / "R27"
    for label, row, draws in [
        ("floors", "floor-noisy", (1, 2)),
        ("default", "lorein", (1, 2)),
        ("preset", "lorein", (1, 2)),
        ("probe", "lorein", (1,)),  # incomplete: left out
    ]:
        for d in draws:
            (base / label).mkdir(parents=True, exist_ok=True)
            (base / label / f"{row}-draw{d}.json").write_text(json.dumps(rec(row, d, 0.1)))
    args = argparse.Namespace(preset="p", R=27.0, draws=[1, 2], no_floors=True)
    assert list(accuracy.recorded(args)) == ["floor-noisy", "lorein", "lorein (preset)"]
