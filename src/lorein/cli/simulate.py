"""``lorein simulate``: simulate an acquisition of a brain phantom and write a problem file."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorein import __version__
from lorein.cli.common import Command, Subparsers, add_command, config_help, require
from lorein.settings import AtLeast


def add_parser(sub: Subparsers) -> Command:
    """Add the ``simulate`` command: a preset, R, seed, SNR, sampling pattern and device."""
    sim = add_command(
        sub,
        "simulate",
        run,
        "simulate an acquisition of a brain phantom and write it as a problem file",
        "Simulate undersampled multi-coil k-space of a brain phantom from a preset of the paper's "
        "protocols and write a problem file: the acquired lines only, with the ground-truth maps "
        "under truth/ for 'lorein eval'. By default the object is rendered on a finer grid than "
        "the reconstruction's, with a margin around the slab, and band-limited (partial volume, "
        "truth/purity per voxel; root attribute simulation = 'fine-grid'); --paper-protocol "
        "makes the signal from the truth maps on the reconstruction grid (simulation = "
        "'paper-protocol').",
        config_help("simulate"),
    )
    sim.option(
        "--preset",
        help="(config) sim1 or sim2 (paper sizes), sim1-small or sim2-small (CPU-sized); required",
    )
    sim.option(
        "--R",
        type=float,
        at_least=AtLeast(1.0),
        help="(config) acceleration factor (paper eq. 19: samples of the full k-space of all "
        "contrasts / acquired samples), e.g. 27; required",
    )
    sim.option(
        "--nz",
        type=int,
        at_least=AtLeast(1),
        default=None,
        help="(config) slices: the central NZ slices of the preset's slab at its voxel size; 1 "
        "simulates a 2D acquisition of one slice, phase-encoded along y alone (default: the "
        "preset's)",
    )
    sim.option(
        "--coils",
        type=int,
        at_least=AtLeast(1),
        default=None,
        help="(config) receive coils (1: a single channel; default: the preset's)",
    )
    sim.option(
        "--seed",
        type=int,
        default=0,
        at_least=AtLeast(0),
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
        "--paper-protocol",
        action="store_true",
        help="the paper's setting: signal from the truth maps on the reconstruction grid, no "
        "finer grid and no partial volume (purity 1 everywhere); the data are then the "
        "reconstruction's own discrete model of the truth (default: the fine grid)",
    )
    sim.parser.add_argument(
        "-o", "--output", type=Path, required=True, help="problem file to write (.h5)"
    )
    return sim


def run(args: argparse.Namespace) -> None:
    """Simulate the preset at the requested R and write the problem file with its truth."""
    from lorein.data.problem import write_problem
    from lorein.device import resolve_device
    from lorein.sim.presets import get_preset
    from lorein.sim.simulate import simulate

    require(args, "preset", "R")
    preset = get_preset(args.preset).resized(args.nz, args.coils)
    device = resolve_device(args.device)
    sim = simulate(
        preset,
        args.R,
        seed=args.seed,
        snr=args.snr,
        pattern=args.pattern,
        device=device,
        paper_protocol=args.paper_protocol,
    )
    attrs = {
        "preset": preset.name,
        "seed": args.seed,
        "snr": preset.snr if args.snr is None else args.snr,
        "noise_std": sim.noise_std,
        "requested_R": args.R,
        "lorein_version": __version__,
        **sim.attrs(),
    }
    write_problem(args.output, sim.problem, truth=sim.truth, attrs=attrs)
    nx, ny, nz = preset.matrix
    print(
        f"wrote {args.output}: {preset.name} {nx} x {ny} x {nz}, {preset.n_coils} coil(s) "
        f"({sim.simulation}), "
        f"R = {sim.problem.acceleration:.2f} "
        f"(requested {args.R:g}), {sim.problem.n_lines} lines, {sim.seconds:.1f} s"
    )
