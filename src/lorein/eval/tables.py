"""Tables of map scores, shared by ``lorein eval`` (aligned text) and ``compare.md`` (Markdown).

A map's scores (:func:`~lorein.eval.evaluate.evaluate_maps`) hold its error under
:func:`error_key`, its SSIM under ``ssim`` and the same error over parts of the truth mask under
the keys of :data:`REGIONS`; :func:`number` writes each as a table cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

REGIONS: dict[str, str] = {"interior": "interior", "without_csf": "no CSF"}
"""Scores of a map's error over a part of the truth mask -> short column title: ``interior``,
the tissue interiors (:func:`~lorein.eval.metrics.interior_mask`), and ``without_csf``, the mask
without its CSF voxels (:func:`~lorein.eval.evaluate.without_csf_voxels`)."""


def error_key(name: str) -> str:
    """The score holding map ``name``'s error: ``rmse_hz`` (RMSE [Hz]) for B0, else ``nrmse``."""
    return "rmse_hz" if name == "B0" else "nrmse"


def number(value: float | None, digits: int, unit: str = "") -> str:
    """A table cell: ``value`` with ``digits`` decimals and ``unit``, or ``-`` when None."""
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lines of a Markdown table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def text_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[int]
) -> list[str]:
    """Lines of a plain-text table: columns ``widths`` characters wide and one space apart, the
    first left-aligned, the others right-aligned."""

    def line(cells: Sequence[str]) -> str:
        rest = zip(cells[1:], widths[1:], strict=True)
        return " ".join([cells[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in rest)])

    return [line(header), *(line(row) for row in rows)]


def map_table(scores: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The table of ``lorein eval``: per map its error, SSIM, the error of the constant map at
    the truth's mean (``constant_map``) and its errors over the :data:`REGIONS` it was scored on.

    Errors are NRMSE with 4 decimals, B0's RMSE in Hz with 2.

    Parameters
    ----------
    scores
        Map -> its scores (:func:`~lorein.eval.evaluate.evaluate_maps`) and ``constant_map``;
        not empty.
    """
    regions = [key for key in REGIONS if key in next(iter(scores.values()))]
    header = ["map", "error", "SSIM", "constant map", *(REGIONS[key] for key in regions)]
    rows = []
    for name, score in scores.items():
        digits, unit = (2, " Hz") if name == "B0" else (4, "")
        errors = [score[key] for key in (error_key(name), "constant_map", *regions)]
        error, level, *in_regions = (number(value, digits, unit) for value in errors)
        rows.append([name, error, number(score["ssim"], 3), level, *in_regions])
    return text_table(header, rows, [8, 12, 7, 13, *(12 for _ in regions)])
