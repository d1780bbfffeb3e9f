"""Simulate a problem file: phantom, coils, sampling, signal model, noise.

The object is rendered on a grid ``oversampling`` times finer than the reconstruction matrix,
turned into contrast images by the signal model there, and band-limited to the target matrix by
cropping its k-space; coil sensitivities act on the band-limited images. Only the acquired lines
are kept, and contrasts are streamed in chunks so that memory stays bounded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from lorein.data.grid import Grid
from lorein.data.problem import Problem, Truth
from lorein.physics.coils import rss_normalise, simulate_coils
from lorein.physics.fft import centered_fft, centered_ifft
from lorein.physics.sampling import LineSampling, sample_lines
from lorein.physics.signal_models import signal_model
from lorein.sim.phantom import BrainPhantom, PhantomMaps, grid_affine
from lorein.sim.presets import Preset

MAP_NAMES = ("M0", "T1", "T2", "T2star", "B0", "phase0")


@dataclass
class Simulation:
    """A simulated acquisition: the problem a reconstruction sees and the truth it must not."""

    problem: Problem
    truth: Truth
    noise_std: float
    seconds: float


def crop_kspace(k: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Central ``shape = (nz, ny, nx)`` block of centred k-space ``[..., Nz, Ny, Nx]``."""
    slices = []
    for n_out, n_in in zip(shape, k.shape[-3:], strict=True):
        start = n_in // 2 - n_out // 2
        slices.append(slice(start, start + n_out))
    return k[(..., *slices)]


def band_limit(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Fine-grid images ``[..., Nz, Ny, Nx]`` -> band-limited images on the coarse ``shape``.

    Intensities are preserved: a constant image keeps its value.
    """
    scale = math.sqrt(math.prod(images.shape[-3:]) / math.prod(shape))
    return centered_ifft(crop_kspace(centered_fft(images), shape)) / scale


def centered_dft_matrix(n: int) -> torch.Tensor:
    """``[n, n]`` complex64 centred orthonormal DFT: row ``k`` is frequency ``k - n // 2``."""
    j = torch.arange(n, dtype=torch.float64) - n // 2
    phase = -2 * torch.pi * torch.outer(j, j) / n
    return (torch.polar(torch.ones_like(phase), phase) / math.sqrt(n)).to(torch.complex64)


def lines_at(
    hybrid: torch.Tensor,
    ky: torch.Tensor,
    kz: torch.Tensor,
    dft_y: torch.Tensor,
    dft_z: torch.Tensor,
) -> torch.Tensor:
    """Readout lines of one contrast from its hybrid-space coil images.

    Only the acquired ``(ky, kz)`` are transformed,
    ``sum_{z,y} W_z[kz, z] W_y[ky, y] x[c, z, y, :]``,
    which is cheaper than full 2D FFTs when a contrast has few lines (sim2: 3-4 of 3360).

    Parameters
    ----------
    hybrid
        ``[coil, nz, ny, nx]`` coil images already transformed along x.
    ky, kz
        ``[r]`` line locations.
    dft_y, dft_z
        Centred DFT matrices of :func:`centered_dft_matrix`.

    Returns
    -------
    ``[r, coil, nx]`` k-space lines.
    """
    weights = dft_z[kz][:, :, None] * dft_y[ky][:, None, :]  # [r, nz, ny]
    coil, nz, ny, nx = hybrid.shape
    flat = hybrid.permute(1, 2, 0, 3).reshape(nz * ny, coil * nx)
    return (weights.reshape(-1, nz * ny) @ flat).reshape(-1, coil, nx)


def _maps_dict(maps: PhantomMaps) -> dict[str, torch.Tensor]:
    return {name: getattr(maps, name) for name in MAP_NAMES}


def simulate(
    preset: Preset,
    acceleration: float,
    seed: int = 0,
    snr: float | None = None,
    pattern: str = "vd-random",
    chunk: int = 8,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Simulation:
    """Simulate one acquisition of ``preset`` at acceleration ``R``.

    Parameters
    ----------
    preset
        The protocol.
    acceleration
        R of paper eq. 19 (total samples / acquired samples).
    seed
        Seeds the phantom's anatomy, the sampling pattern and the noise.
    snr
        Mean coil-combined magnitude in the brain over all contrasts divided by the noise standard
        deviation per complex k-space sample; default ``preset.snr``; ``inf`` for no noise.
    pattern
        ``"vd-random"`` or ``"poisson"`` ky-kz sampling.
    chunk
        Contrasts simulated at once (bounds memory).
    progress
        Show a progress bar.
    device
        Where the signal model, the band-limiting FFTs and the line extraction run (``"cpu"``,
        ``"cuda"``); the phantom, the sampling and the noise are drawn on the CPU, so a seed gives
        the same problem on every device (to float rounding).
    """
    start = time.perf_counter()
    snr = preset.snr if snr is None else snr
    grid = Grid.from_matrix(preset.matrix)
    nz, ny, nx = grid
    contrasts = preset.contrast_table()
    phantom = BrainPhantom(seed=seed)
    os_ = preset.oversampling
    fine = phantom.render(
        matrix=tuple(n * os_ for n in preset.matrix),
        voxel_size=tuple(d / os_ for d in preset.voxel_size),
    )
    coarse = phantom.render(matrix=preset.matrix, voxel_size=preset.voxel_size)
    coils = rss_normalise(simulate_coils(preset.n_coils, preset.matrix, preset.voxel_size))

    readout = contrasts.readout_index()
    if not preset.shared_echo_lines:
        readout = torch.arange(contrasts.n_contrasts)
    sampling = sample_lines(
        ny, nz, readout, acceleration, pattern=pattern, calib=preset.calibration, seed=seed
    )
    order = torch.argsort(sampling.contrast, stable=True)
    sampling = LineSampling(
        ky=sampling.ky[order],
        kz=sampling.kz[order],
        contrast=sampling.contrast[order],
        shape=sampling.shape,
        n_contrasts=sampling.n_contrasts,
    )

    dev = torch.device(device)
    dft_y, dft_z = centered_dft_matrix(ny).to(dev), centered_dft_matrix(nz).to(dev)
    fine_maps = {name: value.to(dev) for name, value in _maps_dict(fine).items()}
    mask = coarse.mask.bool().to(dev)
    coil_maps = coils.to(dev)
    ky, kz = sampling.ky.to(dev), sampling.kz.to(dev)
    lines = torch.empty(len(sampling.ky), preset.n_coils, nx, dtype=torch.complex64, device=dev)
    magnitude_sum = 0.0
    bounds = range(0, contrasts.n_contrasts, chunk)
    for lo in tqdm(bounds, desc=f"simulate {preset.name}", disable=not progress, unit="chunk"):
        hi = min(lo + chunk, contrasts.n_contrasts)
        model = signal_model(preset.signal_model, contrasts.subset(slice(lo, hi)))
        images = band_limit(model(fine_maps), grid.shape)  # [t, nz, ny, nx]
        magnitude_sum += float(images.abs()[:, mask].sum())
        rows = torch.nonzero((sampling.contrast >= lo) & (sampling.contrast < hi)).squeeze(1)
        if len(rows) == 0:
            continue
        hybrid = centered_fft(images.unsqueeze(1) * coil_maps, dim=(-1,))  # [t, coil, nz, ny, nx]
        for t in torch.unique(sampling.contrast[rows]).tolist():
            sel = rows[sampling.contrast[rows] == t]
            lines[sel] = lines_at(hybrid[t - lo], ky[sel], kz[sel], dft_y, dft_z)

    lines = lines.cpu()
    mean_magnitude = magnitude_sum / (contrasts.n_contrasts * int(mask.sum()))
    noise_std = 0.0 if math.isinf(snr) else mean_magnitude / snr
    if noise_std > 0:
        g = torch.Generator().manual_seed(seed + 1)
        noise = torch.complex(
            torch.randn(lines.shape, generator=g), torch.randn(lines.shape, generator=g)
        )
        lines += noise * (noise_std / math.sqrt(2))

    problem = Problem(
        signal_model=preset.signal_model,
        kspace=lines,
        ky=sampling.ky,
        kz=sampling.kz,
        contrast=sampling.contrast,
        contrasts=contrasts,
        matrix=preset.matrix,
        voxel_size=preset.voxel_size,
        affine=grid_affine(preset.matrix, preset.voxel_size),
        coils=None,
        source=f"preset {preset.name}",
    )
    truth = Truth(
        **{name: getattr(coarse, name).float() for name in MAP_NAMES},
        mask=coarse.mask.to(torch.uint8),
        coils=coils,
        extra={"labels": coarse.labels},
    )
    return Simulation(problem, truth, noise_std, time.perf_counter() - start)
