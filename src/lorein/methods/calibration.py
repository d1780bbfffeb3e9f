"""What a reconstruction learns from the calibration region before it starts.

The union of acquired lines over all contrasts covers a central ky-kz region fully (the sampling
guarantees it). Averaging those lines over contrasts gives a time-averaged, low-resolution image
per coil, from which we take:

- the intensity scale of the data (so that every method works on data of a fixed range);
- a smooth coil-sensitivity estimate ``c = x_c / rss(x)`` to warm-start the coil field;
- a support mask where the low-resolution image has signal (above 5 % of its maximum), grown by
  one voxel in-plane.

Only acquired k-space is used: nothing here reads the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from lorein.data.problem import Problem
from lorein.physics.coils import calibration_region, coil_compression, espirit
from lorein.physics.fft import centered_ifft


def covered_calibration_size(ky: torch.Tensor, kz: torch.Tensor, grid: tuple[int, int]) -> tuple:
    """Largest centred ``(ccy, ccz)`` rectangle whose every location was acquired at least once.

    Parameters
    ----------
    ky, kz
        ``[L]`` line locations.
    grid
        ``(ny, nz)``.
    """
    ny, nz = grid
    union = torch.zeros(nz, ny, dtype=torch.bool)
    union[kz.long().cpu(), ky.long().cpu()] = True
    best = (0, 0)
    for ccz in range(1, nz + 1):
        z0 = nz // 2 - ccz // 2
        for ccy in range(1, ny + 1):
            y0 = ny // 2 - ccy // 2
            if not union[z0 : z0 + ccz, y0 : y0 + ccy].all():
                break
            if ccy * ccz > best[0] * best[1]:
                best = (ccy, ccz)
    return best


def problem_calibration(
    problem: Problem, kspace: torch.Tensor
) -> tuple[tuple[int, int], torch.Tensor]:
    """The largest fully covered calibration region of a problem and its averaged k-space.

    Returns
    -------
    ``(ccy, ccz)`` and the ``[n_coils, ccz, ccy, nx]`` calibration k-space (on the CPU).

    Raises
    ------
    ValueError
        Naming the problem file when the union of lines covers no usable central region.
    """
    size = covered_calibration_size(problem.ky, problem.kz, problem.grid.phase_encodes)
    if size[0] < 2 or size[1] < 1:
        raise ValueError(
            f"{problem.source}: kspace: expected a fully covered central calibration region "
            f"(union of lines over contrasts), found only {size[0]} x {size[1]} locations"
        )
    phase_encodes = problem.grid.phase_encodes
    calib = calibration_region(
        kspace.cpu(), problem.ky.cpu(), problem.kz.cpu(), phase_encodes, size
    )
    return size, calib


@dataclass
class CalibrationEstimate:
    """Low-resolution, time-averaged information from the calibration region.

    Attributes
    ----------
    scale
        Intensity scale: the 99th percentile of the root-sum-of-squares low-resolution image.
    coils
        ``[n_coils, nz, ny, nx]`` complex64 smooth sensitivities, unit RSS inside ``support``.
    support
        ``[nz, ny, nx]`` bool, where the low-resolution image exceeds 5% of its maximum.
    size
        ``(ccy, ccz)`` calibration region used.
    level
        Median magnitude of the scaled low-resolution image inside ``support``.
    """

    scale: float
    coils: torch.Tensor
    support: torch.Tensor
    size: tuple[int, int]
    level: float


def dilate_in_plane(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """``mask [nz, ny, nx]`` grown by ``radius`` voxels in y and x (a square neighbourhood).

    The low-resolution image falls below the support threshold at the edge of the object and where
    intravoxel dephasing darkens tissue (near air-tissue interfaces): with a fully sampled
    calibration region the threshold alone left 34 brain voxels of a sim1-small draw outside.
    """
    grown = F.max_pool2d(mask.float().unsqueeze(1), 2 * radius + 1, stride=1, padding=radius)
    return grown.squeeze(1) > 0


def estimate_from_calibration(problem: Problem, kspace: torch.Tensor) -> CalibrationEstimate:
    """Scale, coil sensitivities and support from the calibration region of ``kspace``.

    Parameters
    ----------
    problem
        The problem (line locations and grid).
    kspace
        ``[L, n_coils, nx]`` acquired lines (possibly coil-compressed).
    """
    nz, ny, nx = problem.grid
    size, calib = problem_calibration(problem, kspace)
    ccy, ccz = size
    window = torch.outer(
        torch.hann_window(ccz + 2, periodic=False)[1:-1],
        torch.hann_window(ccy + 2, periodic=False)[1:-1],
    )
    full = torch.zeros(kspace.shape[1], nz, ny, nx, dtype=torch.complex64)
    z0, y0 = nz // 2 - ccz // 2, ny // 2 - ccy // 2
    full[:, z0 : z0 + ccz, y0 : y0 + ccy, :] = calib * window[None, :, :, None]
    images = centered_ifft(full)
    rss = images.abs().pow(2).sum(0).sqrt()
    support = dilate_in_plane(rss > 0.05 * rss.max())
    scale = float(torch.quantile(rss.flatten(), 0.99))
    if not torch.isfinite(rss).all():
        raise ValueError(
            f"{problem.source}: /kspace/data: the calibration region's low-resolution image "
            f"overflows float32 (largest sample magnitude {float(calib.abs().max()):.3g}); "
            "expected k-space scaled within float32's range: divide it by a constant"
        )
    if not scale > 0:
        raise ValueError(
            f"{problem.source}: /kspace/data: the calibration region holds no signal (its "
            f"low-resolution image's 99th percentile is {scale}); expected measured k-space"
        )
    coils = torch.where(support, images / rss.clamp_min(1e-12), torch.zeros_like(images))
    level = float(rss[support].median()) / scale
    dev = kspace.device
    return CalibrationEstimate(scale, coils.to(dev), support.to(dev), size, level)


ESPIRIT_THRESHOLD = 0.1
"""Relative singular-value threshold of the ESPIRiT signal subspace for multi-contrast data.

The union of lines over contrasts covers the calibration region with lines of *different*
contrasts (at sim1-small R = 27 it covers the whole 56 x 8 plane, 1-6 lines per location), so the
averaged calibration k-space is not one image's k-space, and with the usual 0.02 the
inconsistencies enter the signal subspace; 0.1 keeps them out (measured on a seed-1 problem:
docs/tuning/calibration.md)."""


ESPIRIT_CROP = 0.8
"""Eigenvalue below which ESPIRiT maps are zero (BART's ``ecalib`` default). At 0.95 the
contrast-averaged calibration data, which dephase near air (B0), left brain voxels without coils
and every ESPIRiT-based method with zero maps there (docs/tuning/calibration.md)."""


def espirit_coils(problem: Problem, kspace: torch.Tensor | None = None) -> torch.Tensor:
    """ESPIRiT coil sensitivities from the problem's calibration region (the baselines' coils).

    Parameters
    ----------
    problem
        The problem (line locations and grid).
    kspace
        ``[L, n_coils, nx]`` acquired lines to use instead of ``problem.kspace`` (e.g. after coil
        compression).

    Returns
    -------
    ``[n_coils, nz, ny, nx]`` complex64 maps on ``kspace``'s device, unit norm over coils where
    the ESPIRiT eigenvalue reaches :data:`ESPIRIT_CROP`, zero elsewhere. With a single coil,
    1 inside the calibration support (:func:`estimate_from_calibration`) and 0 outside: one
    channel carries no sensitivity to estimate (its ESPIRiT map, phase-referenced to itself, is
    1 wherever the eigenvalue passes the crop, a support estimate by other means), and the image
    keeps the coil's phase, as the maps' phase-referenced images keep coil 0's.
    """
    kspace = problem.kspace if kspace is None else kspace
    if kspace.shape[1] == 1:
        return estimate_from_calibration(problem, kspace).support.to(torch.complex64)[None]
    nz, ny, nx = problem.grid
    size, calib = problem_calibration(problem, kspace)
    maps = espirit(
        calib.to(torch.complex64), (nx, ny, nz), threshold=ESPIRIT_THRESHOLD, crop=ESPIRIT_CROP
    )
    return maps.to(kspace.device, torch.complex64)


def scaled_kspace(
    problem: Problem, n_virtual: int | None, device: torch.device | str
) -> tuple[torch.Tensor, CalibrationEstimate]:
    """The acquired lines on ``device``, SVD-compressed and divided by the calibration scale.

    Parameters
    ----------
    problem
        The problem.
    n_virtual
        Number of virtual coils (None, or at least the number of coils: no compression).
    device
        Where the lines go.

    Returns
    -------
    ``[L, n_coils', nx]`` complex64 lines of unit intensity scale, and the calibration estimate
    of the (compressed, unscaled) lines whose ``scale`` maps the results back to data units.
    """
    kspace = problem.kspace.to(device)
    if n_virtual is not None and n_virtual < problem.n_coils:
        kspace, _ = coil_compression(kspace, n_virtual, coil_dim=1)
    calib = estimate_from_calibration(problem, kspace)
    return kspace / calib.scale, calib
