"""Plane-batched optimisation: which slab of readout (x) planes each optimiser step takes.

The readout is fully sampled, so after an inverse FFT along x the data term of the whole volume
is a sum of one term per x-plane (:mod:`lorein.physics.operators`, ``hybrid=True``). The paper
optimises stochastically over batches of these planes, an epoch visiting every plane once; with
``batching = "planes"`` LoREIN does too:

- the ``nx`` planes are cut once into ``n = ceil(nx / planes_per_batch)`` contiguous slabs of
  nearly equal width (:meth:`PlaneBatches.slabs`); each epoch takes them in a random order drawn
  from the run's seed and the epoch's number alone (:meth:`PlaneBatches.order`), so a resumed or
  rolled-back run takes the same batches as an uninterrupted one;
- step ``i`` is batch ``i mod n`` of epoch ``i // n``;
- a step's terms are the slab's sums times ``n`` (:attr:`PlaneBatches.per_epoch`): each step is
  an unbiased estimate of the whole-volume loss (the same scale, so the weights of eq. 18 mean
  what they mean for whole volumes), and the mean over an epoch's steps is the volume's loss at
  fixed parameters. For the mean-type terms (``L_DC1``, ``L_DC2``, ``L_prior``: sums over the
  slab's samples or voxels over the volume's count) and WNNM (the slab's groups, each group in
  the slab of its reference centre, over all groups: :meth:`.wnnm.WNNMRegulariser.on_planes`).

Contiguous slabs, not scattered planes: the basis CNN works on (y, x) slices and needs
:attr:`~.basis_cnn.BasisCNN.HALO` planes on each side of what it refines, which a slab shares
among its planes; scattered planes would each need their own halo (most of the volume for a
batch). Fields, coils, maps, signal model and prior are evaluated on the slab's voxels only; the
whole volume is evaluated once per epoch (the coarse bases, without gradient, for the CNN's
scale), when WNNM switches on (block matching), at the PMR restart, and in ``collect``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class PlaneBatches:
    """The batches of x-planes of every step (module docstring).

    Attributes
    ----------
    nx
        Readout planes of the volume.
    planes_per_batch
        Largest slab width (``nx`` or more: one batch, the whole volume in hybrid space).
    seed
        The run's seed; with the epoch it fixes the epoch's order.
    """

    nx: int
    planes_per_batch: int
    seed: int

    @property
    def per_epoch(self) -> int:
        """Steps (slabs) per epoch ``n = ceil(nx / planes_per_batch)``."""
        return math.ceil(self.nx / min(self.planes_per_batch, self.nx))

    @cached_property
    def slabs(self) -> tuple[slice, ...]:
        """The ``n`` slabs in x order: ``slice(i nx // n, (i + 1) nx // n)``."""
        n = self.per_epoch
        return tuple(slice(i * self.nx // n, (i + 1) * self.nx // n) for i in range(n))

    def order(self, epoch: int) -> list[int]:
        """The slabs' order in ``epoch``: a permutation drawn from ``(seed, epoch)``."""
        rng = np.random.default_rng([self.seed % 2**64, epoch])
        return [int(i) for i in rng.permutation(self.per_epoch)]

    def planes(self, step: int) -> slice:
        """The slab of optimiser step ``step``."""
        epoch, index = divmod(step, self.per_epoch)
        return self.slabs[self.order(epoch)[index]]
