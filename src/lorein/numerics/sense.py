"""Weighted images of every contrast from k-space: zero-filled and CG-SENSE.

Both work contrast by contrast through the encoding operator ``E_t = M_t F C`` without subspace,
in chunks of contrasts whose coil k-space fits a memory budget; contrasts without lines cost
nothing and come out as zeros. They are the first stage of the ``fit`` baseline and the
references of the baselines' tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from lorein.data.problem import Problem
from lorein.numerics.cg import conjugate_gradient
from lorein.physics.operators import EncodingOperator

_KSPACE_CHUNK_BYTES = 2**27
"""Default budget [bytes] of one chunk's coil k-space in :func:`sense_images`."""


def _chunks(
    problem: Problem, coils: torch.Tensor, chunk_contrasts: int | None
) -> Iterator[tuple[torch.Tensor, EncodingOperator, torch.Tensor]]:
    """``(contrasts, E, lines)`` per chunk of the contrasts that have lines, on the coils' device.

    ``E = M F C`` maps the images of the chunk's ``contrasts`` (``[n, nz, ny, nx]``, in that
    order) to its acquired ``lines [L, coil, nx]``. Contrasts without lines are left out, so they
    cost no transforms.
    """
    nx, ny, nz = problem.matrix
    expected = (problem.n_coils, nz, ny, nx)
    if tuple(coils.shape) != expected:
        raise ValueError(f"coils have shape {tuple(coils.shape)}, expected {expected}")
    if chunk_contrasts is None:
        chunk_contrasts = max(1, _KSPACE_CHUNK_BYTES // (problem.n_coils * nx * ny * nz * 8))
    if chunk_contrasts < 1:
        raise ValueError(f"chunk_contrasts must be positive, got {chunk_contrasts}")
    present = torch.nonzero(problem.lines_per_contrast() > 0).squeeze(1)
    frame = torch.full((problem.n_contrasts,), -1, dtype=torch.int64)
    device = coils.device
    for start in range(0, present.numel(), chunk_contrasts):
        contrasts = present[start : start + chunk_contrasts]
        frame[contrasts] = torch.arange(contrasts.numel())
        rows = torch.nonzero(frame[problem.contrast] >= 0).squeeze(1)
        op = EncodingOperator(
            coils,
            problem.ky[rows].to(device),
            problem.kz[rows].to(device),
            frame[problem.contrast[rows]].to(device),
            n_contrasts=contrasts.numel(),
        )
        yield contrasts.to(device), op, problem.kspace[rows].to(device)
        frame[contrasts] = -1


def zero_filled_images(
    problem: Problem, coils: torch.Tensor, chunk_contrasts: int | None = None
) -> torch.Tensor:
    """Coil-combined zero-filled images with per-contrast density compensation.

    ``I_t = (E_t^H y_t) / (f_t sum_c |C_c|^2)`` with ``f_t`` the fraction of the ``ny nz``
    phase-encoding locations that contrast ``t`` samples (repeats counted). For fully sampled data
    this is the exact image; for undersampled data the scale is right on average over k-space
    (for an image with a flat spectrum; variable-density sampling weighs the centre more).

    Parameters
    ----------
    problem
        Acquired lines, contrast table and geometry.
    coils
        ``[n_coils, nz, ny, nx]`` complex64 sensitivities.
    chunk_contrasts
        Contrasts transformed at once (default: as many as keep one chunk's coil k-space under
        128 MiB).

    Returns
    -------
    ``[T, nz, ny, nx]`` complex64 on the coils' device; zeros for contrasts without lines and
    where the coils vanish.
    """
    nx, ny, nz = problem.matrix
    images = torch.zeros(
        problem.n_contrasts, nz, ny, nx, dtype=torch.complex64, device=coils.device
    )
    for contrasts, op, lines in _chunks(problem, coils, chunk_contrasts):
        images[contrasts] = op.adjoint(lines)
    fraction = problem.lines_per_contrast().to(coils.device, torch.float32) / (ny * nz)
    energy = coils.abs().square().sum(0)
    positive = energy > 0
    inverse_energy = torch.where(positive, 1.0 / torch.where(positive, energy, 1.0), 0.0)
    sampled = fraction > 0
    inverse_fraction = torch.where(sampled, 1.0 / torch.where(sampled, fraction, 1.0), 0.0)
    return images * (inverse_fraction.view(-1, 1, 1, 1) * inverse_energy)


def sense_images(
    problem: Problem,
    coils: torch.Tensor,
    iterations: int = 15,
    damping: float = 0.0,
    tol: float = 1e-6,
    chunk_contrasts: int | None = None,
) -> torch.Tensor:
    """CG-SENSE image of every contrast: ``(E_t^H E_t + damping I) I_t = E_t^H y_t``.

    Each contrast is an independent system with its own conjugate-gradient step sizes; contrasts
    are processed in chunks through one :class:`EncodingOperator` without subspace.

    Parameters
    ----------
    problem
        Acquired lines, contrast table and geometry.
    coils
        ``[n_coils, nz, ny, nx]`` complex64 sensitivities (unit root-sum-of-squares gives
        ``E^H E`` eigenvalues of at most the number of times a location is sampled).
    iterations
        Conjugate-gradient iterations (early stopping regularises undersampled contrasts).
    damping
        Tikhonov weight ``lambda >= 0``, in the units of ``E^H E``.
    tol
        Relative residual at which every system of a chunk has converged.
    chunk_contrasts
        Contrasts solved at once (default: as many as keep one chunk's coil k-space under
        128 MiB).

    Returns
    -------
    ``[T, nz, ny, nx]`` complex64 on the coils' device; zeros for contrasts without lines.
    """
    nx, ny, nz = problem.matrix
    images = torch.zeros(
        problem.n_contrasts, nz, ny, nx, dtype=torch.complex64, device=coils.device
    )
    for contrasts, op, lines in _chunks(problem, coils, chunk_contrasts):
        rhs = op.adjoint(lines)
        images[contrasts] = conjugate_gradient(
            lambda x, op=op: op.adjoint(op.forward(x)),
            rhs,
            iterations=iterations,
            tol=tol,
            damping=damping,
            batch_dims=1,
        )
    return images
