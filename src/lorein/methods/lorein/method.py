"""LoREIN: the LRR and PMR blocks optimised jointly (paper section III.C, eqs. 17-18).

Loss, each term a mean over its samples so that the unit weights of eq. 18 balance:

- ``L_DC1 = ||y - M F C Phi U||^2 / n``: LRR data consistency, exact Gram form
  (:class:`~lorein.physics.operators.SubspaceDataTerm`), learned coils ``C``;
- ``L_DC2 = ||y - M F C I_w(maps)||^2 / n``: PMR data consistency, either exact per contrast
  (``dc2 = "exact"``) or through the subspace (``dc2 = "subspace"``: ``I_w`` projected on Phi,
  exact only for images inside the subspace; the difference is measured and reported);
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
  (8x at 8 virtual coils) and tied the maps to the LRR image. Measured on sim1-small R = 27,
  150 steps, tuning seeds 1 and 2 (never a reported case), T1 / T2* NRMSE:

  ===============================  ===============  ===============
  run                              seed 1           seed 2
  ===============================  ===============  ===============
  prior / (T N) (before)           0.423 / 0.334    0.476 / 0.297
  prior / (T N C) (now)            0.372 / 0.305    0.418 / 0.302
  same, ``prior_flow="to-pmr"``    0.371 / 0.306    0.427 / 0.309
  LRR block alone + voxel fit      0.382 / 0.289    0.446 / 0.289
  PMR block alone (SUMMIT)         0.360 / 0.310    0.378 / 0.309
  ===============================  ===============  ===============

  The LRR images carry better T2* (and B0) than the PMR block finds alone but worse T1, and the
  prior passes both on: at these CPU budgets the joint model trades T1 for T2*. The same problems
  again after the CPU speed-ups (float rounding alone moved every run by up to 0.02):

  ===================================  ===============  ===============
  run                                  seed 1           seed 2
  ===================================  ===============  ===============
  prior 1                              0.365 / 0.306    0.394 / 0.283
  prior 1, ``prior_space="subspace"``  0.366 / 0.307    0.394 / 0.283
  prior 0.3 (``configs/sim1-small``)   0.350 / 0.313    0.386 / 0.285
  prior 0.1                            0.348 / 0.312    0.385 / 0.289
  PMR block alone (SUMMIT)             0.359 / 0.330    0.385 / 0.301
  ===================================  ===============  ===============

  Dropping the out-of-subspace energy of ``I_w`` from the prior changes nothing, so the full
  form's pull towards in-subspace signals is not what costs T1. A weaker prior does: at 0.3 the
  maps follow their own data term more for T1 and keep most of the LRR block's T2* (0.1 and 0.3
  have the same mean of the four numbers; 0.3 keeps the blocks more tightly coupled).

  Why the mask T1 of LoREIN and SUMMIT tie on sim1-small: both sit near the phantom's
  partial-volume floor (fully sampled, noiseless fit 0.322). In the tissue interiors
  (:func:`~lorein.eval.metrics.interior_mask`; fully sampled floor on the seed-0 phantom 0.051 /
  0.111) they separate. Seed-1 problem, R = 27, T1 / T2* NRMSE in the mask, then in the
  interiors:

  ==================================  ===============  ===============
  run                                 mask             interiors
  ==================================  ===============  ===============
  LoREIN, 150 steps                   0.350 / 0.312    0.130 / 0.154
  SUMMIT, 150 steps                   0.358 / 0.329    0.163 / 0.202
  LoREIN, 300 steps (configs now)     0.326 / 0.312    0.124 / 0.186
  SUMMIT, 300 steps (decay 150)       0.333 / 0.333    0.134 / 0.223
  ==================================  ===============  ===============

  The exact per-contrast ``L_DC2`` instead of the subspace path changes nothing here (LoREIN
  0.351 / 0.312, SUMMIT 0.358 / 0.329), nor does twice the budget close or open the mask gap.
  On the paper table's seed-0 case (R = 27) the interiors keep only the T2* gain (LoREIN 0.169 /
  0.183, SUMMIT 0.160 / 0.229; docs/BENCHMARKS.md): the T1 order in the interiors depends on the
  draw as well.

  Where the mask's T1 error sits: in CSF (4.2 s, capped at 3.5 s; a TR of 46 ms barely encodes
  it). On the seed-0 case CSF is 16 % of the mask's voxels but 70-86 % of LoREIN's and SUMMIT's
  squared T1 error at R = 12-48 with 150 steps (64-78 % with 300). CSF is the phantom's
  partial-volume tissue: a CSF-labelled voxel holds 53 % CSF on average (counted on the
  simulation's 2x finer grid; 6 % of them hold at least 90 %) and none is interior, so the data
  encode mixtures whose T1 lies far below 3.5 s even fully sampled and noiseless (that voxel
  fit: CSF mean 2.57 s after the cap, mask T1 0.322 with 75 % of its squared error in CSF). The
  INR fields, smooth at the scale of the 3.9 mm sulci, blur CSF further into grey matter (CSF
  mean T1 at R = 27: LoREIN 1.99 s, SUMMIT 2.15 s with 150 steps; 2.47 s and 2.58 s with 300).
  In the rest of the mask (:func:`~lorein.eval.evaluate.without_csf_voxels`) LoREIN's T1 and T2*
  are below SUMMIT's at every R on the seed-0 case, with either budget, and with 300 steps at
  R = 27 and 48 on each of three method seeds and of three sampling draws, but for T1 on one
  draw at R = 27 (docs/BENCHMARKS.md).

  At R = 48 (9 lines per contrast) the CG start is underdetermined (15 bases x 448 ky-kz
  locations against 560 lines x 8 virtual coils) and its voxel fit puts T1 near its lower bound
  everywhere (seed-1 problem: start T1 0.91); both blocks spend their steps climbing from there
  and end biased low (seed-0 case, white matter: 0.75 s against 0.93 s). Seed-1 problem at
  R = 48 (tuning only), T1 / T2* in the mask:

  =========================================  ===============  ===============
  run                                        LoREIN           SUMMIT
  =========================================  ===============  ===============
  150 steps (configs/sim1-small.toml before)  0.666 / 0.480    0.652 / 0.515
  150 steps, ``lr = 1e-2`` (prior 1)         0.667 / 0.436    0.635 / 0.438
  150 steps, ``"lrr"`` start, pretrain 75    0.742 / 0.435
  300 steps (decay 150)                      0.517 / 0.389    0.483 / 0.467
  300 steps, prior 1                         0.507 / 0.367
  =========================================  ===============  ===============

  The number of steps limits T1 here, not the learning rate (300 steps about halve LoREIN's T1
  bias: white matter 0.55 -> 0.77 s, grey matter 0.77 -> 1.11 s, truth 0.96 and 1.42 s). No
  better linear start was found: damping the CG (0.1, 1) or running it for 3-30 iterations leaves
  the start's T1 at 0.90-0.97; a lower start rank helps T1 (rank 4-6: 0.53) but costs T2* and B0
  (0.68-0.70, 12-13 Hz against 0.68, 9 Hz); Gauss-Newton on voxel maps against the exact data
  term overfits (after 8 steps its data misfit is below that of the true maps, with T1 0.87 and
  B0 30 Hz).

  configs/sim1-small.toml therefore runs 300 steps (decay at 150, WNNM from 180; 3-3.5 minutes
  per run on one core instead of 1.5-2). LoREIN on the tuning problems, T1 / T2*, 150
  steps, then 300 ('-': not measured):

  ===================  ===============  ===============  ===============
  problem, steps       mask             without CSF      interiors
  ===================  ===============  ===============  ===============
  seed 1, R = 27, 150  0.350 / 0.312    -                0.130 / 0.154
  seed 1, R = 27, 300  0.326 / 0.312    -                0.124 / 0.186
  seed 2, R = 27, 150  0.391 / 0.317    0.266 / 0.297    0.147 / 0.139
  seed 2, R = 27, 300  0.350 / 0.290    0.273 / 0.309    0.120 / 0.174
  seed 1, R = 48, 150  0.666 / 0.480    0.484 / 0.517    0.447 / 0.553
  seed 1, R = 48, 300  0.517 / 0.389    0.296 / 0.417    0.245 / 0.356
  seed 2, R = 48, 150  0.538 / 0.368    0.284 / 0.400    0.250 / 0.264
  seed 2, R = 48, 300  0.419 / 0.355    0.223 / 0.406    0.136 / 0.288
  ===================  ===============  ===============  ===============

  The mask errors fall on all four problems, T1 most at R = 48; the interiors' T2* rises by a few
  hundredths on three of the four. Twice that again (600 steps, decay 300, WNNM from 360) on the
  seed-1 problem at R = 27 leaves CSF where it was (mean T1 2.43 s for both blocks, 300 or 600
  steps) and costs T2* (LoREIN, mask / without CSF: T1 0.328 / 0.267 -> 0.322 / 0.265, T2*
  0.310 / 0.311 -> 0.313 / 0.344; SUMMIT T1 0.325 / 0.261 -> 0.327 / 0.276, T2* 0.320 / 0.332
  -> 0.335 / 0.368): at this size 300 steps have converged CSF to its partial-volume level. At
  full size (sim1, 1.96 mm) they had not with 150 steps, and configs/sim1.toml runs 300 as well
  (docs/BENCHMARKS.md).
- ``lambda L_WNNM`` on the maps, switched on after a warm-up, block matching fixed then.

Schedule: the coil field is first fitted to the calibration-region estimate (a warm start, data
only); the LRR block is pre-trained alone on ``L_DC1``; then all terms are optimised together with
Adam and step decay. The parameter fields start (``pmr_start``) either from the voxel fit of the
CG subspace reconstruction that also starts the bases (``"cg"``), or, once pre-training ends,
from the voxel fit of the LRR block's images (``"lrr"``). On sim2-small (3-4 lines per contrast)
the unregularised CG start carries ghost arcs of the head outline (aliasing of the sparse
sampling, worst in T2), which the PMR block did not unlearn in its steps while the LRR block,
regularised by its fields and CNN, did; the maps then inherited them. Measured on sim2-small
seed-1 problems (tuning only), 150 steps, T1 / T2 / T2* NRMSE:

  =======================================  =====================  =====================
  run                                      R = 160                R = 960
  =======================================  =====================  =====================
  ``pmr_start="cg"``, pretrain 0 (before)  0.351 / 0.411 / 0.280  0.631 / 0.625 / 0.351
  same, ``dc2 = 0.1``                      0.397 / 0.514 / 0.281
  same, ``dc2 = 0``, ``"to-pmr"`` prior    0.429 / 0.621 / 0.284
  LRR block alone + voxel fit              0.328 / 0.296 / 0.252  0.627 / 0.610 / 0.418
  ``pmr_start="lrr"``, pretrain 50         0.389 / 0.262 / 0.266  0.552 / 0.530 / 0.445
  **``"lrr"``, pretrain 100 (now)**        0.311 / 0.264 / 0.254  0.619 / 0.534 / 0.432
  =======================================  =====================  =====================

  With ``dc2 = 0`` and the LRR block trained on its data alone the ghosts stay: they come from the
  start, not from ``L_DC2``. Mean of the six numbers of a row: 0.442 before, 0.422 for the LRR
  block alone, 0.407 with pretrain 50, 0.402 with pretrain 100 (configs/sim2-small.toml; M0 0.230
  -> 0.173 at R = 160, 0.479 -> 0.362 at R = 960; 680 s instead of 1120 s at R = 160, LRR steps
  being cheaper than joint ones). On sim1-small (60 contrasts, each 27x undersampled) the CG start
  has no such arcs and ``"lrr"`` (pretrain 75) costs T1 (seeds 1 / 2, T1 / T2*: 0.383 / 0.288 and
  0.433 / 0.274 against 0.350 / 0.313 and 0.386 / 0.285), so configs/sim1-small.toml keeps
  ``"cg"``. The same trade at full size (sim1, seed-1 problem, R = 27, configs/sim1.toml): the
  ``"cg"`` start's maps carry faint arcs, ``"lrr"`` with pretrain 75 removes them but gives T1 /
  T2* 0.352 / 0.215 against 0.326 / 0.245 (M0 0.185 against 0.151, with a signal drop where B0
  is largest), so configs/sim1.toml keeps ``"cg"`` too.

  At R = 480 (each ky-kz location acquired at most once) no start is reliable. Four more
  sim2-small draws (seeds 1-4, tuning only), T1 / T2 / T2* NRMSE after 150 steps:

  ==========================  =====================  =====================  =====================
  draw                        ``"lrr"`` (now)        ``"cg"``, pretrain 0   ``"cg"``, rank 8
  ==========================  =====================  =====================  =====================
  seed 1                      0.322 / 0.330 / 0.246  0.794 / 0.450 / 0.333  0.461 / 0.312 / 0.470
  seed 2                      0.413 / 0.566 / 0.241  0.537 / 0.452 / 0.351  0.597 / 0.569 / 0.357
  seed 3                      0.537 / 0.631 / 0.345                         0.466 / 0.384 / 0.329
  seed 4                      0.582 / 0.657 / 0.240                         0.534 / 0.616 / 0.289
  ==========================  =====================  =====================  =====================

  A constant map at the truth's mean scores 0.52 / 0.40 / 0.30 here: at R = 480 most of these
  maps carry little beyond T1. Rank 8 (99.6 % of the dictionary's energy against 99.98 % at
  15) makes the CG start far less aliased (start maps on seeds 3 / 4 / 5, T1: 0.44 / 0.56 / 0.55
  against 1.24 / 0.62 / 1.07 at rank 15; the LRR start's 0.61 / 0.74 / 0.67) but not ghost-free
  (seed 1, R = 160: T2* 0.325 against 0.254, arcs in M0 and T2*), so neither replaced ``"lrr"``.
  A longer joint phase (``iterations = 200``: 100 joint steps instead of 50, still less wall
  time than SUMMIT's 150) was tried and dropped: T2 at R = 480 improved on all four draws
  (0.315 / 0.566 / 0.631 / 0.657 -> 0.268 / 0.514 / 0.618 / 0.514; seed 1's first value from a
  rerun; T1 and T2* within 0.03), but the seed-1 problems at R = 160 (0.311 / 0.264 / 0.254 ->
  0.343 / 0.324 / 0.255) and R = 960 (0.619 / 0.534 / 0.432 -> 0.579 / 0.786 / 0.424) lost.
  Choosing the start with the lower exact ``L_DC2`` was tried and dropped: it took the LRR start
  in all 10 probes (seeds 1-5, ranks 15 and 8), also where the CG start's maps were better; the
  LRR images are trained on the data, so their fit explains it best whatever its T1.

The whole volume is used in every iteration (no minibatches of readout planes): the Gram-form DC1
costs ``K n_coils`` FFTs per iteration whatever the batch, the CNN needs whole slices, and on CPU
the per-iteration overhead of small batches dominated.
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
        Steps fitting the coil field to the calibration estimate (sim1-small: the CG subspace
        data residual with the field's coils is 0.0057 after 60 steps, 0.0019 after 200,
        0.0018 after 600; with the estimate itself 0.0010).
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
        squared data terms (the paper gives no lambda). Swept on a sim1-small R = 27 seed-1
        problem (150 steps, ``configs/sim1-small.toml``), T1 / T2* NRMSE: lambda = 0 0.418 /
        0.332, 1e-8 0.423 / 0.334, 1e-7 0.439 / 0.375, 1e-6 0.537 / 0.400: at these budgets
        WNNM pulls the maps away from the data faster than it removes noise, so the default
        keeps it weak.
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
        Channels of the basis CNN; 0 removes it (ablation "no CNN"). On sim1-small, R = 27, at
        150 steps it changes nothing beyond the run-to-run spread (tuning problems seeds 1 / 2,
        method seeds 0-2, mean T1 / T2* NRMSE: 0.355 / 0.309 and 0.386 / 0.300 with it, 0.355 /
        0.309 and 0.383 / 0.291 without).
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
