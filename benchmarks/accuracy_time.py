"""Pure-tissue error against wall time, one point per method and settings, from committed records.

Usage::

    python benchmarks/accuracy_time.py [--preset sim1-small] [--R 27] [--draws 3 4 5]
        [--maps T1 T2star] [--out docs/figures/accuracy-time-sim1-small-R27.png]

Every row of ``benchmarks/accuracy.py``'s table (each method and label recorded for all the draws)
is a point at its mean wall time and mean pure-tissue error, with the standard deviation over the
draws as error bars; the floors and the best constant map are horizontal lines. Nothing is run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import CONSTANT, recorded, score  # noqa: E402
from records import ROOT  # noqa: E402

LINES = {CONSTANT: ":", "floor-noisy": "--", "floor-noiseless": "-."}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sim1-small")
    parser.add_argument("--R", type=float, default=27.0)
    parser.add_argument("--draws", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--maps", nargs="+", default=["T1", "T2star"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.no_floors = False
    args.workdir = ROOT / "benchmarks" / "work" / "accuracy"
    args.rerun = False
    args.label = "default"
    if args.out is None:
        name = f"accuracy-time-{args.preset}-R{args.R:g}.png"
        args.out = ROOT / "docs" / "figures" / name
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = recorded(args)
    fig, axes = plt.subplots(1, len(args.maps), figsize=(5.5 * len(args.maps), 4.2), squeeze=False)
    for ax, name in zip(axes[0], args.maps, strict=True):
        for row, records in rows.items():
            values = [v for r in records if (v := score(r, name)) is not None]
            if not values:
                continue
            mean = statistics.mean(values)
            if row in LINES:
                ax.axhline(mean, color="grey", linestyle=LINES[row], label=row)
                continue
            seconds = [r["seconds"] for r in records]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.errorbar(statistics.mean(seconds), mean, yerr=sd, fmt="o", capsize=3, label=row)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("wall time [s], 2-core CPU")
        ax.set_ylabel(f"{name} pure-tissue NRMSE")
        ax.set_title(f"{args.preset}, R = {args.R:g}, draws {', '.join(map(str, args.draws))}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
