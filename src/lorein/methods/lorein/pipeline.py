"""LoREIN as named stages: build, initialise, optimise, collect.

:func:`run` chains them; SUMMIT (the PMR block alone) runs the same stages in
``mode = "pmr-only"``, and the ``"lrr-fit"`` ablation ends with :func:`lrr_fit` instead of the
PMR block's maps.

1. :func:`build`: temporal subspace, data terms, the blocks (:func:`~.model.build_model`), the
   batches of x-planes (``batching = "planes"``) and the :class:`~.schedule.Schedule`;
2. :func:`initialise`: the coil field fitted to the calibration estimate, then the fields
   regressed to a CG subspace reconstruction and its voxel fit (data only; skipped on resume,
   where the checkpoint holds the fields);
3. :func:`optimise`: Adam over the schedule's stages with :class:`~.objective.LoreinObjective`
   as the loss, checkpoints and NaN rollbacks (:class:`~lorein.numerics.optimisation.Optimisation`);
4. :func:`collect`: maps, the LRR images ``Phi U``, coils, mask and the DC2 check (exact against
   subspace ``L_DC2`` of the final maps), rescaled to data units once by
   :func:`~lorein.methods.base.finish`.

By default (``batching = "volume"``) every step uses the whole volume, with the data terms in
k-space Gram form: ``K n_coils`` 3D FFTs per step. Departure from the paper, which optimises
over batches of readout planes; ``batching = "planes"`` does that
(:mod:`lorein.methods.lorein.batches`: slabs of x-planes in hybrid space, the configuration's
step counts read as epochs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Prepared, RunContext, finish, prepare
from lorein.methods.lorein.batches import PlaneBatches
from lorein.methods.lorein.config import LoreinConfig
from lorein.methods.lorein.model import LoreinModel, build_model
from lorein.methods.lorein.objective import LoreinLosses, LoreinObjective, start_wnnm
from lorein.methods.lorein.schedule import Schedule
from lorein.methods.lorein.warm_start import fit_coil_field, start_maps, subspace_cg, warm_start
from lorein.methods.lorein.wnnm import mask_from_amplitude
from lorein.numerics.optimisation import LoopConfig, Optimisation
from lorein.numerics.voxel_fit import fit_maps
from lorein.physics.models.base import SignalModel
from lorein.physics.subspace import Subspace, temporal_subspace


@dataclass
class Setup:
    """Everything the stages share for one problem.

    Attributes
    ----------
    prepared
        Scaled k-space, calibration and signal model on the device.
    config
        Hyper-parameters.
    subspace
        Temporal subspace Phi (``config.rank`` columns).
    losses
        Data and prior terms of the problem.
    net
        The LRR and PMR blocks (and WNNM once on), on the device.
    fit_model
        Signal model on the CPU, for the voxel fits (their dictionaries are built there).
    schedule
        The stages by step.
    batches
        The slab of x-planes of each step (``batching = "planes"``), or None.
    """

    prepared: Prepared
    config: LoreinConfig
    subspace: Subspace
    losses: LoreinLosses
    net: LoreinModel
    fit_model: SignalModel
    schedule: Schedule
    batches: PlaneBatches | None


def build(prepared: Prepared, config: LoreinConfig, seed: int) -> Setup:
    """Subspace, data terms, blocks, batches and schedule (stage 1)."""
    problem, model = prepared.problem, prepared.model
    fit_model = model.with_contrasts(problem.contrasts)
    subspace = temporal_subspace(
        model, config.rank, config.dictionary_atoms, config.b0_range_hz, seed
    )
    batches = None
    if config.batching == "planes":
        batches = PlaneBatches(problem.grid.nx, config.planes_per_batch, seed)
    per_epoch = None if batches is None else batches.per_epoch
    losses = LoreinLosses(problem, prepared.kspace, subspace, model, per_epoch)
    net = build_model(
        config,
        prepared.grid,
        prepared.kspace.shape[1],
        model,
        prepared.calibration.level,
        prepared.calibration.support,
    ).to(prepared.device)
    schedule = Schedule.from_config(config, per_epoch or 1)
    return Setup(prepared, config, subspace, losses, net, fit_model, schedule, batches)


def initialise(setup: Setup, progress: bool) -> None:
    """Coil field from the calibration estimate, fields from a CG subspace start (stage 2)."""
    prepared, config, net = setup.prepared, setup.config, setup.net
    calib = prepared.calibration
    fit_coil_field(net.lrr.coils, calib.coils, calib.support, config.coil_warmup, progress=progress)
    lrr = net.lrr if setup.schedule.lrr and config.lrr_start == "cg" else None
    pmr = net.pmr if config.pmr_start == "cg" else None
    if config.warm_start <= 0 or (lrr is None and pmr is None):
        return
    with torch.no_grad():
        coils0 = net.lrr.coils()
    u0 = subspace_cg(
        prepared.kspace, prepared.ky, prepared.kz, prepared.contrast, coils0, setup.subspace
    )
    warm_start(
        lrr,
        pmr,
        u0,
        setup.subspace,
        setup.fit_model,
        calib.support,
        config.warm_start,
        progress=progress,
    )


def _transition(setup: Setup, iteration: int, progress: bool) -> None:
    """Carry out the schedule's stage changes due before step ``iteration``."""
    net, config = setup.net, setup.config
    for change in setup.schedule.transitions(iteration, net.wnnm is not None):
        if change == "epoch-start":
            net.lrr.refresh_scale()
            continue
        assert net.pmr is not None
        if change == "pmr-restart":
            with torch.no_grad():
                u = net.lrr.spatial_bases().to(setup.subspace.phi.dtype)
                images = setup.subspace.expand(u, dim=0)
            start_maps(
                net.pmr,
                images.to(torch.complex64),
                setup.fit_model,
                setup.prepared.calibration.support,
                config.warm_start,
                progress=progress,
            )
        elif change == "wnnm-start":
            with torch.no_grad():
                guide = setup.prepared.model.structure_map
                net.wnnm = start_wnnm(net.pmr(), config, guide)


def optimise(setup: Setup, context: RunContext) -> Optimisation:
    """Adam over the schedule's stages (stage 3); the finished loop (history, timing).

    The loop counts steps: epochs times the schedule's steps per epoch (the progress bar says
    how many with plane batches).
    """
    config, schedule = setup.config, setup.schedule
    objective = LoreinObjective(
        setup.net, setup.prepared.model, setup.losses, config, schedule, setup.batches
    )
    n = schedule.steps_per_epoch
    average = config.average_steps
    average_from = n * (config.iterations - average) if average else None
    loop = LoopConfig(
        iterations=schedule.iterations,
        lr=config.lr,
        decay_every=n * config.decay_every,
        average_from=average_from,
    )
    description = "lorein" if setup.batches is None else f"lorein ({n} steps per epoch)"
    optimisation = Optimisation(
        setup.net,
        objective,
        loop,
        context.checkpoint,
        context.progress,
        description,
        before_step=lambda it: _transition(setup, it, context.progress),
        identity=context.identity,
    )
    optimisation.run(resume=context.resume)
    return optimisation


def lrr_fit(setup: Setup, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ``"lrr-fit"`` ablation's maps: a voxel fit of the LRR images ``[T, nz, ny, nx]``
    (calibration-scaled units) inside the calibration support."""
    support = setup.prepared.calibration.support.cpu()
    fitted = fit_maps(images.to(torch.complex64), setup.fit_model, mask=support)
    return {k: v.float() for k, v in fitted.items()}


def collect(setup: Setup, extras: dict[str, Any], recorded: Any) -> Maps:
    """Maps, images, coils and mask of the trained blocks in data units (stage 4).

    ``extras`` gains the DC2 check (``dc2_exact``, ``dc2_subspace`` and their relative
    difference) when there is a PMR block; ``recorded`` is the configuration written to the
    report.
    """
    net, losses, calib = setup.net, setup.losses, setup.prepared.calibration
    with torch.no_grad():
        coils = net.lrr.coils()
        images = None
        if setup.schedule.lrr:
            u = net.lrr.spatial_bases()
            images = setup.subspace.expand(u.cpu().to(setup.subspace.phi.dtype), dim=0)
        if net.pmr is not None:
            maps = net.pmr()
            factors = setup.prepared.model.factors(maps)
            exact = float(losses.dc2_exact(factors.images(), coils))
            projected = float(losses.dc2_subspace(losses.project(factors)[0], coils))
            extras["dc2_exact"] = exact
            extras["dc2_subspace"] = projected
            extras["dc2_relative_difference"] = abs(projected - exact) / max(exact, 1e-30)
            extras["relative_residual"] = exact / max(losses.data_energy, 1e-30)
            values = maps
            if setup.config.coil_support:  # no object outside the support: M0 is zero there
                values = dict(maps, M0=maps["M0"] * net.lrr.coils.support)
            mask = mask_from_amplitude(values["M0"].float().cpu() * calib.scale)
    if net.pmr is None:
        assert images is not None
        values = lrr_fit(setup, images)
        mask = calib.support.cpu()
    extras["subspace_captured_energy"] = setup.subspace.captured_energy
    return finish(
        values,
        model=setup.prepared.model,
        mask=mask,
        images=images,
        coils=coils,
        extras=extras,
        config=recorded,
        started=setup.prepared.started,
        scale=calib.scale,
    )


def run(problem: Problem, config: LoreinConfig, context: RunContext, recorded: Any = None) -> Maps:
    """The four stages on ``problem``; ``recorded`` (default ``config``) goes to the report.

    Returns
    -------
    Maps with the model's parameters (M0 in data units, times [s], B0 [Hz], phase0 [rad]) and
    derived maps; the LRR images ``Phi U`` and coils; ``extras`` with the loss ``history`` (one
    record per step), ``calibration_size``, ``warm_up_seconds``, ``seconds_per_step`` and
    ``steps_per_epoch``.
    """
    prepared = prepare(problem, context, config.coil_compression)
    setup = build(prepared, config, context.seed)
    if not context.resume:
        initialise(setup, context.progress)
    warm_up_seconds = time.perf_counter() - prepared.started
    optimisation = optimise(setup, context)
    extras: dict[str, Any] = {
        "history": optimisation.state.history,
        "calibration_size": list(prepared.calibration.size),
        "warm_up_seconds": warm_up_seconds,
        "seconds_per_step": optimisation.seconds_per_step,
        "steps_per_epoch": setup.schedule.steps_per_epoch,
    }
    return collect(setup, extras, config if recorded is None else recorded)
