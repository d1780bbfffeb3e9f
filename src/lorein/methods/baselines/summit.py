"""The ``summit`` baseline: the PMR block alone (SUMMIT, anchors.md), sharing LoREIN's code.

SUMMIT represents every parametric map by its own hash-encoded field, turns the maps into
weighted images with the sequence's signal model and fits them to the acquired k-space of every
contrast, with WNNM on the maps. That is LoREIN without its LRR block: this module runs
:func:`lorein.methods.lorein.pipeline.run` in ``mode = "pmr-only"`` (coil field warmed up on
the calibration region, then learned with the maps; per-contrast exact data consistency). Its
configuration holds only the settings that act in that mode.

Departures from the published SUMMIT: the coil field is learned jointly (SUMMIT used ESPIRiT
maps), the hash growth is LoREIN's ``"auto"``, and, like LoREIN, the fields are warm-started from
a data-only CG subspace reconstruction and its voxel fit (``warm_start = 0`` gives SUMMIT's
cold start) so that both methods get the same start and the same number of steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Method, RunContext
from lorein.methods.lorein import pipeline
from lorein.methods.lorein.config import Batching, HashEncodingConfig, LoreinConfig, PmrStart
from lorein.methods.lorein.defaults import problem_config
from lorein.methods.lorein.model import field_memory
from lorein.settings import validate

_DEFAULTS = LoreinConfig()


def _default(name: str) -> Any:
    """LoREIN's default of a field, copied so that dict defaults are not shared."""
    value = getattr(_DEFAULTS, name)
    if isinstance(value, dict):
        return field(default_factory=lambda: dict(value))
    if isinstance(value, HashEncodingConfig):
        return field(default_factory=lambda: replace(value))
    return value


@dataclass
class SummitConfig:
    """Hyper-parameters of the SUMMIT baseline; each means what it means in
    :class:`lorein.methods.lorein.config.LoreinConfig` (defaults are LoREIN's; ``rank`` is the
    temporal subspace of the warm start's CG and of ``dc2_path = "subspace"``)."""

    rank: int = _default("rank")
    dictionary_atoms: int = _default("dictionary_atoms")
    b0_range_hz: float = _default("b0_range_hz")
    iterations: int = _default("iterations")
    coil_warmup: int = _default("coil_warmup")
    warm_start: int = _default("warm_start")
    pmr_start: PmrStart = _default("pmr_start")
    lr: float = _default("lr")
    decay_every: int = _default("decay_every")
    wnnm_start: int = _default("wnnm_start")
    average_fraction: float = _default("average_fraction")
    dc2: float = _default("dc2")
    wnnm: float = _default("wnnm")
    wnnm_maps: dict[str, float] = _default("wnnm_maps")
    dc2_path: Literal["exact", "subspace"] = "exact"
    batching: Batching = _default("batching")
    planes_per_batch: int = _default("planes_per_batch")
    coil_compression: int | None = _default("coil_compression")
    coil_support: bool = _default("coil_support")
    map_encoding: HashEncodingConfig = _default("map_encoding")
    phase_encoding: HashEncodingConfig = _default("phase_encoding")
    coil_encoding: HashEncodingConfig = _default("coil_encoding")
    hidden: int = _default("hidden")
    layers: int = _default("layers")
    initial: dict[str, float] = _default("initial")

    def __post_init__(self) -> None:
        validate(self)
        self.lorein_config()  # LoREIN's ranges (lr > 0, ...) and checks that span settings

    def lorein_config(self) -> LoreinConfig:
        """The equivalent LoREIN configuration (``mode = "pmr-only"``, no pre-training)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return LoreinConfig(mode="pmr-only", pretrain=0, **fields)


class Summit(Method):
    """The PMR block alone: LoREIN's stages in ``mode = "pmr-only"``."""

    name = "summit"
    description = "SUMMIT: parameter fields alone"
    config_class = SummitConfig

    def reconstruct(self, problem: Problem, config: SummitConfig, context: RunContext) -> Maps:
        return pipeline.run(problem, config.lorein_config(), context, recorded=config)

    def default_config(self, problem: Problem, device: torch.device) -> SummitConfig:
        """LoREIN's settings chosen from the problem (:func:`~lorein.methods.lorein.defaults.
        problem_config`), those that act in ``pmr-only`` mode: the same budget and start."""
        chosen = problem_config(problem, device)
        names = [f.name for f in dataclasses.fields(SummitConfig)]
        return SummitConfig(**{name: getattr(chosen, name) for name in names})

    def estimate_memory(self, problem: Problem, config: SummitConfig) -> int:
        return field_memory(problem, config.lorein_config())
