"""Side-by-side maps of runs kept by ``benchmarks/accuracy.py --keep``: truth, then each run.

Usage::

    python benchmarks/accuracy_figure.py OUT.png --runs floors/floor-noisy preset/lorein \
        default/lorein [--preset sim1-small] [--R 27] [--draw 1] [--maps T2star M0] [--slice 4]

Each run is ``LABEL/ROW`` as kept under ``WORKDIR/maps/PRESET/R*/``; a title may follow after
``=`` (``preset/lorein=LoREIN, CG start``). Per map one row of panels, every run on the truth's
window (M0 scaled to the truth by least squares over the pure-tissue voxels, as the metric does),
and one row of errors against the truth inside the truth mask. Pure-tissue NRMSE of each run in
its panel's title.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import problem_file  # noqa: E402
from records import ROOT  # noqa: E402

from lorein.data.problem import read_truth  # noqa: E402
from lorein.eval.evaluate import pure_voxels  # noqa: E402
from lorein.eval.metrics import least_squares_scale, map_error  # noqa: E402

WINDOWS = {"T1": (0.0, 2.0), "T2": (0.0, 0.2), "T2star": (0.0, 0.12), "B0": (-30.0, 30.0)}
"""Display windows [s, Hz]; M0 from 0 to the truth's maximum."""

UNITS = {"T1": "s", "T2": "s", "T2star": "s", "B0": "Hz", "M0": "a.u."}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--runs", nargs="+", required=True, metavar="LABEL/ROW[=TITLE]")
    parser.add_argument("--preset", default="sim1-small")
    parser.add_argument("--R", type=float, default=27.0)
    parser.add_argument("--draw", type=int, default=1)
    parser.add_argument("--maps", nargs="+", default=["T1", "T2star", "M0"])
    parser.add_argument("--slice", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work" / "accuracy")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    truth = read_truth(problem_file(args.workdir, args.preset, args.draw, args.R, None))
    pure, mask, z = pure_voxels(truth), truth.mask.bool(), args.slice
    runs = [run.partition("=") for run in args.runs]
    kept = args.workdir / "maps" / args.preset / f"R{args.R:g}"
    maps = {path: torch.load(kept / f"{path}-draw{args.draw}.pt") for path, _, _ in runs}
    columns = len(runs) + 1
    fig, axes = plt.subplots(
        2 * len(args.maps), columns, figsize=(2.2 * columns, 4.4 * len(args.maps)), squeeze=False
    )
    for i, name in enumerate(args.maps):
        ref = getattr(truth, name).float()
        lo, hi = WINDOWS.get(name, (0.0, float(ref[mask].max())))
        span = 0.25 * (hi - lo) if name != "B0" else 5.0
        top, bottom = axes[2 * i], axes[2 * i + 1]
        top[0].imshow(ref[z] * mask[z], vmin=lo, vmax=hi, cmap="gray")
        top[0].set_title(f"truth {name} [{UNITS[name]}]", fontsize=8)
        for j, (path, _, title) in enumerate(runs, start=1):
            x = maps[path][name].float()
            if name == "M0":
                x = x * least_squares_scale(x, ref, pure)
            error = map_error(name, x, ref, pure)
            top[j].imshow(x[z] * mask[z], vmin=lo, vmax=hi, cmap="gray")
            top[j].set_title(f"{title or path}\npure {error:.3f}", fontsize=8)
            bottom[j].imshow((x - ref)[z] * mask[z], vmin=-span, vmax=span, cmap="RdBu_r")
            bottom[j].set_title(f"error, ±{span:g} {UNITS[name]}", fontsize=8)
        for ax in (*top, *bottom):
            ax.set_axis_off()
    fig.suptitle(f"{args.preset}, R = {args.R:g}, draw {args.draw}, slice z = {z}", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    return 0


if __name__ == "__main__":
    sys.exit(main())
