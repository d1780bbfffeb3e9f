"""LRT: low-rank subspace reconstruction with total variation, solved by ADMM (paper's ref. [18]).

The paper's traditional baseline is the low-rank tensor method of He et al. (IEEE TMI 2016)
"implemented via the ADMM algorithm with total variation regularization", with ESPIRiT coils.
We follow the subspace (partially separable) form of that model, as in Zhao et al. (MRM 2015)
and the subspace-constrained literature: the contrast images are ``Phi u`` with the temporal
basis ``Phi [T, K]`` fixed in advance, and only the ``K`` spatial coefficient images
``u [K, nz, ny, nx]`` are reconstructed from

    min_u  1/2 ||y - M F C Phi u||^2 + lambda_eff TV(u),

    TV(u) = sum_voxels sqrt( sum_{k, d} |w_d (D_d u_k)|^2 ),

an isotropic 3D TV, joint over the K coefficient images (one group per voxel of its 3 K forward
differences, Neumann boundary). Because ``Phi`` has orthonormal columns, ``TV(u)`` equals the
vectorial TV of the contrast images ``Phi u`` and does not depend on how the basis is rotated.
The differences are weighted by ``w_d = min(voxel size) / voxel size_d`` (thick partitions get
smaller z-differences).

Scaling, so that one ``lambda_tv`` means the same on every problem: the data are divided by the
calibration scale (:func:`~lorein.methods.calibration.estimate_from_calibration`, as LoREIN does),
so images are of order 1; then ``lambda_eff = lambda_tv g sqrt(T)`` with ``g`` the mean diagonal
of the per-location Gram matrices (the mean eigenvalue of ``E^H E``, about ``1 / R``) and ``T`` the
number of contrasts. Then ``lambda_tv`` weighs, roughly, the TV of the root-mean-square contrast
image against the mean squared image error per contrast, whatever ``R`` and ``T``. The ADMM
penalty is relative in the same way: ``rho_eff = rho g``.

ADMM (scaled form) with the splitting ``z = D u``:

- u-step: a few warm-started CG iterations on ``(E^H E + rho_eff D^H D) u = E^H y +
  rho_eff D^H (z - w)``, with ``E^H E`` in the fast per-(ky, kz) ``K x K`` Gram form
  (:meth:`~lorein.physics.operators.EncodingOperator.normal`);
- z-step: group soft thresholding of ``D u + w`` at ``lambda_eff / rho_eff``;
- dual update ``w <- w + D u - z``.

The maps come from a voxel-wise fit of ``Phi u`` (:func:`~lorein.numerics.voxel_fit.fit_maps`)
inside the calibration support. Departures from He et al.: ``Phi`` comes from the SVD of a simulated
dictionary (exactly as LoREIN gets it, :func:`~lorein.physics.subspace.temporal_subspace`)
instead of being estimated from navigator data, and the spatial factor is not further decomposed
into a tensor of lower order; the regulariser is TV only (no sparsity or locally low-rank term).
Nothing here reads the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Method, RunContext, finish, prepare
from lorein.methods.calibration import espirit_coils
from lorein.numerics.cg import conjugate_gradient
from lorein.numerics.voxel_fit import FitMethod, fit_maps
from lorein.physics.operators import EncodingOperator, LinearOperator
from lorein.physics.subspace import temporal_subspace
from lorein.settings import Count, NonNegative, Positive, PositiveCount, validate


@dataclass
class LrtConfig:
    """Hyper-parameters of the LRT baseline.

    Attributes
    ----------
    rank
        Number of temporal bases K (paper: 15).
    lambda_tv
        TV weight, relative to the data term's scale (module docstring): the TV of the
        root-mean-square contrast image against the mean squared image error, data scaled so
        that images are of order 1.
    rho
        ADMM penalty, relative to the mean eigenvalue of ``E^H E``.
    iterations
        ADMM iterations.
    cg_iterations
        Conjugate-gradient iterations per u-step (warm-started from the previous ``u``).
    dictionary_atoms
        Atoms of the simulated dictionary whose SVD gives Phi (as LoREIN).
    b0_range_hz
        Off-resonance range of the dictionary [Hz] (as LoREIN).
    fit_method
        Voxel-wise fit of the images: ``"nlls"`` or ``"dictionary"``.
    coil_compression
        Number of virtual coils (SVD compression); None keeps all coils.
    """

    rank: PositiveCount = 15
    lambda_tv: NonNegative = 0.5
    rho: Positive = 3.0
    iterations: Count = 30
    cg_iterations: Count = 5
    dictionary_atoms: PositiveCount = 5000
    b0_range_hz: NonNegative = 60.0
    fit_method: FitMethod = "nlls"
    coil_compression: PositiveCount | None = None

    def __post_init__(self) -> None:
        validate(self)


class FiniteDifference(LinearOperator):
    """Weighted forward differences along z, y, x with a Neumann boundary.

    ``[..., nz, ny, nx] -> [3, ..., nz, ny, nx]``: ``(D x)[d] = w_d (x[i + e_d] - x[i])``, zero in
    the last plane along axis ``d``. The adjoint is the weighted negative divergence.

    Parameters
    ----------
    weights
        ``(w_z, w_y, w_x)`` dimensionless weights of the three directions.
    """

    def __init__(self, weights: tuple[float, float, float]) -> None:
        self.weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((3, *x.shape))
        for d, w in enumerate(self.weights):
            axis = x.ndim - 3 + d
            n = x.shape[axis]
            diff = x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)
            out[d].narrow(axis, 0, n - 1).copy_(w * diff)
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(y[0])
        for d, w in enumerate(self.weights):
            axis = out.ndim - 3 + d
            n = out.shape[axis]
            g = w * y[d].narrow(axis, 0, n - 1)
            out.narrow(axis, 0, n - 1).sub_(g)
            out.narrow(axis, 1, n - 1).add_(g)
        return out


def voxel_weights(voxel_size: tuple[float, float, float]) -> tuple[float, float, float]:
    """``(w_z, w_y, w_x) = min(h) / h_d`` from the problem's ``(dx, dy, dz)`` voxel size [mm]."""
    dx, dy, dz = voxel_size
    finest = min(voxel_size)
    return finest / dz, finest / dy, finest / dx


def group_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-voxel norm over the direction and coefficient axes: ``[3, K, *grid] -> [*grid]``."""
    return v.abs().square().sum(dim=(0, 1)).sqrt()


def group_shrink(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """Proximal map of ``threshold * sum_voxels ||v_voxel||``: ``v max(1 - t / ||v||, 0)``."""
    norm = group_norm(v)
    factor = (1 - threshold / norm.clamp_min(1e-30)).clamp_min(0)
    return v * factor


@dataclass
class AdmmProblem:
    """The TV-regularised subspace problem ``1/2 ||y - E u||^2 + lam TV(u)`` in ADMM form.

    Attributes
    ----------
    enc
        Encoding operator ``E = M F C Phi``, coefficients ``[K, nz, ny, nx]`` -> lines.
    rhs
        ``E^H y``, ``[K, nz, ny, nx]`` complex64.
    y_norm2
        ``||y||^2`` (float64 Python scalar).
    diff
        The TV's finite-difference operator ``D``.
    lam
        TV weight ``lambda_eff`` (units of the data term).
    rho
        ADMM penalty ``rho_eff`` (units of ``E^H E``).
    """

    enc: EncodingOperator
    rhs: torch.Tensor
    y_norm2: float
    diff: FiniteDifference
    lam: float
    rho: float

    def data_term(self, u: torch.Tensor, normal_u: torch.Tensor) -> float:
        """``1/2 ||y - E u||^2`` from ``E^H E u`` (Gram form, accumulated in float64)."""
        u64 = u.to(torch.complex128).flatten()
        quad = torch.vdot(u64, normal_u.to(torch.complex128).flatten()).real
        cross = torch.vdot(self.rhs.to(torch.complex128).flatten(), u64).real
        return 0.5 * float(self.y_norm2 - 2 * cross + quad)

    def tv(self, u: torch.Tensor) -> float:
        """``TV(u)``: sum over voxels of the group norm of ``D u``."""
        return float(group_norm(self.diff(u)).sum())


def gram_scale(enc: EncodingOperator) -> float:
    """Mean diagonal of the ``[nz, ny, K, K]`` Gram matrices: about the mean eigenvalue of E^H E."""
    gram = enc.gram
    n_locations = gram.shape[0] * gram.shape[1]
    return float(gram.diagonal(dim1=-2, dim2=-1).real.sum()) / (n_locations * gram.shape[-1])


def _relative(num: torch.Tensor, den: float) -> float:
    return float(num) / max(den, 1e-30)


def admm_tv(
    prob: AdmmProblem, iterations: int, cg_iterations: int, progress: bool = False
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """ADMM on ``1/2 ||y - E u||^2 + lam TV(u)`` from ``u = 0``.

    Each u-step solves for the update ``delta`` with ``(E^H E + rho D^H D) delta = r``, ``r`` the
    residual at the current ``u``, whose ``E^H E u`` is kept from the objective: ``cg_iterations
    + 1`` normal-operator applications per iteration.

    Returns
    -------
    u
        ``[K, nz, ny, nx]`` complex64 coefficients.
    history
        One dict per iteration: ``objective``, ``data``, ``tv``, ``primal_residual``
        (``||D u - z|| / max(||D u||, ||z||)``) and ``dual_residual``
        (``rho ||D^H (z - z_prev)|| / ||E^H y||``), floats.
    """
    enc, diff, rho = prob.enc, prob.diff, prob.rho

    def system(x: torch.Tensor) -> torch.Tensor:
        return enc.normal(x) + rho * diff.H(diff(x))

    rhs_norm = float(prob.rhs.norm())
    u = torch.zeros_like(prob.rhs)
    normal_u = torch.zeros_like(u)
    du = diff(u)
    z = torch.zeros_like(du)
    w = torch.zeros_like(du)
    history: list[dict[str, float]] = []
    bar = tqdm(range(iterations), desc="lrt admm", disable=not progress, leave=False)
    for _ in bar:
        residual = prob.rhs - normal_u + rho * diff.H(z - w - du)
        u = u + conjugate_gradient(system, residual, iterations=cg_iterations)
        normal_u = enc.normal(u)
        du = diff(u)
        z_prev = z
        z = group_shrink(du + w, prob.lam / rho)
        w = w + du - z
        data = prob.data_term(u, normal_u)
        tv = float(group_norm(du).sum())
        primal = _relative((du - z).norm(), max(float(du.norm()), float(z.norm())))
        dual = _relative(rho * diff.H(z - z_prev).norm(), rhs_norm)
        history.append(
            {
                "objective": data + prob.lam * tv,
                "data": data,
                "tv": tv,
                "primal_residual": primal,
                "dual_residual": dual,
            }
        )
        bar.set_postfix(objective=f"{data + prob.lam * tv:.4g}", primal=f"{primal:.2e}")
    return u, history


class Lrt(Method):
    """The LRT baseline: ESPIRiT coils, subspace + TV by ADMM, voxel-wise fit of ``Phi u``.

    The run is short and deterministic, so it does not checkpoint (``checkpoint`` and
    ``resume`` of the context are not used; an interrupted run is simply rerun); the seed draws
    the dictionary of the temporal subspace. Returns the calibration support as mask,
    ``images = Phi u`` and the ESPIRiT coils; ``extras`` holds the ADMM ``history`` and the
    effective ``lambda_eff`` and ``rho_eff``.
    """

    name = "lrt"
    description = "low-rank subspace + TV (ADMM), then voxel fit"
    config_class = LrtConfig

    def reconstruct(self, problem: Problem, config: LrtConfig, context: RunContext) -> Maps:
        prepared = prepare(problem, context, config.coil_compression)
        kspace, calib, model = prepared.kspace, prepared.calibration, prepared.model
        coils = espirit_coils(problem, kspace)
        subspace = temporal_subspace(
            model, config.rank, config.dictionary_atoms, config.b0_range_hz, context.seed
        )
        phi = subspace.phi.to(prepared.device, torch.complex64)
        enc = EncodingOperator(coils, prepared.ky, prepared.kz, prepared.contrast, phi)
        g = gram_scale(enc)
        prob = AdmmProblem(
            enc=enc,
            rhs=enc.H(kspace),
            y_norm2=float(kspace.abs().square().sum(dtype=torch.float64)),
            diff=FiniteDifference(voxel_weights(problem.voxel_size)),
            lam=config.lambda_tv * g * math.sqrt(problem.n_contrasts),
            rho=config.rho * g,
        )
        u, history = admm_tv(prob, config.iterations, config.cg_iterations, context.progress)
        # fitted in data units, so the fit sees the data's scale
        images = torch.tensordot(phi, u, dims=([1], [0])) * calib.scale
        fitted = fit_maps(images, model, mask=calib.support, method=config.fit_method)
        extras = {
            "history": history,
            "lambda_eff": prob.lam,
            "rho_eff": prob.rho,
            "subspace_captured_energy": subspace.captured_energy,
        }
        return finish(
            fitted,
            model=model,
            mask=calib.support,
            images=images,
            coils=coils,
            extras=extras,
            config=config,
            started=prepared.started,
        )
