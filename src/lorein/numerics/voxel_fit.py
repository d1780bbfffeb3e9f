"""Weighted images from k-space and voxel-wise parameter maps from weighted images.

This is the ``fit`` baseline (CG-SENSE or zero-filled images, then a voxel-wise fit) and the last
stage of the LRT and Joint-MAPLE baselines. :func:`fit_maps` works in three steps:

a. **Echo analysis.** Within each readout (contrasts that differ only in echo time) the lag-1 echo
   product ``y_{e+1} conj(y_e)`` is ``|y_e|^2 exp(-dTE/T2*) exp(i 2 pi B0 dTE)`` whatever the
   readout amplitude and its sign, so, pooled over readouts, it gives ``T2*`` and ``B0``.
b. **Dictionary matching.** With the data demodulated by ``B0`` and the echo decay known, the
   signal is ``c G_r(theta) exp(-TE/T2*)``: ``G`` the real readout signal of the readout parameters
   ``theta`` (``T1``, and ``T2`` for ``t2ir_gre``; none for ``megre``, whose one atom is
   ``G = 1``), ``c = M0 exp(i phase0)``. For every atom of a grid of ``theta`` the complex ``c``
   is solved by least squares and the atom that explains the most energy wins (variable
   projection). Atoms and the echo-combined data are compressed to their dominant singular
   vectors, so matching costs ``K`` (about 10-30) products per atom and voxel, not ``T``.
c. **Nonlinear least squares.** Levenberg-Marquardt over all parameters of every voxel in
   parallel (times in log space, box bounds), minimising ``sum_t |S_t(p) - y_t|^2``. The signal
   factorises as ``M0 exp(i phase0) G_r exp(-TE/T2*) exp(i 2 pi B0 TE)``, so the Jacobian is
   analytic except for ``dG/dtheta``, which comes from forward-mode differentiation of the signal
   model restricted to the distinct readouts, and the Gauss-Newton matrix splits into a magnitude
   block and a phase block.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch.autograd import forward_ad

from lorein.physics.models.base import MAPS, SignalModel

FitMethod = Literal["nlls", "dictionary"]

_FIT_CHUNK_ELEMENTS = {"cpu": 2**20, "other": 2**24}
"""Default voxels per chunk in :func:`fit_maps`: about this many voxel-contrast pairs. On the CPU
small chunks stay in cache; a GPU needs large ones to be busy (measured on an H100, 80 x 80 x 8
voxels x 1280 contrasts: 5.4 s with 2**20, 0.4 s with 2**24, 2 GiB peak)."""

_MATCH_CHUNK_ELEMENTS = {"cpu": 2**23, "other": 2**27}
"""Cap on voxel-atom pairs per chunk in dictionary matching."""

_LOW_RANK_TOLERANCE = 1e-10
"""Relative energy of the normalised atoms left out by the compressed matching."""

_LOG_TIMES = tuple(name for name, info in MAPS.items() if info.log)
"""Parameters fitted as logarithms (relaxation times)."""


def _bounds(name: str) -> tuple[float, float]:
    """The physical range of the map ``name`` (:data:`~lorein.physics.models.base.MAPS`)."""
    bounds = MAPS[name].bounds
    assert bounds is not None, name
    return bounds


@dataclass(frozen=True)
class FitBounds:
    """Box bounds of the voxel-wise fit, SI units; also the range of the dictionary grid.

    The defaults are the maps' physical ranges (:data:`~lorein.physics.models.base.MAPS`).

    Attributes
    ----------
    t1, t2, t2star
        ``(min, max)`` relaxation times [s].
    inversion
        ``(min, max)`` inversion efficiency ``B`` (``t2ir_gre`` with ``estimate_inversion``).
    b0
        Largest ``|B0|`` [Hz]; None: ``1 / (2 dTE)`` with ``dTE`` the smallest spacing of the
        distinct echo times, the range in which the echo phases determine ``B0`` unambiguously.
    """

    t1: tuple[float, float] = _bounds("T1")
    t2: tuple[float, float] = _bounds("T2")
    t2star: tuple[float, float] = _bounds("T2star")
    inversion: tuple[float, float] = _bounds("B")
    b0: float | None = None

    def of(self, name: str) -> tuple[float, float]:
        """``(min, max)`` of ``T1``, ``T2``, ``T2star`` [s] or ``B``."""
        return {"T1": self.t1, "T2": self.t2, "T2star": self.t2star, "B": self.inversion}[name]


# --------------------------------------------------------------------------------------------
# the factorised signal model
# --------------------------------------------------------------------------------------------


class _Factorised:
    """A ``b0``-phase signal model split into readout signals and the analytic echo factor.

    ``S_t = M0 exp(i phase0) G_{r(t)} exp(-TE_t / T2*) exp(i 2 pi B0 TE_t)``, with ``G`` the real
    signal at ``TE = 0`` and ``M0 = 1`` of readout ``r`` (see :class:`SignalModel`).

    Attributes
    ----------
    readout_model
        The same model on the table of distinct readouts with ``TE = 0``: evaluates ``G [R, ...]``.
    parameters
        The model's parameter names.
    readout_parameters
        Names of the parameters ``G`` depends on (``T1``, ``T2``, ``B``), in model order; none
        for ``megre``.
    fixed_values
        Values of the maps the model holds fixed unless it estimates them (``t2ir_gre``'s ``B``).
    readout, echo
        ``[T]`` int64 readout and distinct-echo index of each contrast.
    echo_times
        ``[E]`` float32 distinct echo times [s].
    uniform_echoes
        Whether every readout has the same echo times (then the echo weights of all readouts are
        equal and matching needs no per-readout weights).
    pair_first, pair_second, pair_kind
        ``[P]`` contrasts of each pair of consecutive echoes of one readout, and the pair's kind
        (its two echo times), numbered ``0 .. n_kinds - 1``.
    kind_spacing
        ``[n_kinds]`` float32 echo spacing of each kind [s].
    """

    def __init__(self, model: SignalModel, device: torch.device) -> None:
        if model.phase_mode != "b0":
            raise ValueError("fit_maps fits B0 and phase0: the model needs phase='b0'")
        contrasts = model.contrasts
        readout = contrasts.readout_index().cpu()
        n_contrasts, n_readouts = readout.numel(), int(readout.max()) + 1
        first = torch.full((n_readouts,), n_contrasts, dtype=torch.int64)
        first = first.scatter_reduce(0, readout, torch.arange(n_contrasts), reduce="amin")
        table = contrasts.subset(first)
        table = dataclasses.replace(table, echo_time=torch.zeros_like(table.echo_time))
        self.fixed_values = model.fixed_values
        self.readout_model = model.with_contrasts(table)
        self.parameters = model.parameters
        self.readout_parameters = tuple(
            p for p in model.parameters if p not in ("M0", "T2star", "B0", "phase0")
        )
        echo_times, echo = (t.cpu() for t in contrasts.echo_index())
        n_echoes = echo_times.numel()
        counts = torch.bincount(readout * n_echoes + echo, minlength=n_readouts * n_echoes)
        counts = counts.reshape(n_readouts, n_echoes)
        self.uniform_echoes = bool((counts == counts[:1]).all())

        order = torch.argsort(readout * n_echoes + echo)
        same = (readout[order[1:]] == readout[order[:-1]]) & (echo[order[1:]] != echo[order[:-1]])
        pair_first, pair_second = order[:-1][same], order[1:][same]
        if pair_first.numel() == 0:
            raise ValueError(
                f"{model.name}: no readout has two echo times; B0 and T2* cannot be estimated"
            )
        kinds, pair_kind = torch.unique(
            echo[pair_first] * n_echoes + echo[pair_second], return_inverse=True
        )
        echo_times = echo_times.to(torch.float32)
        spacing = echo_times[kinds % n_echoes] - echo_times[kinds // n_echoes]

        self.readout, self.echo = readout.to(device), echo.to(device)
        self.echo_times = echo_times.to(device)
        self.pair_first, self.pair_second = pair_first.to(device), pair_second.to(device)
        self.pair_kind, self.kind_spacing = pair_kind.to(device), spacing.to(device)

    @property
    def n_readouts(self) -> int:
        """Number ``R`` of distinct readouts."""
        return int(self.readout_model.contrasts.n_contrasts)

    def readout_signal(self, values: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """``G [R, V]`` (real) for readout parameter maps ``[V]`` (``T1``, ``T2`` [s], ``B``);
        ``like`` ``[V]`` gives the number of voxels, dtype and device (a model without readout
        parameters has no map to take them from)."""
        maps = {
            "M0": torch.ones_like(like),
            "T2star": torch.ones_like(like),
            "B0": torch.zeros_like(like),
            "phase0": torch.zeros_like(like),
            **values,
        }
        return self.readout_model(maps).real

    def echo_factors(
        self, t2star: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Echo decay and demodulating phasor per contrast.

        Parameters
        ----------
        t2star, frequency, phase
            ``[V]`` T2* [s], B0 [Hz] and phase0 [rad] (default 0).

        Returns
        -------
        decay
            ``[V, T]`` float32 ``exp(-TE_t / T2*)``.
        decay_te
            ``[V, T]`` float32 ``TE_t exp(-TE_t / T2*)`` [s].
        demodulation
            ``[V, T]`` complex64 ``exp(-i (phase0 + 2 pi B0 TE_t))``.
        """
        te = self.echo_times
        decay = torch.exp(-te / t2star[:, None])  # [V, E], gathered to [V, T] at the end
        angle = (2 * math.pi) * te * frequency[:, None]
        if phase is not None:
            angle = angle + phase[:, None]
        demodulation = torch.polar(torch.ones_like(decay), -angle)
        return (
            decay.index_select(1, self.echo),
            (decay * te).index_select(1, self.echo),
            demodulation.index_select(1, self.echo),
        )


# --------------------------------------------------------------------------------------------
# step a: echo analysis
# --------------------------------------------------------------------------------------------


def _echo_estimates(
    y: torch.Tensor, model: _Factorised, bounds: FitBounds, b0_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``T2*`` [s] and ``B0`` [Hz] per voxel from lag-1 echo products, ``y [V, T]``.

    For each kind of echo pair (``e -> e'``, spacing ``dTE``) ``q = sum y_{e'} conj(y_e) /
    sum |y_e|^2`` over readouts is ``exp(-dTE/T2*) exp(i 2 pi B0 dTE)`` for noiseless data. Rates
    and frequencies of the kinds are averaged with weights ``sum |y_e|^2 dTE^2`` (their inverse
    variances up to a constant).
    """
    first, second = y[:, model.pair_first], y[:, model.pair_second]
    n_kinds = model.kind_spacing.numel()
    product = torch.zeros(y.shape[0], n_kinds, dtype=y.dtype, device=y.device).index_add_(
        1, model.pair_kind, second * first.conj()
    )
    energy = torch.zeros(y.shape[0], n_kinds, device=y.device)
    energy = energy.index_add_(1, model.pair_kind, first.abs().square())
    tiny = torch.finfo(torch.float32).tiny
    ratio = product / energy.clamp_min(tiny)
    spacing = model.kind_spacing
    rate = -torch.log(ratio.abs().clamp_min(tiny)) / spacing
    frequency = ratio.angle() / (2 * math.pi * spacing)
    weight = energy * spacing.square()
    total = weight.sum(1).clamp_min(tiny)
    rate = (weight * rate).sum(1) / total
    frequency = (weight * frequency).sum(1) / total
    t2star_low, t2star_high = bounds.t2star
    t2star = 1.0 / rate.clamp(1.0 / t2star_high, 1.0 / t2star_low)
    return t2star, frequency.clamp(-b0_max, b0_max)


# --------------------------------------------------------------------------------------------
# step b: dictionary matching
# --------------------------------------------------------------------------------------------


def _low_rank(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compress ``rows [A, R]`` (float64) to ``coefficients [A, K] @ basis[R, K]^T``.

    ``K`` keeps all but a relative energy ``_LOW_RANK_TOLERANCE`` of the unit-normalised rows, so
    every row is approximated to that relative accuracy on average. Returned as float32.
    """
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    unit = rows / norms.clamp_min(torch.finfo(rows.dtype).tiny)
    eigenvalues, eigenvectors = torch.linalg.eigh(unit.T @ unit)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
    tail = eigenvalues.sum() - torch.cumsum(eigenvalues, 0)
    rank = int((tail > _LOW_RANK_TOLERANCE * eigenvalues.sum()).sum()) + 1
    basis = eigenvectors[:, : min(rank, eigenvalues.numel())]
    return (rows @ basis).float(), basis.float()


@dataclass(frozen=True)
class _Dictionary:
    """Readout signals ``G`` on a grid of readout parameters, compressed for matching.

    Attributes
    ----------
    values
        ``[A]`` float32 grid value of each readout parameter, by name.
    signal
        ``(coefficients [A, K1], basis [R, K1])`` of ``G``.
    norm2
        ``[A]`` float32 ``||G_a||^2``.
    energy
        ``(coefficients [A, K2], basis [R, K2])`` of ``G^2`` (elementwise square), or None when
        every readout has the same echo times (the weights ``W_r`` are then all equal).
    """

    values: dict[str, torch.Tensor]
    signal: tuple[torch.Tensor, torch.Tensor]
    norm2: torch.Tensor
    energy: tuple[torch.Tensor, torch.Tensor] | None

    @property
    def n_atoms(self) -> int:
        """Number of atoms ``A``."""
        return int(self.norm2.numel())


def _dictionary(
    model: _Factorised, bounds: FitBounds, size: int, device: torch.device
) -> _Dictionary:
    """Grid of ``size`` log-spaced values per relaxation time, ``T2 <= T1``, ``B`` fixed; one
    atom for a model without readout relaxation times (``megre``).

    Simulated and compressed in float64 on the CPU, returned as float32 on ``device``.
    """
    if size < 2:
        raise ValueError(f"dictionary_size must be at least 2, got {size}")
    grids = {
        name: torch.logspace(*(math.log10(b) for b in bounds.of(name)), size, dtype=torch.float64)
        for name in model.readout_parameters
        if name in _LOG_TIMES
    }
    mesh = torch.meshgrid(*grids.values(), indexing="ij") if grids else ()
    values = {name: m.flatten() for name, m in zip(grids, mesh, strict=True)}
    if "T2" in values:
        keep = values["T2"] <= values["T1"]
        values = {name: v[keep] for name, v in values.items()}
    n_atoms = next(iter(values.values())).numel() if values else 1
    like = torch.zeros(n_atoms, dtype=torch.float64)
    for name in model.readout_parameters:
        if name not in values:
            values[name] = torch.full_like(like, model.fixed_values[name])
    rows = model.readout_signal(values, like).T  # [A, R] float64

    def low_rank(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coefficients, basis = _low_rank(a)
        return coefficients.to(device), basis.to(device)

    return _Dictionary(
        values={name: v.to(device, torch.float32) for name, v in values.items()},
        signal=low_rank(rows),
        norm2=rows.square().sum(1).to(device, torch.float32),
        energy=None if model.uniform_echoes else low_rank(rows.square()),
    )


def _match(
    y: torch.Tensor,
    t2star: torch.Tensor,
    b0: torch.Tensor,
    model: _Factorised,
    dictionary: _Dictionary,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best atom and its complex amplitude ``c = M0 exp(i phase0)`` for ``y [V, T]``.

    With ``u_t = y_t exp(-i 2 pi B0 TE_t)``, ``D_t = exp(-TE_t / T2*)``, ``z_r = sum_{t in r} D_t
    u_t`` and ``W_r = sum_{t in r} D_t^2``, atom ``a`` explains the energy ``|G_a . z|^2 / (G_a^2
    . W)`` with ``c = (G_a . z) / (G_a^2 . W)``.

    Returns
    -------
    index
        ``[V]`` int64 atom of each voxel.
    amplitude
        ``[V]`` complex64 ``c``.
    """
    decay, _, demodulation = model.echo_factors(t2star, b0)
    n_voxels, n_readouts = y.shape[0], model.n_readouts
    z = torch.zeros(n_voxels, n_readouts, dtype=y.dtype, device=y.device)
    z = z.index_add_(1, model.readout, decay * demodulation * y)
    w = torch.zeros(n_voxels, n_readouts, device=y.device)
    w = w.index_add_(1, model.readout, decay.square())
    coefficients, basis = dictionary.signal
    projected = torch.cat([z.real, z.imag]) @ basis  # [2V, K1]
    numerator = projected @ coefficients.T  # [2V, A]
    score = numerator[:n_voxels].square_().add_(numerator[n_voxels:].square_())  # [V, A]
    if dictionary.energy is None:
        index = score.mul_(1.0 / dictionary.norm2).argmax(1)
        denominator = w[:, 0] * dictionary.norm2[index]
    else:
        energy_coefficients, energy_basis = dictionary.energy
        weights = w @ energy_basis  # [V, K2]
        tiny = torch.finfo(torch.float32).tiny
        index = score.div_((weights @ energy_coefficients.T).clamp_min(tiny)).argmax(1)
        denominator = (weights * energy_coefficients[index]).sum(1).clamp_min(tiny)
    atom = coefficients[index]
    amplitude = torch.complex(
        (projected[:n_voxels] * atom).sum(1), (projected[n_voxels:] * atom).sum(1)
    )
    return index, amplitude / denominator


# --------------------------------------------------------------------------------------------
# step c: Levenberg-Marquardt
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Internal parameter vector ``[M0, log T2*, readout parameters..., phase0, B0]``.

    Readout times are logarithms, ``B`` linear. The magnitude block is ``[M0, log T2*, readout]``
    and the phase block ``[phase0, B0]``; the Gauss-Newton matrix has no cross terms between them.
    """

    readout_parameters: tuple[str, ...]

    @property
    def size(self) -> int:
        """Number ``P`` of internal parameters."""
        return len(self.readout_parameters) + 4

    @property
    def n_magnitude(self) -> int:
        """Size of the magnitude block."""
        return len(self.readout_parameters) + 2

    def readout_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Readout parameter maps in SI units from ``x [n_readout_parameters, V]``."""
        return {
            name: torch.exp(v) if name in _LOG_TIMES else v
            for name, v in zip(self.readout_parameters, x, strict=True)
        }

    def lower_upper(
        self, bounds: FitBounds, b0_max: float, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[P]`` float32 lower and upper bounds of the internal parameters."""
        inf = math.inf
        lower, upper = [-inf, math.log(bounds.t2star[0])], [inf, math.log(bounds.t2star[1])]
        for name in self.readout_parameters:
            low, high = bounds.of(name)
            log = name in _LOG_TIMES
            lower.append(math.log(low) if log else low)
            upper.append(math.log(high) if log else high)
        lower += [-inf, -b0_max]
        upper += [inf, b0_max]
        return torch.tensor(lower, device=device), torch.tensor(upper, device=device)


def _readout_derivatives(
    coordinates: torch.Tensor, model: _Factorised, layout: _Layout
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Readout signals ``G [R, V]`` and ``dG / dcoordinate_k`` by forward-mode differentiation.

    ``coordinates`` is ``[n_readout_parameters, V]`` in the internal (log-time) coordinates; one
    dual-number evaluation per parameter yields ``G`` and one derivative (``megre``: none, and
    ``G`` is evaluated once).
    """
    like = coordinates.new_zeros(coordinates.shape[1])
    if coordinates.shape[0] == 0:
        return model.readout_signal({}, like), []
    derivatives = []
    for k in range(coordinates.shape[0]):
        tangent = torch.zeros_like(coordinates)
        tangent[k] = 1.0
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(coordinates, tangent)
            signal, derivative = forward_ad.unpack_dual(
                model.readout_signal(layout.readout_values(dual), like)
            )
        derivatives.append(derivative)
    return signal, derivatives


def _gauss_newton(
    x: torch.Tensor, y: torch.Tensor, model: _Factorised, layout: _Layout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cost, Gauss-Newton matrix and gradient at ``x [V, P]`` for data ``y [V, T]``.

    With ``s_t = G_{r(t)} exp(-TE_t/T2*)`` and ``e_t = M0 s_t - y_t exp(-i phi_t)`` the residual
    in the frame that removes the model phase ``phi_t = phase0 + 2 pi B0 TE_t``, the Jacobian
    columns are real (magnitude parameters: ``s``, ``M0 s TE / T2*``, ``M0 dG/dtheta ...``) or
    imaginary (phase parameters: ``M0 s``, ``2 pi M0 s TE``), so ``Re(J^H J)`` is block diagonal.
    All blocks come from one batched Gram matrix of the base rows ``[s, s TE, dG/dtheta ...]``.

    Returns
    -------
    cost
        ``[V]`` ``sum_t |S_t - y_t|^2``.
    hessian
        ``[V, P, P]`` float64 ``Re(J^H J)``.
    gradient
        ``[V, P]`` float64 ``Re(J^H (S - y))``.
    """
    m0, t2star = x[:, 0], torch.exp(x[:, 1])
    signal, derivatives = _readout_derivatives(x[:, 2:-2].T.contiguous(), model, layout)
    decay, decay_te, demodulation = model.echo_factors(t2star, x[:, -1], x[:, -2])
    demodulated = y * demodulation

    def per_contrast(readout_values: torch.Tensor) -> torch.Tensor:
        return readout_values.T.contiguous().index_select(1, model.readout)  # [V, T]

    readout = per_contrast(signal)
    unit = readout * decay  # the M0 = 1 signal s_t
    base = torch.stack(
        [unit, readout * decay_te, *(per_contrast(d) * decay for d in derivatives)], dim=1
    )  # [V, nb, T]
    error_real = m0[:, None] * unit - demodulated.real
    error_imag = -demodulated.imag
    cost = error_real.square().sum(1) + error_imag.square().sum(1)

    gram = (base @ base.mT).double()  # [V, nb, nb]
    projection_real = (base @ error_real[:, :, None]).squeeze(2).double()
    projection_imag = (base[:, :2] @ error_imag[:, :, None]).squeeze(2).double()
    m0d = m0.double()
    magnitude_factor = torch.stack(
        [torch.ones_like(m0d), m0d / t2star.double(), *([m0d] * len(derivatives))], dim=1
    )
    phase_factor = torch.stack([m0d, (2 * math.pi) * m0d], dim=1)
    n_mag = layout.n_magnitude
    hessian = x.new_zeros(x.shape[0], layout.size, layout.size, dtype=torch.float64)
    hessian[:, :n_mag, :n_mag] = magnitude_factor[:, :, None] * gram * magnitude_factor[:, None]
    hessian[:, n_mag:, n_mag:] = phase_factor[:, :, None] * gram[:, :2, :2] * phase_factor[:, None]
    gradient = torch.cat(
        [magnitude_factor * projection_real, phase_factor * projection_imag], dim=1
    )
    return cost, hessian, gradient


def _levenberg_marquardt(
    x: torch.Tensor,
    y: torch.Tensor,
    model: _Factorised,
    layout: _Layout,
    limits: tuple[torch.Tensor, torch.Tensor],
    iterations: int,
    damping: float,
) -> torch.Tensor:
    """Refine ``x [V, P]`` by bounded Levenberg-Marquardt with Marquardt scaling.

    Each voxel keeps its own damping ``lambda`` (times 0.2 after an accepted step, times 10 after
    a rejected one) and only takes steps that lower its cost; steps are projected onto the box.
    """
    lower, upper = limits
    cost, hessian, gradient = _gauss_newton(x, y, model, layout)
    lam = x.new_full((x.shape[0],), damping, dtype=torch.float64)
    eye = torch.eye(layout.size, dtype=torch.float64, device=x.device)
    for _ in range(iterations):
        scale = torch.diagonal(hessian, dim1=1, dim2=2).sqrt()
        scale = torch.where(scale > 0, scale, 1.0)
        scaled = hessian / (scale[:, :, None] * scale[:, None, :]) + lam[:, None, None] * eye
        step = torch.linalg.solve(scaled, -gradient / scale) / scale
        trial = torch.maximum(torch.minimum(x + step.float(), upper), lower)
        trial_cost, trial_hessian, trial_gradient = _gauss_newton(trial, y, model, layout)
        accept = trial_cost < cost
        x = torch.where(accept[:, None], trial, x)
        cost = torch.where(accept, trial_cost, cost)
        hessian = torch.where(accept[:, None, None], trial_hessian, hessian)
        gradient = torch.where(accept[:, None], trial_gradient, gradient)
        lam = torch.where(accept, (lam * 0.2).clamp_min(1e-9), (lam * 10.0).clamp_max(1e10))
    return x


# --------------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------------


def default_b0_max(model: SignalModel) -> float:
    """``1 / (2 dTE_min)`` [Hz] over the distinct echo times: the unambiguous ``|B0|`` range."""
    spacing = torch.diff(model.echo_times.double())
    return float(0.5 / spacing.min())


def fit_maps(
    images: torch.Tensor,
    model: SignalModel,
    mask: torch.Tensor | None = None,
    method: FitMethod = "nlls",
    iterations: int = 6,
    *,
    bounds: FitBounds | None = None,
    dictionary_size: int | None = None,
    damping: float = 1e-3,
    min_signal: float = 1e-3,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Voxel-wise parameter maps from complex weighted images.

    Steps (module docstring): echo analysis for ``T2*`` and ``B0``, dictionary matching for the
    readout parameters and ``M0 exp(i phase0)``, then (``method="nlls"``) Levenberg-Marquardt on
    all parameters.

    Parameters
    ----------
    images
        ``[T, nz, ny, nx]`` complex weighted images, contrasts in the order of the model's table.
    model
        Signal model with ``phase="b0"``; ``t2ir_gre`` with ``estimate_inversion`` also fits ``B``.
    mask
        ``[nz, ny, nx]`` voxels to fit (bool or 0/1); default all.
    method
        ``"nlls"``: dictionary initialisation then nonlinear least squares; ``"dictionary"``: stop
        after matching (``T1``, ``T2`` on the grid, ``B`` at the model's fixed efficiency).
    iterations
        Levenberg-Marquardt iterations, each one evaluation of the model and its Jacobian. From
        the dictionary initialisation, 3 reach about 1e-5 relative to the converged fit.
    bounds
        Box bounds and dictionary range (default :class:`FitBounds`).
    dictionary_size
        Grid points per relaxation time of the dictionary, log-spaced over the bounds: ``T1``, or
        ``T1 x T2`` with ``T2 <= T1`` for ``t2ir_gre``. Default 256 for ``T1`` alone (steps of
        1.9 %), 64 per axis for ``T1 x T2`` (steps of 7.9 % and 10.7 %, about 3000 atoms).
    damping
        Initial Levenberg-Marquardt damping, relative to the diagonal of ``J^T J``.
    min_signal
        Voxels whose signal norm over contrasts is at most this fraction of the largest one (in
        the mask) are not fitted.
    chunk_size
        Voxels processed at once (default: about ``2**20 / T`` on the CPU and ``2**24 / T`` on
        a GPU, fewer for large dictionaries).

    Returns
    -------
    Float32 ``[nz, ny, nx]`` maps named as in ``model.parameters``: ``M0 >= 0`` (magnitude, units
    of the images), ``T1``, ``T2``, ``T2star`` [s], ``B0`` [Hz], ``phase0`` [rad] in
    ``(-pi, pi]`` and ``B`` when estimated. Voxels that are not fitted hold ``M0 = 0`` and zeros
    (``B``: the model's fixed efficiency).
    """
    if images.ndim != 4 or not images.is_complex():
        raise ValueError(
            f"images must be complex [T, nz, ny, nx], got {images.dtype} {tuple(images.shape)}"
        )
    n_contrasts = model.contrasts.n_contrasts
    if images.shape[0] != n_contrasts:
        raise ValueError(f"images have {images.shape[0]} contrasts, the model {n_contrasts}")
    if method not in ("nlls", "dictionary"):
        raise ValueError(f"method must be 'nlls' or 'dictionary', got {method!r}")
    spatial = tuple(images.shape[1:])
    if mask is not None and tuple(mask.shape) != spatial:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {spatial}")
    bounds = bounds if bounds is not None else FitBounds()

    with torch.no_grad():
        factorised = _Factorised(model, images.device)
        b0_max = bounds.b0 if bounds.b0 is not None else default_b0_max(model)
        layout = _Layout(factorised.readout_parameters)
        limits = layout.lower_upper(bounds, b0_max, images.device)
        if dictionary_size is None:
            n_axes = sum(name in _LOG_TIMES for name in layout.readout_parameters)
            dictionary_size = 256 if n_axes == 1 else 64
        dictionary = _dictionary(factorised, bounds, dictionary_size, images.device)

        flat = images.reshape(n_contrasts, -1)
        norm = torch.linalg.vector_norm(flat, dim=0)
        inside = torch.ones_like(norm, dtype=torch.bool) if mask is None else mask.flatten() != 0
        largest = float(norm[inside].max()) if bool(inside.any()) else 0.0
        voxels = torch.nonzero(inside & (norm > min_signal * largest)).squeeze(1)

        if chunk_size is None:
            kind = "cpu" if images.device.type == "cpu" else "other"
            by_contrasts = _FIT_CHUNK_ELEMENTS[kind] // n_contrasts
            by_atoms = _MATCH_CHUNK_ELEMENTS[kind] // dictionary.n_atoms
            chunk_size = max(1, min(by_contrasts, by_atoms))
        fitted = torch.zeros(voxels.numel(), layout.size, device=images.device)
        for start in range(0, voxels.numel(), chunk_size):
            index = voxels[start : start + chunk_size]
            y = flat[:, index].T.to(torch.complex64).contiguous()  # [V, T]
            t2star, b0 = _echo_estimates(y, factorised, bounds, b0_max)
            atom, amplitude = _match(y, t2star, b0, factorised, dictionary)
            readout = [
                torch.log(dictionary.values[n][atom])
                if n in _LOG_TIMES
                else dictionary.values[n][atom]
                for n in layout.readout_parameters
            ]
            x = torch.stack(
                [amplitude.abs(), torch.log(t2star), *readout, amplitude.angle(), b0], dim=1
            )
            if method == "nlls":
                x = _levenberg_marquardt(x, y, factorised, layout, limits, iterations, damping)
            fitted[start : start + index.numel()] = x

    return _maps(fitted, voxels, spatial, layout, factorised)


def _maps(
    fitted: torch.Tensor,
    voxels: torch.Tensor,
    spatial: tuple[int, ...],
    layout: _Layout,
    model: _Factorised,
) -> dict[str, torch.Tensor]:
    """Scatter internal parameter vectors ``[V, P]`` into named SI maps ``[nz, ny, nx]``."""
    m0, phase0 = fitted[:, 0], fitted[:, -2]
    negative = m0 < 0
    phase0 = torch.where(negative, phase0 + math.pi, phase0)
    values = {
        "M0": m0.abs(),
        "T2star": torch.exp(fitted[:, 1]),
        **layout.readout_values(fitted[:, 2:-2].T),
        "phase0": math.pi - torch.remainder(math.pi - phase0, 2 * math.pi),
        "B0": fitted[:, -1],
    }
    n_voxels = math.prod(spatial)
    out = {}
    for name in model.parameters:
        v = values[name]
        fill = model.fixed_values.get(name, 0.0)
        full = fitted.new_full((n_voxels,), fill)
        full[voxels] = v.float()
        out[name] = full.reshape(spatial)
    return out
