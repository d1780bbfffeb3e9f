"""LoREIN's hyper-parameters (:class:`LoreinConfig`) and the hash-encoding settings they hold."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from lorein.settings import (
    AtLeast,
    Count,
    Fraction,
    NonNegative,
    Positive,
    PositiveCount,
    validate,
)

Mode = Literal["joint", "pmr-only", "lrr-fit"]
PriorFlow = Literal["both", "to-pmr"]
PriorSpace = Literal["full", "subspace"]
Dc2Path = Literal["exact", "subspace"]
PmrStart = Literal["cg", "lrr", "scratch"]
LrrStart = Literal["cg", "scratch"]
Batching = Literal["volume", "planes"]


@dataclass(frozen=True)
class HashEncodingConfig:
    """Settings of one multiresolution hash encoding
    (:class:`~lorein.inr.hash_encoding.HashEncoding`).

    Attributes
    ----------
    n_levels
        Resolution levels ``L``.
    n_features
        Features per level ``F``.
    log2_table
        ``log2`` of the hash-table size ``T`` per level.
    n_min
        Coarsest resolution ``N_min`` [voxels across the grid].
    growth
        Factor between levels, or ``"auto"`` (finest level at twice the grid's width) or
        ``"grid"`` (finest level at the grid's width): :func:`resolve_encoding`.
    """

    n_levels: PositiveCount = 16
    n_features: PositiveCount = 2
    log2_table: PositiveCount = 19
    n_min: PositiveCount = 16
    growth: Annotated[float, AtLeast(1.0)] | Literal["auto", "grid"] = "auto"

    def __post_init__(self) -> None:
        validate(self)


def resolve_encoding(
    encoding: HashEncodingConfig | Mapping[str, Any], grid: tuple[int, int, int]
) -> dict[str, Any]:
    """The encoding's keyword arguments, ``growth = "auto"`` or ``"grid"`` replaced by the factor
    whose finest level has twice (``"auto"``) or once (``"grid"``) the grid's width.

    instant-NGP chooses ``b = (N_max / N_min)^(1 / (L - 1))`` for the scene; SUMMIT's fixed
    ``b = 2`` puts most of 16 levels far below the voxel size, where they only add per-voxel free
    parameters (and cost). ``N_max = 2 max(grid)`` keeps every level meaningful; ``N_max =
    max(grid)`` adds none finer than a voxel (docs/tuning/lorein.md, section 13).
    """
    values = asdict(encoding) if isinstance(encoding, HashEncodingConfig) else dict(encoding)
    finest = {"auto": 2, "grid": 1}.get(values.get("growth"))
    if finest is None:
        return values
    n_max = finest * max(grid)
    levels = values["n_levels"]
    growth = (n_max / values["n_min"]) ** (1 / max(levels - 1, 1))
    return dict(values, growth=max(growth, 1.0))


def _encoding(**values: Any) -> Any:
    """A dataclass field whose default is a fresh :class:`HashEncodingConfig`."""
    return field(default_factory=lambda: HashEncodingConfig(**values))


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
        Epochs after the coil warm start (pre-training included). An epoch is one pass over
        the data: one optimiser step with ``batching = "volume"``, one step per batch of
        x-planes with ``"planes"``; ``pretrain``, ``decay_every`` and ``wnnm_start`` count
        epochs too, so the schedule means the same in both modes (the progress bar and the
        loss history count steps; the report says how many steps an epoch has).
    pretrain
        Epochs of LRR-only pre-training (paper: 20 epochs).
    coil_warmup
        Steps fitting the coil field to the calibration estimate (200: the data residual with
        the field's coils hardly falls after that; docs/tuning/lorein.md).
    warm_start
        Steps of each regression of fields to a start (:mod:`lorein.methods.lorein.warm_start`):
        the CG subspace reconstruction and its voxel fit before step 0 (``lrr_start``,
        ``pmr_start = "cg"``), the LRR images after pre-training (``pmr_start = "lrr"``). 0: no
        regression, every field starts from scratch, as the paper's do.
    lr
        Adam learning rate (paper: 1e-3).
    decay_every
        Epochs between learning-rate halvings.
    wnnm_start
        Epoch at which WNNM switches on (block matching is computed then).
    average_fraction
        Fraction of the run, at its end, whose parameters are averaged into the returned fields
        (tail averaging, :class:`~lorein.numerics.optimisation.LoopConfig`): the mean over the
        last ``round(average_fraction * iterations)`` epochs' steps; 0 returns the last iterate,
        as the paper does. A fraction, so that a run given another length keeps averaging
        iterates of its own late phase.
    batching
        ``"volume"``: every step evaluates the whole volume (k-space Gram form); ``"planes"``:
        each step evaluates one slab of readout (x) planes in hybrid ``(x, ky, kz)`` space and
        an epoch visits every slab once, in a random order per epoch (the paper's stochastic
        optimisation over readout planes; :mod:`lorein.methods.lorein.batches`).
    planes_per_batch
        Largest number of x-planes of a batch (``"planes"``): the readout is cut into
        ``ceil(nx / planes_per_batch)`` contiguous slabs of nearly equal width.
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
    lrr_start
        Where the basis field starts: ``"cg"``, regressed to the CG subspace reconstruction;
        ``"scratch"``, its random initialisation (the paper's start, whose coarse-to-fine bias
        the CG start overrides: the aliasing of the CG images is then in the field from step 0).
    pmr_start
        Where the parameter fields start: ``"cg"``, the voxel fit of the CG subspace
        reconstruction of the warm start (before step 0); ``"lrr"``, the voxel fit of the LRR
        block's images ``Phi U`` after its ``pretrain`` steps (joint mode, ``pretrain > 0``);
        ``"scratch"``, near-constant maps at ``initial``.
        The unregularised CG start carries the aliasing of sparse sampling (ghost arcs of the
        head outline on sim2-small) into the maps, and the PMR block does not unlearn it in
        the budget; the pre-trained LRR block (hash fields + CNN) has removed it.
    mode
        ``"joint"`` (LoREIN), ``"pmr-only"`` (no LRR block: SUMMIT-like ablation) or
        ``"lrr-fit"`` (LRR block alone, then a voxel-wise fit of Phi U).
    coil_compression
        Number of virtual coils (SVD compression); None keeps all coils.
    coil_support
        Coils vanish outside the calibration support (the low-resolution image above 5 % of its
        maximum, :mod:`lorein.methods.calibration`): a support constraint, as ESPIRiT maps
        impose; without it the learned coil field extends over the whole field of view.
    basis_encoding, map_encoding, phase_encoding, coil_encoding
        Hash encodings (paper: defaults, phase N_min = 1 and 2^12; coils tiny and low-resolution);
        ``growth = "auto"`` is resolved by :func:`resolve_encoding`. A TOML table or a dict
        names only the settings it changes (``basis_encoding = {log2_table = 16}``).
    hidden, layers
        MLP width and hidden layers (paper: 64 x 3).
    initial
        Starting values of T1, T2, T2* [s] for the PMR fields (M0 is set from the data scale).
    """

    rank: PositiveCount = 15
    dictionary_atoms: PositiveCount = 5000
    b0_range_hz: NonNegative = 60.0
    iterations: Count = 800
    pretrain: Count = 150
    coil_warmup: Count = 200
    warm_start: Count = 150
    lr: Positive = 1e-3
    decay_every: PositiveCount = 300
    wnnm_start: Count = 500
    average_fraction: Fraction = 0.0
    dc1: NonNegative = 1.0
    dc2: NonNegative = 1.0
    prior: NonNegative = 1.0
    prior_flow: PriorFlow = "both"
    prior_space: PriorSpace = "full"
    wnnm: NonNegative = 1e-8
    wnnm_maps: dict[str, NonNegative] = field(
        default_factory=lambda: {"M0": 0.05, "T1": 0.2, "T2": 2.0, "T2star": 2.0, "B0": 0.2}
    )
    dc2_path: Dc2Path = "exact"
    lrr_start: LrrStart = "cg"
    pmr_start: PmrStart = "cg"
    cnn_channels: Count = 8
    mode: Mode = "joint"
    batching: Batching = "volume"
    planes_per_batch: PositiveCount = 8
    coil_compression: PositiveCount | None = None
    coil_support: bool = False
    basis_encoding: HashEncodingConfig = _encoding()
    map_encoding: HashEncodingConfig = _encoding()
    phase_encoding: HashEncodingConfig = _encoding(log2_table=12, n_min=1)
    coil_encoding: HashEncodingConfig = _encoding(n_levels=8, log2_table=4, n_min=1, growth=1.5)
    hidden: PositiveCount = 64
    layers: Count = 3
    initial: dict[str, Positive] = field(
        default_factory=lambda: {"T1": 1.0, "T2": 0.08, "T2star": 0.05}
    )

    @property
    def average_steps(self) -> int:
        """Epochs at the end of the run whose parameters are averaged (0: none)."""
        return round(self.average_fraction * self.iterations)

    def __post_init__(self) -> None:
        validate(self)
        if self.pmr_start == "lrr" and not (self.mode == "joint" and self.pretrain > 0):
            raise ValueError(
                f"pmr_start = 'lrr' needs mode = 'joint' and pretrain > 0 "
                f"(got mode = {self.mode!r}, pretrain = {self.pretrain})"
            )
        if self.pmr_start == "lrr" and self.warm_start <= 0:
            raise ValueError("pmr_start = 'lrr' needs warm_start > 0 (the regression's steps)")
