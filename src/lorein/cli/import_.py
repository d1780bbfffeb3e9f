"""``lorein import``: convert ISMRMRD raw data into a problem file."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorein.cli.common import Command, Subparsers, add_command, config_help
from lorein.config import read_toml


def add_parser(sub: Subparsers) -> Command:
    """Add the ``import`` command; its table may also hold the keys of a ``--sidecar`` file."""
    imp = add_command(
        sub,
        "import",
        run,
        "convert ISMRMRD raw data into a problem file",
        "Read Cartesian 3D multi-contrast ISMRMRD raw data (kspace_encode_step_1/2 -> ky/kz; "
        "contrast, set, repetition, segment -> rows of the contrast table; TR, TE [ms] and flip "
        "angle [deg] from the XML header) and write a problem file in SI units. Sequence "
        "parameters the header lacks come from a TOML sidecar, or the [import] table of "
        "--config, with keys signal_model, flip_angle_deg, echo_time_ms, repetition_time_ms, "
        "prep_time_ms and segment, each one value or one per contrast.",
        config_help("import", "; the table may also hold the --sidecar keys"),
    )
    imp.parser.add_argument("raw", type=Path, help="ISMRMRD raw-data file (.h5)")
    imp.parser.add_argument(
        "-o", "--output", type=Path, required=True, help="problem file to write (.h5)"
    )
    imp.parser.add_argument(
        "--signal-model",
        choices=("vfa_megre", "t2ir_gre"),
        default=None,
        help="vfa_megre (variable-flip-angle multi-echo GRE) or t2ir_gre (T2-prepared "
        "inversion-recovery GRE); default: the sidecar's, then the raw file's",
    )
    imp.parser.add_argument(
        "--sidecar",
        type=Path,
        default=None,
        metavar="FILE.toml",
        help="sequence parameters the raw file lacks (keys above; times in ms, angles in deg); "
        "overrides the same keys of the config's [import] table",
    )
    imp.option(
        "--keep-oversampling",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="(config) keep the readout oversampling (default: crop to the reconstructed field "
        "of view)",
    )
    imp.option(
        "--prewhitening",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(config) whiten the coils with the file's noise scans, if any (default: on)",
    )
    imp.extra_keys = _sidecar_keys
    return imp


def run(args: argparse.Namespace) -> None:
    """Import the raw data, sequence parameters from the config table and the sidecar."""
    from lorein.data.ismrmrd_io import import_ismrmrd
    from lorein.data.problem import write_problem

    sidecar = dict(args.extra)
    origin = dict.fromkeys(sidecar, f"{args.config} [import]")
    if args.sidecar is not None:
        given = read_toml(args.sidecar, "sidecar file")
        sidecar.update(given)
        origin.update(dict.fromkeys(given, str(args.sidecar)))
    problem = import_ismrmrd(
        args.raw,
        signal_model=args.signal_model,
        sidecar=sidecar,
        sidecar_origin=origin,
        remove_oversampling=not args.keep_oversampling,
        noise_prewhitening=args.prewhitening,
    )
    write_problem(args.output, problem, attrs={"imported_from": str(args.raw)})
    print(
        f"wrote {args.output}: {problem.signal_model}, matrix {list(problem.matrix)}, "
        f"{problem.n_coils} coils, {problem.n_contrasts} contrasts, R = {problem.acceleration:.2f}"
    )


def _sidecar_keys() -> dict[str, str]:
    """Sequence-parameter keys of an ``[import]`` table and of a ``--sidecar`` file."""
    from lorein.data.ismrmrd_io import SIDECAR_KEYS

    return SIDECAR_KEYS
