"""Weighted nuclear norm minimisation (WNNM) regulariser on parametric maps (SUMMIT, LoREIN).

The regulariser of eq. 17 of the LoREIN paper, ``sum_i lambda_i R_WNNM(P_i)``, as SUMMIT defines it:

1. **Block matching**, computed once (when the regulariser switches on) on a guide map (the
   signal model's ``structure_map``: ``T1``; ``M0`` for ``megre``, which has no ``T1``) inside a
   brain mask and reused for every map: on each 2D slice along ``z`` (the partition direction)
   the slice is tiled with non-overlapping ``patch x patch`` reference patches; for each reference
   the ``n_similar`` most similar patches (L2 distance on the guide, the reference itself first)
   within a ``search x search`` window form a group.
2. **Loss** per map: each group gives a matrix ``Y`` of shape ``[patch^2, N]`` (``N = n_similar``
   columns, one per patch) with singular values ``s``. The noise level of the group is
   ``sigma = std(reference patch - group mean)``, the clean singular values are
   ``s_hat = sqrt(max(s^2 - N sigma^2, 0))`` and the weights ``w = c sqrt(N) / (s_hat + eps)``;
   weights and ``sigma`` are detached, so the gradient flows only through ``s``. The loss is
   ``sum_i w_i s_i`` averaged over the groups.

Conventions chosen here (SUMMIT leaves them open):

- reference patches start at the slice corner ``(0, 0)`` with stride ``patch``; the last rows or
  columns that do not fill a whole patch start no reference (they can still be matched);
- a reference is kept when its **centre voxel** ``(patch // 2, patch // 2)`` lies in the mask;
  candidate patches need only lie inside the slice, not inside the mask;
- ties between equal distances go to the earlier search offset in raster order (row offset first,
  from ``-search // 2``), the reference itself always ranks first;
- ``sigma`` is the population standard deviation (``correction = 0``) over the ``patch^2`` voxels;
- the loss is the **mean** over groups (not the sum), so that ``lambda_i`` does not depend on the
  size of the volume or of the mask.

On a slab of x-planes (plane-batched optimisation, :meth:`WNNMRegulariser.on_planes`): a group
belongs to the slab that holds the x of its reference patch's centre voxel, so an epoch over
disjoint slabs visits every group once. The slab's groups read the maps on the slab and at the
voxels of their patches outside it (at most ``patch // 2 + search // 2`` planes away, a few
patches per group, not whole planes); the slab's term is their ``sum_i w_i s_i`` over the number
of groups of the whole volume, so that the slabs' terms of an epoch add up to the volume's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

DEFAULT_WEIGHTS: dict[str, float] = {
    "M0": 0.05,
    "T1": 0.2,
    "T2": 2.0,
    "T2star": 2.0,
    "phase": 0.2,
}
"""WNNM weights ``lambda_i`` per map name (LoREIN paper section III.E, same as SUMMIT)."""


def mask_from_amplitude(m0: torch.Tensor, threshold: float = 0.03) -> torch.Tensor:
    """Brain mask ``|M0| / max |M0| > threshold`` used for block matching (SUMMIT).

    Parameters
    ----------
    m0
        Amplitude (proton density) map ``[nz, ny, nx]``, real or complex; not differentiated.
    threshold
        Fraction of the maximum amplitude, in ``[0, 1)``.

    Returns
    -------
    Bool mask ``[nz, ny, nx]``; all ``False`` when ``m0`` is zero everywhere.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    amplitude = m0.detach().abs()
    peak = amplitude.max()
    if peak <= 0:
        return torch.zeros_like(amplitude, dtype=torch.bool)
    return amplitude / peak > threshold


@dataclass(frozen=True)
class BlockMatching:
    """Groups of similar 2D patches, found once on a guide map and reused for every map.

    Build with :meth:`compute`.

    Attributes
    ----------
    indices
        ``[G, n_similar, patch * patch]`` int64 flat voxel indices into a map ``[nz, ny, nx]``
        flattened in C order: ``indices[g, k]`` are the voxels of the ``k``-th patch of group
        ``g`` in raster order; ``k = 0`` is the reference patch.
    shape
        ``(nz, ny, nx)`` of the maps the indices address.
    """

    indices: torch.Tensor
    shape: tuple[int, int, int]

    @property
    def n_groups(self) -> int:
        """Number of groups ``G``."""
        return self.indices.shape[0]

    @property
    def n_similar(self) -> int:
        """Patches per group ``N``."""
        return self.indices.shape[1]

    def to(self, device: torch.device | str) -> BlockMatching:
        """Return the same matching with its indices on ``device``."""
        return BlockMatching(self.indices.to(device), self.shape)

    @classmethod
    def compute(
        cls,
        guide: torch.Tensor,
        mask: torch.Tensor,
        patch: int = 5,
        search: int = 7,
        n_similar: int = 3,
    ) -> BlockMatching:
        """Match patches slice by slice (along ``z``) on a guide map.

        Parameters
        ----------
        guide
            Real map ``[nz, ny, nx]`` on which similarity is measured (the signal model's
            ``structure_map``: ``T1`` in SUMMIT and LoREIN); detached, no gradient is kept.
        mask
            Bool ``[nz, ny, nx]``: references whose centre voxel lies in the mask are kept.
        patch
            Side of the square patches (5 in SUMMIT).
        search
            Odd side of the square search window centred on the reference position: candidate
            top-left corners are offset by ``-(search // 2) .. search // 2`` in ``y`` and ``x``
            (7 in SUMMIT) and must keep the patch inside the slice.
        n_similar
            Patches per group ``N``, the reference included (3 in SUMMIT).

        Returns
        -------
        The matching; its indices live on the device of ``guide``.

        Raises
        ------
        ValueError
            On inconsistent shapes or sizes, when no reference centre lies in the mask, or when
            a reference has fewer than ``n_similar`` candidate positions inside the slice.
        """
        if guide.ndim != 3 or guide.is_complex() or not guide.is_floating_point():
            raise ValueError(
                f"guide must be a real [nz, ny, nx] map, got {guide.dtype} {guide.shape}"
            )
        if mask.shape != guide.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool with shape {tuple(guide.shape)}")
        nz, ny, nx = guide.shape
        if patch < 1 or patch > min(ny, nx):
            raise ValueError(f"patch must lie in [1, {min(ny, nx)}], got {patch}")
        if search < 1 or search % 2 == 0:
            raise ValueError(f"search must be a positive odd number, got {search}")
        if not 1 <= n_similar <= search * search:
            raise ValueError(f"n_similar must lie in [1, {search * search}], got {n_similar}")
        device = guide.device
        half = search // 2
        span_y, span_x = ny - patch + 1, nx - patch + 1  # top-left positions per axis

        # Reference top-left corners on the non-overlapping grid, kept where the centre is masked.
        grid = torch.meshgrid(
            torch.arange(nz, device=device),
            torch.arange(0, span_y, patch, device=device),
            torch.arange(0, span_x, patch, device=device),
            indexing="ij",
        )
        z, ry, rx = (g.reshape(-1) for g in grid)
        keep = mask.to(device)[z, ry + patch // 2, rx + patch // 2]
        z, ry, rx = z[keep], ry[keep], rx[keep]
        if z.numel() == 0:
            raise ValueError("no reference patch has its centre inside the mask")

        # Candidate corners [G, S] in the search window (raster order, reference at S // 2).
        offsets = torch.arange(-half, half + 1, device=device)
        dy, dx = (o.reshape(-1) for o in torch.meshgrid(offsets, offsets, indexing="ij"))
        cy, cx = ry[:, None] + dy, rx[:, None] + dx
        inside = (cy >= 0) & (cy < span_y) & (cx >= 0) & (cx < span_x)
        position = cy.clamp(0, span_y - 1) * span_x + cx.clamp(0, span_x - 1)

        with torch.no_grad():
            # All patches of every slice: [nz, span_y * span_x, patch^2].
            patches = F.unfold(guide.detach()[:, None], patch).transpose(1, 2)
            candidates = patches[z[:, None], position]  # [G, S, patch^2]
            reference = candidates[:, search * search // 2]
            distance = (candidates - reference[:, None]).square().sum(-1)
            distance = distance.masked_fill(~inside, math.inf)
            distance[:, search * search // 2] = -math.inf
            chosen = torch.argsort(distance, dim=1, stable=True)[:, :n_similar]  # [G, N]
        if torch.isinf(distance.gather(1, chosen)[:, 1:]).any():
            raise ValueError(
                f"a reference has fewer than n_similar={n_similar} candidates inside the slice"
            )

        # Flat voxel indices of the chosen patches: corner index + in-patch offsets.
        top = cy.gather(1, chosen)
        left = cx.gather(1, chosen)
        corner = (z[:, None] * ny + top) * nx + left  # [G, N]
        steps = torch.arange(patch, device=device)
        in_patch = (steps[:, None] * nx + steps[None, :]).reshape(-1)  # [patch^2]
        indices = corner[..., None] + in_patch
        return cls(indices, (nz, ny, nx))

    def groups(self, maps: torch.Tensor) -> torch.Tensor:
        """Gather the group matrices of a map.

        Parameters
        ----------
        maps
            ``[..., nz, ny, nx]``, any leading (channel) dimensions.

        Returns
        -------
        ``Y`` of shape ``[..., G, patch^2, N]``: column ``k`` of ``Y[..., g, :, :]`` is patch
        ``k`` of group ``g`` (``k = 0`` the reference); differentiable with respect to ``maps``.
        """
        if tuple(maps.shape[-3:]) != self.shape:
            raise ValueError(f"map shape {tuple(maps.shape)} does not end with {self.shape}")
        lead = maps.shape[:-3]
        flat = maps.reshape(*lead, -1).index_select(-1, self.indices.reshape(-1))
        return flat.reshape(*lead, *self.indices.shape).transpose(-1, -2)


def wnnm_loss(
    maps: torch.Tensor,
    matching: BlockMatching,
    c: float = 2.8,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Weighted nuclear norm of the patch groups of a map, averaged over groups.

    Parameters
    ----------
    maps
        Real map ``[nz, ny, nx]`` or stack ``[..., nz, ny, nx]`` (for example a per-echo phase
        ``[E, nz, ny, nx]``); every leading channel contributes its own groups.
    matching
        Groups from :meth:`BlockMatching.compute`.
    c
        WNNM constant (2.8 in SUMMIT).
    eps
        Added to ``s_hat`` in the weights, in the units of the map (1e-6 in SUMMIT).

    Returns
    -------
    Scalar loss in the dtype of ``maps``: ``mean over groups of sum_i w_i s_i``.

    Notes
    -----
    The singular values are computed in float64 (the matrices are only ``patch^2 x N``): the
    smallest singular values get the largest weights, and float32 would lose them to round-off
    of the largest one.

    ``torch.linalg.svdvals`` backpropagates ``U diag(grad) V^T``, which stays finite for repeated
    singular values. Singular values at or below the numerical-rank tolerance
    ``max(patch^2, N) * eps_float(maps) * s_max`` (exact zeros in exact arithmetic, e.g. of a
    constant map) still count in the value but pass no gradient: their singular vectors are
    arbitrary, and with weights near ``c sqrt(N) / eps`` they would push the map in an arbitrary
    direction. This picks the minimum-norm subgradient of the nuclear norm there.
    """
    if maps.is_complex() or not maps.is_floating_point():
        raise ValueError(f"maps must be real floating point, got {maps.dtype}")
    y = matching.groups(maps).to(torch.float64)  # [..., G, P, N]
    n = y.shape[-1]
    s = torch.linalg.svdvals(y)  # [..., G, min(P, N)], descending
    with torch.no_grad():
        y_fixed = y.detach()
        sigma = (y_fixed[..., 0] - y_fixed.mean(-1)).std(-1, correction=0)  # [..., G]
        s_fixed = s.detach()
        s_hat = (s_fixed.square() - n * sigma[..., None].square()).clamp(min=0).sqrt()
        weights = c * math.sqrt(n) / (s_hat + eps)
        tolerance = max(y.shape[-2:]) * torch.finfo(maps.dtype).eps * s_fixed[..., :1]
    s = torch.where(s_fixed > tolerance, s, s_fixed)
    return (weights * s).sum(-1).mean().to(maps.dtype)


class WNNMRegulariser:
    """Sum of weighted WNNM losses over named maps, on one shared block matching.

    Parameters
    ----------
    matching
        Groups found on the guide map.
    weights
        ``lambda`` per map name (default :data:`DEFAULT_WEIGHTS`); maps without a weight are not
        regularised.
    c, eps
        Passed to :func:`wnnm_loss`.
    """

    def __init__(
        self,
        matching: BlockMatching,
        weights: Mapping[str, float] | None = None,
        c: float = 2.8,
        eps: float = 1e-6,
    ) -> None:
        self.matching = matching
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.c = c
        self.eps = eps

    @classmethod
    def from_maps(
        cls,
        guide: torch.Tensor,
        mask: torch.Tensor,
        weights: Mapping[str, float] | None = None,
        *,
        patch: int = 5,
        search: int = 7,
        n_similar: int = 3,
        c: float = 2.8,
        eps: float = 1e-6,
    ) -> WNNMRegulariser:
        """Match blocks on ``guide`` ``[nz, ny, nx]`` (e.g. ``T1``) inside ``mask`` and build.

        See :meth:`BlockMatching.compute` for ``patch``, ``search`` and ``n_similar``; the mask is
        typically :func:`mask_from_amplitude` of ``M0`` at the epoch the regulariser switches on.
        """
        matching = BlockMatching.compute(guide, mask, patch, search, n_similar)
        return cls(matching, weights, c, eps)

    def state_dict(self) -> dict[str, Any]:
        """The regulariser as tensors and plain data (for checkpoints), see :meth:`from_state`.

        Returns
        -------
        ``indices`` (the matching's ``[G, N, patch^2]`` int64 tensor), ``shape`` (``[nz, ny,
        nx]``), ``weights`` (map name -> ``lambda``), ``c`` and ``eps``.
        """
        return {
            "indices": self.matching.indices,
            "shape": list(self.matching.shape),
            "weights": dict(self.weights),
            "c": self.c,
            "eps": self.eps,
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], device: torch.device | str = "cpu"
    ) -> WNNMRegulariser:
        """Rebuild the regulariser of :meth:`state_dict`, its indices on ``device``.

        Raises
        ------
        ValueError
            When the state is not one of :meth:`state_dict` (wrong types, or indices outside the
            maps).
        """
        indices, shape = state["indices"], tuple(int(n) for n in state["shape"])
        if not (
            isinstance(indices, torch.Tensor)
            and indices.dtype == torch.int64
            and indices.ndim == 3
            and len(shape) == 3
        ):
            raise ValueError("WNNM state: indices must be [G, N, P] int64 over a [nz, ny, nx] map")
        if indices.numel() and (indices.min() < 0 or indices.max() >= math.prod(shape)):
            raise ValueError(f"WNNM state: indices outside a map of shape {shape}")
        weights = {str(k): float(v) for k, v in state["weights"].items()}
        matching = BlockMatching(indices.to(device), (shape[0], shape[1], shape[2]))
        return cls(matching, weights, float(state["c"]), float(state["eps"]))

    def on_planes(self, planes: slice) -> PlaneGroups | None:
        """The groups of a slab of x-planes (module docstring), or None when it has none.

        Parameters
        ----------
        planes
            ``slice(start, stop)`` of x-planes.
        """
        indices, (nz, ny, nx) = self.matching.indices, self.matching.shape
        patch = math.isqrt(indices.shape[2])
        centre = indices[:, 0, (patch // 2) * patch + patch // 2]
        x = centre % nx
        chosen = indices[(x >= planes.start) & (x < planes.stop)]  # [G_b, N, patch^2]
        if chosen.numel() == 0:
            return None
        width = planes.stop - planes.start
        on_slab = nz * ny * width
        x = chosen % nx
        inside = (x >= planes.start) & (x < planes.stop)
        outside = torch.unique(chosen[~inside])  # sorted
        slab_row = (chosen // nx) * width + (x - planes.start)
        remapped = torch.where(inside, slab_row, on_slab + torch.searchsorted(outside, chosen))
        matching = BlockMatching(remapped, (1, 1, on_slab + outside.numel()))
        regulariser = WNNMRegulariser(matching, self.weights, self.c, self.eps)
        return PlaneGroups(regulariser, outside, chosen.shape[0] / indices.shape[0])

    def __call__(self, maps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_i lambda_i wnnm_loss(maps[i])`` over the weighted maps present.

        Parameters
        ----------
        maps
            Maps by name, each ``[..., nz, ny, nx]`` real.

        Returns
        -------
        Scalar loss in the maps' dtype (0 when no weighted map is present), on the matching's
        device.
        """
        total = torch.zeros((), device=self.matching.indices.device)
        for name, weight in self.weights.items():
            if name in maps:
                total = total + weight * wnnm_loss(maps[name], self.matching, self.c, self.eps)
        return total


@dataclass(frozen=True)
class PlaneGroups:
    """The WNNM groups of a slab of x-planes (:meth:`WNNMRegulariser.on_planes`).

    Attributes
    ----------
    regulariser
        The slab's groups, on maps given as ``[1, 1, n_slab + M]``: the slab's voxels in the
        order of :func:`~lorein.inr.field.plane_voxels`, then :attr:`outside`.
    outside
        ``[M]`` sorted flat voxel indices (of the whole volume) outside the slab that the groups
        read.
    fraction
        The slab's share of all groups: ``fraction * regulariser(maps)`` is their
        ``sum_i w_i s_i`` over the number of groups of the whole volume.
    """

    regulariser: WNNMRegulariser
    outside: torch.Tensor
    fraction: float
