"""``lorein import``: convert raw data (ISMRMRD or Siemens twix) into a problem file."""

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
        "convert raw data (ISMRMRD .h5 or Siemens .dat) into a problem file",
        "Read Cartesian multi-contrast raw data, 3D or 2D (one slice): an ISMRMRD file "
        "(kspace_encode_step_1/2 -> ky/kz; contrast, set, repetition, segment -> rows of the "
        "contrast table; TE per contrast, flip angle per set, TR from the XML header) or a "
        "Siemens twix file (counters as siemens_to_ismrmrd maps them; Pulseq acquisitions "
        "with --seq or echoes_per_excitation) and write a problem file in SI units. Sequence "
        "parameters the file lacks come from a TOML sidecar, or the [import] table of "
        "--config, with keys signal_model, flip_angle_deg, echo_time_ms, repetition_time_ms, "
        "prep_time_ms, segment (each one value, one per contrast row, or one per value of a "
        "counter), counters (which counter each list runs over) and echoes_per_excitation.",
        config_help("import", "; the table may also hold the --sidecar keys"),
    )
    imp.parser.add_argument(
        "raw", type=Path, help="raw data: ISMRMRD (.h5, HDF5) or Siemens twix (.dat)"
    )
    imp.parser.add_argument(
        "-o", "--output", type=Path, required=True, help="problem file to write (.h5)"
    )
    imp.parser.add_argument(
        "--signal-model",
        default=None,
        metavar="NAME",
        help="vfa_megre (variable-flip-angle multi-echo GRE), t2ir_gre (T2-prepared "
        "inversion-recovery GRE), megre (single-flip-angle multi-echo GRE) or another model of "
        "docs/SIGNAL_MODELS.md (a wrong name lists them); default: the sidecar's, then the raw "
        "file's",
    )
    imp.parser.add_argument(
        "--seq",
        type=Path,
        default=None,
        metavar="FILE.seq",
        help="Siemens files of Pulseq sequences: the .seq file they were acquired with (echo "
        "order, phase encoding, matrix, field of view, TE, TR, flip angle)",
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
    import h5py

    from lorein.data.ismrmrd_io import read_ismrmrd
    from lorein.data.problem import write_problem
    from lorein.data.twix_io import read_twix

    sidecar = dict(args.extra)
    origin = dict.fromkeys(sidecar, f"{args.config} [import]")
    if args.sidecar is not None:
        given = read_toml(args.sidecar, "sidecar file")
        sidecar.update(given)
        origin.update(dict.fromkeys(given, str(args.sidecar)))
    options = dict(
        signal_model=args.signal_model,
        sidecar=sidecar,
        sidecar_origin=origin,
        remove_oversampling=not args.keep_oversampling,
        noise_prewhitening=args.prewhitening,
    )
    attrs = {"imported_from": str(args.raw)}
    if args.raw.is_file() and not h5py.is_hdf5(args.raw):
        imported = read_twix(args.raw, seq=args.seq, **options)
        if args.seq is not None:
            attrs["pulseq_sequence"] = str(args.seq)
    elif args.seq is not None:
        raise ValueError(f"--seq: expected a Siemens raw file (.dat), found {args.raw} (HDF5)")
    else:
        imported = read_ismrmrd(args.raw, **options)
    problem = imported.problem
    write_problem(args.output, problem, attrs=attrs | imported.provenance())
    coils = f"{problem.n_coils} coil" + ("s" if problem.n_coils != 1 else "")
    print(
        f"wrote {args.output}: {problem.signal_model}, matrix {list(problem.matrix)}, "
        f"{coils}, {problem.n_contrasts} contrasts, R = {problem.acceleration:.2f}"
    )


def _sidecar_keys() -> dict[str, str]:
    """Sequence-parameter keys of an ``[import]`` table and of a ``--sidecar`` file."""
    from lorein.data.twix_io import TWIX_SIDECAR_KEYS

    return TWIX_SIDECAR_KEYS
