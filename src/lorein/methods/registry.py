"""The registry of reconstruction methods: ``lorein recon``, ``lorein compare``, ``lorein config``
and the benchmarks reach every method through it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Method, RunContext
from lorein.methods.baselines.fit import Fit
from lorein.methods.baselines.joint_maple import JointMaple
from lorein.methods.baselines.lrt import Lrt
from lorein.methods.baselines.summit import Summit
from lorein.methods.baselines.zero_deepsub import ZeroDeepSub
from lorein.methods.lorein.method import Lorein
from lorein.physics.models.registry import checked_options

METHODS: dict[str, Method] = {
    method.name: method
    for method in (Lorein(), Summit(), Lrt(), ZeroDeepSub(), JointMaple(), Fit())
}
"""Every method by its ``--method`` name, LoREIN first."""


def get_method(name: str) -> Method:
    """Look up a method; the error lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def reconstruct(
    name: str,
    problem: Problem,
    config: Any = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    model_options: Mapping[str, Any] | None = None,
) -> Maps:
    """Run the method ``name`` on ``problem`` (its default configuration if ``config`` is None);
    the keywords make the :class:`~lorein.methods.base.RunContext` (``model_options``: options
    of the problem's signal model, e.g. ``{"estimate_inversion": True}``)."""
    method = get_method(name)
    options = checked_options(problem.signal_model, model_options or {}, "model_options")
    context = RunContext(
        torch.device(device), seed, checkpoint, resume, progress, model_options=options
    )
    return method.reconstruct(problem, config or method.config_class(), context)
