"""Tables of map scores: what ``compare.md`` and ``lorein eval`` show of each map.

A map's scores (:func:`~lorein.eval.evaluate.evaluate_maps`) hold its error under
:func:`error_key`, its SSIM under ``ssim`` and the same error over parts of the truth mask under
the keys of :data:`REGIONS`; :func:`number` writes each as a table cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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

