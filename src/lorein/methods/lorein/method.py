"""LoREIN: the LRR and PMR blocks optimised jointly (paper section III.C, eqs. 17-18).

Loss, each term a mean over its samples so that the unit weights of eq. 18 balance:

- ``L_DC1 = ||y - M F C Phi U||^2 / n``: LRR data consistency, exact Gram form
  (:class:`~lorein.physics.operators.SubspaceDataTerm`), learned coils ``C``;
- ``L_DC2 = ||y - M F C I_w(maps)||^2 / n``: PMR data consistency, either exact per contrast
  (``dc2_path = "exact"``) or through the subspace (``dc2_path = "subspace"``: ``I_w`` projected
  on Phi, exact only for images inside the subspace; the difference is measured and reported);
- ``L_prior = ||Phi U - I_w||^2 / (T N C)``, computed as
  ``||U||^2 - 2 Re<U, Phi^H I_w> + ||I_w||^2`` (Phi has orthonormal columns). ``Phi^H I_w`` and
  ``||I_w||^2`` come from the signal model's readout x echo factors
  (:class:`~lorein.physics.subspace.SubspaceProjection`), shared with the subspace ``L_DC2``: the
  ``T`` images are never formed in a step (sim2-small, T = 1280: signal model, projection and
  prior 11.1 -> 2.8 s per step on one thread). The ``C`` (coils) puts it on the data terms'
  per-sample scale: it is the mean squared error per sample that fully
  sampled k-space of the difference ``Phi U - I_w`` would have (RSS-normalised coils spread
  ``||d||^2`` over ``C T N`` samples), so the balance of eq. 18 does not change with the number of
  (virtual) coils. Dividing by ``T N`` only made the prior ``C`` times stiffer than ``L_DC2``
  (8x at 8 virtual coils) and tied the maps to the LRR image.
- ``lambda L_WNNM`` on the maps, switched on after a warm-up, block matching fixed then.

Schedule: the coil field is first fitted to the calibration-region estimate (a warm start, data
only); the LRR block is pre-trained alone on ``L_DC1``; then all terms are optimised together with
Adam and step decay. The parameter fields start (``pmr_start``) either from the voxel fit of the
CG subspace reconstruction that also starts the bases (``"cg"``), or, once pre-training ends,
from the voxel fit of the LRR block's images (``"lrr"``). The unregularised CG start carries the
aliasing of sparse sampling into the maps (ghost arcs of the head outline at 3-4 lines per
contrast, sim2-small), which the PMR block does not unlearn in its steps; the pre-trained LRR
block, regularised by its fields and CNN, has removed it.

The whole volume is used in every iteration (no minibatches of readout planes): the Gram-form DC1
costs ``K n_coils`` FFTs per iteration whatever the batch, the CNN needs whole slices, and on CPU
the per-iteration overhead of small batches dominated.

Preset choices (``configs/``, chosen on seed-1 and seed-2 problems, never on a reported case):

- sim1-small and sim1: 300 steps (decay 150, WNNM from 180), since with 150 T1 stayed biased low,
  most at R = 48 (the CG start's T1 is near its lower bound there); ``pmr_start = "cg"``, since
  ``"lrr"`` cost T1 there (the CG start has no arcs on sim1-small, faint ones on sim1);
  sim1-small ``prior = 0.3``, since a weaker prior lets the maps follow their own data for T1 and
  keeps most of the LRR block's T2*;
- sim2-small and sim2: ``pmr_start = "lrr"`` after 100 pre-training steps, free of the CG start's
  ghost arcs. At R >= 480 (each ky-kz location acquired at most once) no start is reliable.

Where this departs from the paper: the fields are warm-started (coil field from the calibration
estimate, bases and maps from a CG subspace reconstruction and its voxel fit; the paper starts
from scratch, ``warm_start = 0``); the maps may start from the pre-trained LRR images
(``pmr_start = "lrr"``); every loss term is a mean (eq. 17 writes sums), the prior over
``T N C``; the schedule counts whole-volume steps, not epochs; the paper gives no WNNM ``lambda``
(``LoreinConfig.wnnm``).

Tuning measurements (prior, steps, starts, R = 480 draws, WNNM, coil warm-up, CNN):
docs/tuning/lorein.md.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.calibration import scaled_kspace
from lorein.methods.lorein.blocks import LowRankBlock, ParameterBlock
from lorein.methods.lorein.warm_start import fit_coil_field, start_maps, subspace_cg, warm_start
from lorein.methods.lorein.wnnm import WNNMRegulariser, mask_from_amplitude
from lorein.numerics.optimisation import LoopConfig, Optimisation
from lorein.physics.operators import ContrastDataTerm, SubspaceDataTerm
from lorein.physics.signal_models import SignalFactors, SignalModel, signal_model
from lorein.physics.subspace import (
    DictionaryRanges,
    Subspace,
    SubspaceProjection,
    simulate_dictionary,
    subspace_from_dictionary,
)

Mode = Literal["joint", "pmr-only", "lrr-fit"]
PriorFlow = Literal["both", "to-pmr"]
PriorSpace = Literal["full", "subspace"]
Dc2Path = Literal["exact", "subspace"]
PmrStart = Literal["cg", "lrr"]


def _hash(n_levels: int, log2_table: int, n_min: int, growth: float | str) -> dict[str, Any]:
    return {
        "n_levels": n_levels,
        "n_features": 2,
        "log2_table": log2_table,
        "n_min": n_min,
        "growth": growth,
    }


def resolve_encoding(encoding: dict[str, Any], grid: tuple[int, int, int]) -> dict[str, Any]:
    """Replace ``growth = "auto"`` by the factor whose finest level has twice the grid's width.

    instant-NGP chooses ``b = (N_max / N_min)^(1 / (L - 1))`` for the scene; SUMMIT's fixed
    ``b = 2`` puts most of 16 levels far below the voxel size, where they only add per-voxel free
    parameters (and cost). ``N_max = 2 max(grid)`` keeps every level meaningful.
    """
    if encoding.get("growth") != "auto":
        return dict(encoding)
    n_max = 2 * max(grid)
    levels = encoding["n_levels"]
    growth = (n_max / encoding["n_min"]) ** (1 / max(levels - 1, 1))
    return dict(encoding, growth=max(growth, 1.0))


@dataclass
class LoreinConfig:
    """Hyper-parameters of LoREIN (defaults: paper section III.E where it says).

    Attributes
    ----------
    rank
        Number of spatial bases K (paper: 15).
    dictionary_atoms
        Atoms of the simulated dictionary whose SVD gives Phi.
    b0_range_hz
        Off-resonance range of the dictionary [Hz].
    iterations
        Total optimiser steps after the coil warm start (pre-training included).
    pretrain
        Steps of LRR-only pre-training (paper: 20 epochs).
    coil_warmup
        Steps fitting the coil field to the calibration estimate (200: the data residual with
        the field's coils hardly falls after that; docs/tuning/lorein.md).
    warm_start
        Steps regressing the basis and parameter fields to a CG subspace reconstruction and its
        voxel fit before the joint optimisation (0: start from scratch, as the paper does);
        see :mod:`lorein.methods.lorein.warm_start`.
    lr
        Adam learning rate (paper: 1e-3).
    decay_every
        Steps between learning-rate halvings.
    wnnm_start
        Step at which WNNM switches on (block matching is computed then).
    dc1, dc2, prior, wnnm
        Loss weights (eq. 18; ``wnnm`` is lambda). WNNM's weights ``c sqrt(N) / (s_hat + 1e-6)``
        reach ~5e6 on noise-only singular values, so its value is many orders above the mean
        squared data terms (the paper gives no lambda). The default 1e-8 keeps it weak: at
        these budgets a stronger WNNM pulled the maps away from the data faster than it removed
        noise (sweep: docs/tuning/lorein.md).
    prior_flow
        ``"both"``: the prior's gradient reaches both blocks; ``"to-pmr"``: only the PMR block
        (``U`` detached in ``L_prior``), so the LRR block fits its data alone and guides the
        maps one way, as the paper's Fig. 2 draws the prior ("from the LRR block to the PMR
        block").
    prior_space
        ``"full"``: ``||Phi U - I_w||^2`` (eq. 17); ``"subspace"``: ``||U - Phi^H I_w||^2``, which
        drops ``||(1 - Phi Phi^H) I_w||^2``, the part of the weighted images that ``Phi U`` cannot
        represent (and the subspace ``L_DC2`` does not see); in the full form that part is a
        penalty on the maps alone that favours parameters whose signals lie in the subspace.
    wnnm_maps
        Per-map WNNM weights (paper: A 0.05, T1 and phase 0.2, T2 and T2* 2).
    dc2_path
        ``"exact"`` (per-contrast FFTs) or ``"subspace"``.
    cnn_channels
        Channels of the basis CNN; 0 removes it (ablation "no CNN"; on sim1-small at 150 steps
        no effect beyond the run-to-run spread, docs/tuning/lorein.md).
    pmr_start
        Where the parameter fields start: ``"cg"``, the voxel fit of the CG subspace
        reconstruction of the warm start (before step 0); ``"lrr"``, the voxel fit of the LRR
        block's images ``Phi U`` after its ``pretrain`` steps (joint mode, ``pretrain > 0``).
        The unregularised CG start carries the aliasing of sparse sampling (ghost arcs of the
        head outline on sim2-small) into the maps, and the PMR block does not unlearn it in
        the budget; the pre-trained LRR block (hash fields + CNN) has removed it.
    mode
        ``"joint"`` (LoREIN), ``"pmr-only"`` (no LRR block: SUMMIT-like ablation) or
        ``"lrr-fit"`` (LRR block alone, then a voxel-wise fit of Phi U).
    coil_compression
        Number of virtual coils (SVD compression); None keeps all coils.
    basis_encoding, map_encoding, phase_encoding, coil_encoding
        Hash encodings (paper: defaults, phase N_min = 1 and 2^12; coils tiny and low-resolution);
        ``growth = "auto"`` is resolved by :func:`resolve_encoding`.
    hidden, layers
        MLP width and hidden layers (paper: 64 x 3).
    initial
        Starting values of T1, T2, T2* [s] for the PMR fields (M0 is set from the data scale).
    """

    rank: int = 15
    dictionary_atoms: int = 5000
    b0_range_hz: float = 60.0
    iterations: int = 800
    pretrain: int = 150
    coil_warmup: int = 200
    warm_start: int = 150
    lr: float = 1e-3
    decay_every: int = 300
    wnnm_start: int = 500
    dc1: float = 1.0
    dc2: float = 1.0
    prior: float = 1.0
    prior_flow: PriorFlow = "both"
    prior_space: PriorSpace = "full"
    wnnm: float = 1e-8
    wnnm_maps: dict[str, float] = field(
        default_factory=lambda: {"M0": 0.05, "T1": 0.2, "T2": 2.0, "T2star": 2.0, "B0": 0.2}
    )
    dc2_path: Dc2Path = "exact"
    pmr_start: PmrStart = "cg"
    cnn_channels: int = 8
    mode: Mode = "joint"
    coil_compression: int | None = None
    basis_encoding: dict[str, Any] = field(default_factory=lambda: _hash(16, 19, 16, "auto"))
    map_encoding: dict[str, Any] = field(default_factory=lambda: _hash(16, 19, 16, "auto"))
    phase_encoding: dict[str, Any] = field(default_factory=lambda: _hash(16, 12, 1, "auto"))
    coil_encoding: dict[str, Any] = field(default_factory=lambda: _hash(8, 4, 1, 1.5))
    hidden: int = 64
    layers: int = 3
    initial: dict[str, float] = field(
        default_factory=lambda: {"T1": 1.0, "T2": 0.08, "T2star": 0.05}
    )

    def __post_init__(self) -> None:
        choices_of = (
            ("mode", Mode),
            ("prior_flow", PriorFlow),
            ("prior_space", PriorSpace),
            ("dc2_path", Dc2Path),
            ("pmr_start", PmrStart),
        )
        for key, kind in choices_of:
            choices = get_args(kind)
            if getattr(self, key) not in choices:
                raise ValueError(
                    f"{key} = {getattr(self, key)!r}: expected one of {', '.join(choices)}"
                )
        if self.pmr_start == "lrr" and not (self.mode == "joint" and self.pretrain > 0):
            raise ValueError(
                f"pmr_start = 'lrr' needs mode = 'joint' and pretrain > 0 "
                f"(got mode = {self.mode!r}, pretrain = {self.pretrain})"
            )


class LoreinModel(torch.nn.Module):
    """All trainable parts, the LRR and PMR blocks, and the WNNM regulariser once it is on.

    The regulariser's block matching is fixed when it switches on; it is kept as the module's
    extra state so that checkpoints, resumes and NaN rollbacks restore it exactly.
    """

    def __init__(self, lrr: LowRankBlock, pmr: ParameterBlock | None) -> None:
        super().__init__()
        self.lrr = lrr
        self.pmr = pmr
        self.wnnm: WNNMRegulariser | None = None

    def get_extra_state(self) -> WNNMRegulariser | None:
        return self.wnnm

    def set_extra_state(self, state: WNNMRegulariser | None) -> None:
        self.wnnm = state


def temporal_subspace(
    model: SignalModel, rank: int, n_atoms: int, b0_range_hz: float, seed: int
) -> Subspace:
    """Phi (``rank`` columns) from the SVD of ``n_atoms`` simulated signals over physiological
    ranges, off-resonance within ``+-b0_range_hz`` [Hz]."""
    ranges = DictionaryRanges(b0=(-b0_range_hz, b0_range_hz))
    atoms, _ = simulate_dictionary(model, n_atoms, ranges, seed=seed)
    return subspace_from_dictionary(atoms.to(torch.complex128), rank)


def initial_m0(model: SignalModel, config: LoreinConfig, image_level: float) -> float:
    """M0 that makes the model's mean signal magnitude equal ``image_level`` at the initial maps."""
    maps = {k: torch.tensor([v]) for k, v in config.initial.items() if k in model.parameters}
    maps.update(M0=torch.ones(1), B0=torch.zeros(1), phase0=torch.zeros(1))
    level = float(model(maps).abs().mean())
    return image_level / max(level, 1e-6)


class LoreinLosses:
    """The data and prior terms of eq. 17 for one problem (precomputed data terms, subspace)."""

    def __init__(
        self,
        problem: Problem,
        kspace: torch.Tensor,
        subspace: Subspace,
        model: SignalModel,
    ) -> None:
        nx, ny, nz = problem.matrix
        grid = (nz, ny, nx)
        dev = kspace.device
        ky, kz, contrast = problem.ky.to(dev), problem.kz.to(dev), problem.contrast.to(dev)
        self.phi = subspace.phi.to(dev, torch.complex64)
        self.n_samples = kspace.numel()
        self.n_prior = problem.n_contrasts * nz * ny * nx * kspace.shape[1]
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


def reconstruct(
    problem: Problem,
    config: LoreinConfig | None = None,
    device: str = "cpu",
    seed: int = 0,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Maps:
    """Run LoREIN on a problem.

    Parameters
    ----------
    problem
        The acquisition (never the truth).
    config
        Hyper-parameters; defaults if None.
    device
        ``"cpu"`` or ``"cuda"``.
    seed
        Seeds every random initialisation.
    checkpoint
        Checkpoint file for the optimisation loop (resume with ``resume=True``).
    resume
        Continue from ``checkpoint``.
    progress
        Show progress bars.

    Returns
    -------
    Maps with M0 (data units), T1, T2 (t2ir_gre), T2star [s], B0 [Hz], phase0 [rad]; the LRR
    images ``Phi U`` and coils when the LRR block ran; the loss history in ``extras``.
    """
    config = config or LoreinConfig()
    start = time.perf_counter()
    torch.manual_seed(seed)
    dev = torch.device(device)
    nx, ny, nz = problem.matrix
    grid = (nz, ny, nx)
    kspace, calib = scaled_kspace(problem, config.coil_compression, dev)

    model = signal_model(problem.signal_model, problem.contrasts.to(dev))
    # for the voxel fits (their dictionaries are built on the CPU; the fits run on dev)
    fit_model = signal_model(problem.signal_model, problem.contrasts)
    subspace = temporal_subspace(
        model, config.rank, config.dictionary_atoms, config.b0_range_hz, seed
    )
    losses = LoreinLosses(problem, kspace, subspace, model)

    use_lrr = config.mode != "pmr-only"
    use_pmr = config.mode != "lrr-fit"
    lrr = LowRankBlock(
        grid,
        config.rank,
        kspace.shape[1],
        resolve_encoding(config.basis_encoding, grid),
        resolve_encoding(config.coil_encoding, grid),
        config.hidden,
        config.layers,
        config.cnn_channels if use_lrr else 0,
    ).to(dev)
    if not use_lrr:  # only the coil field of the LRR block is used
        lrr.bases.requires_grad_(False)
    pmr = None
    if use_pmr:
        initial = dict(config.initial, M0=initial_m0(model, config, calib.level))
        pmr = ParameterBlock(
            grid,
            model.parameters,
            initial,
            resolve_encoding(config.map_encoding, grid),
            resolve_encoding(config.phase_encoding, grid),
            config.hidden,
            config.layers,
        ).to(dev)
    net = LoreinModel(lrr, pmr)
    if not resume:
        fit_coil_field(lrr.coils, calib.coils, calib.support, config.coil_warmup, progress=progress)
        if config.warm_start > 0:
            with torch.no_grad():
                coils0 = lrr.coils()
            u0 = subspace_cg(
                kspace,
                problem.ky.to(dev),
                problem.kz.to(dev),
                problem.contrast.to(dev),
                coils0,
                subspace,
            )
            warm_start(
                lrr if use_lrr else None,
                pmr if config.pmr_start == "cg" else None,
                u0,
                subspace,
                fit_model,
                calib.support,
                config.warm_start,
                progress=progress,
            )

    def closure(it: int) -> dict[str, torch.Tensor]:
        coils = lrr.coils()
        terms: dict[str, torch.Tensor] = {}
        u = lrr.spatial_bases() if use_lrr else None
        if u is not None:
            terms["dc1"] = config.dc1 * losses.dc1(u, coils)
        if pmr is not None and (it >= config.pretrain or not use_lrr):
            maps = pmr()
            factors = model.factors(maps)
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
            if config.wnnm > 0 and it >= config.wnnm_start:
                if net.wnnm is None:
                    net.wnnm = start_wnnm(maps, config)
                terms["wnnm"] = config.wnnm * net.wnnm(maps)
        terms["total"] = sum(terms.values())
        return terms

    def start_pmr_from_lrr(it: int) -> None:
        if pmr is None or config.pmr_start != "lrr" or it != config.pretrain:
            return
        with torch.no_grad():
            images = subspace.expand(lrr.spatial_bases().to(subspace.phi.dtype), dim=0)
        start_maps(
            pmr,
            images.to(torch.complex64),
            fit_model,
            calib.support,
            config.warm_start,
            progress=progress,
        )

    loop = LoopConfig(iterations=config.iterations, lr=config.lr, decay_every=config.decay_every)
    optimisation = Optimisation(
        net, closure, loop, checkpoint, progress, "lorein", before_step=start_pmr_from_lrr
    )
    warm_up_seconds = time.perf_counter() - start
    history = optimisation.run(resume=resume)

    with torch.no_grad():
        coils = lrr.coils()
        result: dict[str, torch.Tensor] = {}
        images = None
        extras: dict[str, Any] = {"history": history, "calibration_size": list(calib.size)}
        if use_lrr:
            u = lrr.spatial_bases()
            images = subspace.expand(u.cpu().to(subspace.phi.dtype), dim=0) * calib.scale
        if pmr is not None:
            maps = pmr()
            factors = model.factors(maps)
            exact = float(losses.dc2_exact(factors.images(), coils))
            projected = float(losses.dc2_subspace(losses.project(factors)[0], coils))
            extras["dc2_exact"] = exact
            extras["dc2_subspace"] = projected
            extras["dc2_relative_difference"] = abs(projected - exact) / max(exact, 1e-30)
            result = {k: v.float().cpu() for k, v in maps.items()}
            result["M0"] = result["M0"] * calib.scale
            mask = mask_from_amplitude(result["M0"]).to(torch.uint8)
        else:
            mask = None
    if config.mode == "lrr-fit":
        from lorein.numerics.voxel_fit import fit_maps

        assert images is not None
        fitted = fit_maps(images.to(torch.complex64), fit_model, mask=calib.support.cpu())
        result = {k: v.float() for k, v in fitted.items()}
        mask = calib.support.cpu().to(torch.uint8)
    extras["seconds"] = time.perf_counter() - start
    extras["warm_up_seconds"] = warm_up_seconds
    extras["seconds_per_step"] = optimisation.seconds_per_step
    extras["config"] = asdict(config)
    extras["subspace_captured_energy"] = subspace.captured_energy
    return Maps(
        values=result,
        mask=mask,
        images=None if images is None else images.to(torch.complex64),
        coils=coils.cpu(),
        extras=extras,
    )
