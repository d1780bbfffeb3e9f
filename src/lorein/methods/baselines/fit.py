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
from dataclasses import dataclass, replace
from typing import Literal

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Method, RunContext, finish, problem_model
from lorein.methods.calibration import espirit_coils, estimate_from_calibration
from lorein.numerics.sense import sense_images, zero_filled_images
from lorein.numerics.voxel_fit import FitMethod, fit_maps
from lorein.physics.coils import apply_coil_compression, coil_compression
from lorein.settings import Count, PositiveCount, validate


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
    sense_iterations: Count = 15
    fit: FitMethod = "nlls"
    fit_iterations: Count = 6
    coil_compression: PositiveCount | None = None

    def __post_init__(self) -> None:
        validate(self)


class Fit(Method):
    """CG-SENSE or zero-filled images of every contrast, then a voxel-wise fit.

    The pipeline is deterministic and short, so it neither checkpoints nor draws random numbers.
    It works in data units (no calibration scaling): SENSE with known coils compresses them with
    the data's own compression matrix. Returns the calibration support as mask, the weighted
    images ``[T, nz, ny, nx]`` and the coils used.
    """

    name = "fit"
    description = "CG-SENSE or zero-filled images, voxel-wise fit"
    config_class = FitConfig

    def reconstruct(self, problem: Problem, config: FitConfig, context: RunContext) -> Maps:
        if config.images not in ("sense", "zero-filled"):
            raise ValueError(f"fit: images must be 'sense' or 'zero-filled', got {config.images!r}")
        start = time.perf_counter()
        dev = context.device
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
        model = problem_model(problem, context)
        maps = fit_maps(
            images,
            model,
            mask=support.to(dev),
            method=config.fit,
            iterations=config.fit_iterations,
        )
        return finish(
            maps,
            model=model,
            mask=support,
            images=images,
            coils=coils,
            extras={"history": []},
            config=config,
            started=start,
        )
