"""Temporal subspace ``Phi`` of the low-rank model ``I_w = Phi x U`` (paper eqs. 7-8).

The ``K`` temporal bases are the top-``K`` left singular vectors of a ``[T, M]`` matrix whose
columns are signal evolutions: either a dictionary of simulated signals
(:func:`simulate_dictionary`, :func:`subspace_from_dictionary`) or calibration k-space samples
acquired at the same locations in every contrast (:func:`calibration_matrix`,
:func:`subspace_from_data`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from lorein.physics.models.base import DictionaryRanges, SignalFactors, SignalModel


def _log_uniform(
    low: float | torch.Tensor, high: float | torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    """``[n]`` float64 draws, log-uniform between ``low`` and ``high`` (scalars or ``[n]``)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    log_low = torch.log(torch.as_tensor(low, dtype=torch.float64))
    log_high = torch.log(torch.as_tensor(high, dtype=torch.float64))
    return torch.exp(log_low + u * (log_high - log_low))


def _uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``[n]`` float64 draws, uniform between ``low`` and ``high``."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def simulate_dictionary(
    model: SignalModel,
    n_atoms: int = 10000,
    ranges: DictionaryRanges | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Signals of seeded random tissue parameters, ``M0 = 1`` and ``phase0 = 0``.

    A global phase ``phase0`` is left out because a complex-linear span already contains it.

    Parameters
    ----------
    model
        Signal model of the sequence (its contrast table sets ``T``). With a free-phase model the
        per-echo phases are ``2 pi B0 TE_e``.
    n_atoms
        Number of atoms ``N``; the dictionary costs ``8 N T`` bytes (complex64).
    ranges
        Parameter ranges; default the model's ``dictionary_ranges``.
    seed
        Seed of the random draws.

    Returns
    -------
    signals
        ``[N, T]`` complex64 signals.
    parameters
        Float32 ``[N]`` maps by name (``T1``, ``T2star``, ``B0`` and, as the model needs,
        ``T2``, ``B``), SI units.
    """
    r = ranges if ranges is not None else model.dictionary_ranges
    if n_atoms < 1:
        raise ValueError(f"n_atoms must be positive, got {n_atoms}")
    g = torch.Generator().manual_seed(seed)
    n_csf = round(r.csf_fraction * n_atoms)
    n_tissue = n_atoms - n_csf
    uses_t2 = "T2" in model.parameters

    t1 = torch.cat([_log_uniform(*r.t1, n_tissue, g), _log_uniform(*r.csf_t1, n_csf, g)])
    t2 = torch.cat(
        [
            _log_uniform(r.t2[0], torch.clamp(t1[:n_tissue], max=r.t2[1]), n_tissue, g),
            _log_uniform(*r.csf_t2, n_csf, g),
        ]
    )
    t2star_high = torch.clamp(t2[:n_tissue], max=r.t2star[1]) if uses_t2 else r.t2star[1]
    t2star = torch.cat(
        [
            _log_uniform(r.t2star[0], t2star_high, n_tissue, g),
            torch.full((n_csf,), r.csf_t2star, dtype=torch.float64),
        ]
    )
    b0 = _uniform(*r.b0, n_atoms, g)
    drawn = {"T1": t1, "T2": t2, "T2star": t2star, "B0": b0}
    if "B" in model.parameters:
        drawn["B"] = _uniform(*r.inversion, n_atoms, g)
    parameters = {k: v.float() for k, v in drawn.items() if k in model.parameters}

    maps = {**parameters, "M0": torch.ones(n_atoms), "phase0": torch.zeros(n_atoms)}
    if "phase" in model.parameters:
        echo_times = model.echo_times.double()[:, None]
        maps["phase"] = (2.0 * math.pi * echo_times * b0).float()
    signals = model(maps).T.contiguous()
    return signals, parameters


@dataclass(frozen=True)
class Subspace:
    """Orthonormal temporal basis ``Phi`` and how much of its source it captures.

    Attributes
    ----------
    phi
        ``[T, K]`` complex64 with orthonormal columns, ordered by decreasing singular value. Each
        column is rotated so that its entry of largest magnitude is real and positive.
    singular_values
        ``[min(T, M)]`` float32 singular values of the source matrix, descending.
    captured_energy
        Fraction of the source matrix's energy (squared Frobenius norm) in the first ``K``.
    """

    phi: torch.Tensor
    singular_values: torch.Tensor
    captured_energy: float

    @property
    def rank(self) -> int:
        """Number of bases ``K``."""
        return int(self.phi.shape[1])

    @property
    def n_contrasts(self) -> int:
        """Number of contrasts ``T``."""
        return int(self.phi.shape[0])

    def _phi_for(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, self.phi.dtype)
        return self.phi.to(device=x.device, dtype=dtype)

    def coefficients(self, signals: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Subspace coefficients ``Phi^H x`` along axis ``dim``.

        Parameters
        ----------
        signals
            Complex tensor whose axis ``dim`` has length ``T`` (e.g. ``[T, ...]`` with ``dim=0`` or
            ``[..., T]`` with ``dim=-1``).

        Returns
        -------
        The same shape with axis ``dim`` of length ``K``.
        """
        phi = self._phi_for(signals)
        x = signals.to(phi.dtype).movedim(dim, -1)
        return (x @ phi.conj()).movedim(-1, dim)

    def expand(self, coefficients: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Signals ``Phi c`` from coefficients whose axis ``dim`` has length ``K``."""
        phi = self._phi_for(coefficients)
        c = coefficients.to(phi.dtype).movedim(dim, -1)
        return (c @ phi.T).movedim(-1, dim)

    def project(self, signals: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Orthogonal projection ``Phi Phi^H x`` along axis ``dim`` (length ``T``); same shape."""
        return self.expand(self.coefficients(signals, dim), dim)

    def projection_error(self, signals: torch.Tensor, dim: int = 0) -> float:
        """Relative error ``||x - Phi Phi^H x|| / ||x||`` over the whole tensor (Frobenius)."""
        x = signals.to(torch.promote_types(signals.dtype, self.phi.dtype))
        residual = x - self.project(x, dim)
        return float(torch.linalg.vector_norm(residual) / torch.linalg.vector_norm(x))


class SubspaceProjection:
    """``Phi^H S`` and ``||S||^2`` of a factorised signal without forming its ``T`` images.

    With ``S[t] = r[r_t] e[e_t]`` (:class:`~lorein.physics.models.base.SignalFactors`),
    ``Phi^H S = sum_e e[e] (W_e^T r)`` where ``W_e[r, k] = sum_{t: (r_t, e_t) = (r, e)}
    conj(Phi[t, k])``, and ``||S||^2 = sum_e |e[e]|^2 (N_e^T r^2)`` with ``N_e[r]`` the number of
    contrasts of readout ``r`` and echo ``e``. Cost: ``E K R`` instead of ``T K`` complex products
    per voxel plus the ``T`` images and their gather (sim2: ``T = 1280 = 320 readouts x 4
    echoes``). The intermediate is ``[min(E, R), K, ...]``: per echo as above, or per readout,
    ``Phi^H S = sum_r r[r] (sum_e W_e[r] e[e])``, when there are fewer readouts (sim1: 5 flip
    angles x 12 echoes).

    Parameters
    ----------
    phi
        ``[T, K]`` complex temporal basis.
    readout_index, echo_index
        ``[T]`` readout and echo of each contrast (as in ``SignalFactors``).
    """

    def __init__(
        self, phi: torch.Tensor, readout_index: torch.Tensor, echo_index: torch.Tensor
    ) -> None:
        readout_index = readout_index.to(phi.device).long()
        echo_index = echo_index.to(phi.device).long()
        n_readouts, n_echoes = int(readout_index.max()) + 1, int(echo_index.max()) + 1
        weights = torch.zeros(
            n_echoes, n_readouts, phi.shape[1], dtype=phi.dtype, device=phi.device
        )
        weights.index_put_((echo_index, readout_index), phi.conj(), accumulate=True)
        counts = torch.zeros(n_echoes, n_readouts, dtype=phi.real.dtype, device=phi.device)
        ones = torch.ones(readout_index.numel(), dtype=counts.dtype, device=phi.device)
        counts.index_put_((echo_index, readout_index), ones, accumulate=True)
        self.readout_major = n_readouts < n_echoes
        if self.readout_major:
            self.weights = weights.permute(1, 2, 0).contiguous()  # [R, K, E]
        else:
            self.weights = weights.transpose(1, 2).contiguous()  # [E, K, R]
        self.counts = counts  # [E, R]

    def __call__(self, factors: SignalFactors) -> tuple[torch.Tensor, torch.Tensor]:
        """Project a signal.

        Parameters
        ----------
        factors
            ``readout [R, ...]`` real and ``echo [E, ...]`` complex, the indices this projection
            was built with.

        Returns
        -------
        projected
            ``[K, ...]`` complex ``Phi^H S``.
        norm2
            0-d real ``||S||^2``.
        """
        spatial = factors.readout.shape[1:]
        r = factors.readout.reshape(factors.readout.shape[0], -1)  # [R, V]
        e = factors.echo.reshape(factors.echo.shape[0], -1)  # [E, V]
        w = self.weights.to(e.dtype)
        if self.readout_major:
            per_readout = torch.matmul(w, e)  # [R, K, V]
            projected = (per_readout * r.unsqueeze(1)).sum(0)
        else:
            per_echo = torch.complex(torch.matmul(w.real, r), torch.matmul(w.imag, r))  # [E, K, V]
            projected = (per_echo * e.unsqueeze(1)).sum(0)
        norm2 = (torch.matmul(self.counts.to(r.dtype), r.square()) * e.abs().square()).sum()
        return projected.reshape(-1, *spatial), norm2


def _phase_normalised(vectors: torch.Tensor) -> torch.Tensor:
    """Rotate each column so that its entry of largest magnitude is real and positive."""
    largest = vectors.abs().argmax(dim=0)
    pivot = vectors.gather(0, largest[None, :])
    return vectors * (pivot.conj() / pivot.abs())


def _subspace_of_columns(columns: torch.Tensor, rank: int) -> Subspace:
    """Top-``rank`` left singular vectors of ``columns`` ``[T, M]``.

    For ``M >= T`` from the eigen-decomposition of the ``T x T`` Gram matrix, which costs
    ``M T^2`` with a small constant; otherwise from the thin SVD, ``T M^2``. The Gram matrix is
    formed in the input precision and decomposed in float64: with complex64 input, singular values
    below about ``sqrt(eps32) = 3e-4`` of the largest are rounding noise (the bases they rank and
    the captured energy are not affected at that level); pass complex128 for more.
    """
    if columns.ndim != 2:
        raise ValueError(f"expected a [T, M] matrix, got shape {tuple(columns.shape)}")
    n_contrasts, n_columns = columns.shape
    if not 1 <= rank <= min(n_contrasts, n_columns):
        raise ValueError(f"rank must be in [1, {min(n_contrasts, n_columns)}], got {rank}")
    if not columns.is_complex():
        columns = columns.to(torch.complex64)
    if n_columns >= n_contrasts:
        gram = (columns @ columns.mH).to(torch.complex128)
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        energies = eigenvalues.flip(0).clamp_min(0.0)
        left = eigenvectors.flip(1)[:, :rank]
    else:
        left_all, singular, _ = torch.linalg.svd(columns.to(torch.complex128), full_matrices=False)
        energies = singular**2
        left = left_all[:, :rank]
    total = float(energies.sum())
    if total == 0.0:
        raise ValueError("the source matrix is zero; it spans no subspace")
    return Subspace(
        phi=_phase_normalised(left).to(torch.complex64),
        singular_values=energies.sqrt().float(),
        captured_energy=float(energies[:rank].sum()) / total,
    )


def subspace_from_dictionary(signals: torch.Tensor, rank: int, normalize: bool = True) -> Subspace:
    """Temporal subspace of a signal dictionary.

    Parameters
    ----------
    signals
        ``[N, T]`` complex dictionary (e.g. from :func:`simulate_dictionary`).
    rank
        Number of bases ``K``.
    normalize
        Scale each atom to unit norm first, so that weak atoms (short T2*, small flip angles) weigh
        as much as strong ones; ``captured_energy`` then refers to the normalised dictionary.

    Returns
    -------
    The :class:`Subspace` with ``phi`` ``[T, K]``; deterministic (eigen-decomposition and a fixed
    phase convention), and unchanged by a global phase of the dictionary.
    """
    if normalize:
        norms = torch.linalg.vector_norm(signals, dim=1, keepdim=True)
        signals = signals / norms.clamp_min(torch.finfo(norms.dtype).tiny)
    return _subspace_of_columns(signals.T, rank)


def subspace_from_data(calibration: torch.Tensor, rank: int) -> Subspace:
    """Temporal subspace from calibration k-space.

    Parameters
    ----------
    calibration
        ``[T, M]`` complex matrix: row ``t`` holds the samples of contrast ``t`` at ``M`` fixed
        calibration positions (e.g. every coil and readout sample of the central (ky, kz) lines;
        see :func:`calibration_matrix`).
    rank
        Number of bases ``K``.

    Returns
    -------
    The :class:`Subspace` spanned by the top-``K`` left singular vectors.

    Notes
    -----
    Only meaningful when every contrast is sampled at the same calibration locations: each column
    must be one k-space position observed through all ``T`` contrasts, so that it is a signal
    evolution (a linear mixture of the voxels' evolutions). Noise adds an isotropic floor to the
    singular values and tilts the weaker bases.
    """
    return _subspace_of_columns(calibration, rank)


def calibration_matrix(
    data: torch.Tensor,
    ky: torch.Tensor,
    kz: torch.Tensor,
    contrast: torch.Tensor,
    n_contrasts: int,
) -> torch.Tensor:
    """Calibration matrix from the (ky, kz) locations that every contrast samples.

    Parameters
    ----------
    data
        ``[L, C, nx]`` complex k-space lines (problem file ``kspace/data``).
    ky, kz
        ``[L]`` integer grid indices of each line.
    contrast
        ``[L]`` integer contrast (row of the contrast table) of each line.
    n_contrasts
        Number of contrasts ``T``.

    Returns
    -------
    ``[T, P * C * nx]`` complex matrix over the ``P`` locations sampled in every contrast, in
    ascending (ky, kz) order; a location a contrast samples more than once is averaged.

    Raises
    ------
    ValueError
        If no location is sampled in every contrast.
    """
    locations, location = torch.unique(
        torch.stack([ky, kz], dim=1).long(), dim=0, return_inverse=True
    )
    n_locations = locations.shape[0]
    contrast = contrast.long()
    flat = contrast * n_locations + location
    counts = torch.bincount(flat, minlength=n_contrasts * n_locations)
    counts = counts.reshape(n_contrasts, n_locations)
    common = (counts > 0).all(dim=0)
    n_common = int(common.sum())
    if n_common == 0:
        raise ValueError(
            "no (ky, kz) location is sampled in every contrast; a subspace from data needs "
            "calibration lines shared by all contrasts"
        )
    renumber = torch.cumsum(common.long(), 0) - 1
    keep = common[location]
    rows = contrast[keep] * n_common + renumber[location[keep]]
    sample_shape = data.shape[1:]
    sums = torch.zeros(
        n_contrasts * n_common, *sample_shape, dtype=data.dtype, device=data.device
    ).index_add_(0, rows, data[keep])
    n_samples = counts[:, common].reshape(-1, *([1] * len(sample_shape))).to(data.real.dtype)
    return (sums / n_samples).reshape(n_contrasts, -1)


def temporal_subspace(
    model: SignalModel, rank: int, n_atoms: int, b0_range_hz: float, seed: int
) -> Subspace:
    """Phi (``rank`` columns) from the SVD of ``n_atoms`` simulated signals over the model's
    ``dictionary_ranges``, off-resonance within ``+-b0_range_hz`` [Hz]."""
    ranges = replace(model.dictionary_ranges, b0=(-b0_range_hz, b0_range_hz))
    atoms, _ = simulate_dictionary(model, n_atoms, ranges, seed=seed)
    return subspace_from_dictionary(atoms.to(torch.complex128), rank)
