"""Real data: LoREIN on a Pulseq 3-echo GRE phantom scan against the voxel fit (issue 22).

Usage::

    python benchmarks/real_pulseq.py [--R 3] [--seed 0] [--workdir benchmarks/work/real_pulseq]
        [--rerun]

The data are the public Pulseq tutorial scan in ``../shared/data/pulseq-gre-3echo/`` (relative to
the repository root; a 2D single-channel fully sampled 3-echo GRE of a structured phantom, TE 4 /
9 / 15 ms). The script runs the commands a user would (each in its own process, one at a time)::

    lorein import 02_GRE_3echoes.dat --seq 02_GRE_3echoes.seq --signal-model megre -o full.h5
    lorein undersample full.h5 --R 3 -o r3.h5
    lorein recon full.h5 -o fit-full --method fit          # the reference
    lorein recon full.h5 -o lorein-full
    lorein recon r3.h5 -o lorein-r3
    lorein recon r3.h5 -o fit-r3 --method fit             # CG-SENSE images, voxel fit
    lorein recon r3.h5 -o zero-filled-r3 --method fit --config zero-filled.toml

and the same three reconstructions of ``r3-shared.h5`` (``lorein undersample ...
--shared-echo-lines``: the echoes of one excitation share their lines, as a multi-echo
acquisition samples them). A row "constant" (every map at the reference's mean in the mask) is
the oracle floor. It scores every map against the reference inside the phantom: R2* = 1/T2*
[1/s], B0 [Hz] and M0 after a least-squares scale (per method, inside the mask), as mean absolute
difference, RMSE and median difference (M0 relative to the reference's mean). The mask is the
fully sampled first-echo magnitude image (the data, no reconstruction) above 30 % of its 99th
percentile, eroded by 3 voxels (the readout's ringing and the partial volume at the rods'
edges), and where the reference has a fit at all (its calibration support).

The noise of the reference fit is estimated twice: (a) thermal, the complex noise of the fully
sampled image outside the object (dilated by 10 voxels), propagated through the same voxel fit by
16 Monte-Carlo draws on the reference's own signal; (b) spatial, from the reference map itself:
the robust spread (1.4826 MAD / sqrt 2) of differences of neighbouring voxels along x inside the
mask (the fit is voxel-wise on images with white noise, so its noise is uncorrelated between
voxels, and the differences cancel the smooth part of the map). (b) also holds what (a) misses:
inside the object the 3-echo model's residual is larger than the background noise.

The issue's conditions: LoREIN at R with complementary lines is closer to the reference than the
zero-filled and the CG-SENSE voxel fits at R (RMSE and mean absolute difference, each map; also
reported for shared lines), and LoREIN on the fully
sampled data agrees with the reference within its noise (RMSE at most the noise estimate (b),
each map). Writes ``benchmarks/results/real_pulseq/R{R}-seed{S}.json``, the figure
``docs/figures/real-pulseq.png`` and prints the table of docs/TUTORIAL.md. Finished
reconstructions are reused unless ``--rerun``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import commit  # noqa: E402

from lorein import __version__  # noqa: E402
from lorein.data.problem import Problem, read_problem  # noqa: E402
from lorein.eval.evaluate import read_maps  # noqa: E402
from lorein.eval.metrics import least_squares_scale  # noqa: E402
from lorein.numerics.sense import zero_filled_images  # noqa: E402
from lorein.numerics.voxel_fit import fit_maps  # noqa: E402
from lorein.physics.models.registry import signal_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "pulseq-gre-3echo"
RAW, SEQ = DATA / "02_GRE_3echoes.dat", DATA / "02_GRE_3echoes.seq"
RESULTS = ROOT / "benchmarks" / "results" / "real_pulseq"
FIGURE = ROOT / "docs" / "figures" / "real-pulseq.png"

MAPS = ("R2star", "B0", "M0")
UNITS = {"R2star": "1/s", "B0": "Hz", "M0": "relative"}
MASK_FRACTION = 0.3
MASK_EROSION = 3
BACKGROUND_MARGIN = 10
NOISE_DRAWS = 16


def lorein(*args: str) -> None:
    """Run ``lorein ARGS`` in its own process, one thread (the 2-core machine's rule)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "lorein", *args]
    print("$ lorein " + " ".join(args), flush=True)
    subprocess.run(command, check=True, env=env)


SAMPLINGS = {"": [], "-shared": ["--shared-echo-lines"]}
"""Suffix of the undersampled problem -> ``lorein undersample`` flags: complementary lines
across echoes (the issue's case), and echoes sharing their lines (as a multi-echo acquisition
samples them)."""


def runs(R: int) -> dict[str, tuple[str, list[str]]]:
    """Output folder -> (problem file, extra ``lorein recon`` arguments) of every method."""
    zero_filled = ["--method", "fit", "--config", "zero-filled.toml"]
    out = {"fit-full": ("full.h5", ["--method", "fit"]), "lorein-full": ("full.h5", [])}
    for suffix in SAMPLINGS:
        problem = f"r{R}{suffix}.h5"
        out[f"lorein-r{R}{suffix}"] = (problem, [])
        out[f"fit-r{R}{suffix}"] = (problem, ["--method", "fit"])
        out[f"zero-filled-r{R}{suffix}"] = (problem, zero_filled)
    return out


def reconstruct(work: Path, R: int, seed: int, rerun: bool) -> dict[str, float | None]:
    """Import, undersample and reconstruct in ``work``; wall seconds of each run."""
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    if rerun or not Path("full.h5").exists():
        lorein("import", str(RAW), "--seq", str(SEQ), "--signal-model", "megre", "-o", "full.h5")
    for suffix, flags in SAMPLINGS.items():
        problem = f"r{R}{suffix}.h5"
        if rerun or not Path(problem).exists():
            lorein(
                "undersample", "full.h5", "--R", str(R), "--seed", str(seed), *flags, "-o", problem
            )
    Path("zero-filled.toml").write_text('[fit]\nimages = "zero-filled"\n')
    seconds: dict[str, float | None] = {}
    for out, (problem, extra) in runs(R).items():
        report = Path(out) / "report.json"
        if rerun or not report.exists():
            lorein("recon", problem, "-o", out, "--quiet", "--seed", str(seed), *extra)
        seconds[out] = json.loads(report.read_text())["wall_seconds"]
    return seconds


def first_echo_images(problem: Problem) -> torch.Tensor:
    """``[T, ny, nx]`` complex images of the fully sampled single-coil problem (inverse FFT)."""
    nx, ny, nz = problem.matrix
    coil = torch.ones(1, nz, ny, nx, dtype=torch.complex64)
    return zero_filled_images(problem, coil)[:, 0]


def phantom_mask(
    images: torch.Tensor, fitted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[ny, nx]`` masks: the scoring mask (first-echo magnitude above the threshold, eroded,
    where the reference has a fit: ``fitted``), the same before erosion (shown in the figure),
    and the background (outside the thresholded object dilated by :data:`BACKGROUND_MARGIN`
    voxels)."""
    magnitude = images[0].abs().numpy()
    above = (magnitude > MASK_FRACTION * np.percentile(magnitude, 99)) & fitted
    mask = ndimage.binary_erosion(above, iterations=MASK_EROSION)
    obj = ndimage.binary_fill_holes(magnitude > 0.1 * np.percentile(magnitude, 99))
    background = ~ndimage.binary_dilation(obj, iterations=BACKGROUND_MARGIN)
    return mask, above, background


def robust_std(x: np.ndarray) -> float:
    """1.4826 times the median absolute deviation: the standard deviation of Gaussian ``x``."""
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def comparable(maps: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``[ny, nx]`` R2* [1/s], B0 [Hz] and M0 of a method's maps (slice 0)."""
    return {name: maps[name][0].double().numpy() for name in MAPS}


def scaled(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x`` times its least-squares scale against ``ref`` inside ``mask``."""
    t = torch.from_numpy
    return x * least_squares_scale(t(x), t(ref), t(mask))


def differences(
    maps: dict[str, np.ndarray], ref: dict[str, np.ndarray], mask: np.ndarray
) -> dict[str, np.ndarray]:
    """Method minus reference inside ``mask`` (M0 scaled, then divided by the reference's mean
    in the mask), ``[n_mask]`` per map."""
    out = {}
    for name in MAPS:
        x = scaled(maps[name], ref[name], mask) if name == "M0" else maps[name]
        diff = (x - ref[name])[mask]
        out[name] = diff / ref["M0"][mask].mean() if name == "M0" else diff
    return out


def scores(diff: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean absolute difference, RMSE and median difference of each map."""
    return {
        name: {
            "mad": float(np.abs(d).mean()),
            "rmse": float(np.sqrt((d**2).mean())),
            "median": float(np.median(d)),
        }
        for name, d in diff.items()
    }


def thermal_noise(
    problem: Problem, ref_out: Path, images: torch.Tensor, background: np.ndarray, mask: np.ndarray
) -> dict[str, Any]:
    """Noise of the reference fit from the background noise: Monte-Carlo draws through the fit.

    The reference's own signal (its maps through the model, inside its support) plus complex
    white noise of the background's standard deviation per component is fitted as the ``fit``
    method fits (``fit_maps`` defaults, the reference's support as mask); the standard deviation
    over :data:`NOISE_DRAWS` draws is each voxel's noise, reported as the RMS over ``mask``.
    """
    outside = images[:, torch.from_numpy(background)]
    sigma = robust_std(torch.cat([outside.real.flatten(), outside.imag.flatten()]).numpy())
    ref = read_maps(ref_out)
    model = signal_model(problem.signal_model, problem.contrasts)
    support = ref["mask"] > 0
    clean = model({k: ref[k] for k in model.parameters}) * support
    generator = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(NOISE_DRAWS):
        shape = clean.shape
        noise = torch.complex(
            torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        )
        fitted = fit_maps(clean + sigma * noise * support, model, mask=support)
        draws.append(comparable(model.output_maps(fitted)))
    spread = {name: np.stack([d[name] for d in draws]).std(0, ddof=1)[mask] for name in MAPS}
    spread["M0"] = spread["M0"] / comparable(ref)["M0"][mask].mean()
    return {
        "sigma_background": sigma,
        "snr_first_echo": float(images[0].abs().numpy()[mask].mean() / sigma),
        "fit_noise": {name: float(np.sqrt((s**2).mean())) for name, s in spread.items()},
    }


def model_residual(
    problem: Problem, ref_out: Path, images: torch.Tensor, mask: np.ndarray
) -> float:
    """Noise per real component implied by the reference fit's residual inside ``mask``.

    With 3 complex echoes and 4 real parameters each voxel's residual has 2 degrees of freedom:
    ``sigma^2 = mean |r|^2 summed over echoes / 2``; above the background's when the data hold
    more than the model and white noise.
    """
    ref = read_maps(ref_out)
    model = signal_model(problem.signal_model, problem.contrasts)
    residual = images - model({k: ref[k] for k in model.parameters})[:, 0]
    energy = residual.abs().square().sum(0).numpy()[mask]
    return float(np.sqrt(energy.mean() / (2 * problem.n_contrasts - 4)))


def spatial_noise(ref: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Noise of each reference map from differences of x-neighbours inside ``mask``."""
    pairs = mask[:, 1:] & mask[:, :-1]
    out = {}
    for name in MAPS:
        x = ref[name] / (ref["M0"][mask].mean() if name == "M0" else 1.0)
        out[name] = robust_std((x[:, 1:] - x[:, :-1])[pairs]) / math.sqrt(2)
    return out


def conditions(
    results: dict[str, dict[str, dict[str, float]]], noise: dict[str, float], R: int
) -> dict[str, Any]:
    """The issue's two conditions, per map (the closeness also with shared echo lines)."""
    closer = {}
    for suffix in SAMPLINGS:
        ours = results[f"lorein-r{R}{suffix}"]
        baselines = (f"fit-r{R}{suffix}", f"zero-filled-r{R}{suffix}")
        closer[f"lorein_r{R}{suffix}_closer_than_fits"] = {
            name: all(
                ours[name][k] < results[b][name][k] for b in baselines for k in ("rmse", "mad")
            )
            for name in MAPS
        }
    full = results["lorein-full"]
    within = {name: full[name]["rmse"] <= noise[name] for name in MAPS}
    issue = closer[f"lorein_r{R}_closer_than_fits"]
    return {
        **closer,
        "lorein_full_within_fit_noise": within,
        "holds": all(issue.values()) and all(within.values()),
    }


def constant_maps(ref: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """Every map constant at the reference's mean inside ``mask``: an oracle floor; a method
    further from the reference tells less about the phantom than this one number per map."""
    return {name: np.full_like(ref[name], ref[name][mask].mean()) for name in MAPS}


WINDOWS = {"R2star": (0.0, 20.0, 10.0), "B0": (-40.0, 40.0, 10.0), "M0": (0.0, None, 0.3)}
"""Map -> (display min, max (None: the reference's 99th percentile), difference half-range;
M0's as a fraction of the reference's mean)."""

TITLES = {"R2star": "R2* [1/s]", "B0": "B0 [Hz]", "M0": "M0 (scaled) [a.u.]"}


def figure(
    path: Path,
    problem: Problem,
    maps: dict[str, dict[str, np.ndarray]],
    mask: np.ndarray,
    shown: np.ndarray,
    R: int,
) -> None:
    """Rows R2*, B0, M0; columns: reference, LoREIN at R, fit at R, and both differences.

    Maps inside ``shown``, differences inside the scoring ``mask``, cropped to ``shown``; anterior
    up (rows flipped when the affine's y axis points posterior)."""
    ref = maps["fit-full"]
    columns = {
        "fully sampled fit": ("fit-full", False),
        f"LoREIN, R = {R}": (f"lorein-r{R}", False),
        f"fit (CG-SENSE), R = {R}": (f"fit-r{R}", False),
        f"LoREIN R = {R} - full": (f"lorein-r{R}", True),
        f"fit R = {R} - full": (f"fit-r{R}", True),
    }
    rows, cols = np.nonzero(shown)
    crop = np.s_[max(rows.min() - 4, 0) : rows.max() + 5, max(cols.min() - 4, 0) : cols.max() + 5]
    origin = "upper" if problem.affine[1, 1] < 0 else "lower"
    fig, axes = plt.subplots(3, len(columns), figsize=(3.3 * len(columns), 8.4))
    for row, name in enumerate(MAPS):
        lo, hi, half = WINDOWS[name]
        if name == "M0":
            mean = ref["M0"][mask].mean()
            hi, half = float(np.percentile(ref["M0"][mask], 99)), half * mean
        for col, (title, (out, difference)) in enumerate(columns.items()):
            x = scaled(maps[out][name], ref[name], mask) if name == "M0" else maps[out][name]
            ax = axes[row, col]
            if difference:
                values = np.where(mask, x - ref[name], np.nan)[crop]
                image = ax.imshow(values, cmap="RdBu_r", vmin=-half, vmax=half, origin=origin)
            else:
                cmap = "gray" if name == "M0" else "viridis"
                values = np.where(shown, x, np.nan)[crop]
                image = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi, origin=origin)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            if row == 0:
                ax.set_title(title, fontsize=10)
            if col == 0:
                ax.set_ylabel(TITLES[name])
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(
        "Pulseq 3-echo GRE phantom (TE 4/9/15 ms), one coil: maps, and differences inside the "
        "scoring mask",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=64)
    plt.close(fig)


def table(record: dict[str, Any]) -> str:
    """The markdown table of docs/TUTORIAL.md."""
    lines = [
        "| method | R2* MAD / RMSE [1/s] | B0 MAD / RMSE [Hz] | M0 MAD / RMSE [%] | time [s] |",
        "|---|---|---|---|---|",
    ]
    for out, entry in record["methods"].items():
        s = entry["scores"]
        cells = [
            f"{s['R2star']['mad']:.2f} / {s['R2star']['rmse']:.2f}",
            f"{s['B0']['mad']:.2f} / {s['B0']['rmse']:.2f}",
            f"{100 * s['M0']['mad']:.1f} / {100 * s['M0']['rmse']:.1f}",
        ]
        seconds = entry["wall_seconds"]
        time = "-" if seconds is None else f"{seconds:.1f}"
        lines.append(f"| {out} | " + " | ".join(cells) + f" | {time} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--R", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks/work/real_pulseq")
    parser.add_argument("--rerun", action="store_true", help="run every step again")
    args = parser.parse_args(argv)
    if not RAW.exists() or not SEQ.exists():
        print(f"{DATA}: the Pulseq scan is not there (02_GRE_3echoes.dat and .seq)")
        return 2
    torch.set_num_threads(1)
    work = args.workdir.resolve()
    seconds = reconstruct(work, args.R, args.seed, args.rerun)

    problem = read_problem(work / "full.h5")
    images = first_echo_images(problem)
    fitted = read_maps(work / "fit-full")["mask"][0].numpy() > 0
    mask, shown, background = phantom_mask(images, fitted)
    maps = {out: comparable(read_maps(work / out)) for out in seconds}
    ref = maps["fit-full"]
    seconds["constant"] = None
    maps["constant"] = constant_maps(ref, mask)
    results = {
        out: scores(differences(m, ref, mask)) for out, m in maps.items() if out != "fit-full"
    }
    thermal = thermal_noise(problem, work / "fit-full", images, background, mask)
    spatial = spatial_noise(ref, mask)
    residual_sigma = model_residual(problem, work / "fit-full", images, mask)
    record = {
        "data": str(RAW.relative_to(ROOT.parent)),
        "R": args.R,
        "seed": args.seed,
        "mask": {
            "rule": f"first-echo magnitude > {MASK_FRACTION} x its 99th percentile, eroded "
            f"{MASK_EROSION} voxels, inside the reference fit's support",
            "voxels": int(mask.sum()),
        },
        "reference": {"method": "fit-full", "wall_seconds": seconds["fit-full"]},
        "noise": {
            **thermal,
            "sigma_model_residual": residual_sigma,
            "fit_noise_spatial": spatial,
        },
        "methods": {out: {"wall_seconds": seconds[out], "scores": results[out]} for out in results},
        "conditions": conditions(results, spatial, args.R),
        "units": UNITS,
        "recorded": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "lorein": __version__,
            "commit": commit(),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"R{args.R}-seed{args.seed}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    figure(FIGURE, problem, maps, mask, shown, args.R)
    print(table(record))
    print(json.dumps({"noise": record["noise"], "conditions": record["conditions"]}, indent=2))
    print(f"wrote {out} and {FIGURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
