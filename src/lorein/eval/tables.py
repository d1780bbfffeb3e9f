"""Tables of map scores, shared by ``lorein eval`` (aligned text) and ``compare.md`` (Markdown).

A map's scores (:func:`~lorein.eval.evaluate.evaluate_maps`) hold its error under
:func:`error_key` (the paper's protocol: the whole truth mask), its SSIM under ``ssim`` and the
same error over parts of the truth mask under the keys of :data:`REGIONS`; :func:`number` writes
each as a table cell. The :data:`HEADLINE` region leads every table where the truth defines it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

REGIONS: dict[str, str] = {"pure": "pure", "interior": "interior", "without_csf": "no CSF"}
"""Scores of a map's error over a part of the truth mask -> short column title: ``pure``, the
voxels of at least 90 % one tissue (:func:`~lorein.eval.metrics.pure_mask`), ``interior``, the
tissue interiors (:func:`~lorein.eval.metrics.interior_mask`), and ``without_csf``, the mask
without its CSF voxels (:func:`~lorein.eval.evaluate.without_csf_voxels`)."""

HEADLINE = "pure"
"""The region of :data:`REGIONS` shown first, before the paper protocol's whole-mask error: its
voxels hold one tissue, so its error is free of the phantom's partial-volume floor."""

PAPER_PROTOCOL = "paper protocol"
"""Title of the whole-mask error (:func:`error_key`), the paper's protocol."""


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
    """The table of ``lorein eval``: per map its error over the :data:`HEADLINE` region (when
    scored), its error in the whole mask (:data:`PAPER_PROTOCOL`), SSIM, the error of the
    constant map at the truth's mean (``constant_map``) and its errors over the other
    :data:`REGIONS` it was scored on.

    Errors are NRMSE with 4 decimals, B0's RMSE in Hz with 2.

    Parameters
    ----------
    scores
        Map -> its scores (:func:`~lorein.eval.evaluate.evaluate_maps`) and ``constant_map``;
        not empty.
    """
    scored = [key for key in REGIONS if key in next(iter(scores.values()))]
    lead = [key for key in scored if key == HEADLINE]
    rest = [key for key in scored if key != HEADLINE]
    header = [
        "map",
        *(REGIONS[key] for key in lead),
        PAPER_PROTOCOL,
        "SSIM",
        "constant map",
        *(REGIONS[key] for key in rest),
    ]
    rows = []
    for name, score in scores.items():
        digits, unit = (2, " Hz") if name == "B0" else (4, "")
        error = error_key(name)
        cell = {key: number(score[key], digits, unit) for key in (error, "constant_map", *scored)}
        rows.append(
            [
                name,
                *(cell[key] for key in lead),
                cell[error],
                number(score["ssim"], 3),
                cell["constant_map"],
                *(cell[key] for key in rest),
            ]
        )
    widths = [8, *(12 for _ in lead), 15, 7, 13, *(12 for _ in rest)]
    return text_table(header, rows, widths)
