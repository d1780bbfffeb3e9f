"""The calibration estimate: support grown in-plane, covering the object when fully sampled."""

import math

import torch

from lorein.methods.calibration import dilate_in_plane, espirit_coils, estimate_from_calibration
from lorein.sim.simulate import simulate
from tests.helpers import TINY


def test_dilate_in_plane_grows_y_and_x_only() -> None:
    mask = torch.zeros(3, 7, 7, dtype=torch.bool)
    mask[1, 3, 3] = True
    grown = dilate_in_plane(mask)
    expected = torch.zeros_like(mask)
    expected[1, 2:5, 2:5] = True
    assert torch.equal(grown, expected)
    assert torch.equal(dilate_in_plane(mask, radius=2)[1], dilate_in_plane(grown)[1])


def test_support_of_a_fully_sampled_problem_covers_the_brain() -> None:
    sim = simulate(TINY, 1, seed=4, snr=math.inf, progress=False)  # 3 voxels out undilated
    support = estimate_from_calibration(sim.problem, sim.problem.kspace).support
    brain = sim.truth.mask.bool()
    assert not (brain & ~support).any()
    assert support.sum() < support.numel()  # still a support, not the field of view


def test_espirit_coils_cover_the_brain_of_a_fully_sampled_problem() -> None:
    """At the old crop 0.95 this problem left 19 brain voxels without coils."""
    sim = simulate(TINY, 1, seed=0, snr=math.inf, progress=False)
    coils = espirit_coils(sim.problem)
    covered = coils.abs().pow(2).sum(0) > 0.5
    assert not (sim.truth.mask.bool() & ~covered).any()


def test_a_single_coil_is_one_inside_the_support() -> None:
    """One channel has no sensitivity to estimate: 1 inside the calibration support, 0 outside;
    the support covers the brain of a 2D (one-slice) undersampled problem."""
    tiny_2d = TINY.resized(nz=1, n_coils=1)
    sim = simulate(tiny_2d, 3, seed=0, snr=40.0, progress=False)
    coils = espirit_coils(sim.problem)
    support = estimate_from_calibration(sim.problem, sim.problem.kspace).support
    assert coils.shape == (1, 1, 24, 24) and coils.dtype == torch.complex64
    assert torch.equal(coils[0], support.to(torch.complex64))
    assert not (sim.truth.mask.bool() & ~support).any()
    assert support.sum() < support.numel()
