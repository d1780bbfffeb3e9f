"""The ``fit`` baseline: weighted images from k-space, then a voxel-wise parameter fit.

Images are CG-SENSE (default) or zero-filled reconstructions of every contrast, with the
problem's known coil sensitivities when it has them and ESPIRiT maps from the calibration region
otherwise; maps come from :func:`lorein.numerics.voxel_fit.fit_maps` (nonlinear least squares from a
dictionary initialisation, or dictionary matching alone). This is the classical pipeline every
model-based method is measured against, and the reference of the "beats zero-filled fitting"
tests of the other baselines.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.calibration import espirit_coils, estimate_from_calibration
from lorein.numerics.voxel_fit import FitMethod, fit_maps, sense_images, zero_filled_images
from lorein.physics.coils import apply_coil_compression, coil_compression
from lorein.physics.signal_models import signal_model


@dataclass
class FitConfig:
    """Hyper-parameters of the ``fit`` baseline.

    Attributes
    ----------
    images
        ``"sense"`` (CG-SENSE per contrast) or ``"zero-filled"`` (density-compensated adjoint).
    sense_iterations
        CG iterations per contrast (early stopping is the only regularisation).
    fit
        ``"nlls"`` (dictionary initialisation, then Levenberg-Marquardt) or ``"dictionary"``.
    fit_iterations
        Levenberg-Marquardt iterations.
    coil_compression
        Number of virtual coils (SVD compression); None keeps all coils.
    """

    images: Literal["sense", "zero-filled"] = "sense"
    sense_iterations: int = 15
    fit: FitMethod = "nlls"
    fit_iterations: int = 6
    coil_compression: int | None = None


def reconstruct(
    problem: Problem,
    config: FitConfig | None = None,
    device: str = "cpu",
    seed: int = 0,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Maps:
    """Weighted images and voxel-wise maps of a problem.

    ``seed``, ``checkpoint``, ``resume`` and ``progress`` are accepted for the common method
    interface; the pipeline is deterministic and short, so it neither checkpoints nor draws
    random numbers.

    Returns
    -------
    Maps (M0 in data units, times [s], B0 [Hz], phase0 [rad]), the calibration support as mask,
    the weighted images ``[T, nz, ny, nx]`` and the ESPIRiT coils.
    """
    config = config or FitConfig()
    if config.images not in ("sense", "zero-filled"):
        raise ValueError(f"fit: images must be 'sense' or 'zero-filled', got {config.images!r}")
    start = time.perf_counter()
    dev = torch.device(device)
    kspace = problem.kspace
    if config.coil_compression is not None and config.coil_compression < problem.n_coils:
        kspace, matrix = coil_compression(kspace, config.coil_compression, coil_dim=1)
        known = problem.coils
        if known is not None:  # the same virtual coils: exact, since compression is linear
            known = apply_coil_compression(known, matrix.to(known.device), coil_dim=0)
        problem = replace(problem, kspace=kspace, coils=known)
    coils = (problem.coils if problem.coils is not None else espirit_coils(problem)).to(dev)
    support = estimate_from_calibration(problem, kspace).support.cpu()
    if config.images == "sense":
        images = sense_images(problem, coils, iterations=config.sense_iterations)
    else:
        images = zero_filled_images(problem, coils)
    model = signal_model(problem.signal_model, problem.contrasts.to(dev))
    maps = fit_maps(
        images, model, mask=support.to(dev), method=config.fit, iterations=config.fit_iterations
    )
    return Maps(
        values={k: v.float().cpu() for k, v in maps.items()},
        mask=support.to(torch.uint8),
        images=images.cpu(),
        coils=coils.cpu(),
        extras={"history": [], "seconds": time.perf_counter() - start, "config": asdict(config)},
    )
