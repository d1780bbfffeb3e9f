"""The image grid in tensor order: ``Grid(nz, ny, nx)``.

Every image tensor of the package is ``[..., nz, ny, nx]``, while the problem file's
``geometry@matrix`` (and :attr:`~lorein.data.problem.Problem.matrix`) lists the sizes in
``(nx, ny, nz)`` order. :class:`Grid` holds the sizes in tensor order, so code that builds tensors
takes ``grid.shape`` instead of unpacking the matrix and reversing it by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Grid(NamedTuple):
    """Image grid size in tensor order ``(nz, ny, nx)``; immutable.

    A :class:`Grid` is a tuple: ``nz, ny, nx = grid`` unpacks it in tensor order.

    Attributes
    ----------
    nz
        Number of partitions (second phase-encoding direction, ``kz``).
    ny
        Number of phase encodes (``ky``).
    nx
        Number of readout samples.
    """

    nz: int
    ny: int
    nx: int

    @classmethod
    def from_matrix(cls, matrix: Iterable[int]) -> Grid:
        """The grid of a matrix given in the problem file's ``(nx, ny, nz)`` order.

        Parameters
        ----------
        matrix
            ``(nx, ny, nz)`` sizes (Python or numpy integers, a tuple or an array).

        Returns
        -------
        ``Grid(nz, ny, nx)`` with Python ``int`` sizes.
        """
        nx, ny, nz = (int(n) for n in matrix)
        return cls(nz, ny, nx)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)`` as a plain tuple, the shape of one image volume."""
        return (self.nz, self.ny, self.nx)

    @property
    def n_voxels(self) -> int:
        """Number of voxels ``nz * ny * nx``."""
        return self.nz * self.ny * self.nx

    @property
    def phase_encodes(self) -> tuple[int, int]:
        """``(ny, nz)``, the sizes of the ``(ky, kz)`` phase-encoding grid."""
        return (self.ny, self.nz)
