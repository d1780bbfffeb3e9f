"""Accuracy and time of LoREIN, its ablations and a voxel-fit baseline on a CPU-sized preset.

Usage: ``python benchmarks/lorein_accuracy.py [--preset sim1-small] [--R 27] [--seed 0]``.
Hyper-parameters come from ``configs/<preset>.toml`` (fixed per preset, never tuned on the truth
of the case reported). The baseline fits voxel by voxel the images of a CG subspace reconstruction
(10 iterations, calibration coils), i.e. LoREIN's own warm start. Writes a section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, update_section  # noqa: E402

from lorein.data.problem import read_problem, read_truth, write_problem  # noqa: E402
from lorein.eval.evaluate import evaluate_maps  # noqa: E402
from lorein.physics.signal_models import signal_model  # noqa: E402
from lorein.recon.calibration import estimate_from_calibration  # noqa: E402
from lorein.recon.fitting import fit_maps  # noqa: E402
from lorein.recon.lorein import temporal_subspace  # noqa: E402
from lorein.recon.run import get_method, load_config  # noqa: E402
from lorein.recon.warm_start import subspace_cg  # noqa: E402
from lorein.sim.presets import get_preset  # noqa: E402
from lorein.sim.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cg_fit(problem, config) -> dict[str, torch.Tensor]:
    """Voxel-wise fit of a CG subspace reconstruction (the baseline)."""
    calib = estimate_from_calibration(problem, problem.kspace)
    model = signal_model(problem.signal_model, problem.contrasts)
    subspace = temporal_subspace(model, config, 0)
    y = problem.kspace / calib.scale
    u = subspace_cg(y, problem.ky, problem.kz, problem.contrast, calib.coils, subspace)
    images = subspace.expand(u.to(subspace.phi.dtype), dim=0).to(torch.complex64)
    maps = fit_maps(images, model, mask=calib.support)
    maps["M0"] = maps["M0"] * calib.scale
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="sim1-small")
    parser.add_argument("--R", type=float, default=27)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    preset = get_preset(args.preset)
    method = get_method("lorein")
    config_path = ROOT / "configs" / f"{preset.name}.toml"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.h5"
        sim = simulate(preset, args.R, seed=args.seed, progress=False)
        write_problem(path, sim.problem, truth=sim.truth)
        problem, truth = read_problem(path), read_truth(path)
    rows = []
    runs = [
        ("CG subspace + voxel fit", None),
        ("LoREIN", {}),
        ("PMR only (SUMMIT-like)", {"mode": "pmr-only"}),
        ("LRR only + voxel fit", {"mode": "lrr-fit"}),
    ]
    for label, overrides in runs:
        config = load_config(method, config_path, overrides or {})
        start = time.perf_counter()
        if overrides is None:
            maps = cg_fit(problem, config)
        else:
            maps = method.reconstruct(problem, config, progress=False).values
        seconds = time.perf_counter() - start
        scores = evaluate_maps(maps, truth)
        print(label, f"{seconds:.0f} s", scores, flush=True)
        rows.append((label, seconds, scores))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    names = [n for n in ("M0", "T1", "T2", "T2star", "B0") if n in rows[0][2]]
    header = " | ".join(f"{n} {'RMSE [Hz]' if n == 'B0' else 'NRMSE'}" for n in names)
    lines = [
        f"## Accuracy on `{preset.name}`, R = {args.R:g}, seed {args.seed} "
        "(`benchmarks/lorein_accuracy.py`)",
        "",
        f"Machine: {machine()}. Configuration: `configs/{preset.name}.toml`. "
        f"Peak resident memory of the whole script: {peak:.1f} GiB.",
        "",
        f"| method | {header} | wall time [s] |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for label, seconds, scores in rows:
        values = [f"{scores[n].get('rmse_hz', scores[n].get('nrmse')):.3f}" for n in names]
        lines.append(f"| {label} | {' | '.join(values)} | {seconds:.0f} |")
    update_section(f"accuracy_{preset.name}_R{args.R:g}", "\n".join(lines))


if __name__ == "__main__":
    main()
