"""Warm starts: coil field and field regressions on random voxel batches."""

import pytest
import torch

from lorein.data.grid import Grid
from lorein.methods.lorein.blocks import CoilField, LowRankBlock
from lorein.methods.lorein.warm_start import fit_coil_field, warm_start
from lorein.physics.coils import rss_normalise, simulate_coils
from tests.helpers import TINY, randn_complex

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
