"""``lorein eval``: score reconstructed maps against a simulation's ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lorein.cli.common import Command, Subparsers, add_command, config_help

if TYPE_CHECKING:
    from lorein.data.problem import Truth


def add_parser(sub: Subparsers) -> Command:
    """Add the ``eval`` command: an output folder, the truth, the maps to score."""
    ev = add_command(
        sub,
        "eval",
        run,
        "score reconstructed maps against a simulation's ground truth",
        "Score OUT/maps.h5 against the truth/ of a problem file: NRMSE with T1, T2, T2* capped "
        "to 0-3.5 s, 0-0.2 s, 0-0.1 s (as in the paper), M0 after a least-squares scale, B0 as "
        "RMSE in Hz; first in the pure-tissue voxels (purity >= 0.9, when the truth records "
        "purity), then inside the whole truth mask (the paper's protocol), SSIM; with tissue "
        "labels in the truth, the same errors in the tissue interiors and in the mask without its "
        "CSF voxels. Writes OUT/eval.json and OUT/figure.png (truth, reconstruction and error "
        "maps).",
        config_help("eval"),
    )
    ev.parser.add_argument(
        "output", type=Path, metavar="OUT", help="output folder of 'lorein recon'"
    )
    ev.parser.add_argument(
        "--truth", type=Path, required=True, help="problem file with truth/ (.h5)"
    )
    ev.option(
        "--label", default=None, help="(config) row label in the figure (default: OUT's name)"
    )
    ev.option(
        "--maps",
        nargs="+",
        default=None,
        metavar="MAP",
        help="(config) maps to score among M0, T1, T2, T2star, B0 (default: all that exist)",
    )
    return ev


def run(args: argparse.Namespace) -> None:
    """Score the maps, write ``OUT/eval.json`` and ``OUT/figure.png`` (each replaced whole, never
    left half-written), print the score table."""
    import json

    from lorein.data.output import write_text_atomic
    from lorein.data.problem import read_truth
    from lorein.eval.evaluate import EVALUATED, constant_map_errors, evaluate_maps, read_maps
    from lorein.eval.figures import comparison_figure
    from lorein.eval.tables import map_table

    maps = read_maps(args.output)
    if args.maps is not None:
        unknown = sorted(set(args.maps) - set(EVALUATED))
        if unknown:
            raise ValueError(f"--maps: unknown {', '.join(unknown)}; valid: {', '.join(EVALUATED)}")
        maps = {name: value for name, value in maps.items() if name in args.maps}
    truth = read_truth(args.truth)
    grid = tuple(truth.mask.shape)
    for name, value in maps.items():
        if tuple(value.shape) != grid:
            raise ValueError(
                f"{args.output / 'maps.h5'}: /{name}: shape {list(value.shape)} does not match "
                f"the truth's grid {list(grid)} in {args.truth}; expected the problem's own truth"
            )
    scores = evaluate_maps(maps, truth)
    if not scores:
        raise ValueError(f"{args.output}: no map of maps.h5 has a truth in {args.truth} to score")
    levels = constant_map_errors(truth)  # the oracle level: each map at its truth's mean
    for name, score in scores.items():
        score["constant_map"] = levels[name]
    write_text_atomic(args.output / "eval.json", json.dumps(scores, indent=2) + "\n")
    truth_maps = {k: v for k, v in truth.maps().items() if k in maps}
    label = args.label or args.output.name
    figure = args.output / "figure.png"
    comparison_figure(figure, truth_maps, truth.mask, {label: maps}, {label: scores})
    print("\n".join([*map_table(scores), *_notes(truth)]))
    print(f"wrote {args.output / 'eval.json'} and {figure}")


def _notes(truth: Truth) -> list[str]:
    """What the table's columns hold, with the regions' voxel counts."""
    from lorein.eval.evaluate import interior_voxels, pure_voxels, without_csf_voxels
    from lorein.eval.metrics import PURE_THRESHOLD

    notes = []
    pure = pure_voxels(truth)
    if pure is not None:
        notes.append(
            f"pure: the errors in the {int(pure.sum())} voxels of the mask whose fine-grid samples "
            f"are at least {PURE_THRESHOLD:.0%} one tissue (purity; no partial-volume floor)"
        )
    notes += [
        f"paper protocol: the errors in the {int(truth.mask.bool().sum())} voxels of the truth "
        "mask, as the paper reports them",
        "constant map: the error of each map set to its truth's mean (no anatomy)",
    ]
    interior = interior_voxels(truth)
    if interior is not None:
        notes.append(
            f"interior: the same errors in the {int(interior.sum())} voxels whose "
            f"{26 if truth.mask.shape[0] > 1 else 8} neighbours "
            "share their tissue label (no partial-volume floor)"
        )
    tissue = without_csf_voxels(truth)
    if tissue is not None:
        notes.append(
            f"no CSF: the same errors in the {int(tissue.sum())} voxels of the mask not labelled "
            "CSF (CSF's capped T1 dominates the mask's T1 error)"
        )
    return notes
