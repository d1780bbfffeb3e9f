"""The simulation's fine grid: purity of each voxel, the slab profile and the slab's crop."""

import itertools

import pytest
import torch

from lorein.sim.fine_grid import SLAB_MARGIN, FineGrid
from tests.helpers import rng


def naive_purity(fine: FineGrid, labels: torch.Tensor) -> torch.Tensor:
    """Per voxel, by positions: the fine samples inside the voxel's box (weight 1/2 per axis on
    which a sample lies on a face), their weight per label, the largest share."""
    f = fine.oversampling
    nz, ny, nx = fine.grid
    sizes = (fine.extended.nz, ny, nx)
    n_fine = labels.shape
    purity = torch.zeros(nz, ny, nx)
    for k, j, i in itertools.product(range(nz), range(ny), range(nx)):
        voxel = (k + fine.margin, j, i)
        per_axis = []  # per axis: (fine index, weight) of the samples in the voxel
        for c, n, n_f in zip(voxel, sizes, n_fine, strict=True):
            centre = c - n // 2  # [voxels]
            samples = []
            for s in range(n_f):
                offset = (s - n_f // 2) / f - centre
                offset -= round(offset / n) * n  # periodic
                if abs(offset) <= 0.5 + 1e-9:
                    samples.append((s, 0.5 if abs(abs(offset) - 0.5) < 1e-9 else 1.0))
            per_axis.append(samples)
        shares: dict[int, float] = {}
        for (a, wa), (b, wb), (c, wc) in itertools.product(*per_axis):
            label = int(labels[a, b, c])
            shares[label] = shares.get(label, 0.0) + wa * wb * wc / f**3
        purity[k, j, i] = max(shares.values())
    return purity


@pytest.mark.parametrize(
    ("oversampling", "margin", "matrix"), [(2, 2, (5, 4, 3)), (3, 1, (4, 5, 2))]
)
def test_purity_matches_a_count_of_samples_by_position(
    oversampling: int, margin: int, matrix: tuple[int, int, int]
) -> None:
    fine = FineGrid(matrix, (2.0, 2.0, 3.0), oversampling, margin)
    nx, ny, nz = fine.render_matrix
    labels = torch.randint(0, 3, (nz, ny, nx), generator=rng(oversampling), dtype=torch.int8)
    labels[: nz // 2] = 7  # one large region of a single label
    purity = fine.purity(labels)
    assert purity.shape == fine.grid.shape and purity.dtype == torch.float32
    torch.testing.assert_close(purity, naive_purity(fine, labels))


def test_purity_of_one_tissue_is_one_and_of_a_boundary_its_share() -> None:
    fine = FineGrid((4, 4, 4), (1.0, 1.0, 1.0), 2, SLAB_MARGIN)
    nx, ny, nz = fine.render_matrix
    labels = torch.zeros(nz, ny, nx, dtype=torch.int8)
    assert torch.equal(fine.purity(labels), torch.ones(4, 4, 4))
    labels[..., 5:] = 1  # from the face between voxels 2 (at the origin) and 3 of x onwards
    purity = fine.purity(labels)
    torch.testing.assert_close(purity[..., 1], torch.ones(4, 4))
    torch.testing.assert_close(purity[..., 2], torch.full((4, 4), 0.75))  # 1/4 on the face
    torch.testing.assert_close(purity[..., 3], torch.ones(4, 4))
    torch.testing.assert_close(purity[..., 0], torch.full((4, 4), 0.75))  # periodic in x


def test_slab_profile_is_one_in_the_slab_and_falls_smoothly_to_zero() -> None:
    fine = FineGrid((8, 8, 6), (1.0, 1.0, 1.0), 2, 2)
    profile = fine.slab_profile()
    n_fine = fine.render_matrix[2]
    assert profile.shape == (n_fine,) and n_fine == (6 + 4) * 2
    extended = torch.arange(10.0).view(1, 10, 1, 1).expand(3, 10, 8, 8)
    assert torch.equal(fine.crop(extended)[:, :, 0, 0], torch.arange(2.0, 8.0).expand(3, 6))
    centres = 2 * torch.arange(10)  # fine index of each extended slice's centre
    assert torch.equal(profile[centres[2:8]], torch.ones(6))
    assert (profile >= 0).all() and (profile <= 1).all()
    assert profile.min() == 0  # half-way between the slab's ends, around the period
    step = (profile - profile.roll(1)).abs().max()
    assert step <= 0.5  # no jump across the periodic boundary either
    assert torch.equal(FineGrid((8, 8, 6), (1.0, 1.0, 1.0), 1, 0).slab_profile(), torch.ones(6))


def test_fine_grid_of_a_simulation() -> None:
    fine = FineGrid.for_simulation((24, 20, 4), (9.0, 9.0, 16.0), 2)
    assert fine.margin == SLAB_MARGIN
    assert fine.extended == (4 + 2 * SLAB_MARGIN, 20, 24)
    assert fine.render_matrix == (48, 40, 2 * (4 + 2 * SLAB_MARGIN))
    assert fine.render_voxel_size == (4.5, 4.5, 8.0)
    assert FineGrid.for_simulation((24, 20, 4), (9.0, 9.0, 16.0), 1).margin == 0
