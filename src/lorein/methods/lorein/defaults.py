"""LoREIN's settings chosen from the problem and the device, for a run given no settings.

``lorein recon PROBLEM -o OUT`` without ``--config`` starts from :func:`problem_config`; a
configuration file or ``--set`` values then change what they name. The static defaults of
:class:`~lorein.methods.lorein.config.LoreinConfig` stay the paper's (800 steps on every coil,
about 30 minutes on sim1-small on a 2-core CPU); the rules here size a run to the problem:

- **rank**: the subspace rank at most the number of contrasts
  (:func:`~lorein.methods.base.rank_within_contrasts`; a 3-echo protocol has 3);
- **coils**: SVD compression to :data:`VIRTUAL_COILS` virtual coils on a CPU
  (:data:`VIRTUAL_COILS_GPU` on a GPU) when the problem has more: the data terms cost
  ``K n_coils`` FFTs per step, and the compressed coils keep nearly all the signal energy;
- **L_DC2**: through the subspace (``dc2_path = "subspace"``, ``K`` FFTs per coil instead of one
  per contrast) once the contrasts outnumber the subspace rank twice, exact otherwise;
- **hash encodings** of the bases and the maps: ``2^log2_table`` entries per level, the smallest
  power of two that holds four entries per voxel (at most ``2^19``, the paper's), and the finest
  level at the grid's own resolution (``growth = "grid"``), not at twice it as ``growth =
  "auto"`` puts it: levels finer than a voxel only add per-voxel freedom, which fits noise and
  aliasing at high acceleration;
- **start and schedule**: every field from scratch (``lrr_start = pmr_start = "scratch"``),
  prior weight :data:`PRIOR`, Adam at ``lr = 1e-2``, :data:`STEPS` steps with the rate halved at
  half of them and WNNM from 60 % of them; the fields returned are the mean of the parameters
  over the second half, the steps at the halved rate (tail averaging, ``average_fraction``): the
  last iterate still follows the noise of the data from step to step. The CG start put the
  aliasing of the unregularised subspace CG images (ghost arcs along y) into the maps, and the
  optimisation did not remove it (docs/tuning/lorein.md, section 13).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from lorein.data.problem import Problem
from lorein.methods.base import rank_within_contrasts
from lorein.methods.lorein.config import LoreinConfig

VIRTUAL_COILS = 8
"""Virtual coils on a CPU."""

VIRTUAL_COILS_GPU = 16
"""Virtual coils on a GPU."""

STEPS = 300
"""Optimiser steps of a run chosen from the problem."""

LR = 1e-2
"""Adam learning rate of a run from scratch."""

PRIOR = 0.3
"""Weight of ``L_prior``: at 1 the maps follow the LRR images more, which traded T1 for T2*
(docs/tuning/lorein.md, sections 2 and 13)."""


def table_size(n_voxels: int) -> int:
    """``log2`` of the hash-table size: four entries per voxel, between ``2^12`` and ``2^19``."""
    return min(19, max(12, math.ceil(math.log2(4 * n_voxels))))


def problem_config(problem: Problem, device: torch.device | str = "cpu") -> LoreinConfig:
    """The settings of a LoREIN run of ``problem`` on ``device`` (module docstring's rules)."""
    base = LoreinConfig()
    on_gpu = torch.device(device).type == "cuda"
    virtual = VIRTUAL_COILS_GPU if on_gpu else VIRTUAL_COILS
    log2_table = table_size(problem.grid.n_voxels)
    fields = {
        name: replace(getattr(base, name), log2_table=log2_table, growth="grid")
        for name in ("basis_encoding", "map_encoding")
    }
    config = replace(
        base,
        coil_compression=virtual if problem.n_coils > virtual else None,
        dc2_path="subspace" if problem.n_contrasts > 2 * base.rank else "exact",
        **fields,
        lrr_start="scratch",
        pmr_start="scratch",
        pretrain=0,
        prior=PRIOR,
        lr=LR,
        iterations=STEPS,
        decay_every=STEPS // 2,
        wnnm_start=STEPS * 3 // 5,
        average_fraction=0.5,
    )
    return rank_within_contrasts(config, problem)
