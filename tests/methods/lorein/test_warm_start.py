"""Warm starts: coil field and field regressions on random voxel batches."""

import pytest
import torch

from lorein.data.grid import Grid
from lorein.methods.lorein.blocks import CoilField, LowRankBlock, ParameterBlock
from lorein.methods.lorein.warm_start import fit_coil_field, start_maps, warm_start
from lorein.physics.coils import rss_normalise, simulate_coils
from lorein.physics.models.base import MAPS
from lorein.physics.models.registry import signal_model
from tests.helpers import TINY, randn_complex
from tests.physics import bloch_reference as bloch

GRID = Grid.from_matrix(TINY.matrix).shape
COIL_ENCODING = {"n_levels": 4, "n_features": 2, "log2_table": 8, "n_min": 2, "growth": 1.5}
SMALL = {"n_levels": 4, "n_features": 2, "log2_table": 12, "n_min": 4, "growth": 2.0}


def _relative_error(x: torch.Tensor, target: torch.Tensor, support: torch.Tensor) -> float:
    error = ((x - target).abs().pow(2) * support).sum()
    return float(error / (target.abs().pow(2) * support).sum())


def test_coil_field_at_voxels_equals_grid() -> None:
    torch.manual_seed(0)
    coils = CoilField(GRID, 4, COIL_ENCODING)
    voxels = torch.tensor([0, 5, 17, 600, 2303])
    on_grid = coils().reshape(4, -1).T[voxels]
    assert torch.allclose(coils.at_voxels(voxels), on_grid, atol=1e-6)


@pytest.mark.parametrize("batch", [200, 10**6])
def test_coil_warm_up_fits_smooth_coils(batch: int) -> None:
    torch.manual_seed(0)
    target = rss_normalise(simulate_coils(4, TINY.matrix, TINY.voxel_size))
    support = torch.zeros(GRID, dtype=torch.bool)
    support[:, 4:20, 4:20] = True
    coils = CoilField(GRID, 4, COIL_ENCODING)
    before = _relative_error(coils().detach(), target, support)
    fit_coil_field(coils, target, support, steps=150, batch=batch)
    after = _relative_error(coils().detach(), target, support)
    assert after < 0.05 < before


def test_basis_warm_start_moves_the_field_to_the_target() -> None:
    torch.manual_seed(0)
    lrr = LowRankBlock(GRID, 3, 4, SMALL, COIL_ENCODING, hidden=16, layers=1, cnn_channels=0)
    # a smooth target: random coefficients blurred by a low-pass in k-space
    u0 = randn_complex(3, *GRID, seed=1)
    k = torch.fft.fftn(u0, dim=(-3, -2, -1))
    fy = torch.fft.fftfreq(GRID[1]).abs().view(1, 1, -1, 1)
    fx = torch.fft.fftfreq(GRID[2]).abs().view(1, 1, 1, -1)
    u0 = torch.fft.ifftn(k * ((fy < 0.15) & (fx < 0.15)), dim=(-3, -2, -1))
    support = torch.ones(GRID, dtype=torch.bool)
    before = _relative_error(lrr.bases().detach(), u0, support)
    warm_start(lrr, None, u0, subspace=None, model=None, support=support, steps=200, batch=500)
    after = _relative_error(lrr.bases().detach(), u0, support)
    assert after < 0.2 < before


def test_coil_field_vanishes_outside_its_support() -> None:
    torch.manual_seed(0)
    support = torch.zeros(GRID, dtype=torch.bool)
    support[:, 4:20, 6:18] = True
    coils = CoilField(GRID, 4, COIL_ENCODING, support=support)
    c = coils().detach()
    assert torch.all(c[:, ~support] == 0)
    rss = c.abs().pow(2).sum(0).sqrt()
    torch.testing.assert_close(rss[support], torch.ones(int(support.sum())))
    voxels = torch.tensor([0, 5, 17, 600, 2303])
    torch.testing.assert_close(coils.at_voxels(voxels), c.reshape(4, -1).T[voxels])


def test_parameter_block_represents_a_bounded_map_and_its_warm_start_reaches_it() -> None:
    # t2ir_gre with estimate_inversion: B in [-1, 0] is a sigmoid field, regressed in the logit
    torch.manual_seed(0)
    model = signal_model("t2ir_gre", bloch.sim2_table(20), estimate_inversion=True)
    shape = (1, 6, 8)
    pmr = ParameterBlock(shape, model.parameters, {"M0": 1.0}, SMALL, SMALL, hidden=16, layers=1)
    assert set(pmr.positive) == {"M0", "T1", "T2", "T2star"} and set(pmr.bounded) == {"B"}
    start = pmr()["B"].detach()
    torch.testing.assert_close(start, torch.full(shape, MAPS["B"].typical), rtol=0, atol=0.02)
    y = torch.linspace(0, 1, shape[1]).view(1, -1, 1)
    truth = {
        "M0": torch.ones(shape),
        "T1": torch.full(shape, 1.2),
        "T2": torch.full(shape, 0.08),
        "T2star": torch.full(shape, 0.04),
        "B": (-0.95 + 0.25 * y).expand(shape),  # smooth, from -0.95 to -0.7
        "B0": torch.zeros(shape),
        "phase0": torch.zeros(shape),
    }
    support = torch.ones(shape, dtype=torch.bool)
    fitted = start_maps(pmr, model(truth), model, support, steps=300)
    torch.testing.assert_close(fitted["B"], truth["B"], rtol=0, atol=1e-3)  # the voxel fit
    learned = pmr()["B"].detach()
    assert (learned >= -1).all() and (learned <= 0).all()
    assert (learned - truth["B"]).abs().max() < 0.02 < (start - truth["B"]).abs().max()
