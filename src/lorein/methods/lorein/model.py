"""LoREIN's trainable model: the LRR and PMR blocks for one problem, and how they are built.

The LRR block (:class:`~lorein.methods.lorein.blocks.LowRankBlock`) holds the basis field, the
basis CNN and the coil field; the PMR block (:class:`~lorein.methods.lorein.blocks.ParameterBlock`)
one field per parametric map. ``mode = "pmr-only"`` keeps only the LRR block's coil field
trainable (SUMMIT); ``"lrr-fit"`` has no PMR block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lorein.data.problem import Problem
from lorein.methods.lorein.basis_cnn import BasisCNN
from lorein.methods.lorein.blocks import LowRankBlock, ParameterBlock, unrepresentable
from lorein.methods.lorein.config import LoreinConfig, resolve_encoding
from lorein.methods.lorein.wnnm import WNNMRegulariser
from lorein.physics.models.base import MAPS, SignalModel


class LoreinModel(torch.nn.Module):
    """All trainable parts, the LRR and PMR blocks, and the WNNM regulariser once it is on.

    The regulariser's block matching is fixed when it switches on; it is kept as the module's
    extra state, as tensors and plain data (:meth:`WNNMRegulariser.state_dict`), so that
    checkpoints, resumes and NaN rollbacks restore it exactly and a checkpoint holds no object
    that loading would have to run.
    """

    def __init__(self, lrr: LowRankBlock, pmr: ParameterBlock | None) -> None:
        super().__init__()
        self.lrr = lrr
        self.pmr = pmr
        self.wnnm: WNNMRegulariser | None = None

    def get_extra_state(self) -> dict[str, Any] | None:
        return None if self.wnnm is None else self.wnnm.state_dict()

    def set_extra_state(self, state: Mapping[str, Any] | None) -> None:
        device = next(self.parameters()).device
        self.wnnm = None if state is None else WNNMRegulariser.from_state(state, device)


def initial_m0(model: SignalModel, config: LoreinConfig, image_level: float) -> float:
    """M0 that makes the model's mean signal magnitude equal ``image_level`` at the initial maps:
    ``config.initial``, else each map's typical value (:data:`~lorein.physics.models.base.MAPS`)."""
    maps = {
        k: torch.tensor([config.initial.get(k, MAPS[k].typical)])
        for k in model.parameters
        if k not in ("M0", "B0", "phase0")
    }
    maps.update(M0=torch.ones(1), B0=torch.zeros(1), phase0=torch.zeros(1))
    level = float(model(maps).abs().mean())
    return image_level / max(level, 1e-6)


def build_model(
    config: LoreinConfig,
    grid: tuple[int, int, int],
    n_coils: int,
    model: SignalModel,
    image_level: float,
    support: torch.Tensor | None = None,
) -> LoreinModel:
    """The blocks of ``config.mode`` on the CPU, seeded by the caller.

    Parameters
    ----------
    config
        Mode, rank, encodings, MLP sizes and initial map values.
    grid
        ``(nz, ny, nx)``.
    n_coils
        Coils (virtual after compression) of the coil field.
    model
        Signal model of the PMR block (sets the initial ``M0``).
    image_level
        Median magnitude of the scaled calibration image (the initial ``M0`` reproduces it).
    support
        Bool ``[nz, ny, nx]`` object support from the calibration; the coils vanish outside it
        when ``config.coil_support``.
    """
    use_lrr = config.mode != "pmr-only"
    lrr = LowRankBlock(
        grid,
        config.rank,
        n_coils,
        resolve_encoding(config.basis_encoding, grid),
        resolve_encoding(config.coil_encoding, grid),
        config.hidden,
        config.layers,
        config.cnn_channels if use_lrr else 0,
        batched=config.batching == "planes",
        support=support if config.coil_support else None,
    )
    if not use_lrr:  # only the coil field of the LRR block is used
        lrr.bases.requires_grad_(False)
    pmr = None
    if config.mode != "lrr-fit":
        unknown = unrepresentable(model.parameters)
        if unknown:
            raise ValueError(
                f"lorein and summit cannot reconstruct the signal model {model.name}: their "
                f"parameter block has no field for its maps {unknown}; use fit, lrt or joint-maple"
            )
        initial = dict(config.initial, M0=initial_m0(model, config, image_level))
        pmr = ParameterBlock(
            grid,
            model.parameters,
            initial,
            resolve_encoding(config.map_encoding, grid),
            resolve_encoding(config.phase_encoding, grid),
            config.hidden,
            config.layers,
        )
    return LoreinModel(lrr, pmr)


def field_memory(problem: Problem, config: LoreinConfig, n_fields: int = 7) -> int:
    """Rough peak bytes of a run with ``n_fields`` hash fields over the whole volume.

    Per field: precomputed hash-corner rows, weights and their transpose (``16 V 8 16``, the
    whole grid in either batching) and the table with its gradient and Adam moments; the data
    ``Y`` of the Gram-form terms (``K C V`` complex64) and what a step computes on the voxels it
    evaluates, ``V_s``: the Gram-form terms' k-space and residual (``5 K C V_s``), one chunk of
    per-contrast k-space and the weighted images. ``V_s = V`` for whole-volume steps, a batch's
    slab widened by the basis CNN's halo with ``batching = "planes"``.
    """
    n = problem.grid.n_voxels
    step = n
    if config.batching == "planes":
        nx = problem.grid.nx
        step = n * min(nx, config.planes_per_batch + 2 * BasisCNN.HALO + 2) // nx
    coils = config.coil_compression or problem.n_coils
    hash_buffers = n_fields * 16 * n * 8 * 16
    tables = n_fields * 16 * min(2**19, 2 * n) * 2 * 4 * 4
    data_terms = config.rank * coils * (n + 5 * step) * 8
    contrast_chunk = 4 * 16 * coils * step * 8
    images = 4 * problem.n_contrasts * step * 8
    return hash_buffers + tables + data_terms + contrast_chunk + images
