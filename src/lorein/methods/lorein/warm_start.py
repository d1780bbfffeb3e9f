"""Warm start of LoREIN's fields from a classical subspace reconstruction (data only).

Hash-encoded fields trained from scratch need thousands of Adam steps to reach the image scale
and structure; on a laptop CPU that is most of the budget. We start them close instead:

1. spatial coefficients ``u0`` by a few CG iterations on the damped normal equations of
   ``E = M F C Phi`` with the calibration coil estimate (the LRT reference without its
   regulariser), from which the basis field is regressed;
2. maps by a voxel-wise fit of ``Phi u0`` (:func:`lorein.numerics.voxel_fit.fit_maps`), from which
   the parameter fields are regressed (in the fields' output domain: log for the positive maps).

The joint optimisation of eq. 17 then starts from there. Nothing here sees the truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm

from lorein.methods.lorein.blocks import (
    B0_UNIT_HZ,
    CoilField,
    LowRankBlock,
    ParameterBlock,
)
from lorein.numerics.cg import conjugate_gradient
from lorein.numerics.optimisation import adam
from lorein.numerics.voxel_fit import fit_maps
from lorein.physics.models.base import SignalModel
from lorein.physics.operators import EncodingOperator
from lorein.physics.subspace import Subspace

VOXEL_BATCH = 2**15
"""Voxels per step of the warm-start regressions (sim1-small's brain support has ~15 k)."""


def subspace_cg(
    kspace: torch.Tensor,
    ky: torch.Tensor,
    kz: torch.Tensor,
    contrast: torch.Tensor,
    coils: torch.Tensor,
    subspace: Subspace,
    iterations: int = 10,
) -> torch.Tensor:
    """``[K, nz, ny, nx]`` coefficients from CG on ``(E^H E + d I) u = E^H y`` (d: 1% of scale)."""
    phi = subspace.phi.to(kspace.device, torch.complex64)
    enc = EncodingOperator(coils, ky, kz, contrast, phi)
    rhs = enc.H(kspace)
    probe = enc.normal(rhs)
    damping = 0.01 * float(torch.vdot(rhs.flatten(), probe.flatten()).real / rhs.norm() ** 2)
    return conjugate_gradient(enc.normal, rhs, iterations=iterations, damping=damping)


def _regress(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    voxels: torch.Tensor,
    steps: int,
    lr: float,
    batch: int,
    desc: str,
    progress: bool,
) -> None:
    """Adam on ``loss_fn(voxel_batch)``: random batches of ``voxels`` (all when fewer).

    A batch is sorted: its reads of the grid corners and its scatter into the hash tables then
    run through memory in order (the table scatter 2x faster at 112x112x16).
    """
    opt = adam([p for p in module.parameters() if p.requires_grad], lr)
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        if len(voxels) > batch:
            chosen = voxels[torch.randint(len(voxels), (batch,), device=voxels.device)]
            chosen = chosen.sort().values
        else:
            chosen = voxels
        opt.zero_grad(set_to_none=True)
        loss_fn(chosen).backward()
        opt.step()


def fit_coil_field(
    coils: CoilField,
    target: torch.Tensor,
    support: torch.Tensor,
    steps: int,
    lr: float = 1e-2,
    batch: int = VOXEL_BATCH,
    progress: bool = False,
) -> None:
    """Regress the coil field to a coil estimate ``target [C, nz, ny, nx]`` inside ``support``."""
    voxels = torch.nonzero(support.flatten()).squeeze(1)
    rows = target.reshape(target.shape[0], -1)
    _regress(
        coils,
        lambda v: (coils.at_voxels(v) - rows[:, v].T).abs().pow(2).sum() / len(v),
        voxels,
        steps,
        lr,
        batch,
        "coil warm-up",
        progress,
    )


def warm_start(
    lrr: LowRankBlock | None,
    pmr: ParameterBlock | None,
    u0: torch.Tensor,
    subspace: Subspace,
    model: SignalModel,
    support: torch.Tensor,
    steps: int,
    lr: float = 1e-2,
    batch: int = VOXEL_BATCH,
    progress: bool = False,
) -> dict[str, torch.Tensor] | None:
    """Regress the basis field to ``u0`` and the parameter fields to the voxel fit of ``Phi u0``.

    Either block may be None (``pmr-only`` and ``lrr-fit`` modes). Each step uses ``batch``
    random voxels of ``support`` (all of them when there are fewer), as instant-NGP trains on
    random points: a regression needs no whole volume, so its cost stops growing with the grid.

    Returns the fitted maps (None without a parameter block).
    """
    voxels = torch.nonzero(support.flatten()).squeeze(1)
    if lrr is not None:
        bases = lrr.bases
        rows = u0.reshape(u0.shape[0], -1)
        scale = rows[:, voxels].abs().pow(2).mean().clamp_min(1e-12)
        _regress(
            bases,
            lambda v: (bases.at_voxels(v) - rows[:, v].T).abs().pow(2).mean() / scale,
            voxels,
            steps,
            lr,
            batch,
            "warm start: bases",
            progress,
        )
    if pmr is None:
        return None
    images = subspace.expand(u0.to(subspace.phi.dtype), dim=0).to(torch.complex64)
    return start_maps(pmr, images, model, support, steps, lr, batch, progress)


def start_maps(
    pmr: ParameterBlock,
    images: torch.Tensor,
    model: SignalModel,
    support: torch.Tensor,
    steps: int,
    lr: float = 1e-2,
    batch: int = VOXEL_BATCH,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Regress the parameter fields to the voxel fit of weighted images.

    Parameters
    ----------
    pmr
        The parameter block (its fields are overwritten).
    images
        ``[T, nz, ny, nx]`` complex weighted images (any device).
    model
        Signal model (its contrast table moves to the images' device on each call).
    support
        ``[nz, ny, nx]`` bool voxels to fit and regress, on the device of ``pmr``: the voxel fit
        runs there too (sim2 at full size, 1280 contrasts: LoREIN's whole warm-up took 15 s on an
        H200).
    steps, lr, batch
        Adam steps, learning rate and voxels per step of the regression.

    Returns
    -------
    The voxel-wise fitted maps (CPU), from :func:`lorein.numerics.voxel_fit.fit_maps`.
    """
    device = support.device
    voxels = torch.nonzero(support.flatten()).squeeze(1)
    fitted = fit_maps(images.to(device), model, mask=support)
    targets = {name: pmr.raw(name, fitted[name]).to(device).flatten() for name in pmr.raw_names}
    b0 = (fitted["B0"] / B0_UNIT_HZ).to(device).flatten()
    phase0 = fitted["phase0"].to(device).flatten()

    def loss(v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for name, raw in pmr.raw_at_voxels(v).items():
            total = total + (raw - targets[name][v]).pow(2).sum()
        phase = pmr.phase.at_voxels(v)
        # phase0 is compared as a phasor: the fit's phase is only defined modulo 2 pi
        wrapped = (phase[:, 1] - phase0[v] + math.pi) % (2 * math.pi) - math.pi
        total = total + ((phase[:, 0] - b0[v]).pow(2) + wrapped.pow(2)).sum()
        return total / len(v)

    _regress(pmr, loss, voxels, steps, lr, batch, "warm start: maps", progress)
    return {name: value.cpu() for name, value in fitted.items()}
