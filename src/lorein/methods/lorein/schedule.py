"""The stages of a LoREIN run, by optimiser step.

After the warm-up (coil field fitted to the calibration estimate, then the fields regressed to a
CG subspace start; :mod:`lorein.methods.lorein.warm_start`), the optimiser runs ``iterations``
epochs of ``n`` steps each (``n = 1`` with whole-volume steps, one step per batch of x-planes
with ``batching = "planes"``: :mod:`lorein.methods.lorein.batches`) through these stages, which
the configuration gives in epochs and :class:`Schedule` holds in steps:

1. **pre-training** (epochs ``0 .. pretrain - 1``, joint mode): the LRR block alone on
   ``L_DC1``;
2. **PMR start** (epoch ``pretrain``, ``pmr_start = "lrr"`` only): the parameter fields restart
   from the voxel fit of the pre-trained LRR images ``Phi U``;
3. **joint** (from epoch ``pretrain``; from 0 without an LRR block): every data and prior term;
4. **WNNM on** (from epoch ``max(wnnm_start, PMR start)`` if ``wnnm > 0``): block matching is
   fixed from the maps of that step and ``L_WNNM`` joins the loss.

With plane batches, every epoch also starts by setting the basis CNN's scale from the whole
volume (``"epoch-start"``, before the other changes of that step).

Transitions happen before a step, in :meth:`Schedule.transitions`' order, so that a resumed or
rolled-back run passes through them exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorein.methods.lorein.config import LoreinConfig


@dataclass(frozen=True)
class Schedule:
    """Which blocks and terms each optimiser step has.

    Attributes
    ----------
    iterations
        Optimiser steps (epochs times ``steps_per_epoch``).
    lrr
        Whether the LRR block's bases (and ``L_DC1``) take part (not in ``"pmr-only"`` mode).
    pmr_from
        First step with the PMR block's terms, or None without a PMR block (``"lrr-fit"``).
    pmr_restart
        Step before which the parameter fields restart from the LRR images, or None.
    wnnm_from
        First step with ``L_WNNM``, or None (``wnnm = 0`` or no PMR block).
    steps_per_epoch
        Steps of an epoch: batches of x-planes per epoch, 1 for whole-volume steps.
    batched
        Whether the steps take batches of x-planes (then each epoch starts with
        ``"epoch-start"``).
    """

    iterations: int
    lrr: bool
    pmr_from: int | None
    pmr_restart: int | None
    wnnm_from: int | None
    steps_per_epoch: int = 1
    batched: bool = False

    @classmethod
    def from_config(cls, config: LoreinConfig, steps_per_epoch: int = 1) -> Schedule:
        """The stages of ``config`` (mode, iterations, pretrain, pmr_start, wnnm, wnnm_start,
        batching; in epochs) in steps of ``steps_per_epoch`` per epoch."""
        n = steps_per_epoch
        lrr = config.mode != "pmr-only"
        pmr_from = None
        if config.mode != "lrr-fit":
            pmr_from = n * config.pretrain if lrr else 0
        restart = None
        if config.pmr_start == "lrr" and pmr_from is not None:
            restart = n * config.pretrain
        wnnm_from = None
        if pmr_from is not None and config.wnnm > 0:
            wnnm_from = max(pmr_from, n * config.wnnm_start)
        batched = config.batching == "planes"
        return cls(n * config.iterations, lrr, pmr_from, restart, wnnm_from, n, batched)

    def pmr_on(self, iteration: int) -> bool:
        """Whether step ``iteration`` has ``L_DC2`` and ``L_prior``."""
        return self.pmr_from is not None and iteration >= self.pmr_from

    def wnnm_on(self, iteration: int) -> bool:
        """Whether step ``iteration`` has ``L_WNNM``."""
        return self.wnnm_from is not None and iteration >= self.wnnm_from

    def transitions(self, iteration: int, wnnm_started: bool) -> list[str]:
        """Stage changes due before step ``iteration``: ``"epoch-start"``, ``"pmr-restart"``,
        ``"wnnm-start"``.

        ``wnnm_started`` says whether the regulariser already exists (restored from a
        checkpoint or a snapshot taken after it switched on).
        """
        due = []
        if self.batched and iteration % self.steps_per_epoch == 0:
            due.append("epoch-start")
        if iteration == self.pmr_restart:
            due.append("pmr-restart")
        if self.wnnm_on(iteration) and not wnnm_started:
            due.append("wnnm-start")
        return due
