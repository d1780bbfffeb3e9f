"""Every reconstruction method end to end on CUDA: same maps as on the CPU, to training noise.

On a GPU, :func:`compare_devices` runs each case on both devices. Without one, each case runs on
the pretend GPU of :mod:`tests.fake_cuda`, which raises where a real one would on a tensor left
on the CPU (it raises at the signal models' readout index as the first GPU run did, before
that was fixed).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import pytest
import torch

from lorein.eval.metrics import map_error
from lorein.methods.baselines.summit import SummitConfig
from lorein.methods.registry import METHODS, reconstruct
from lorein.sim.simulate import Simulation, simulate
from tests.fake_cuda import fake_cuda
from tests.helpers import TINY, TINY_LOREIN_SETTINGS

LOREIN = {**TINY_LOREIN_SETTINGS, "iterations": 30, "wnnm_start": 20}
SUMMIT = {k: v for k, v in LOREIN.items() if k in {f.name for f in fields(SummitConfig)}}
JOINT_MAPLE = {
    "unrolls": 1,
    "channels": 8,
    "blocks": 1,
    "cg_iterations": 3,
    "iterations": 10,
    "map_iterations": 10,
}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "fit": ("fit", {}),
    "lrt": ("lrt", {"iterations": 10, "cg_iterations": 4}),
    "lorein": ("lorein", LOREIN),
    "lorein-subspace-lrr": ("lorein", {**LOREIN, "dc2_path": "subspace", "pmr_start": "lrr"}),
    "lorein-planes": (
        "lorein",
        {**LOREIN, "iterations": 10, "pretrain": 4, "wnnm_start": 7, "batching": "planes"},
    ),
    "summit": ("summit", SUMMIT),
    "zero-deepsub": ("zero-deepsub", {"epochs": 6, "patience": 5, "n_masks": 1}),
    "joint-maple": ("joint-maple", JOINT_MAPLE),
    "joint-maple-exact": ("joint-maple", {**JOINT_MAPLE, "dc_solver": "exact"}),
}
"""Method and tiny budget per case: enough steps that a placement error in any stage would
surface; the second LoREIN and Joint-MAPLE cases take the paths the preset configurations use,
the third LoREIN case the plane-batched optimisation."""

TOLERANCE = {"fit": 1e-3, "lrt": 1e-3}
"""Largest NRMSE change between devices: the direct methods agree to float rounding; the trained
ones (INRs, networks) differ by their training's sensitivity to rounding, bounded by 0.05."""


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(TINY, 8, seed=3, snr=30.0, progress=False)


def compare_devices(sim: Simulation, case: str, device: str) -> dict[str, tuple[float, float]]:
    """Run the method of ``CASES[case]`` on the CPU and on ``device``; assert the maps agree.

    Returns the NRMSE of T1 and T2* against the truth, ``{map: (cpu, device)}``.
    """
    name, settings = CASES[case]
    method = METHODS[name]
    config = method.config_class(**settings)
    runs = []
    for dev in ("cpu", device):
        torch.manual_seed(0)
        maps = reconstruct(name, sim.problem, config, device=dev, seed=0, progress=False)
        for key, value in maps.values.items():
            assert value.device.type == "cpu", f"{name} on {dev}: map {key} left on {value.device}"
            assert torch.isfinite(value).all(), f"{name} on {dev}: map {key} not finite"
        runs.append(maps.values)
    errors = {}
    for key in ("T1", "T2star"):
        cpu, other = (
            map_error(key, run[key], getattr(sim.truth, key), sim.truth.mask) for run in runs
        )
        assert math.isfinite(cpu) and math.isfinite(other)
        assert abs(other - cpu) <= TOLERANCE.get(name, 0.05), f"{name} {key}: {cpu} vs {other}"
        errors[key] = (cpu, other)
    return errors


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(CASES))
def test_method_on_cuda_matches_cpu(sim: Simulation, case: str) -> None:
    compare_devices(sim, case, "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the real GPU runs the cases above")
@pytest.mark.parametrize("case", list(CASES))
def test_method_keeps_its_tensors_on_the_device(sim: Simulation, case: str) -> None:
    name, settings = CASES[case]
    method = METHODS[name]
    with fake_cuda():
        maps = reconstruct(name, sim.problem, method.config_class(**settings), device="cuda")
    for key, value in maps.values.items():
        assert value.device.type == "cpu" and torch.isfinite(value).all(), key


def test_every_method_has_a_cuda_check() -> None:
    assert {name for name, _ in CASES.values()} == set(METHODS)
