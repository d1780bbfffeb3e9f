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

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Method, RunContext
from lorein.methods.lorein import pipeline
from lorein.methods.lorein.config import LoreinConfig
from lorein.methods.lorein.model import field_memory


class Lorein(Method):
    """LoREIN: the LRR and PMR blocks optimised jointly (:func:`pipeline.run`)."""

    name = "lorein"
    description = "LoREIN: LRR + PMR blocks, jointly"
    config_class = LoreinConfig

    def reconstruct(self, problem: Problem, config: LoreinConfig, context: RunContext) -> Maps:
        return pipeline.run(problem, config, context)

    def estimate_memory(self, problem: Problem, config: LoreinConfig) -> int:
        return field_memory(problem, config)
