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
"""

from __future__ import annotations

import torch

from lorein.data.problem import Problem
from lorein.methods.lorein.config import LoreinConfig, PriorSpace
from lorein.methods.lorein.model import LoreinModel
from lorein.methods.lorein.schedule import Schedule
from lorein.methods.lorein.wnnm import WNNMRegulariser, mask_from_amplitude
from lorein.physics.operators import ContrastDataTerm, SubspaceDataTerm
from lorein.physics.signal_models import SignalFactors, SignalModel
from lorein.physics.subspace import Subspace, SubspaceProjection


class LoreinLosses:
    """The data and prior terms of eq. 17 for one problem (precomputed data terms, subspace)."""

    def __init__(
        self,
        problem: Problem,
        kspace: torch.Tensor,
        subspace: Subspace,
        model: SignalModel,
    ) -> None:
        grid = problem.grid.shape
        dev = kspace.device
        ky, kz, contrast = problem.ky.to(dev), problem.kz.to(dev), problem.contrast.to(dev)
        self.phi = subspace.phi.to(dev, torch.complex64)
        self.n_samples = kspace.numel()
        self.n_prior = problem.n_contrasts * problem.grid.n_voxels * kspace.shape[1]
        self.subspace_term = SubspaceDataTerm(kspace, ky, kz, contrast, self.phi, grid)
        self.contrast_term = ContrastDataTerm(kspace, ky, kz, contrast, grid)
        self.projection = SubspaceProjection(self.phi, model.readout_index, model.echo_index)

    def dc1(self, u: torch.Tensor, coils: torch.Tensor) -> torch.Tensor:
        """L_DC1 of the bases ``u [K, nz, ny, nx]`` (Gram form)."""
        return self.subspace_term(u, coils) / self.n_samples

    def dc2_exact(self, images: torch.Tensor, coils: torch.Tensor) -> torch.Tensor:
        """L_DC2 of the weighted images ``[T, nz, ny, nx]``, contrast by contrast."""
        return self.contrast_term(images, coils) / self.n_samples

    def dc2_subspace(self, projected: torch.Tensor, coils: torch.Tensor) -> torch.Tensor:
        """L_DC2 of the weighted images through their projection ``Phi^H I [K, nz, ny, nx]``."""
        return self.subspace_term(projected, coils) / self.n_samples

    def project(self, factors: SignalFactors) -> tuple[torch.Tensor, torch.Tensor]:
        """``Phi^H I`` and ``||I||^2`` of the PMR images, without forming them (T = 1280)."""
        return self.projection(factors)

    def prior(
        self,
        u: torch.Tensor,
        projected: torch.Tensor,
        norm2: torch.Tensor,
        space: PriorSpace = "full",
    ) -> torch.Tensor:
        """``||Phi u - I||^2 / (T V C)`` as ``||u||^2 - 2 Re<u, Phi^H I> + ||I||^2``.

        Parameters
        ----------
        u
            Spatial bases ``[K, nz, ny, nx]``.
        projected, norm2
            ``Phi^H I`` ``[K, nz, ny, nx]`` and ``||I||^2`` of the PMR images (:meth:`project`).
        space
            ``"subspace"``: ``||u - Phi^H I||^2 / (T V C)`` instead (``||Phi^H I||^2`` replaces
            ``||I||^2``).
        """
        if space == "subspace":
            norm2 = projected.abs().pow(2).sum()
        cross = torch.vdot(u.flatten(), projected.flatten()).real
        return (u.abs().pow(2).sum() - 2 * cross + norm2) / self.n_prior


def start_wnnm(maps: dict[str, torch.Tensor], config: LoreinConfig) -> WNNMRegulariser:
    """Fix the block matching (on T1) and the mask (M0 / max > 0.03) from the current maps."""
    detached = {k: v.detach() for k, v in maps.items()}
    mask = mask_from_amplitude(detached["M0"])
    weights = {k: v for k, v in config.wnnm_maps.items() if k in detached}
    return WNNMRegulariser.from_maps(detached["T1"], mask, weights)


class LoreinObjective:
    """``iteration -> {"dc1", "dc2", "prior", "wnnm", "total"}``: the terms the schedule has on.

    Parameters
    ----------
    net
        The LRR and PMR blocks (and the WNNM regulariser once the schedule switched it on).
    model
        Signal model of the PMR block, on the device.
    losses
        The problem's data and prior terms.
    config
        Term weights and forms (``dc1``, ``dc2``, ``prior``, ``wnnm``, ``dc2_path``,
        ``prior_flow``, ``prior_space``).
    schedule
        Which terms each step has.
    """

    def __init__(
        self,
        net: LoreinModel,
        model: SignalModel,
        losses: LoreinLosses,
        config: LoreinConfig,
        schedule: Schedule,
    ) -> None:
        self.net = net
        self.model = model
        self.losses = losses
        self.config = config
        self.schedule = schedule

    def __call__(self, iteration: int) -> dict[str, torch.Tensor]:
        coils = self.net.lrr.coils()
        terms: dict[str, torch.Tensor] = {}
        u = self.net.lrr.spatial_bases() if self.schedule.lrr else None
        if u is not None:
            terms["dc1"] = self.config.dc1 * self.losses.dc1(u, coils)
        if self.schedule.pmr_on(iteration):
            terms.update(self.pmr_terms(iteration, u, coils))
        terms["total"] = sum(terms.values())
        return terms

    def pmr_terms(
        self, iteration: int, u: torch.Tensor | None, coils: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``L_DC2``, ``L_prior`` (with bases ``u``) and ``L_WNNM`` of the PMR block's maps."""
        config, losses, pmr = self.config, self.losses, self.net.pmr
        assert pmr is not None
        terms: dict[str, torch.Tensor] = {}
        maps = pmr()
        factors = self.model.factors(maps)
        if config.dc2_path == "exact":
            terms["dc2"] = config.dc2 * losses.dc2_exact(factors.images(), coils)
        if config.dc2_path == "subspace" or (u is not None and config.prior > 0):
            projected, norm2 = losses.project(factors)  # one projection for both terms
            if config.dc2_path == "subspace":
                terms["dc2"] = config.dc2 * losses.dc2_subspace(projected, coils)
            if u is not None and config.prior > 0:
                guide = u.detach() if config.prior_flow == "to-pmr" else u
                prior = losses.prior(guide, projected, norm2, config.prior_space)
                terms["prior"] = config.prior * prior
        if self.schedule.wnnm_on(iteration):
            assert self.net.wnnm is not None, "the schedule switches WNNM on before its step"
            terms["wnnm"] = config.wnnm * self.net.wnnm(maps)
        return terms
