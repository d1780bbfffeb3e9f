"""``lorein recon``: reconstruct quantitative maps from a problem file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lorein.cli.common import Command, Subparsers, add_command, config_help
from lorein.settings import AtLeast


def add_parser(sub: Subparsers) -> Command:
    """Add the ``recon`` command: method, device, seed, iterations, checkpoints, outputs."""
    rec = add_command(
        sub,
        "recon",
        run,
        "reconstruct quantitative maps from a problem file",
        "Reconstruct the maps of the problem's signal model (vfa_megre: M0, T1, T2*, B0; "
        "t2ir_gre: also T2; megre: apparent M0, T2*, R2*, B0) and write OUT/maps.h5, "
        "OUT/nifti/*.nii.gz with JSON sidecars, and OUT/report.json. A checkpoint is kept in "
        "OUT/checkpoint.pt; --resume continues a stopped run.",
        config_help(
            "recon",
            "; the method's hyper-parameters come from its table, e.g. [lorein] (see 'lorein "
            "config show lorein'), or from keys outside any table, as in configs/*.toml",
        ),
    )
    rec.parser.add_argument("problem", type=Path, help="problem file (.h5)")
    rec.parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="output folder"
    )
    rec.option(
        "--method",
        default="lorein",
        help="(config) reconstruction method (default: lorein; a wrong name lists the others)",
    )
    rec.option("--device", default="cpu", help="(config) cpu, cuda or cuda:N (default: cpu)")
    rec.option(
        "--seed",
        type=int,
        default=0,
        at_least=AtLeast(0),
        help="(config) seed of all random initialisations (default: 0)",
    )
    rec.parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="number of optimisation steps (LoREIN and SUMMIT: epochs, one step each unless "
        "batching = 'planes'), overriding the method's iterations setting "
        "(LoREIN's and SUMMIT's coil warm-up and warm start still run: set coil_warmup and "
        "warm_start in the method's --config table to shorten them)",
    )
    rec.parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (refused if it belongs to another problem, method, "
        "configuration or seed; --iterations may be raised to extend a finished run)",
    )
    rec.option(
        "--keep-checkpoint",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) keep OUT/checkpoint.pt after the run finishes, so that '--resume "
        "--iterations N' can extend it (default: off; an interrupted run always keeps it)",
    )
    rec.option(
        "--quiet",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) no progress bar (default: off)",
    )
    rec.parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the problem's signal model, e.g. estimate_inversion=true (t2ir_gre: "
        "estimate the inversion efficiency B as a map); repeatable, over the [recon] table's "
        "model_options (docs/SIGNAL_MODELS.md lists each model's options)",
    )
    rec.extra_keys = _model_options_key
    rec.option(
        "--save-images",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) also write the weighted images as OUT/nifti/weighted_mag.nii.gz and "
        "weighted_phase.nii.gz (4D, one volume per contrast; default: off)",
    )
    return rec


def _model_options_key() -> dict[str, str]:
    return {
        "model_options": "options of the problem's signal model, e.g. { estimate_inversion = "
        "true } for t2ir_gre (docs/SIGNAL_MODELS.md)"
    }


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The signal-model options of the ``[recon]`` table's ``model_options``, then of each
    ``--model-option NAME=VALUE`` (values are read as TOML by the run)."""
    options = args.extra.get("model_options", {})
    if not isinstance(options, dict):
        raise ValueError(
            f"{args.config} [recon] model_options = {options!r}: expected a table, e.g. "
            "{ estimate_inversion = true }"
        )
    options = dict(options)
    for item in args.model_option:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--model-option {item}: expected NAME=VALUE")
        options[name.strip()] = value.strip()
    return options


def run(args: argparse.Namespace) -> None:
    """Run the method on the problem into the output folder and print a summary line."""
    from lorein.methods.plausibility import SUSPECT_STATUS
    from lorein.run import run as run_method

    overrides = {} if args.iterations is None else {"iterations": args.iterations}
    report = run_method(
        args.problem,
        args.output,
        method_name=args.method,
        config_path=args.config,
        overrides=overrides,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        progress=not args.quiet,
        save_images=args.save_images,
        keep_checkpoint=args.keep_checkpoint,
        model_options=model_options(args),
    )
    print(
        f"wrote {args.output}: {report['method']}, {report['iterations']} iterations, "
        f"{report['wall_seconds']:.1f} s, peak {report['peak_memory_gib']:.2f} GiB"
    )
    if args.save_images and not report["saved_images"]:
        print(f"lorein: note: {report['method']} returns no weighted images", file=sys.stderr)
    if report["status"] == "suspect":
        reasons = "; ".join(report["suspect_reasons"])
        print(
            f"lorein: error: {args.output}: suspect result ({reasons}); written, marked in "
            "report.json; check the data's scaling and the settings (lr)",
            file=sys.stderr,
        )
        raise SystemExit(SUSPECT_STATUS)
