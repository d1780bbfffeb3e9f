"""LoREIN's objective (paper eqs. 17-18): the data, prior and WNNM terms of one step.

``L = dc1 L_DC1 + dc2 L_DC2 + prior L_prior + lambda L_WNNM``, each data term a mean over its
samples so that the unit weights of eq. 18 balance:

- ``L_DC1 = ||y - M F C Phi U||^2 / n``: LRR data consistency in exact Gram form
  (:class:`~lorein.physics.operators.SubspaceDataTerm`), learned coils ``C``;
- ``L_DC2 = ||y - M F C I_w(maps)||^2 / n``: PMR data consistency, either exact per contrast
  (``dc2_path = "exact"``) or through the subspace (``"subspace"``: ``I_w`` projected on Phi,
  exact only for images inside the subspace; the difference is measured and reported);
- ``L_prior = ||Phi U - I_w||^2 / (T V C)``, computed as ``||U||^2 - 2 Re<U, Phi^H I_w> +
  ||I_w||^2`` (Phi has orthonormal columns). ``Phi^H I_w`` and ``||I_w||^2`` come from the signal
  model's readout x echo factors (:class:`~lorein.physics.subspace.SubspaceProjection`), shared
  with the subspace ``L_DC2``: the ``T`` images are never formed in a step. The ``C`` (coils)
  puts it on the data terms' per-sample scale (the mean squared error per sample that fully
  sampled k-space of ``Phi U - I_w`` would have with RSS-normalised coils), so the balance of
  eq. 18 does not change with the number of (virtual) coils. Departure from the paper, which
  normalises by ``T V`` only.
- ``L_WNNM`` on the maps, with block matching fixed when it switches on
  (:func:`start_wnnm`, called by the schedule, not by the objective).

Which terms a step has is the schedule's (:class:`~lorein.methods.lorein.schedule.Schedule`).

With ``batching = "planes"`` a step evaluates every term on one slab of x-planes
(:mod:`lorein.methods.lorein.batches`): the data terms in hybrid ``(x, ky, kz)`` space on the
slab's planes, the prior and the signal model on its voxels, WNNM on its groups; each slab sum is
scaled by the batches per epoch ``n``, so a step's loss is an unbiased estimate of the
whole-volume loss above and an epoch's mean is that loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lorein.data.problem import Problem
from lorein.inr.field import plane_voxels
from lorein.methods.lorein.batches import PlaneBatches
from lorein.methods.lorein.config import LoreinConfig, PriorSpace
from lorein.methods.lorein.model import LoreinModel
from lorein.methods.lorein.schedule import Schedule
from lorein.methods.lorein.wnnm import PlaneGroups, WNNMRegulariser, mask_from_amplitude
from lorein.physics.models.base import SignalFactors, SignalModel
from lorein.physics.operators import ContrastDataTerm, SubspaceDataTerm
from lorein.physics.subspace import Subspace, SubspaceProjection


class LoreinLosses:
    """The data and prior terms of eq. 17 for one problem (precomputed data terms, subspace).

    Each term takes its tensors on the whole volume (``planes = None``, ``[..., nz, ny, nx]``)
    or, when built with ``per_epoch`` (data in hybrid space), on a slab of x-planes
    (``[..., nz, ny, n]``); a slab's sum is scaled by ``per_epoch`` (module docstring).

    Parameters
    ----------
    problem
        The problem (lines, contrasts, grid).
    kspace
        ``[L, coil, nx]`` scaled (and compressed) lines on the device.
    subspace
        Temporal subspace Phi.
    model
        Signal model of the PMR block.
    per_epoch
        Batches of x-planes per epoch, or None for whole-volume steps (k-space data terms).
    """

    def __init__(
        self,
        problem: Problem,
        kspace: torch.Tensor,
        subspace: Subspace,
        model: SignalModel,
        per_epoch: int | None = None,
    ) -> None:
        grid = problem.grid.shape
        dev = kspace.device
        ky, kz, contrast = problem.ky.to(dev), problem.kz.to(dev), problem.contrast.to(dev)
        hybrid = per_epoch is not None
        self.grid = grid
        self.per_epoch = per_epoch or 1
        self.phi = subspace.phi.to(dev, torch.complex64)
        self.n_samples = kspace.numel()
        self.n_prior = problem.n_contrasts * problem.grid.n_voxels * kspace.shape[1]
        self.subspace_term = SubspaceDataTerm(kspace, ky, kz, contrast, self.phi, grid, hybrid)
        self.contrast_term = ContrastDataTerm(kspace, ky, kz, contrast, grid, hybrid=hybrid)
        self.projection = SubspaceProjection(self.phi, model.readout_index, model.echo_index)

    @property
    def data_energy(self) -> float:
        """``||y||^2 / n``: the mean squared sample, on the data terms' scale."""
        return float(self.subspace_term.y_norm2.sum()) / self.n_samples

    def _mean(self, total: torch.Tensor, count: int, planes: slice | None) -> torch.Tensor:
        """``total / count``; a slab's ``total`` is first scaled by the batches per epoch."""
        if planes is not None:
            total = total * self.per_epoch
        return total / count

    def dc1(
        self, u: torch.Tensor, coils: torch.Tensor, planes: slice | None = None
    ) -> torch.Tensor:
        """L_DC1 of the bases ``u [K, nz, ny, n]`` (Gram form)."""
        return self._mean(self.subspace_term(u, coils, planes), self.n_samples, planes)

    def dc2_exact(
        self, images: torch.Tensor, coils: torch.Tensor, planes: slice | None = None
    ) -> torch.Tensor:
        """L_DC2 of the weighted images ``[T, nz, ny, n]``, contrast by contrast."""
        return self._mean(self.contrast_term(images, coils, planes), self.n_samples, planes)

    def dc2_subspace(
        self, projected: torch.Tensor, coils: torch.Tensor, planes: slice | None = None
    ) -> torch.Tensor:
        """L_DC2 of the weighted images through their projection ``Phi^H I [K, nz, ny, n]``."""
        return self._mean(self.subspace_term(projected, coils, planes), self.n_samples, planes)

    def project(self, factors: SignalFactors) -> tuple[torch.Tensor, torch.Tensor]:
        """``Phi^H I`` and ``||I||^2`` of the PMR images, without forming them (T = 1280)."""
        return self.projection(factors)

    def prior(
        self,
        u: torch.Tensor,
        projected: torch.Tensor,
        norm2: torch.Tensor,
        space: PriorSpace = "full",
        planes: slice | None = None,
    ) -> torch.Tensor:
        """``||Phi u - I||^2 / (T V C)`` as ``||u||^2 - 2 Re<u, Phi^H I> + ||I||^2``.

        Parameters
        ----------
        u
            Spatial bases ``[K, nz, ny, n]``.
        projected, norm2
            ``Phi^H I`` ``[K, nz, ny, n]`` and ``||I||^2`` of the PMR images (:meth:`project`).
        space
            ``"subspace"``: ``||u - Phi^H I||^2 / (T V C)`` instead (``||Phi^H I||^2`` replaces
            ``||I||^2``).
        planes
            The slab of x-planes the tensors are on, or None (whole volume).
        """
        if space == "subspace":
            norm2 = projected.abs().pow(2).sum()
        cross = torch.vdot(u.flatten(), projected.flatten()).real
        return self._mean(u.abs().pow(2).sum() - 2 * cross + norm2, self.n_prior, planes)


def start_wnnm(maps: dict[str, torch.Tensor], config: LoreinConfig, guide: str) -> WNNMRegulariser:
    """Fix the block matching (on the map ``guide``, the signal model's ``structure_map``: T1,
    or M0 for ``megre``) and the mask (M0 / max > 0.03) from the current maps."""
    detached = {k: v.detach() for k, v in maps.items()}
    mask = mask_from_amplitude(detached["M0"])
    weights = {k: v for k, v in config.wnnm_maps.items() if k in detached}
    return WNNMRegulariser.from_maps(detached[guide], mask, weights)


@dataclass(frozen=True)
class SlabMaps:
    """The PMR maps of a step on a slab of x-planes.

    Attributes
    ----------
    maps
        The maps on the slab, float32 ``[nz, ny, n]`` each.
    flat
        The maps on the slab's voxels, then at the WNNM groups' voxels outside it,
        ``[1, 1, nz ny n + M]`` each (the layout of ``groups``).
    groups
        The slab's WNNM groups, or None (WNNM off, or no group on the slab).
    """

    maps: dict[str, torch.Tensor]
    flat: dict[str, torch.Tensor]
    groups: PlaneGroups | None


class LoreinObjective:
    """``iteration -> {"dc1", "dc2", "prior", "wnnm", "total"}``: the terms the schedule has on.

    Parameters
    ----------
    net
        The LRR and PMR blocks (and the WNNM regulariser once the schedule switched it on).
    model
        Signal model of the PMR block, on the device.
    losses
        The problem's data and prior terms (built with ``per_epoch`` when ``batches`` is given).
    config
        Term weights and forms (``dc1``, ``dc2``, ``prior``, ``wnnm``, ``dc2_path``,
        ``prior_flow``, ``prior_space``).
    schedule
        Which terms each step has.
    batches
        The slab of x-planes of each step, or None: every step on the whole volume.
    """

    def __init__(
        self,
        net: LoreinModel,
        model: SignalModel,
        losses: LoreinLosses,
        config: LoreinConfig,
        schedule: Schedule,
        batches: PlaneBatches | None = None,
    ) -> None:
        self.net = net
        self.model = model
        self.losses = losses
        self.config = config
        self.schedule = schedule
        self.batches = batches

    def __call__(self, iteration: int) -> dict[str, torch.Tensor]:
        planes = None if self.batches is None else self.batches.planes(iteration)
        lrr = self.net.lrr
        coils = lrr.coils() if planes is None else lrr.coils.at_planes(planes)
        terms: dict[str, torch.Tensor] = {}
        u = None
        if self.schedule.lrr:
            u = lrr.spatial_bases() if planes is None else lrr.bases_at_planes(planes)
            terms["dc1"] = self.config.dc1 * self.losses.dc1(u, coils, planes)
        if self.schedule.pmr_on(iteration):
            terms.update(self.pmr_terms(iteration, u, coils, planes))
        terms["total"] = sum(terms.values())
        return terms

    def pmr_terms(
        self,
        iteration: int,
        u: torch.Tensor | None,
        coils: torch.Tensor,
        planes: slice | None = None,
    ) -> dict[str, torch.Tensor]:
        """``L_DC2``, ``L_prior`` (with bases ``u``) and ``L_WNNM`` of the PMR block's maps, on
        the whole volume or on the slab ``planes`` (``u`` and ``coils`` on the same)."""
        config, losses, pmr = self.config, self.losses, self.net.pmr
        assert pmr is not None
        wnnm_on = self.schedule.wnnm_on(iteration)
        slab = None if planes is None else self.slab_maps(planes, wnnm_on)
        maps = pmr() if slab is None else slab.maps
        terms: dict[str, torch.Tensor] = {}
        factors = self.model.factors(maps)
        if config.dc2_path == "exact":
            terms["dc2"] = config.dc2 * losses.dc2_exact(factors.images(), coils, planes)
        if config.dc2_path == "subspace" or (u is not None and config.prior > 0):
            projected, norm2 = losses.project(factors)  # one projection for both terms
            if config.dc2_path == "subspace":
                terms["dc2"] = config.dc2 * losses.dc2_subspace(projected, coils, planes)
            if u is not None and config.prior > 0:
                guide = u.detach() if config.prior_flow == "to-pmr" else u
                prior = losses.prior(guide, projected, norm2, config.prior_space, planes)
                terms["prior"] = config.prior * prior
        if wnnm_on:
            assert self.net.wnnm is not None, "the schedule switches WNNM on before its step"
            wnnm = self.net.wnnm(maps) if slab is None else self._wnnm(slab)
            terms["wnnm"] = config.wnnm * wnnm
        return terms

    def slab_maps(self, planes: slice, wnnm_on: bool) -> SlabMaps:
        """The PMR maps on the slab ``planes`` (and at its WNNM groups' voxels if ``wnnm_on``)."""
        pmr, wnnm = self.net.pmr, self.net.wnnm
        assert pmr is not None
        nz, ny, _ = self.losses.grid
        voxels = plane_voxels(self.losses.grid, planes, self.losses.phi.device)
        n_slab = voxels.numel()
        groups = wnnm.on_planes(planes) if wnnm_on and wnnm is not None else None
        if groups is not None:
            voxels = torch.cat([voxels, groups.outside])
        values = pmr.at_voxels(voxels)
        maps = {k: v[:n_slab].reshape(nz, ny, -1) for k, v in values.items()}
        return SlabMaps(maps, {k: v.reshape(1, 1, -1) for k, v in values.items()}, groups)

    def _wnnm(self, slab: SlabMaps) -> torch.Tensor:
        """The slab's WNNM term: its groups' share of the volume's, times the batches per
        epoch (0 without groups on the slab)."""
        if slab.groups is None:
            return torch.zeros((), device=self.losses.phi.device)
        scale = slab.groups.fraction * self.losses.per_epoch
        return slab.groups.regulariser(slab.flat) * scale
