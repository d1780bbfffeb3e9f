"""Marked sections of docs/BENCHMARKS.md and README.md written by benchmarks/report.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from paper_table import readme_tables  # noqa: E402
from report import HEADER, update_section  # noqa: E402


def test_section_is_replaced_in_place_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    around = "# title\n\nbefore\n<!-- begin t -->\n{}\n<!-- end t -->\nafter\n"
    path.write_text(around.format("old"))
    update_section("t", "new table\n", path)
    assert path.read_text() == around.format("new table")
    update_section("u", "other", path)
    assert path.read_text().endswith("after\n\n<!-- begin u -->\nother\n<!-- end u -->\n")


def test_missing_file_starts_with_the_header(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "BENCHMARKS.md"
    update_section("t", "body", path)
    assert path.read_text() == f"{HEADER}\n<!-- begin t -->\nbody\n<!-- end t -->\n"


def test_readme_tables_join_tables_with_a_blank_line() -> None:
    assert readme_tables([["### a", "| x |"], ["### b"]]) == "### a\n| x |\n\n### b"
