"""Calibration-region estimates of a simulated problem: ESPIRiT coils and the clear error."""

import math
from dataclasses import replace

import pytest
import torch

from lorein.methods.calibration import espirit_coils
from lorein.sim.simulate import simulate
from tests.helpers import TINY


def test_espirit_coils_match_the_simulated_coils_inside_the_object() -> None:
    sim = simulate(TINY, 8, seed=1, snr=math.inf, progress=False)
    coils = espirit_coils(sim.problem)
    truth = sim.truth.coils
    assert coils.shape == truth.shape and coils.dtype == torch.complex64
    inside = sim.truth.mask.bool()
    # ESPIRiT maps are defined up to one phase per voxel: compare the coil-to-coil relations
    inner = (coils.conj() * truth).sum(0)
    phase = inner / inner.abs().clamp_min(1e-12)
    aligned = coils * phase
    scale = (truth.abs().pow(2).sum(0)).sqrt()
    error = (aligned - truth / scale.clamp_min(1e-12)).abs().pow(2).sum(0).sqrt()
    assert float(error[inside].median()) < 0.1


def test_espirit_coils_name_the_file_without_calibration() -> None:
    sim = simulate(TINY, 8, seed=1, snr=math.inf, progress=False)
    keep = sim.problem.ky != sim.problem.grid.ny // 2  # drop the central ky column
    fields = ("ky", "kz", "contrast", "kspace")
    problem = replace(sim.problem, **{f: getattr(sim.problem, f)[keep] for f in fields})
    with pytest.raises(ValueError, match="calibration region"):
        espirit_coils(problem)
