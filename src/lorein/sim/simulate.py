"""Simulate a problem file: phantom, coils, sampling, signal model, noise.

By default (``simulation = "fine-grid"``) the object is rendered on a grid ``oversampling`` times
finer than the reconstruction matrix and a few slices longer than the slab in z, turned into
contrast images by the signal model there, weighted by the slab profile, band-limited by cropping
its k-space and cut to the slab (:mod:`lorein.sim.fine_grid` states the physics); coil
sensitivities act on the band-limited images. With ``paper_protocol`` (``simulation =
"paper-protocol"``) the signal comes from the truth maps on the reconstruction grid itself, as in
the paper. Only the acquired lines are kept, and contrasts are streamed in chunks so that memory
stays bounded.
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
from lorein.physics.contrasts import ContrastTable
from lorein.physics.fft import centered_fft, centered_ifft
from lorein.physics.models.base import SignalModel
from lorein.physics.models.registry import signal_model
from lorein.physics.sampling import LineSampling, sample_lines
from lorein.sim.fine_grid import FineGrid
from lorein.sim.phantom import BrainPhantom, PhantomMaps, grid_affine
from lorein.sim.presets import Preset

MAP_NAMES = ("M0", "T1", "T2", "T2star", "B0", "phase0")

SIMULATIONS = ("fine-grid", "paper-protocol")
"""Values of a simulated problem file's root attribute ``simulation``: the object on a finer grid
than the reconstruction's, band-limited (partial volume, no inverse crime), or the signal of the
truth maps on the reconstruction grid (the paper's setting)."""


@dataclass
class Simulation:
    """A simulated acquisition: the problem a reconstruction sees and the truth it must not.

    Attributes
    ----------
    problem
        The acquired lines, contrast table and geometry.
    truth
        The truth maps on the reconstruction grid as the signal model defines them
        (:meth:`~lorein.physics.models.base.SignalModel.from_tissue`: ``megre``'s apparent
        ``M0``), mask, coils, ``purity`` and ``labels``.
    noise_std
        Standard deviation of the complex noise per k-space sample.
    seconds
        Wall time of the simulation [s].
    simulation
        One of :data:`SIMULATIONS`.
    oversampling
        Fine-grid factor per axis (1 for ``"paper-protocol"``).
    slab_margin
        Reconstruction slices rendered on each side of the slab
        (:data:`~lorein.sim.fine_grid.SLAB_MARGIN`, 0 without a finer grid).
    """

    problem: Problem
    truth: Truth
    noise_std: float
    seconds: float
    simulation: str
    oversampling: int
    slab_margin: int

    def attrs(self) -> dict[str, str | int]:
        """Root attributes of the problem file that say how its data were made:
        ``simulation``, ``oversampling``, ``slab_margin``."""
        return {
            "simulation": self.simulation,
            "oversampling": self.oversampling,
            "slab_margin": self.slab_margin,
        }


def crop_kspace(k: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Central ``shape = (nz, ny, nx)`` block of centred k-space ``[..., Nz, Ny, Nx]``."""
    slices = []
    for n_out, n_in in zip(shape, k.shape[-3:], strict=True):
        start = n_in // 2 - n_out // 2
        slices.append(slice(start, start + n_out))
    return k[(..., *slices)]


def band_limit(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Fine-grid images ``[..., Nz, Ny, Nx]`` -> band-limited images on the coarse ``shape``.

    Intensities are preserved: a constant image keeps its value. Images already of ``shape``
    are returned as they are.
    """
    if tuple(images.shape[-3:]) == tuple(shape):
        return images
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


def slab_images(images: torch.Tensor, fine: FineGrid, profile: torch.Tensor) -> torch.Tensor:
    """Band-limited images of the slab from fine-grid images of the extended volume.

    Parameters
    ----------
    images
        ``[t, nz_fine, ny_fine, nx_fine]`` contrast images on ``fine``'s rendering grid;
        overwritten (weighted by the slab profile in place).
    fine
        The simulation's fine grid.
    profile
        ``[nz_fine]`` slab profile (:meth:`~lorein.sim.fine_grid.FineGrid.slab_profile`).

    Returns
    -------
    ``[t, nz, ny, nx]`` images on the reconstruction grid.
    """
    images.mul_(profile.view(-1, 1, 1).to(images.dtype))
    return fine.crop(band_limit(images, fine.extended.shape))


def _sampling(
    preset: Preset, contrasts: ContrastTable, acceleration: float, pattern: str, seed: int
) -> LineSampling:
    """The acquired lines of ``preset`` at R = ``acceleration``, grouped by contrast."""
    nz, ny, _ = Grid.from_matrix(preset.matrix)
    readout = contrasts.readout_index()
    if not preset.shared_echo_lines:
        readout = torch.arange(contrasts.n_contrasts)
    sampling = sample_lines(
        ny, nz, readout, acceleration, pattern=pattern, calib=preset.calibration, seed=seed
    )
    order = torch.argsort(sampling.contrast, stable=True)
    return LineSampling(
        ky=sampling.ky[order],
        kz=sampling.kz[order],
        contrast=sampling.contrast[order],
        shape=sampling.shape,
        n_contrasts=sampling.n_contrasts,
    )


@dataclass
class _Object:
    """What the acquisition sees: the signal model's fine-grid maps, their grid, the brain mask,
    the coils."""

    maps: dict[str, torch.Tensor]
    fine: FineGrid
    mask: torch.Tensor
    coils: torch.Tensor


def _acquire(
    preset: Preset,
    model: SignalModel,
    obj: _Object,
    sampling: LineSampling,
    chunk: int,
    progress: bool,
    device: torch.device,
) -> tuple[torch.Tensor, float]:
    """Noiseless lines ``[n_lines, coil, nx]`` (on the CPU) and the mean magnitude in the brain
    of the band-limited images over all contrasts of ``model``'s table."""
    contrasts = model.contrasts
    nz, ny, nx = obj.fine.grid
    dft_y, dft_z = centered_dft_matrix(ny).to(device), centered_dft_matrix(nz).to(device)
    maps = {name: value.to(device) for name, value in obj.maps.items()}
    profile = obj.fine.slab_profile().to(device)
    mask, coils = obj.mask.bool().to(device), obj.coils.to(device)
    ky, kz = sampling.ky.to(device), sampling.kz.to(device)
    lines = torch.empty(len(ky), preset.n_coils, nx, dtype=torch.complex64, device=device)
    magnitude_sum = 0.0
    bounds = range(0, contrasts.n_contrasts, chunk)
    for lo in tqdm(bounds, desc=f"simulate {preset.name}", disable=not progress, unit="chunk"):
        hi = min(lo + chunk, contrasts.n_contrasts)
        chunk_model = model.with_contrasts(contrasts.subset(slice(lo, hi)))
        images = slab_images(chunk_model(maps), obj.fine, profile)  # [t, nz, ny, nx]
        magnitude_sum += float(images.abs()[:, mask].sum())
        rows = torch.nonzero((sampling.contrast >= lo) & (sampling.contrast < hi)).squeeze(1)
        if len(rows) == 0:
            continue
        hybrid = centered_fft(images.unsqueeze(1) * coils, dim=(-1,))  # [t, coil, nz, ny, nx]
        for t in torch.unique(sampling.contrast[rows]).tolist():
            sel = rows[sampling.contrast[rows] == t]
            lines[sel] = lines_at(hybrid[t - lo], ky[sel], kz[sel], dft_y, dft_z)
    mean_magnitude = magnitude_sum / (contrasts.n_contrasts * int(mask.sum()))
    return lines.cpu(), mean_magnitude


def simulate(
    preset: Preset,
    acceleration: float,
    seed: int = 0,
    snr: float | None = None,
    pattern: str = "vd-random",
    chunk: int = 8,
    progress: bool = True,
    device: str | torch.device = "cpu",
    paper_protocol: bool = False,
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
    paper_protocol
        Make the signal from the truth maps on the reconstruction grid itself (no finer grid, no
        partial volume: purity 1 everywhere), as the paper's simulations do; the data are then
        exactly the discrete model of the truth (the inverse crime). Default: the fine grid of
        ``preset.oversampling`` with its slab margin (module :mod:`lorein.sim.fine_grid`).
    """
    start = time.perf_counter()
    snr = preset.snr if snr is None else snr
    if not snr > 0:  # also refuses nan
        raise ValueError(f"snr = {snr}: expected a positive number, or inf for no noise")
    contrasts = preset.contrast_table()
    phantom = BrainPhantom(seed=seed)
    oversampling = 1 if paper_protocol else preset.oversampling
    fine = FineGrid.for_simulation(preset.matrix, preset.voxel_size, oversampling)
    coarse = phantom.render(matrix=preset.matrix, voxel_size=preset.voxel_size)
    rendered = coarse
    if fine.render_matrix != tuple(preset.matrix):
        rendered = phantom.render(matrix=fine.render_matrix, voxel_size=fine.render_voxel_size)
    coils = rss_normalise(simulate_coils(preset.n_coils, preset.matrix, preset.voxel_size))
    sampling = _sampling(preset, contrasts, acceleration, pattern, seed)
    model = signal_model(preset.signal_model, contrasts)
    obj = _Object(model.from_tissue(_maps_dict(rendered)), fine, coarse.mask, coils)
    lines, mean_magnitude = _acquire(
        preset, model, obj, sampling, chunk, progress, torch.device(device)
    )
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
    truth_maps = model.from_tissue(_maps_dict(coarse))
    truth = Truth(
        **{name: truth_maps[name].float() for name in MAP_NAMES},
        mask=coarse.mask.to(torch.uint8),
        coils=coils,
        purity=fine.purity(rendered.labels),
        extra={"labels": coarse.labels},
    )
    kind = "paper-protocol" if paper_protocol else "fine-grid"
    seconds = time.perf_counter() - start
    return Simulation(problem, truth, noise_std, seconds, kind, fine.oversampling, fine.margin)
