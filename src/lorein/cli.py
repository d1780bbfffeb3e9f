"""Command-line interface ``lorein``: simulate, info, import, export-ismrmrd, recon, eval, config.

Every command takes ``--config FILE.toml``; the command's table in that file sets its options, and
flags on the command line override the file (:mod:`lorein.config`). Every error is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from lorein import __version__
from lorein.config import check_keys, read_toml, setting_value, table, toml_table


def _require(args: argparse.Namespace, *keys: str) -> None:
    """A one-line error naming the options neither the command line nor the config gave."""
    missing = [key for key in keys if getattr(args, key) is None]
    if missing:
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in missing)
        raise ValueError(
            f"missing {flags} (give it on the command line, or {', '.join(missing)} in the "
            f"[{args.command}] table of --config)"
        )


def _cmd_simulate(args: argparse.Namespace) -> None:
    from lorein.data.problem import write_problem
    from lorein.device import resolve_device
    from lorein.sim.presets import get_preset
    from lorein.sim.simulate import simulate

    _require(args, "preset", "R")
    preset = get_preset(args.preset)
    device = resolve_device(args.device)
    sim = simulate(
        preset, args.R, seed=args.seed, snr=args.snr, pattern=args.pattern, device=device
    )
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
    summary["empty_contrasts"] = _index_ranges(summary["empty_contrasts"], summary["n_contrasts"])
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {_format_value(value)}")


def _index_ranges(indices: list[int], total: int, shown: int = 8) -> str:
    """``"428 of 1280: 4-7, 16-19, ..."``: a count and the first runs of sorted indices."""
    if not indices:
        return "none"
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:shown])
    more = ", ..." if len(runs) > shown else ""
    return f"{len(indices)} of {total}: {text}{more}"


def _sidecar_keys() -> dict[str, str]:
    """Sequence-parameter keys of an ``[import]`` table and of a ``--sidecar`` file."""
    from lorein.data.ismrmrd_io import SIDECAR_KEYS

    return SIDECAR_KEYS


def _cmd_import(args: argparse.Namespace) -> None:
    from lorein.data.ismrmrd_io import import_ismrmrd
    from lorein.data.problem import write_problem

    sidecar = dict(args.extra)
    if args.sidecar is not None:
        sidecar.update(read_toml(args.sidecar, "sidecar file"))
    problem = import_ismrmrd(
        args.raw,
        signal_model=args.signal_model,
        sidecar=sidecar,
        remove_oversampling=not args.keep_oversampling,
        noise_prewhitening=args.prewhitening,
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
    from lorein.run import run

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
        save_images=args.save_images,
        keep_checkpoint=args.keep_checkpoint,
    )
    print(
        f"wrote {args.output}: {report['method']}, {report['iterations']} iterations, "
        f"{report['wall_seconds']:.1f} s, peak {report['peak_memory_gib']:.2f} GiB"
    )
    if args.save_images and not report["saved_images"]:
        print(f"lorein: note: {report['method']} returns no weighted images", file=sys.stderr)


def _cmd_eval(args: argparse.Namespace) -> None:
    import json

    from lorein.data.problem import read_truth
    from lorein.eval.evaluate import (
        EVALUATED,
        constant_map_errors,
        evaluate_maps,
        interior_voxels,
        read_maps,
        without_csf_voxels,
    )
    from lorein.eval.figures import comparison_figure

    maps = read_maps(args.output)
    if args.maps is not None:
        unknown = sorted(set(args.maps) - set(EVALUATED))
        if unknown:
            raise ValueError(f"--maps: unknown {', '.join(unknown)}; valid: {', '.join(EVALUATED)}")
        maps = {name: value for name, value in maps.items() if name in args.maps}
    truth = read_truth(args.truth)
    scores = evaluate_maps(maps, truth)
    if not scores:
        raise ValueError(f"{args.output}: no map of maps.h5 has a truth in {args.truth} to score")
    levels = constant_map_errors(truth)  # the oracle level: each map at its truth's mean
    interior = interior_voxels(truth)
    for name, score in scores.items():
        score["constant_map"] = levels[name]
    (args.output / "eval.json").write_text(json.dumps(scores, indent=2) + "\n")
    truth_maps = {k: v for k, v in truth.maps().items() if k in maps}
    label = args.label or args.output.name
    figure = args.output / "figure.png"
    comparison_figure(figure, truth_maps, truth.mask, {label: maps}, {label: scores})
    regions = [key for key in ("interior", "without_csf") if key in next(iter(scores.values()))]
    titles = {"interior": "interior", "without_csf": "no CSF"}
    header = f"{'map':<8} {'error':>12} {'SSIM':>7} {'constant map':>13}"
    print(header + "".join(f" {titles[key]:>12}" for key in regions))
    for name, score in scores.items():
        unit, digits = (" Hz", 2) if "rmse_hz" in score else ("", 4)
        error = f"{score.get('rmse_hz', score.get('nrmse')):.{digits}f}{unit}"
        level = f"{score['constant_map']:.{digits}f}{unit}"
        line = f"{name:<8} {error:>12} {score['ssim']:>7.3f} {level:>13}"
        line += "".join(f" {score[key]:.{digits}f}{unit}".rjust(13) for key in regions)
        print(line)
    print("constant map: the error of each map set to its truth's mean (no anatomy)")
    if interior is not None:
        print(
            f"interior: the same errors in the {int(interior.sum())} voxels whose 26 neighbours "
            "share their tissue label (no partial-volume floor)"
        )
    tissue = without_csf_voxels(truth)
    if tissue is not None:
        print(
            f"no CSF: the same errors in the {int(tissue.sum())} voxels of the mask not labelled "
            "CSF (CSF's capped T1 dominates the mask's T1 error)"
        )
    print(f"wrote {args.output / 'eval.json'} and {figure}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from lorein.eval.compare import compare

    _require(args, "methods")
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


def _cmd_config(args: argparse.Namespace) -> None:
    import dataclasses

    from lorein.run import METHODS, load_config

    _, commands = build_parser()
    config = {} if args.config is None else read_toml(args.config)
    parts = []
    for name in args.names:
        if name in commands:
            command = commands[name]
            values = {} if args.config is None else command.table(config, args.config)
            parts.append(command.toml(values))
        elif name in METHODS:
            method = METHODS[name]
            values = dataclasses.asdict(load_config(method, args.config))
            parts.append(f"# {method.name}: {method.description}\n{toml_table(name, values, {})}")
        else:
            raise ValueError(
                f"unknown name {name!r}; commands: {', '.join(commands)}; "
                f"methods: {', '.join(METHODS)}"
            )
    print("\n".join(parts), end="")


@dataclass
class Command:
    """A subcommand: its parser and the keys of its table in a ``--config`` file.

    Attributes
    ----------
    name
        Command and table name.
    parser
        The command's parser.
    settings
        Options that the table may set: key (the flag's long name, dashes as underscores) -> the
        option's action, which checks and converts the table's value.
    extra_keys
        Returns further table keys -> what they give; the command reads their values from
        ``args.extra`` (a function, so that the module defining them loads only when needed).
    """

    name: str
    parser: argparse.ArgumentParser
    settings: dict[str, argparse.Action] = field(default_factory=dict)
    extra_keys: Callable[[], Mapping[str, str]] = dict

    def option(self, *flags: str, **kwargs: Any) -> None:
        """Add an option that the command's config table may set too."""
        action = self.parser.add_argument(*flags, **kwargs)
        self.settings[action.dest] = action

    def table(self, config: Mapping[str, Any], path: Path) -> dict[str, Any]:
        """The command's table of a parsed config file, its keys and values checked."""
        values = table(config, path, self.name)
        extra = self.extra_keys()
        where = f"{path} [{self.name}]"
        check_keys(values, [*self.settings, *extra], where)
        return {
            key: value if key in extra else setting_value(self.settings[key], value, where)
            for key, value in values.items()
        }

    def toml(self, values: Mapping[str, Any]) -> str:
        """The table as TOML: ``values`` over the defaults, each key under its help text."""
        extra = self.extra_keys()
        current = {key: values.get(key, action.default) for key, action in self.settings.items()}
        current |= {key: values.get(key) for key in extra}
        comments = {
            key: (action.help or "").removeprefix("(config) ")
            for key, action in self.settings.items()
        }
        return toml_table(self.name, current, comments | dict(extra))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of lorein."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], None],
    summary: str,
    description: str,
    config_help: str,
) -> Command:
    parser = sub.add_parser(name, help=summary, description=description)
    parser.set_defaults(func=func, extra={})
    parser.add_argument("--config", type=Path, metavar="FILE.toml", default=None, help=config_help)
    return Command(name, parser)


def _config_help(name: str, more: str = "") -> str:
    return (
        f"TOML file whose [{name}] table sets the options marked (config) below (flag name, "
        f"dashes as underscores: see 'lorein config show {name}'); flags given here override it"
        + more
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    """The ``lorein`` argument parser and its commands that read a config table, by name."""
    parser = _Parser(
        prog="lorein",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Quantitative MRI maps (M0, T1, T2, T2*, B0) from undersampled multi-coil,\n"
        "multi-contrast 3D k-space: LoREIN and the methods it is compared against, on one\n"
        "problem-file format.",
        epilog="typical use:\n"
        "  lorein simulate --preset sim1-small --R 27 -o sim.h5    # or: lorein import raw.h5 "
        "-o sim.h5\n"
        "  lorein recon sim.h5 -o out --config configs/sim1-small.toml\n"
        "  lorein eval out --truth sim.h5\n\n"
        "Every command takes --config FILE.toml: one file with a table per command and per\n"
        "method ('lorein config show NAME' prints the defaults). Sequence times are shown and\n"
        "given in ms, flip angles in degrees; files store SI units (s, rad, Hz). Errors are one\n"
        "line on stderr with exit status 2; 'lorein COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"lorein {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, Command] = {}
    on_off = argparse.BooleanOptionalAction

    sim = _command(
        sub,
        "simulate",
        _cmd_simulate,
        "simulate an acquisition of a brain phantom and write it as a problem file",
        "Simulate undersampled multi-coil k-space of a brain phantom from a preset of the paper's "
        "protocols and write a problem file: the acquired lines only, with the ground-truth maps "
        "under truth/ for 'lorein eval'.",
        _config_help("simulate"),
    )
    sim.option(
        "--preset",
        help="(config) sim1 or sim2 (paper sizes), sim1-small or sim2-small (CPU-sized); required",
    )
    sim.option(
        "--R",
        type=float,
        help="(config) acceleration factor (paper eq. 19: samples of the full k-space of all "
        "contrasts / acquired samples), e.g. 27; required",
    )
    sim.option(
        "--seed",
        type=int,
        default=0,
        help="(config) seed of anatomy, sampling and noise (default: 0)",
    )
    sim.option(
        "--snr",
        type=float,
        default=None,
        help="(config) signal-to-noise ratio of the k-space data (default: the preset's; inf: "
        "no noise)",
    )
    sim.option(
        "--pattern",
        choices=("vd-random", "poisson"),
        default="vd-random",
        help="(config) ky-kz sampling: variable-density random or Poisson disc (default: "
        "vd-random)",
    )
    sim.option(
        "--device",
        default="cpu",
        help="(config) where the signal model and the FFTs run: cpu, cuda or cuda:N (default: "
        "cpu; the same seed gives the same problem on each, to float rounding)",
    )
    sim.parser.add_argument(
        "-o", "--output", type=Path, required=True, help="problem file to write (.h5)"
    )
    commands["simulate"] = sim

    info = _command(
        sub,
        "info",
        _cmd_info,
        "summarise a problem file: matrix, coils, contrasts, R, sequence parameters",
        "Print a problem file's signal model, matrix, voxel size, coils, contrasts, acquired "
        "lines, acceleration R and the range of each sequence parameter (times in ms, flip "
        "angles in degrees).",
        "TOML file shared with the other commands (info has no settings: its [info] table, if "
        "any, must be empty)",
    )
    info.parser.add_argument("problem", type=Path, help="problem file (.h5)")
    commands["info"] = info

    imp = _command(
        sub,
        "import",
        _cmd_import,
        "convert ISMRMRD raw data into a problem file",
        "Read Cartesian 3D multi-contrast ISMRMRD raw data (kspace_encode_step_1/2 -> ky/kz; "
        "contrast, set, repetition, segment -> rows of the contrast table; TR, TE [ms] and flip "
        "angle [deg] from the XML header) and write a problem file in SI units. Sequence "
        "parameters the header lacks come from a TOML sidecar, or the [import] table of "
        "--config, with keys signal_model, flip_angle_deg, echo_time_ms, repetition_time_ms, "
        "prep_time_ms and segment, each one value or one per contrast.",
        _config_help("import", "; the table may also hold the --sidecar keys"),
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
        action=on_off,
        default=False,
        help="(config) keep the readout oversampling (default: crop to the reconstructed field "
        "of view)",
    )
    imp.option(
        "--prewhitening",
        action=on_off,
        default=True,
        help="(config) whiten the coils with the file's noise scans, if any (default: on)",
    )
    imp.extra_keys = _sidecar_keys
    commands["import"] = imp

    exp = _command(
        sub,
        "export-ismrmrd",
        _cmd_export,
        "write a problem file as ISMRMRD raw data (for BART, Gadgetron, 'lorein import')",
        "Write a problem file's acquired lines as an ISMRMRD dataset: one acquisition per line, "
        "the sequence parameters in the XML header (ms, degrees), readable by BART, Gadgetron "
        "or 'lorein import'.",
        _config_help("export-ismrmrd"),
    )
    exp.parser.add_argument("problem", type=Path, help="problem file (.h5)")
    exp.parser.add_argument(
        "-o", "--output", type=Path, required=True, help="ISMRMRD file to write (.h5)"
    )
    exp.option(
        "--with-truth",
        action=on_off,
        default=False,
        help="(config) also write the problem's truth/ maps as ISMRMRD images (default: off)",
    )
    exp.option(
        "--calibration",
        type=int,
        nargs=2,
        metavar=("CCY", "CCZ"),
        help="(config) flag the lines in this central ky x kz region as calibration lines",
    )
    commands["export-ismrmrd"] = exp

    rec = _command(
        sub,
        "recon",
        _cmd_recon,
        "reconstruct quantitative maps from a problem file",
        "Reconstruct M0, T1, T2 (t2ir_gre), T2* and B0 maps and write OUT/maps.h5, "
        "OUT/nifti/*.nii.gz with JSON sidecars, and OUT/report.json. A checkpoint is kept in "
        "OUT/checkpoint.pt; --resume continues a stopped run.",
        _config_help(
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
        help="(config) seed of all random initialisations (default: 0)",
    )
    rec.parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="number of optimisation steps, overriding the method's iterations setting "
        "(LoREIN's and SUMMIT's coil warm-up and warm start still run: set coil_warmup and "
        "warm_start in the method's --config table to shorten them)",
    )
    rec.parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    rec.option(
        "--keep-checkpoint",
        action=on_off,
        default=False,
        help="(config) keep OUT/checkpoint.pt after the run finishes, so that '--resume "
        "--iterations N' can extend it (default: off; an interrupted run always keeps it)",
    )
    rec.option(
        "--quiet", action=on_off, default=False, help="(config) no progress bar (default: off)"
    )
    rec.option(
        "--save-images",
        action=on_off,
        default=False,
        help="(config) also write the weighted images as OUT/nifti/weighted_mag.nii.gz and "
        "weighted_phase.nii.gz (4D, one volume per contrast; default: off)",
    )
    commands["recon"] = rec

    ev = _command(
        sub,
        "eval",
        _cmd_eval,
        "score reconstructed maps against a simulation's ground truth",
        "Score OUT/maps.h5 against the truth/ of a problem file: NRMSE inside the truth mask with "
        "T1, T2, T2* capped to 0-3.5 s, 0-0.2 s, 0-0.1 s (as in the paper), M0 after a "
        "least-squares scale, B0 as RMSE in Hz, and SSIM; with tissue labels in the truth, the "
        "same errors in the tissue interiors and in the mask without its CSF voxels. Writes "
        "OUT/eval.json and OUT/figure.png (truth, reconstruction and error maps).",
        _config_help("eval"),
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
    commands["eval"] = ev

    cmp = _command(
        sub,
        "compare",
        _cmd_compare,
        "run several methods on one simulated problem and compare them side by side",
        "Run each method ('lorein recon' in its own process, so one failure does not stop the "
        "others and peak memory is per method), score each against the problem's truth/ "
        "(capped NRMSE, SSIM, the same errors in the tissue interiors and without CSF, per-tissue "
        "mean and bias for WM, GM, deep GM and CSF), and write "
        "OUT/compare.json, OUT/compare.md (tables) and OUT/compare.png (truth row, then maps "
        "and error maps per method, as the paper's Figs. 4-5). The same --config file is passed "
        "to every method, each reading its own [METHOD] table.",
        _config_help("compare"),
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
    cmp.option("--seed", type=int, default=0, help="(config) seed of every method (default: 0)")
    cmp.option(
        "--timeout-s",
        type=float,
        default=None,
        help="(config) wall-clock limit per method [s]; a method past it counts as failed",
    )
    cmp.option(
        "--quiet", action=on_off, default=False, help="(config) no progress bars (default: off)"
    )
    cmp.option(
        "--reuse",
        action=on_off,
        default=False,
        help="(config) score methods whose OUT/METHOD folder holds a finished run without "
        "running them again (resume a comparison; delete a folder to rerun that method)",
    )
    commands["compare"] = cmp

    cfg = sub.add_parser(
        "config",
        help="print the settings of commands or methods as TOML, to edit and pass as --config",
        description="'lorein config show NAME ...' prints, as TOML tables, the default settings "
        "of commands (simulate, import, recon, ...) and the hyper-parameters of methods (lorein, "
        "...); with --config FILE, the values that FILE gives. Save, edit and pass the file to "
        "any command's --config; one file may hold all tables.",
    )
    cfg.add_argument("action", choices=("show",), help="show: print the tables")
    cfg.add_argument(
        "names", nargs="+", metavar="NAME", help="command or method, e.g. recon lorein"
    )
    cfg.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        default=None,
        help="show the values this file gives (checked as the commands check them)",
    )
    cfg.set_defaults(func=_cmd_config)
    return parser, commands


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; with ``--config``, the command's table supplies option defaults."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if args.config is None or args.command not in commands:
        return args
    command = commands[args.command]
    values = command.table(read_toml(args.config), args.config)
    extra = {key: values.pop(key) for key in list(values) if key not in command.settings}
    command.parser.set_defaults(extra=extra, **values)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors are one line on stderr, exit status 2."""
    try:
        args = parse_args(argv)
        args.func(args)
    except SystemExit as stop:  # --help, --version, or a usage error already printed
        return int(stop.code or 0)
    except (ValueError, OSError, KeyError, MemoryError) as err:
        print(f"lorein: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        hint = _run_failure_hint(err)
        if hint is None:
            raise
        print(f"lorein: error: {_one_line(err)} ({hint})", file=sys.stderr)
        return 2
    return 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _run_failure_hint(err: RuntimeError) -> str | None:
    """What to try after a known run-time failure; None for an unexpected error (traceback)."""
    import torch

    from lorein.numerics.optimisation import NonFiniteLossError

    if isinstance(err, torch.OutOfMemoryError):
        return (
            "out of device memory: try --device cpu, fewer virtual coils (coil_compression) "
            "or smaller hash tables (log2_table) in the method's --config table"
        )
    if isinstance(err, NonFiniteLossError):
        return "try a lower lr in the method's --config table"
    return None


if __name__ == "__main__":
    sys.exit(main())
