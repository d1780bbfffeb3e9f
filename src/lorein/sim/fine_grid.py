"""The grid a simulation renders the object on, and the slab it hands to the reconstruction.

The object is rendered ``oversampling`` times finer than the reconstruction grid per axis, so
that the data are not made by the reconstruction's own discrete model, and band-limited to the
reconstruction's resolution by cropping its centred k-space (a periodic operation).

**The slab.** The reconstruction grid covers a slab of ``nz`` partitions, and the head continues
above and below it. Band-limiting a rendering of the slab alone would treat it as one period of a
periodic object: the top of the slab would sit next to its bottom, and the jump between them
would ring into the first and last slices (sim1-small, fully sampled noiseless voxel fit, capped
T2* NRMSE in the mask: 0.42 in the first slice, 0.18-0.27 in the others; with the margin below
0.26 and 0.19-0.25). A 3D slab acquisition avoids that: the slab-selective excitation leaves
tissue far from the slab unexcited (its profile rolls off over a transition band), and the
partition encoding is oversampled so that the excited volume's edges do not fold back into the
slab (slice oversampling; the extra partitions are discarded). The simulation does the same. It
renders ``margin`` further reconstruction slices on each side of the slab, weights the contrast
images by a slab profile (1 inside the slab, a raised-cosine roll-off to 0 over the margin, so
that the extended volume's periodic boundary has nothing to wrap), band-limits the extended
volume and keeps the slab. Every slab voxel then holds the band-limited object around it; the
data handed to the reconstruction are those of these slab images (their ``nz``-point partition
transform), which is the discrete model every method assumes. The truth maps describe the same
slab: the phantom point-sampled at the reconstruction's voxel centres.

**Purity.** A reconstruction voxel's purity is the fraction of its fine-grid samples that belong
to its dominant tissue label: 1 in a tissue interior, lower where the voxel mixes tissues (partial
volume), whose signal no single set of parameters describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lorein.data.grid import Grid

SLAB_MARGIN = 2
"""Reconstruction slices rendered on each side of the slab by a fine-grid simulation (z).

The margin bounds the simulation's cost (the extended volume is ``nz + 2 * SLAB_MARGIN`` slices);
on sim1-small, against a 24-slice margin without a profile, the band-limited images' per-slice
error is 0.046-0.067 with this margin and the slab profile, 0.059-0.31 without a margin."""


@dataclass(frozen=True)
class FineGrid:
    """The fine grid of a simulation and its relation to the reconstruction grid.

    Attributes
    ----------
    matrix
        ``(nx, ny, nz)`` reconstruction matrix (the slab).
    voxel_size
        ``(dx, dy, dz)`` reconstruction voxel size [mm].
    oversampling
        Fine-grid factor per axis (1: the reconstruction grid itself).
    margin
        Reconstruction slices rendered on each side of the slab (0: the slab alone).
    """

    matrix: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    oversampling: int
    margin: int

    @classmethod
    def for_simulation(
        cls,
        matrix: tuple[int, int, int],
        voxel_size: tuple[float, float, float],
        oversampling: int,
    ) -> FineGrid:
        """The fine grid of a simulation: :data:`SLAB_MARGIN` slices of margin when there is
        something to band-limit (``oversampling > 1``), none otherwise."""
        return cls(matrix, voxel_size, oversampling, SLAB_MARGIN if oversampling > 1 else 0)

    @property
    def grid(self) -> Grid:
        """The reconstruction grid ``Grid(nz, ny, nx)``."""
        return Grid.from_matrix(self.matrix)

    @property
    def extended(self) -> Grid:
        """The band-limited volume before the slab is kept: ``Grid(nz + 2 margin, ny, nx)``."""
        nz, ny, nx = self.grid
        return Grid(nz + 2 * self.margin, ny, nx)

    @property
    def render_matrix(self) -> tuple[int, int, int]:
        """``(nx, ny, nz)`` of the fine rendering: the extended volume, ``oversampling`` finer."""
        nz, ny, nx = self.extended
        return (nx * self.oversampling, ny * self.oversampling, nz * self.oversampling)

    @property
    def render_voxel_size(self) -> tuple[float, float, float]:
        """``(dx, dy, dz)`` of the fine rendering [mm]."""
        return tuple(d / self.oversampling for d in self.voxel_size)  # type: ignore[return-value]

    def slab_profile(self) -> torch.Tensor:
        """Weight of each fine z-sample: 1 inside the slab, ``(1 + cos(pi s / margin)) / 2`` at
        ``s`` reconstruction slices outside it (distance taken around the periodic volume, so
        the profile is smooth across its boundary and 0 half-way between the slab's ends).

        Returns
        -------
        ``[nz_fine]`` float32, ``nz_fine = (nz + 2 margin) oversampling``.
        """
        nz = self.grid.nz
        n_fine = self.render_matrix[2]
        if self.margin == 0:
            return torch.ones(n_fine)
        position = (torch.arange(n_fine, dtype=torch.float64) - n_fine // 2) / self.oversampling
        lo, hi = -(nz // 2) - 0.5, nz - nz // 2 - 0.5  # the slab's faces [slices]
        outside = torch.maximum(lo - position, position - hi).clamp_min(0.0)
        outside = torch.minimum(outside, 2 * self.margin - outside)  # around the period
        return (0.5 * (1.0 + torch.cos(math.pi * outside / self.margin))).float()

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """The slab's slices of extended-volume images ``[..., nz + 2 margin, ny, nx]``."""
        return images[..., self.margin : self.margin + self.grid.nz, :, :]

    def purity(self, labels: torch.Tensor) -> torch.Tensor:
        """Per slab voxel, the fraction of its fine-grid samples that carry its dominant label.

        The samples of a reconstruction voxel are the fine-grid points inside it; with an even
        ``oversampling`` some lie on its faces, and such a point counts half for each voxel it
        touches (a quarter on an edge, an eighth on a corner), so the weights sum to 1 per voxel.
        The fine grid is periodic in x and y, as the band limit is.

        Parameters
        ----------
        labels
            ``[nz_fine, ny_fine, nx_fine]`` integer tissue labels of the fine rendering
            (:attr:`render_matrix`).

        Returns
        -------
        ``[nz, ny, nx]`` float32 in ``(0, 1]``; 1 where every sample shares one label.
        """
        nz, ny, nx = self.grid
        ne = self.extended.nz
        centres = [
            self._centres(ne)[self.margin : self.margin + nz],
            self._centres(ny),
            self._centres(nx),
        ]
        best = torch.zeros(nz, ny, nx)
        for label in torch.unique(labels).tolist():
            fraction = (labels == label).float()
            for dim, index in enumerate(centres):
                fraction = self._block_mean(fraction, dim, index)
            best = torch.maximum(best, fraction)
        return best

    def _centres(self, n: int) -> torch.Tensor:
        """``[n]`` fine index of each reconstruction voxel's centre along an axis of ``n`` voxels
        (voxel ``n // 2`` and fine sample ``n_fine // 2`` both sit at the origin)."""
        f = self.oversampling
        return f * torch.arange(n) + (f * n) // 2 - f * (n // 2)

    def _block_mean(self, x: torch.Tensor, dim: int, centres: torch.Tensor) -> torch.Tensor:
        """Weighted mean of fine samples along ``dim`` over each voxel around ``centres``."""
        f = self.oversampling
        half = f // 2
        total = torch.zeros(())
        for k in range(-half, half + 1):
            weight = 0.5 if f % 2 == 0 and abs(k) == half else 1.0
            total = total + weight * x.index_select(dim, (centres + k) % x.shape[dim])
        return total / f
