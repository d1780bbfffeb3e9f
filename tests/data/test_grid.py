"""The image grid in tensor order."""

import numpy as np
import torch

from lorein.data.grid import Grid


def test_from_matrix_reverses_the_file_order() -> None:
    grid = Grid.from_matrix(np.array([8, 6, 4]))
    assert grid == Grid(nz=4, ny=6, nx=8)
    assert all(type(n) is int for n in grid)
    assert grid.shape == (4, 6, 8) and type(grid.shape) is tuple
    assert grid.n_voxels == 192
    assert grid.phase_encodes == (6, 4)


def test_grid_unpacks_and_shapes_tensors_in_tensor_order() -> None:
    grid = Grid.from_matrix((8, 6, 4))
    nz, ny, nx = grid
    assert (nz, ny, nx) == (4, 6, 8)
    assert torch.zeros(2, *grid.shape).shape == (2, 4, 6, 8)
