"""Line sampling of 3D Cartesian k-space and the acceleration factor R of paper eq. 19.

The readout (x) is fully sampled; one acquired *line* is one ``(ky, kz)`` position for one contrast.
Lines are stored as rows ``ky, kz, contrast`` (0-based grid indices, k-space centre at ``n // 2``),
as in the problem file (DESIGN.md section 3).

`sample_lines` draws variable-density patterns that are temporally complementary: a *readout*
(excitation) is the set of contrasts that share their lines (the echoes of one excitation, or a
single contrast when every contrast gets its own lines). Acquisition order is shot-major: shot ``j``
acquires the ``j``-th line of every readout, as in a segmented sequence whose repetitions each
sample one line per time point. In that order

* the first ``min(L, ny * nz)`` readout-lines are distinct locations (no location is sampled a
  second time before every location has been sampled once), so the union over time covers k-space
  whenever the number of readout-lines ``L`` is at least ``ny * nz``;
* when ``L < ny * nz`` the sampled locations are a variable-density subset that contains the
  central calibration region; the lines beyond the first ``ny * nz`` are variable-density repeats;
* a readout never samples a location twice, and the line counts of readouts differ by at most
  one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

PATTERNS = ("vd-random", "poisson")
"""Names of the ky-kz patterns `sample_lines` can draw."""

_EDGE_MARGIN = 0.05
"""Density ``(1 - rho / (1 + margin))^p`` stays positive at the outermost location (rho = 1)."""

_POISSON_PACKING = 0.7
"""Poisson-disc radius = this factor x sqrt(k-space area per line of one readout) [pixels]."""

_PROPOSALS = 32
"""Pool proposals per readout and draw tried before every location is scored."""


@dataclass(frozen=True, eq=False)
class LineSampling:
    """Acquired lines of a 3D Cartesian acquisition with a fully sampled readout.

    A location may appear more than once for the same contrast (repeated acquisitions, e.g. averages
    read from a file); `mask` counts them. `sample_lines` never produces such repeats.

    Attributes
    ----------
    ky
        ``[n_lines]`` int64, phase-encoding index in ``[0, ny)``, k-space centre at ``ny // 2``.
    kz
        ``[n_lines]`` int64, partition index in ``[0, nz)``, k-space centre at ``nz // 2``.
    contrast
        ``[n_lines]`` int64, contrast (row of the contrast table) in ``[0, n_contrasts)``.
    shape
        ``(ny, nz)`` k-space grid size.
    n_contrasts
        Number of contrasts T.
    """

    ky: torch.Tensor
    kz: torch.Tensor
    contrast: torch.Tensor
    shape: tuple[int, int]
    n_contrasts: int

    def __post_init__(self) -> None:
        ny, nz = self.shape
        if ny < 1 or nz < 1 or self.n_contrasts < 1:
            raise ValueError(
                f"shape {self.shape} and n_contrasts {self.n_contrasts} must be positive"
            )
        bounds = {"ky": ny, "kz": nz, "contrast": self.n_contrasts}
        n_lines = self.ky.shape[0] if self.ky.ndim == 1 else -1
        for name, upper in bounds.items():
            value = getattr(self, name)
            if value.dtype != torch.int64 or value.ndim != 1 or value.shape[0] != n_lines:
                raise ValueError(
                    f"{name} must be a 1-D int64 tensor of the same length as ky, got "
                    f"{value.dtype} {tuple(value.shape)}"
                )
            if n_lines > 0 and (int(value.min()) < 0 or int(value.max()) >= upper):
                raise ValueError(f"{name} out of range [0, {upper})")

    @property
    def n_lines(self) -> int:
        """Number of acquired lines (rows)."""
        return int(self.ky.shape[0])

    def acceleration(self) -> float:
        """Acceleration factor R of paper eq. 19: ``n_contrasts * ny * nz / n_lines``.

        Raises ValueError without lines.
        """
        return acceleration_factor(self.n_contrasts, self.shape[0], self.shape[1], self.n_lines)

    def mask(self) -> torch.Tensor:
        """Number of acquisitions of each location per contrast.

        Returns
        -------
        ``[n_contrasts, nz, ny]`` float32 counts (0 or 1 unless a line is repeated).
        """
        ny, nz = self.shape
        flat = (self.contrast * nz + self.kz) * ny + self.ky
        counts = torch.bincount(flat, minlength=self.n_contrasts * nz * ny)
        return counts.to(torch.float32).reshape(self.n_contrasts, nz, ny)

    def union(self) -> torch.Tensor:
        """Locations sampled by at least one contrast.

        Returns
        -------
        ``[nz, ny]`` bool.
        """
        ny, nz = self.shape
        counts = torch.bincount(self.kz * ny + self.ky, minlength=nz * ny)
        return (counts > 0).reshape(nz, ny)


def acceleration_factor(n_contrasts: int, ny: int, nz: int, n_lines: int) -> float:
    """Acceleration factor R of paper eq. 19 for line sampling with a fully sampled readout.

    ``R = n_total / n_sampled = n_contrasts * nx * ny * nz / (n_lines * nx)``.

    Parameters
    ----------
    n_contrasts
        Number of contrasts T.
    ny, nz
        Phase-encoding and partition grid sizes.
    n_lines
        Number of acquired lines summed over all contrasts.

    Returns
    -------
    R, dimensionless.
    """
    if min(n_contrasts, ny, nz, n_lines) < 1:
        raise ValueError(
            f"n_contrasts={n_contrasts}, ny={ny}, nz={nz} and n_lines={n_lines} must be positive"
        )
    return n_contrasts * ny * nz / n_lines


def lines_per_readout(
    ny: int,
    nz: int,
    readout_of_contrast: torch.Tensor,
    R: float,
    r_tol: float = 0.02,
) -> torch.Tensor:
    """Number of (ky, kz) lines each readout acquires to reach acceleration R.

    Lines are spread as evenly as possible (counts differ by at most one; the readouts with one more
    line are spaced evenly over the readout ids). Every contrast of a readout acquires all of the
    readout's lines, so the number of rows is ``sum_r n_contrasts_in_r * lines_r``; the total is
    chosen to bring R closest to the request.

    Parameters
    ----------
    ny, nz
        Phase-encoding and partition grid sizes.
    readout_of_contrast
        ``[T]`` integer readout id of each contrast (see ``ContrastTable.readout_index``); pass
        ``torch.arange(T)`` to give every contrast its own lines.
    R
        Requested acceleration factor (paper eq. 19), at least 1.
    r_tol
        Largest accepted relative deviation of the achieved R from ``R``.

    Returns
    -------
    ``[n_readouts]`` int64, lines of each readout, readouts in the order of their sorted ids.

    Raises
    ------
    ValueError
        If ``R < 1`` or no line count reaches R within ``r_tol`` (e.g. when R asks for less than
        one line).
    """
    _, echoes = _readout_groups(readout_of_contrast)
    return _plan(ny, nz, echoes, R, r_tol)


def sample_lines(
    ny: int,
    nz: int,
    readout_of_contrast: torch.Tensor,
    R: float,
    *,
    pattern: Literal["vd-random", "poisson"] = "vd-random",
    calib: tuple[int, int],
    seed: int = 0,
    density_power: float = 2.0,
    r_tol: float = 0.02,
) -> LineSampling:
    """Draw a temporally complementary variable-density ky-kz line sampling.

    The sampling density of a location falls with its normalised radius
    ``rho = |((ky - ny//2) / (ny/2), (kz - nz//2) / (nz/2))| / max(...)`` in ``[0, 1]`` as
    ``(1 - rho / 1.05) ** density_power``. The first ``min(L, ny * nz)`` readout-lines in
    acquisition order (shot-major, see the module docstring) are distinct: all locations if
    ``L >= ny * nz``, otherwise a density-weighted subset that contains the calibration region.
    The remaining ``L - ny * nz`` readout-lines repeat locations with multiplicities proportional to
    the density, capped so that no readout samples a location twice. Each shot, every readout
    draws its next line from what is left of these multiplicities:

    * ``"vd-random"``: at random, in proportion to the remaining multiplicity;
    * ``"poisson"``: the same, restricted to locations at least ``r(k)`` pixels away from the
      readout's earlier lines (dart throwing); ``r(k) = 0.7 sqrt(n_readouts / m(k))`` grows with
      ``|k|`` as the expected multiplicity ``m(k)`` falls. When no location qualifies, the one
      farthest from the readout's lines relative to its radius is taken.

    Parameters
    ----------
    ny, nz
        Phase-encoding and partition grid sizes.
    readout_of_contrast
        ``[T]`` integer readout id of each contrast; contrasts with the same id share their lines.
        Pass ``ContrastTable.readout_index()`` for echoes that share lines, ``torch.arange(T)`` for
        one set of lines per contrast.
    R
        Requested acceleration factor (paper eq. 19), at least 1.
    pattern
        ``"vd-random"`` or ``"poisson"``.
    calib
        ``(ccy, ccz)`` size of the central calibration region (centred at ``(ny//2, nz//2)``) that
        the union over all contrasts covers; ``(0, 0)`` for none.
    seed
        Seed of the pattern; equal seeds give equal patterns.
    density_power
        Exponent ``p >= 0`` of the density profile; 0 is uniform.
    r_tol
        Largest accepted relative deviation of the achieved R from ``R``.

    Returns
    -------
    LineSampling
        Rows in acquisition order; the rows of one readout-line are consecutive, one per contrast
        of the readout in increasing contrast order.

    Raises
    ------
    ValueError
        On ``R < 1``, a line budget that cannot reach R within ``r_tol`` or cannot cover the
        calibration region, a calibration region larger than the grid, an unknown pattern or a
        negative density power.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {PATTERNS}")
    if not density_power >= 0:
        raise ValueError(f"density_power must be >= 0, got {density_power}")
    ccy, ccz = calib
    if not (0 <= ccy <= ny and 0 <= ccz <= nz):
        raise ValueError(f"calibration region {calib} does not fit the ({ny}, {nz}) grid")
    readout, echoes = _readout_groups(readout_of_contrast)
    per_readout = _plan(ny, nz, echoes, R, r_tol)
    n_readouts = len(echoes)
    n_loc = ny * nz
    n_total = int(per_readout.sum())
    n_calib = ccy * ccz
    if n_total < n_calib:
        raise ValueError(
            f"R={R} leaves {n_total} readout-lines, too few to cover the {ccy} x {ccz} "
            f"calibration region ({n_calib} locations); lower R or shrink the region"
        )

    # the draw is many small sequential steps: numpy, single-threaded, is faster than torch here
    rng = np.random.default_rng(seed)
    kz_loc, ky_loc = (k.ravel() for k in np.indices((nz, ny)))
    weight = _density(ky_loc, kz_loc, ny, nz, density_power)
    y0, z0 = ny // 2 - ccy // 2, nz // 2 - ccz // 2
    calib_mask = (ky_loc >= y0) & (ky_loc < y0 + ccy) & (kz_loc >= z0) & (kz_loc < z0 + ccz)

    first_pass, repeats, expected = _multiplicities(weight, calib_mask, n_total, n_readouts, rng)
    if pattern == "poisson":
        radius2 = _POISSON_PACKING**2 * n_readouts / expected
    else:
        radius2 = np.zeros(n_loc)

    # positions in acquisition order: shot j takes line j of every readout that has one
    per = per_readout.numpy()
    shot_of_pos, readout_of_pos = np.nonzero(np.arange(per.max())[:, None] < per[None, :])
    location = _assign(
        shot_of_pos,
        readout_of_pos,
        n_first=min(n_total, n_loc),
        pools=(first_pass, repeats),
        state=_ReadoutState((ny, nz), np.log(weight), radius2, n_readouts),
        rng=rng,
    )
    return _expand(location, readout_of_pos, readout.numpy(), ny, nz)


def _readout_groups(readout_of_contrast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Renumber readout ids to ``0..n_readouts-1`` (sorted) and count contrasts per readout.

    Returns
    -------
    readout
        ``[T]`` int64 readout of each contrast.
    echoes
        ``[n_readouts]`` int64 number of contrasts in each readout.
    """
    if readout_of_contrast.ndim != 1 or readout_of_contrast.numel() == 0:
        raise ValueError("readout_of_contrast must be a non-empty 1-D tensor")
    dtype = readout_of_contrast.dtype
    if dtype == torch.bool or dtype.is_floating_point or dtype.is_complex:
        raise ValueError(f"readout_of_contrast must be integer, got {readout_of_contrast.dtype}")
    _, readout, echoes = torch.unique(
        readout_of_contrast.cpu(), sorted=True, return_inverse=True, return_counts=True
    )
    return readout, echoes


def _plan(ny: int, nz: int, echoes: torch.Tensor, R: float, r_tol: float) -> torch.Tensor:
    """Lines per readout ``[n_readouts]`` whose row count brings R closest to the request."""
    if not R >= 1:
        raise ValueError(f"acceleration R must be >= 1, got {R}")
    if ny < 1 or nz < 1:
        raise ValueError(f"grid ({ny}, {nz}) must be at least 1 x 1")
    n_readouts = len(echoes)
    n_contrasts = int(echoes.sum())
    n_loc = ny * nz
    target_rows = n_contrasts * n_loc / R
    guess = target_rows * n_readouts / n_contrasts
    # R >= 1 keeps the guess within [0, n_readouts * n_loc], so the range is never empty
    totals = range(max(1, math.floor(guess) - 2), min(math.ceil(guess) + 2, n_readouts * n_loc) + 1)
    per = min(
        (_spread(total, n_readouts) for total in totals),
        key=lambda p: abs(int((p * echoes).sum()) - target_rows),
    )
    achieved = acceleration_factor(n_contrasts, ny, nz, int((per * echoes).sum()))
    if abs(achieved / R - 1) > r_tol:
        raise ValueError(
            f"R={R} cannot be reached within {r_tol:.0%} on a {ny} x {nz} grid with "
            f"{n_readouts} readouts; the closest is R={achieved:.4g}"
        )
    return per


def _spread(total: int, n_readouts: int) -> torch.Tensor:
    """``total`` lines over readouts, counts differing by at most one, extras spaced evenly."""
    per = torch.full((n_readouts,), total // n_readouts, dtype=torch.int64)
    extra = total % n_readouts
    if extra:
        per[(torch.arange(extra, dtype=torch.float64) + 0.5).mul(n_readouts / extra).long()] += 1
    return per


def _density(ky: np.ndarray, kz: np.ndarray, ny: int, nz: int, power: float) -> np.ndarray:
    """Density ``(1 - rho / (1 + margin)) ** power`` of each location, ``[n_loc]`` float64."""
    rho = np.hypot((ky - ny // 2) / (ny / 2), (kz - nz // 2) / (nz / 2))
    rho = rho / max(rho.max(), 1e-12)
    return (1 - rho / (1 + _EDGE_MARGIN)) ** power


def _water_fill(weight: np.ndarray, total: float, cap: float) -> np.ndarray:
    """``min(cap, lam * weight)`` with ``lam`` such that the sum is ``total`` (bisection)."""
    if total <= 0:
        return np.zeros_like(weight)
    lo, hi = 0.0, cap / weight.min()
    for _ in range(100):
        lam = 0.5 * (lo + hi)
        if np.minimum(lam * weight, cap).sum() < total:
            lo = lam
        else:
            hi = lam
    return np.minimum(hi * weight, cap)


def _weighted_choice(weight: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct indices drawn in proportion to ``weight`` without replacement.

    Exponential race (Efraimidis-Spirakis): the ``k`` smallest ``Exp(1) / weight`` win; entries of
    zero weight never win while others are left.
    """
    with np.errstate(divide="ignore"):
        race = rng.exponential(size=weight.shape) / weight
    return np.argsort(race, kind="stable")[:k]


def _multiplicities(
    weight: np.ndarray,
    calib: np.ndarray,
    n_total: int,
    n_readouts: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the line budget into a first pass and density-weighted repeats.

    Returns
    -------
    first_pass
        ``[n_loc]`` int64 0/1, locations of the first ``min(n_total, n_loc)`` lines.
    repeats
        ``[n_loc]`` int64, further acquisitions of each location, at most ``n_readouts - 1``.
    expected
        ``[n_loc]`` float64 > 0, smooth expected multiplicity (sets the Poisson-disc radius).
    """
    n_loc = weight.size
    if n_total < n_loc:
        first_pass = calib.astype(np.int64)
        rest = np.flatnonzero(~calib)
        n_free = n_total - int(first_pass.sum())
        first_pass[rest[_weighted_choice(weight[rest], n_free, rng)]] = 1
        expected = calib.astype(np.float64)
        expected[rest] = _water_fill(weight[rest], n_free, 1.0)
        return first_pass, np.zeros(n_loc, dtype=np.int64), np.maximum(expected, 1e-6)
    smooth = _water_fill(weight, n_total - n_loc, n_readouts - 1)
    repeats = np.floor(smooth).astype(np.int64)
    missing = n_total - n_loc - int(repeats.sum())
    if missing > 0:
        # round up where the fractional part is large; locations at the cap cannot take more
        frac = np.where(repeats < n_readouts - 1, smooth - repeats + 1e-9, 0.0)
        repeats[_weighted_choice(frac, missing, rng)] += 1
    return np.ones(n_loc, dtype=np.int64), repeats, 1 + smooth


class _ReadoutState:
    """The lines each readout has sampled so far.

    Attributes
    ----------
    shape
        ``(ny, nz)`` grid size.
    ky, kz
        ``[n_loc]`` int64 coordinates of each location [pixels].
    log_weight
        ``[n_loc]`` float64 log density.
    radius2
        ``[n_loc]`` float32 squared Poisson-disc radius [pixels^2]; all below 1 means no spacing.
    sampled
        ``[n_readouts, n_loc]`` bool, location already sampled by the readout.
    distance2
        ``[n_readouts, n_loc]`` float32 squared distance [pixels^2] of each location to the
        readout's nearest line where that is below ``max(radius2)``, otherwise infinite or any
        value not below ``max(radius2)`` (all a comparison with a radius needs); ``None`` without
        spacing.
    offsets
        ``(dy, dz, d2)`` ``[n_offsets]`` grid steps closer than ``max(radius2)`` and their squared
        length: the part of ``distance2`` one new line can change; ``None`` where updating every
        location is cheaper.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        log_weight: np.ndarray,
        radius2: np.ndarray,
        n_readouts: int,
    ) -> None:
        ny, nz = shape
        self.shape = shape
        self.kz, self.ky = (k.ravel() for k in np.indices((nz, ny)))
        self.log_weight, self.radius2 = log_weight, radius2.astype(np.float32)
        self.sampled = np.zeros((n_readouts, ny * nz), dtype=bool)
        self.distance2: np.ndarray | None = None
        self.offsets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if (radius2 > 1).any():
            self.distance2 = np.full((n_readouts, ny * nz), np.inf, dtype=np.float32)
            dz, dy = np.mgrid[1 - nz : nz, 1 - ny : ny]
            d2 = (dy * dy + dz * dz).astype(np.float32)
            near = d2 < self.radius2.max()
            if near.sum() < ny * nz:
                self.offsets = (dy[near], dz[near], d2[near])

    def add(self, readouts: np.ndarray, locations: np.ndarray) -> None:
        """Record that each of ``readouts`` (distinct) sampled the matching one of ``locations``."""
        self.sampled[readouts, locations] = True
        if self.distance2 is None:
            return
        if self.offsets is None:
            dy = self.ky[None, :] - self.ky[locations, None]
            dz = self.kz[None, :] - self.kz[locations, None]
            d2 = (dy * dy + dz * dz).astype(np.float32)
            self.distance2[readouts] = np.minimum(self.distance2[readouts], d2)
            return
        ny, nz = self.shape
        step_y, step_z, step_d2 = self.offsets
        ty = self.ky[locations, None] + step_y
        tz = self.kz[locations, None] + step_z
        inside = (ty >= 0) & (ty < ny) & (tz >= 0) & (tz < nz)
        rows = np.broadcast_to(readouts[:, None], ty.shape)[inside]
        cols = (tz * ny + ty)[inside]
        d2 = np.broadcast_to(step_d2, ty.shape)[inside]
        # (row, col) pairs are distinct: one line per readout, distinct steps per line
        self.distance2[rows, cols] = np.minimum(self.distance2[rows, cols], d2)

    def acceptable(self, readouts: np.ndarray, locations: np.ndarray) -> np.ndarray:
        """Whether each readout (``[rows]``) may take each of its ``[rows, k]`` locations."""
        ok = ~self.sampled[readouts[:, None], locations]
        if self.distance2 is not None:
            ok &= self.distance2[readouts[:, None], locations] >= self.radius2[locations]
        return ok


def _assign(
    shot_of_pos: np.ndarray,
    readout_of_pos: np.ndarray,
    *,
    n_first: int,
    pools: tuple[np.ndarray, np.ndarray],
    state: _ReadoutState,
    rng: np.random.Generator,
) -> np.ndarray:
    """Location of every position, drawn shot by shot, all readouts of a shot at once.

    Positions ``[0, n_first)`` draw from ``pools[0]``, the rest from ``pools[1]`` (multiplicities
    per location); see `_draw` for one draw. Readouts that ask for more copies of a location than
    are left draw again.

    Parameters
    ----------
    shot_of_pos, readout_of_pos
        ``[n_positions]`` int64 shot and readout of each position, in acquisition order.

    Returns
    -------
    ``[n_positions]`` int64 flat location index ``kz * ny + ky``.
    """
    n_pos = shot_of_pos.size
    batch_key = shot_of_pos * 2 + (np.arange(n_pos) >= n_first)
    bounds = np.flatnonzero(np.diff(batch_key)) + 1
    location = np.empty(n_pos, dtype=np.int64)
    pool = pools[0].copy()
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, n_pos], strict=True):
        if start == n_first:
            pool = pools[1].copy()
        pending = np.arange(start, stop)
        while pending.size:
            rows = readout_of_pos[pending]
            choice, from_pool = _draw(rows, pool, state, rng)
            # requests beyond the remaining multiplicity are refused, in random order
            order = rng.permutation(choice.size)
            order = order[np.argsort(choice[order], kind="stable")]
            sorted_choice = choice[order]
            rank = np.arange(order.size) - np.searchsorted(sorted_choice, sorted_choice)
            granted = np.empty(choice.size, dtype=bool)
            granted[order] = rank < pool[sorted_choice]
            granted |= ~from_pool
            pool -= np.bincount(choice[granted & from_pool], minlength=pool.size)
            location[pending[granted]] = choice[granted]
            state.add(rows[granted], choice[granted])
            pending = pending[~granted]
    return location


def _draw(
    readouts: np.ndarray,
    pool: np.ndarray,
    state: _ReadoutState,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Next location of each of a set of distinct readouts.

    A readout draws in proportion to the remaining multiplicity among the locations it has not
    sampled that lie at least ``sqrt(radius2)`` pixels from its earlier lines. Without such a
    location it takes the usable one farthest from its lines relative to the radius; with an empty
    usable pool (only possible for repeats) it takes any new location, by density. The draw first
    tries ``_PROPOSALS`` proposals from the pool per readout (exact rejection sampling) and only
    scores every location left in the pool for the readouts whose proposals all fail.

    Parameters
    ----------
    readouts
        ``[rows]`` int64 readout ids.
    pool
        ``[n_loc]`` int64 remaining multiplicity of each location.

    Returns
    -------
    choice
        ``[rows]`` int64 location.
    from_pool
        ``[rows]`` bool, whether the location was drawn from the pool.
    """
    n_rows = readouts.size
    choice = np.zeros(n_rows, dtype=np.int64)
    resolved = np.zeros(n_rows, dtype=bool)
    cdf = np.cumsum(pool)
    if cdf[-1] > 0:
        draws = rng.integers(0, cdf[-1], size=(n_rows, _PROPOSALS))
        proposals = np.searchsorted(cdf, draws, side="right")
        ok = state.acceptable(readouts, proposals)
        resolved = ok.any(1)
        choice = proposals[np.arange(n_rows), ok.argmax(1)]
    from_pool = np.ones(n_rows, dtype=bool)
    hard = np.flatnonzero(~resolved)
    if hard.size == 0:
        return choice, from_pool
    # only locations left in the pool can be usable: score those
    left = np.flatnonzero(pool > 0)
    usable = ~state.sampled[readouts[hard][:, None], left]
    race = -np.log(rng.exponential(size=usable.shape))
    score = np.where(usable, np.log(np.maximum(pool[left], 1)) + race, -np.inf)
    if state.distance2 is not None and left.size:
        d2 = state.distance2[readouts[hard][:, None], left]
        radius2 = state.radius2[left]
        free = usable & (d2 >= radius2)
        with np.errstate(divide="ignore"):
            ratio = np.log(d2 / np.maximum(radius2, 1e-6)) + 1e-3 * race
        score = np.where(
            free.any(1, keepdims=True),
            np.where(free, score, -np.inf),
            np.where(usable, ratio, -np.inf),
        )
    any_usable = usable.any(1)
    if any_usable.any():
        choice[hard[any_usable]] = left[score[any_usable].argmax(1)]
    if not any_usable.all():
        stuck = hard[~any_usable]
        race = -np.log(rng.exponential(size=(stuck.size, pool.size)))
        fallback = np.where(state.sampled[readouts[stuck]], -np.inf, state.log_weight + race)
        choice[stuck] = fallback.argmax(1)
        from_pool[stuck] = False
    return choice, from_pool


def _expand(
    location: np.ndarray,
    readout_of_pos: np.ndarray,
    readout: np.ndarray,
    ny: int,
    nz: int,
) -> LineSampling:
    """Repeat each readout-line for every contrast of its readout, in contrast order.

    Parameters
    ----------
    location, readout_of_pos
        ``[L]`` flat location and readout of each readout-line, in acquisition order.
    readout
        ``[T]`` readout of each contrast.
    """
    contrasts_sorted = np.argsort(readout, kind="stable")
    echoes = np.bincount(readout)
    offsets = np.cumsum(echoes) - echoes
    n_rows = echoes[readout_of_pos]
    line = np.repeat(np.arange(location.size), n_rows)
    within = np.arange(line.size) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    contrast = contrasts_sorted[offsets[readout_of_pos[line]] + within]
    loc = location[line]
    return LineSampling(
        ky=torch.from_numpy(loc % ny),
        kz=torch.from_numpy(loc // ny),
        contrast=torch.from_numpy(contrast.astype(np.int64)),
        shape=(ny, nz),
        n_contrasts=readout.size,
    )
