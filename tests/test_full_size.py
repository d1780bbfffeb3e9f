"""Rows of the paper-sized table written by benchmarks/full_size.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from full_size import COLUMNS, _rows, row  # noqa: E402

KEY = ("sim1", "27", "lorein", "cpu", "300")


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_row_has_one_cell_per_column_with_the_errors_without_csf() -> None:
    scores = {
        "T1": {"nrmse": 0.3456, "without_csf": 0.2712},
        "T2star": {"nrmse": 0.3, "without_csf": 0.25},
        "B0": {"rmse_hz": 2.0},
    }
    result = {"status": "ok", "scores": scores, "wall_seconds": 100.0, "peak_memory_gib": 1.5}
    report = {"warm_up_seconds": 10.0, "seconds_per_step": 0.3}
    line = cells(row(KEY, result, report, 300, "2026-11-27"))
    assert len(line) == len(COLUMNS)
    by_name = dict(zip(COLUMNS, line, strict=True))
    assert by_name["T1"] == "0.346"
    assert (by_name["T1 no CSF"], by_name["T2* no CSF"]) == ("0.271", "0.250")
    assert by_name["T2"] == "-"
    assert by_name["configured steps: est. [s]"] == "300: 100"


def test_rows_written_before_the_no_csf_columns_get_dashes_there() -> None:
    old = "| " + " | ".join([*KEY, *(["x"] * (len(COLUMNS) - len(KEY) - 3)), "2026-11-01"]) + " |"
    table = f"| preset | R |\n|---|---|\n{old}\nnot a row\n"
    rows = _rows(table)
    assert list(rows) == [KEY]
    line = cells(rows[KEY])
    assert len(line) == len(COLUMNS)
    assert line[-3:] == ["-", "-", "2026-11-01"]
    assert _rows(rows[KEY]) == rows  # a row already of the current width is kept as it is
