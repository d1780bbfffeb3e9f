"""Command-line interface: ``lorein simulate``, ``lorein info``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lorein import __version__


def _cmd_simulate(args: argparse.Namespace) -> None:
    from lorein.data.problem import write_problem
    from lorein.sim.presets import get_preset
    from lorein.sim.simulate import simulate

    preset = get_preset(args.preset)
    sim = simulate(preset, args.R, seed=args.seed, snr=args.snr, pattern=args.pattern)
    attrs = {
        "preset": preset.name,
        "seed": args.seed,
        "snr": preset.snr if args.snr is None else args.snr,
        "noise_std": sim.noise_std,
        "requested_R": args.R,
        "lorein_version": __version__,
    }
    write_problem(args.output, sim.problem, truth=sim.truth, attrs=attrs)
    print(
        f"wrote {args.output}: {preset.name}, R = {sim.problem.acceleration:.2f} "
        f"(requested {args.R:g}), {sim.problem.n_lines} lines, {sim.seconds:.1f} s"
    )


def _format_value(value: object) -> str:
    """Readable value for ``lorein info``: 4 significant digits, lists inline."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items())
    return str(value)


DISPLAY_UNITS = {
    "flip_angle": (180 / 3.141592653589793, "deg"),
    "echo_time": (1e3, "ms"),
    "repetition_time": (1e3, "ms"),
    "prep_time": (1e3, "ms"),
}
"""Contrast columns shown in CLI units: (factor from SI, unit)."""


def _cmd_info(args: argparse.Namespace) -> None:
    from lorein.data.problem import problem_summary

    summary = problem_summary(args.problem)
    ranges = summary.pop("contrast_ranges", {})
    for name, (lo, hi) in ranges.items():
        factor, unit = DISPLAY_UNITS.get(name, (1.0, ""))
        summary[f"{name} range"] = f"{lo * factor:.4g} - {hi * factor:.4g} {unit}".rstrip()
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {_format_value(value)}")


def _read_sidecar(path: Path | None) -> dict | None:
    import tomllib

    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None


def _cmd_import(args: argparse.Namespace) -> None:
    from lorein.data.ismrmrd_io import import_ismrmrd
    from lorein.data.problem import write_problem

    problem = import_ismrmrd(
        args.raw,
        signal_model=args.signal_model,
        sidecar=_read_sidecar(args.sidecar),
        remove_oversampling=not args.keep_oversampling,
        noise_prewhitening=not args.no_prewhitening,
    )
    write_problem(args.output, problem, attrs={"imported_from": str(args.raw)})
    print(
        f"wrote {args.output}: {problem.signal_model}, matrix {list(problem.matrix)}, "
        f"{problem.n_coils} coils, {problem.n_contrasts} contrasts, R = {problem.acceleration:.2f}"
    )


def _cmd_export(args: argparse.Namespace) -> None:
    from lorein.data.ismrmrd_io import export_ismrmrd
    from lorein.data.problem import read_problem, read_truth

    problem = read_problem(args.problem)
    truth = read_truth(args.problem) if args.with_truth else None
    calibration = tuple(args.calibration) if args.calibration else None
    export_ismrmrd(problem, args.output, truth=truth, calibration=calibration)
    print(f"wrote {args.output}: {problem.n_lines} acquisitions")


def _cmd_recon(args: argparse.Namespace) -> None:
    from lorein.recon.run import run

    overrides = {} if args.iterations is None else {"iterations": args.iterations}
    report = run(
        args.problem,
        args.output,
        method_name=args.method,
        config_path=args.config,
        overrides=overrides,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        progress=not args.quiet,
    )
    print(
        f"wrote {args.output}: {report['method']}, {report['iterations']} iterations, "
        f"{report['wall_seconds']:.1f} s, peak {report['peak_memory_gib']:.2f} GiB"
    )


def _cmd_eval(args: argparse.Namespace) -> None:
    import json

    from lorein.data.problem import read_truth
    from lorein.eval.evaluate import evaluate_maps, read_maps
    from lorein.eval.figures import comparison_figure

    maps = read_maps(args.output)
    truth = read_truth(args.truth)
    scores = evaluate_maps(maps, truth)
    (args.output / "eval.json").write_text(json.dumps(scores, indent=2) + "\n")
    truth_maps = {k: v for k, v in truth.maps().items() if k in maps}
    label = args.label or args.output.name
    figure = args.output / "figure.png"
    comparison_figure(figure, truth_maps, truth.mask, {label: maps}, {label: scores})
    print(f"{'map':<8} {'error':>12} {'SSIM':>7}")
    for name, score in scores.items():
        error = f"{score['rmse_hz']:.2f} Hz" if "rmse_hz" in score else f"{score['nrmse']:.4f}"
        print(f"{name:<8} {error:>12} {score['ssim']:>7.3f}")
    print(f"wrote {args.output / 'eval.json'} and {figure}")


def _cmd_config(args: argparse.Namespace) -> None:
    from lorein.recon.run import config_toml, get_method, load_config

    method = get_method(args.method)
    print(f"# {method.name}: {method.description}")
    print(config_toml(load_config(method, None)), end="")


def build_parser() -> argparse.ArgumentParser:
    """The ``lorein`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lorein",
        description="Quantitative MRI maps from undersampled multi-contrast k-space (LoREIN).",
    )
    parser.add_argument("--version", action="version", version=f"lorein {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="simulate a problem file from a preset",
        description="Simulate undersampled multi-coil k-space of a brain phantom and write a "
        "problem file (acquired lines only, with the ground truth under truth/).",
    )
    sim.add_argument("--preset", required=True, help="sim1, sim2, sim1-small or sim2-small")
    sim.add_argument("--R", type=float, required=True, help="acceleration factor (paper eq. 19)")
    sim.add_argument("--seed", type=int, default=0, help="seed of anatomy, sampling and noise")
    sim.add_argument(
        "--snr", type=float, default=None, help="signal-to-noise ratio (default: preset)"
    )
    sim.add_argument(
        "--pattern", choices=("vd-random", "poisson"), default="vd-random", help="ky-kz pattern"
    )
    sim.add_argument("-o", "--output", type=Path, required=True, help="problem file to write (.h5)")
    sim.set_defaults(func=_cmd_simulate)

    info = sub.add_parser("info", help="summarise a problem file")
    info.add_argument("problem", type=Path, help="problem file (.h5)")
    info.set_defaults(func=_cmd_info)

    imp = sub.add_parser(
        "import",
        help="convert an ISMRMRD raw-data file into a problem file",
        description="Read a Cartesian 3D multi-contrast ISMRMRD file (kspace_encode_step_1/2 -> "
        "ky/kz; contrast, set, repetition, segment -> contrast rows; TR/TE/flip angle from the "
        "header) and write a problem file. Sequence parameters missing from the header come from "
        "a TOML sidecar with keys signal_model, flip_angle_deg, echo_time_ms, "
        "repetition_time_ms, prep_time_ms, segment (a value or one per contrast).",
    )
    imp.add_argument("raw", type=Path, help="ISMRMRD HDF5 file")
    imp.add_argument("-o", "--output", type=Path, required=True, help="problem file to write")
    imp.add_argument("--signal-model", choices=("vfa_megre", "t2ir_gre"), default=None)
    imp.add_argument("--sidecar", type=Path, default=None, help="TOML file of sequence parameters")
    imp.add_argument(
        "--keep-oversampling", action="store_true", help="keep the readout oversampling"
    )
    imp.add_argument(
        "--no-prewhitening", action="store_true", help="do not whiten with the noise scans"
    )
    imp.set_defaults(func=_cmd_import)

    exp = sub.add_parser(
        "export-ismrmrd",
        help="write a problem file as ISMRMRD raw data",
        description="Write a problem file's acquired lines as an ISMRMRD dataset, for BART, "
        "Gadgetron or a round trip through 'lorein import'.",
    )
    exp.add_argument("problem", type=Path, help="problem file (.h5)")
    exp.add_argument("-o", "--output", type=Path, required=True, help="ISMRMRD file to write")
    exp.add_argument("--with-truth", action="store_true", help="also write truth/ as images")
    exp.add_argument(
        "--calibration",
        type=int,
        nargs=2,
        metavar=("CCY", "CCZ"),
        help="flag lines in this central ky x kz region as calibration",
    )
    exp.set_defaults(func=_cmd_export)

    rec = sub.add_parser(
        "recon",
        help="reconstruct quantitative maps from a problem file",
        description="Reconstruct M0, T1, T2 (t2ir_gre), T2* and B0 maps and write OUT/maps.h5, "
        "OUT/nifti/*.nii.gz with JSON sidecars and OUT/report.json. A checkpoint is kept in "
        "OUT/checkpoint.pt; --resume continues a stopped run.",
    )
    rec.add_argument("problem", type=Path, help="problem file (.h5)")
    rec.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    rec.add_argument("--method", default="lorein", help="reconstruction method (default lorein)")
    rec.add_argument("--config", type=Path, default=None, help="TOML file of hyper-parameters")
    rec.add_argument("--device", default="cpu", help="cpu or cuda")
    rec.add_argument("--seed", type=int, default=0, help="seed of all random initialisations")
    rec.add_argument("--iterations", type=int, default=None, help="override the iteration count")
    rec.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_cmd_recon)

    ev = sub.add_parser(
        "eval",
        help="score a reconstruction against a problem file's ground truth",
        description="NRMSE inside the truth mask with T1, T2, T2* capped to 0-3.5 s, 0-0.2 s, "
        "0-0.1 s (paper), M0 after a least-squares scale, B0 RMSE in Hz, and SSIM; writes "
        "OUT/eval.json and OUT/figure.png.",
    )
    ev.add_argument("output", type=Path, help="output folder of 'lorein recon'")
    ev.add_argument("--truth", type=Path, required=True, help="problem file with truth/")
    ev.add_argument("--label", default=None, help="row label in the figure")
    ev.set_defaults(func=_cmd_eval)

    cfg = sub.add_parser(
        "config",
        help="print a method's default hyper-parameters as TOML",
        description="'lorein config show METHOD' prints the defaults; save them to a file, edit, "
        "and pass it to 'lorein recon --config'.",
    )
    cfg.add_argument("action", choices=("show",))
    cfg.add_argument("method", help="method name, e.g. lorein")
    cfg.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors are one line on stderr, exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, KeyError, MemoryError) as err:
        message = str(err) or type(err).__name__
        print(f"lorein: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
