"""``lorein compare``: run several methods on one simulated problem and compare them."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorein.cli.common import Command, Subparsers, add_command, config_help, require
from lorein.settings import AtLeast


def add_parser(sub: Subparsers) -> Command:
    """Add the ``compare`` command: methods, device, seed, time limit, reuse of finished runs."""
    cmp = add_command(
        sub,
        "compare",
        run,
        "run several methods on one simulated problem and compare them side by side",
        "Run each method ('lorein recon' in its own process, so one failure does not stop the "
        "others and peak memory is per method), score each against the problem's truth/ "
        "(capped NRMSE, SSIM, the same errors in the tissue interiors and without CSF, per-tissue "
        "mean and bias for WM, GM, deep GM and CSF), and write "
        "OUT/compare.json, OUT/compare.md (tables) and OUT/compare.png (truth row, then maps "
        "and error maps per method, as the paper's Figs. 4-5). The same --config file is passed "
        "to every method, each reading its own [METHOD] table.",
        config_help("compare"),
    )
    cmp.parser.add_argument("problem", type=Path, help="problem file with truth/ (.h5)")
    cmp.parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="output folder"
    )
    cmp.option(
        "--methods",
        type=lambda text: [m for m in text.split(",") if m],
        default=None,
        help="(config) comma-separated methods, e.g. lorein,summit,lrt,fit",
    )
    cmp.option("--device", default="cpu", help="(config) cpu, cuda or cuda:N (default: cpu)")
    cmp.option(
        "--seed",
        type=int,
        default=0,
        at_least=AtLeast(0),
        help="(config) seed of every method (default: 0)",
    )
    cmp.option(
        "--timeout-s",
        type=float,
        default=None,
        help="(config) wall-clock limit per method [s]; a method past it counts as failed",
    )
    cmp.option(
        "--quiet",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) no progress bars (default: off)",
    )
    cmp.option(
        "--reuse",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) score methods whose OUT/METHOD folder holds a finished run without "
        "running them again (resume a comparison; delete a folder to rerun that method)",
    )
    return cmp


def run(args: argparse.Namespace) -> None:
    """Compare the methods into the output folder and print ``compare.md``."""
    from lorein.eval.compare import compare

    require(args, "methods")
    result = compare(
        args.problem,
        args.methods,
        args.output,
        config=args.config,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
        timeout_s=args.timeout_s,
        reuse=args.reuse,
    )
    print((args.output / "compare.md").read_text(), end="")
    failed = [m for m, r in result["methods"].items() if r["status"] != "ok"]
    note = f" ({len(failed)} failed: {', '.join(failed)})" if failed else ""
    print(f"wrote {args.output}/compare.json, compare.md, compare.png{note}")
