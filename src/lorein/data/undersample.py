"""Retrospective undersampling of a fully sampled problem with the package's line patterns.

A user with a fully sampled scan keeps, per contrast, the lines that
:func:`lorein.physics.sampling.sample_lines` draws at the requested R, and can then compare
reconstructions of the undersampled problem with the fully sampled one. Lines are taken from
the measured data, never synthesised: each kept ``(contrast, ky, kz)`` is the first acquisition
of that location in the input. With ``nz = 1`` (2D) the pattern's density depends on ky only,
so only ky is undersampled.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from lorein.data.problem import Problem, ProblemFileError
from lorein.physics.sampling import PATTERNS, sample_lines


def default_calibration(ny: int, nz: int) -> tuple[int, int]:
    """Central calibration region kept in the union of all contrasts: 10 % of each axis, at
    least one line."""
    return max(1, round(ny / 10)), max(1, round(nz / 10))


def _first_acquisition(problem: Problem) -> torch.Tensor:
    """``[n_contrasts, nz, ny]`` int64 row of the first line at each location, -1 where none."""
    nz, ny, _ = problem.grid
    flat = (problem.contrast * nz + problem.kz) * ny + problem.ky
    first = torch.full((problem.n_contrasts * nz * ny,), problem.n_lines, dtype=torch.int64)
    first.scatter_reduce_(0, flat, torch.arange(problem.n_lines), reduce="amin")
    first[first == problem.n_lines] = -1
    return first.reshape(problem.n_contrasts, nz, ny)


def undersample(
    problem: Problem,
    R: float,
    *,
    pattern: str = "vd-random",
    calibration: tuple[int, int] | None = None,
    shared_echo_lines: bool = False,
    seed: int = 0,
) -> Problem:
    """Keep the lines of a sampling pattern at acceleration R (paper eq. 19).

    Parameters
    ----------
    problem
        A fully sampled problem: every contrast has every ``(ky, kz)`` line at least once.
    R
        Acceleration factor, at least 1.
    pattern
        ``"vd-random"`` or ``"poisson"`` (:data:`~lorein.physics.sampling.PATTERNS`).
    calibration
        ``(ccy, ccz)`` central region that the union over contrasts covers; default
        :func:`default_calibration`.
    shared_echo_lines
        False (default): every contrast gets its own lines, complementary across contrasts and
        echoes. True: the echoes of one excitation (contrasts that differ only in TE) share
        their lines, as a multi-echo acquisition would sample them.
    seed
        Seed of the pattern.

    Returns
    -------
    The problem with the kept lines, grouped by contrast (acquisition order within each).

    Raises
    ------
    ProblemFileError
        One line: the problem is not fully sampled (naming the first contrast with missing
        lines), or the pattern cannot reach R (R < 1, fewer than one line per readout, a
        calibration region that does not fit).
    """
    source = problem.source
    nz, ny, _ = problem.grid
    first = _first_acquisition(problem)
    missing = (first < 0).flatten(1).sum(dim=1)
    if missing.any():
        t = int(torch.nonzero(missing)[0])
        raise ProblemFileError(
            source,
            "/kspace",
            f"expected a fully sampled problem (every contrast at all {ny * nz} ky-kz "
            f"locations), found contrast {t} without {int(missing[t])} of them (R = "
            f"{problem.acceleration:.2f})",
        )
    if pattern not in PATTERNS:
        raise ValueError(f"--pattern: expected one of {', '.join(PATTERNS)}, found {pattern!r}")
    if not R >= 1:
        raise ValueError(f"--R: expected an acceleration factor >= 1, found {R:g}")
    calibration = calibration or default_calibration(ny, nz)
    if shared_echo_lines:
        readout = problem.contrasts.readout_index()
    else:
        readout = torch.arange(problem.n_contrasts)
    try:
        sampling = sample_lines(ny, nz, readout, R, pattern=pattern, calib=calibration, seed=seed)
    except ValueError as e:
        raise ValueError(
            f"--R {R:g}: the {pattern} pattern cannot sample {problem.n_contrasts} contrasts on "
            f"a {ny} x {nz} ky-kz grid so: {e}"
        ) from None
    order = torch.argsort(sampling.contrast, stable=True)
    rows = first[sampling.contrast[order], sampling.kz[order], sampling.ky[order]]
    return replace(
        problem,
        kspace=problem.kspace[rows].contiguous(),
        ky=problem.ky[rows],
        kz=problem.kz[rows],
        contrast=problem.contrast[rows],
    )
