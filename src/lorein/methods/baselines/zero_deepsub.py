"""Zero-DeepSub baseline: zero-shot self-supervised unrolled subspace reconstruction.

Follows Jun et al. (MRM 2024, public code yohan-jun/Zero-DeepSub), which applies ZS-SSL (Yaman
et al., ICLR 2022) to the ``K`` subspace coefficient images ``u`` of ``I = Phi u``:

- **Subspace.** ``Phi`` from the SVD of a simulated dictionary, exactly as LoREIN builds it
  (:func:`lorein.physics.subspace.temporal_subspace`); coils by ESPIRiT from the calibration
  region (:func:`lorein.methods.calibration.espirit_coils`); data divided by the calibration scale
  (:func:`lorein.methods.calibration.estimate_from_calibration`), so every problem reaches the
  network in the same range; M0 and the images are returned in data units.
- **Split** (:func:`~lorein.methods.baselines.zero_shot.split_lines`, shared with Joint-MAPLE). The
  acquired lines ``Omega`` are split with a fixed seed, per contrast (Zero-DeepSub draws its masks
  per time point), into a held-out validation set ``Gamma`` (20 % of the lines) and, for each of
  ``n_masks`` masks, a loss set ``Lambda`` (40 % of the lines left) and a data-consistency set
  ``Theta`` (the rest), the counts rounded to the nearest integer. Lines in a small central
  ``(ky, kz)`` block never leave ``Theta`` (ZS-SSL's ``small_acs_block``,
  :func:`~lorein.methods.baselines.zero_shot.central_lines`). Fractions as ZS-SSL and Zero-DeepSub
  (``rho_val = 0.2``, ``rho_train = 0.4``).
- **Network** (:class:`UnrolledSubspaceNet`). A first data-consistency block with ``mu = 0``
  (CG-SENSE on the subspace: Zero-DeepSub's ``x0``), then ``unrolls`` iterations of a ResNet
  denoiser ``z = D(x)`` and CG data consistency ``(E^H E + mu I) x = E^H y + mu z`` on the Gram
  form of :class:`~lorein.physics.operators.EncodingOperator` restricted to the DC set, ``mu``
  learnable and shared, the denoiser's weights shared across unrolls (both as ZS-SSL).
- **Loss.** ``0.5 ||y - E u||_2 / ||y||_2 + 0.5 ||y - E u||_1 / ||y||_1`` on ``Lambda`` (L1 over
  real and imaginary parts; :func:`~lorein.methods.baselines.zero_shot.kspace_loss`), with
  ``Theta`` as the DC set; Adam, lr 5e-4 (both as Zero-DeepSub).
- **Early stopping** (:class:`~lorein.methods.baselines.zero_shot.EarlyStopping`). After every
  epoch (one step per mask) the loss on ``Gamma`` with ``Omega \\ Gamma`` as the DC set is
  evaluated; training stops after ``patience`` epochs without a new minimum and the best weights
  are kept. The final reconstruction uses all acquired lines ``Omega`` as the DC set (ZS-SSL's
  inference), then ``fit_maps`` on ``Phi u`` in the support.

Departures:

- The denoiser is residual, ``D(x) = x + R(x)``, with the last convolution of ``R`` initialised to
  zero, so the untrained network is the CG-SENSE start refined by proximal steps; ZS-SSL's ResNet
  (residual blocks, no global skip) starts from a random map and needs hundreds of epochs to learn
  the identity. ``R`` is ZS-SSL's ResNet: a 3x3 convolution to ``channels``, residual blocks
  ``conv-ReLU-conv`` scaled by 0.1 (:class:`~lorein.methods.baselines.zero_shot.ResidualBlock`), a
  3x3 convolution plus the long skip, a 3x3 convolution back to ``2K`` channels; no bias, no batch
  normalisation (ZS-SSL's PyTorch defaults).
- 2D convolutions on the phase-encoding ``(z, y)`` planes, one batch item per readout position
  ``x``: Zero-DeepSub reconstructs 3D data slice by slice in the hybrid ``(x, ky, kz)`` space,
  where the aliasing lives. The ``K`` complex coefficient images are ``2K`` real channels.
- Sizes reduced for CPU. Original (``full_size=True``): 15 residual blocks x 128 channels
  (Zero-DeepSub; ZS-SSL: 64), 10 unrolls (ZS-SSL; Zero-DeepSub's released parser defaults to 1),
  10 CG iterations, at most 300 epochs, patience 25. Default: 3 blocks x 16 channels, 3 unrolls,
  5 CG iterations (a fifth of the residual blocks at 1/64 of the cost per layer; 3 x 6 instead
  of 10 x 10 applications of ``E^H E`` per forward pass), at most 100 epochs, patience 10, and 4
  masks (ZS-SSL: 25).
- Each DC block's CG starts at the denoiser output ``z`` instead of zero (one more ``E^H E`` per
  block): the solution is the same, but with few CG iterations a zero start throws away what the
  previous blocks achieved.
- ``mu`` is parameterised by its logarithm (it must stay positive for CG); ZS-SSL lets it free.
- The whole volume is one training sample (no slice-by-slice training): the Gram-form DC couples
  all ``(ky, kz)`` through the coil maps, and the volumes here are small.

Tuning measurements (warm-started DC blocks, number of masks): docs/tuning/zero-deepsub.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Method, RunContext, finish, prepare
from lorein.methods.baselines.zero_shot import (
    LineSplit,
    ResidualBlock,
    Training,
    central_lines,
    kspace_loss,
    split_lines,
)
from lorein.methods.calibration import espirit_coils
from lorein.numerics.cg import conjugate_gradient
from lorein.numerics.optimisation import LoopConfig, Optimisation
from lorein.numerics.voxel_fit import fit_maps
from lorein.physics.operators import EncodingOperator
from lorein.physics.subspace import temporal_subspace
from lorein.settings import Count, NonNegative, Positive, PositiveCount, validate

FULL_SIZE: dict[str, int] = {
    "unrolls": 10,
    "blocks": 15,
    "channels": 128,
    "cg_iterations": 10,
    "epochs": 300,
    "patience": 25,
}
"""The original sizes (Zero-DeepSub's code and ZS-SSL), selected by ``full_size=True``."""


@dataclass
class ZeroDeepSubConfig:
    """Hyper-parameters of Zero-DeepSub (defaults reduced for CPU; see the module docstring).

    Attributes
    ----------
    rank
        Number of subspace coefficients K (LoREIN paper: 15; Zero-DeepSub used 4-5).
    dictionary_atoms
        Atoms of the simulated dictionary whose SVD gives Phi (as LoREIN).
    b0_range_hz
        Off-resonance range of the dictionary [Hz] (as LoREIN).
    unrolls
        Denoiser + data-consistency iterations after the CG-SENSE start (original 10).
    blocks
        Residual blocks of the denoiser (original 15).
    channels
        Feature channels of the denoiser (original 128).
    cg_iterations
        CG iterations per data-consistency block (original 10).
    full_size
        Use the original ``unrolls``, ``blocks``, ``channels``, ``cg_iterations``, ``epochs`` and
        ``patience`` (:data:`FULL_SIZE`) instead of the values given here.
    epochs
        Maximum number of epochs; an epoch is one Adam step per mask (original 300).
    patience
        Epochs without a new minimum of the validation loss before training stops (original 25).
    lr
        Adam learning rate (Zero-DeepSub: 5e-4).
    mu
        Initial data-consistency weight ``mu`` (ZS-SSL: 0.05), relative to ``E^H E <= I`` (unit
        coil norm, orthonormal Phi).
    validation_fraction
        Fraction of each contrast's lines held out for early stopping, ``Gamma`` (0.2).
    loss_fraction
        Fraction of each contrast's remaining lines in the loss set ``Lambda`` (0.4).
    n_masks
        Number of ``(Theta, Lambda)`` splits of the remaining lines, one Adam step each per epoch
        (Zero-DeepSub's released default 1; ZS-SSL 25). With one mask the network overfits its
        ``Lambda`` within about 12 epochs; four do better (docs/tuning/zero-deepsub.md).
    keep_centre
        ``(ky, kz)`` size of the central block whose lines always stay in ``Theta`` (ZS-SSL:
        ``(4, 4)``).
    coil_compression
        Number of virtual coils (SVD compression); None keeps all coils.
    """

    rank: PositiveCount = 15
    dictionary_atoms: PositiveCount = 5000
    b0_range_hz: NonNegative = 60.0
    unrolls: Count = 3
    blocks: Count = 3
    channels: PositiveCount = 16
    cg_iterations: Count = 5
    full_size: bool = False
    epochs: Count = 100
    patience: PositiveCount = 10
    lr: Positive = 5e-4
    mu: NonNegative = 0.05
    validation_fraction: float = 0.2
    loss_fraction: float = 0.4
    n_masks: PositiveCount = 4
    keep_centre: tuple[Count, Count] = (4, 4)
    coil_compression: PositiveCount | None = None

    def __post_init__(self) -> None:
        validate(self)


def effective_config(config: ZeroDeepSubConfig) -> ZeroDeepSubConfig:
    """``config`` with :data:`FULL_SIZE` applied when ``config.full_size`` is set."""
    return dataclasses.replace(config, **FULL_SIZE) if config.full_size else config


@dataclass(frozen=True)
class DataConsistency:
    """The data-consistency system of one line subset.

    Attributes
    ----------
    operator
        ``E = M F C Phi`` restricted to the subset (its Gram-form ``normal`` is ``E^H E``).
    rhs
        ``[K, nz, ny, nx]`` complex64 ``E^H y``.
    start
        ``[K, nz, ny, nx]`` complex64 CG-SENSE start: CG on ``E^H E x = E^H y`` from zero.
    """

    operator: EncodingOperator
    rhs: torch.Tensor
    start: torch.Tensor


@dataclass(frozen=True)
class KspaceLoss:
    """ZS-SSL's normalised k-space loss (:func:`~lorein.methods.baselines.zero_shot.kspace_loss`)
    on a subset.

    ``0.5 ||y - E u||_2 / ||y||_2 + 0.5 ||y - E u||_1 / ||y||_1``, the L1 norm over the real and
    imaginary parts.

    Attributes
    ----------
    operator
        ``E = M F C Phi`` restricted to the subset.
    target
        ``[L, n_coils, nx]`` complex64 acquired lines ``y`` of the subset.
    """

    operator: EncodingOperator
    target: torch.Tensor

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """The loss of coefficients ``u [K, nz, ny, nx]``."""
        return kspace_loss(self.operator(u), self.target)


class SubspaceData:
    """Acquired lines, coils and subspace from which the DC systems and losses of subsets are made.

    Parameters
    ----------
    kspace
        ``[L, n_coils, nx]`` complex64 scaled lines.
    ky, kz, contrast
        ``[L]`` line locations and contrasts (on ``kspace``'s device).
    coils
        ``[n_coils, nz, ny, nx]`` complex64 sensitivities.
    phi
        ``[T, K]`` complex64 temporal basis.
    cg_iterations
        CG iterations of the CG-SENSE start.
    """

    def __init__(
        self,
        kspace: torch.Tensor,
        ky: torch.Tensor,
        kz: torch.Tensor,
        contrast: torch.Tensor,
        coils: torch.Tensor,
        phi: torch.Tensor,
        cg_iterations: int,
    ) -> None:
        self.kspace, self.ky, self.kz, self.contrast = kspace, ky, kz, contrast
        self.coils, self.phi, self.cg_iterations = coils, phi, cg_iterations

    def operator(self, lines: torch.Tensor) -> EncodingOperator:
        """``E`` of the lines with row indices ``lines``."""
        rows = lines.to(self.kspace.device)
        return EncodingOperator(
            self.coils, self.ky[rows], self.kz[rows], self.contrast[rows], self.phi
        )

    def dc(self, lines: torch.Tensor) -> DataConsistency:
        """The data-consistency system of the lines ``lines``."""
        op = self.operator(lines)
        rhs = op.H(self.kspace[lines.to(self.kspace.device)])
        start = conjugate_gradient(op.normal, rhs, iterations=self.cg_iterations, tol=0.0)
        return DataConsistency(op, rhs, start)

    def loss(self, lines: torch.Tensor) -> KspaceLoss:
        """The k-space loss on the lines ``lines``."""
        return KspaceLoss(self.operator(lines), self.kspace[lines.to(self.kspace.device)])


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)


class ResNetDenoiser(nn.Module):
    """Residual denoiser ``D(u) = u + R(u)`` of ``K`` complex coefficient images.

    ``R`` is ZS-SSL's ResNet on ``2K`` real channels, 2D convolutions on the ``(z, y)`` planes with
    the readout position ``x`` as the batch. Its last convolution starts at zero (``D`` = identity).

    Parameters
    ----------
    rank
        Number of coefficient images K.
    channels
        Feature channels.
    blocks
        Number of residual blocks.
    """

    def __init__(self, rank: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.head = _conv(2 * rank, channels)
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.body = _conv(channels, channels)
        self.tail = _conv(channels, 2 * rank)
        nn.init.zeros_(self.tail.weight)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``[K, nz, ny, nx]`` complex64 -> ``[K, nz, ny, nx]`` complex64."""
        k, nz, ny, nx = u.shape
        x = torch.view_as_real(u).permute(3, 0, 4, 1, 2).reshape(nx, 2 * k, nz, ny)
        first = self.head(x)
        r = self.tail(self.body(self.blocks(first)) + first)
        r = r.reshape(nx, k, 2, nz, ny).permute(1, 3, 4, 0, 2).contiguous()
        return u + torch.view_as_complex(r)


class UnrolledSubspaceNet(nn.Module):
    """Unrolled denoiser / CG data consistency on subspace coefficients.

    From the CG-SENSE start ``x``, ``unrolls`` times: ``z = D(x)``, then ``x`` = ``cg_iterations``
    of CG, started at ``z``, on ``(E^H E + mu I) x = E^H y + mu z``. ``D`` and ``mu`` are shared.

    Parameters
    ----------
    rank
        Number of coefficient images K.
    channels, blocks
        Denoiser size (:class:`ResNetDenoiser`).
    unrolls
        Number of denoiser + DC iterations.
    cg_iterations
        CG iterations per DC block.
    mu
        Initial ``mu > 0``.
    """

    def __init__(
        self, rank: int, channels: int, blocks: int, unrolls: int, cg_iterations: int, mu: float
    ) -> None:
        super().__init__()
        self.denoiser = ResNetDenoiser(rank, channels, blocks)
        self.log_mu = nn.Parameter(torch.tensor(math.log(mu)))
        self.unrolls = unrolls
        self.cg_iterations = cg_iterations

    @property
    def mu(self) -> torch.Tensor:
        """The data-consistency weight ``mu`` (a 0-d tensor)."""
        return self.log_mu.exp()

    def forward(self, dc: DataConsistency) -> torch.Tensor:
        """``[K, nz, ny, nx]`` complex64 coefficients reconstructed with the DC system ``dc``."""
        mu = self.mu
        x = dc.start

        def damped(v: torch.Tensor) -> torch.Tensor:
            return dc.operator.normal(v) + mu * v

        for _ in range(self.unrolls):
            z = self.denoiser(x)
            rhs = dc.rhs + mu * z
            x = conjugate_gradient(damped, rhs, x0=z, iterations=self.cg_iterations, tol=0.0)
        return x


def train(
    net: UnrolledSubspaceNet,
    masks: list[tuple[DataConsistency, KspaceLoss]],
    validation: tuple[DataConsistency, KspaceLoss],
    config: ZeroDeepSubConfig,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    identity: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Self-supervised training with early stopping; leaves ``net`` at its best weights.

    Each epoch is one Adam step per mask (DC on ``Theta_j``, loss on ``Lambda_j``) through the
    shared :class:`~lorein.numerics.optimisation.Optimisation` loop (checkpoints, NaN rollback),
    followed by the validation loss (DC on ``Omega \\ Gamma``, loss on ``Gamma``). The loop runs a
    fixed number of steps, so it is driven one epoch at a time (its target raised by ``n_masks``
    steps, its own progress bar off); the early-stopping record is the module's extra state, so the
    checkpoint written after each validation holds it too. ``identity`` is the run the checkpoint
    records (:class:`~lorein.methods.base.RunContext`).

    Returns
    -------
    The history, one dict per Adam step with ``"train"`` and, at the end of each epoch,
    ``"validation"`` (the loss of the weights after that step); and the index in it of the best
    validation.
    """
    training = Training(net, config.patience)
    stopping = training.stopping
    n_masks = len(masks)

    def closure(it: int) -> dict[str, torch.Tensor]:
        dc, loss = masks[it % n_masks]
        return {"total": loss(net(dc))}

    loop = LoopConfig(iterations=0, lr=config.lr, checkpoint_seconds=math.inf)
    optimisation = Optimisation(
        training, closure, loop, checkpoint, False, "zero-deepsub", identity=identity
    )
    if resume:
        optimisation.load()
    bar = tqdm(
        total=config.epochs,
        initial=len(stopping.losses),
        desc="zero-deepsub",
        disable=not progress,
        dynamic_ncols=True,
    )
    while len(stopping.losses) < config.epochs and not stopping.stop:
        steps = (len(stopping.losses) + 1) * n_masks
        if optimisation.state.iteration < steps:  # else: resumed after the steps, before validating
            optimisation.config.iterations = steps
            optimisation.run()
        with torch.no_grad():
            loss = float(validation[1](net(validation[0])))
        stopping.update(loss, steps - 1, net)
        optimisation.save()
        bar.update(1)
        train_loss = optimisation.state.history[-1]["total"]
        bar.set_postfix(train=f"{train_loss:.4g}", validation=f"{loss:.4g}", refresh=False)
    bar.close()
    if stopping.best_state is not None:
        net.load_state_dict(stopping.best_state)
    history = [{"train": h["total"]} for h in optimisation.state.history]
    for iteration, loss in stopping.losses:
        history[iteration]["validation"] = loss
    return history, stopping.best_iteration


class ZeroDeepSub(Method):
    """Zero-DeepSub: zero-shot self-supervised unrolled subspace network, then a voxel fit.

    The seed draws the line split, the dictionary and the network's initialisation; the
    training loop checkpoints and resumes. Returns maps fitted to ``Phi u`` inside the
    calibration support (``mask``), ``images = Phi u``, the ESPIRiT coils and ``extras`` with the
    ``history`` (per Adam step: ``train`` and, at epoch ends, ``validation`` loss),
    ``best_iteration`` (index into the history of the kept weights), ``mu`` and the line counts.
    """

    name = "zero-deepsub"
    description = (
        "Zero-DeepSub: zero-shot self-supervised unrolled subspace network, then voxel fit"
    )
    config_class = ZeroDeepSubConfig

    def reconstruct(self, problem: Problem, config: ZeroDeepSubConfig, context: RunContext) -> Maps:
        config = effective_config(config)
        prepared = prepare(problem, context, config.coil_compression)
        calib, model = prepared.calibration, prepared.model
        coils = espirit_coils(problem, prepared.kspace)
        subspace = temporal_subspace(
            model, config.rank, config.dictionary_atoms, config.b0_range_hz, context.seed
        )
        phi = subspace.phi.to(prepared.device, torch.complex64)
        data = SubspaceData(
            prepared.kspace,
            prepared.ky,
            prepared.kz,
            prepared.contrast,
            coils,
            phi,
            config.cg_iterations,
        )
        split = _split(problem, config, context.seed)
        with torch.no_grad():
            masks = [
                (data.dc(d), data.loss(lo)) for d, lo in zip(split.dc, split.loss, strict=True)
            ]
            validation = (data.dc(split.remainder), data.loss(split.validation))
        net = UnrolledSubspaceNet(
            config.rank,
            config.channels,
            config.blocks,
            config.unrolls,
            config.cg_iterations,
            config.mu,
        ).to(prepared.device)
        history, best_iteration = train(
            net,
            masks,
            validation,
            config,
            context.checkpoint,
            context.resume,
            context.progress,
            context.identity,
        )
        with torch.no_grad():
            u = net(data.dc(torch.arange(problem.n_lines)))
            # fitted in data units, so the fit sees the data's scale
            images = torch.tensordot(phi, u, dims=([1], [0])) * calib.scale
            fitted = fit_maps(images, model, mask=calib.support)
        extras = {
            "history": history,
            "best_iteration": best_iteration,
            "mu": float(net.mu.detach()),
            "lines": {
                "dc": len(split.dc[0]),
                "loss": len(split.loss[0]),
                "validation": len(split.validation),
            },
            "calibration_size": list(calib.size),
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


def _split(problem: Problem, config: ZeroDeepSubConfig, seed: int) -> LineSplit:
    """The seeded split of the acquired lines (the centre kept in every data-consistency set)."""
    return split_lines(
        problem.contrast,
        config.validation_fraction,
        config.loss_fraction,
        config.n_masks,
        seed,
        protected=central_lines(
            problem.ky, problem.kz, problem.grid.phase_encodes, tuple(config.keep_centre)
        ),
    )
