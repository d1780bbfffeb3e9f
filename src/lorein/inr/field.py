"""A neural field on the voxel grid: hash encoding, MLP(s) and an output transform.

A field is evaluated on the whole grid (:meth:`Field.forward`), at some voxels
(:meth:`Field.at_voxels`) or on a slab of readout (x) planes (:meth:`Field.at_planes`, the
batches of LoREIN's plane-batched optimisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from lorein.inr.hash_encoding import GridHashEncoding, HashEncoding
from lorein.inr.mlp import MLP

Output = Literal["linear", "exp", "complex"]


def plane_voxels(
    grid_shape: tuple[int, int, int], planes: slice, device: torch.device | str | None = None
) -> torch.Tensor:
    """Flat (C-order) indices of the voxels of a slab of x-planes, in C order of the slab.

    Parameters
    ----------
    grid_shape
        ``(nz, ny, nx)``.
    planes
        ``slice(start, stop)`` of x (unit step).
    device
        Device of the result.

    Returns
    -------
    ``[nz * ny * n]`` int64, ``n = stop - start``: voxel ``(z, y, start + i)`` at row
    ``(z ny + y) n + i``, so that values at these voxels reshape to ``[nz, ny, n]``.
    """
    nz, ny, nx = grid_shape
    x = torch.arange(nx, device=device)[planes]
    rows = torch.arange(nz * ny, device=device)
    return (rows[:, None] * nx + x[None, :]).reshape(-1)


class InwardClamp(torch.autograd.Function):
    """``clamp(h, lower, upper)`` whose gradient is zero only where it points further out.

    Forward: the clamp. Backward: inside the bounds the identity; below ``lower`` the gradient
    passes when descent would raise ``h`` (``grad < 0``), above ``upper`` when it would lower
    ``h`` (``grad > 0``). A gradient step therefore never moves ``h`` further beyond a bound, and
    always lets the loss pull it back.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, lower, upper)
        return torch.clamp(h, lower, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        h, lower, upper = ctx.saved_tensors
        outward = ((h < lower) & (grad > 0)) | ((h > upper) & (grad < 0))
        return torch.where(outward, torch.zeros_like(grad), grad), None, None


class Field(nn.Module):
    """``f(z, y, x)`` for every voxel of a fixed grid (paper section III.B, eq. 11).

    Outputs (``h`` is the MLP output, one row per point):

    - ``"linear"``: ``h``, real.
    - ``"exp"``: ``exp(h)``, positive, clamped to ``bounds`` (applied to ``h`` in the log
      domain, so no overflow) by :class:`InwardClamp`: beyond a bound the gradient still passes
      when it points back inside, so a voxel pushed onto a bound can leave it (with
      ``torch.clamp`` it would be stuck there for good). E.g. ``bounds=(None, 5.0)`` for
      T1 <= 5 s.
    - ``"complex"``: complex64 ``h_re + i h_im`` with ``out_features // 2`` channels. With
      ``separate_complex_mlps`` (the paper's choice, the default) the real and imaginary parts
      come from two MLPs of ``out_features // 2`` outputs on the same encoding; otherwise one
      MLP gives both (first half real, second half imaginary), at about half the MLP cost
      (``benchmarks/hash_encoding.py``).

    Parameters
    ----------
    grid_shape
        ``(nz, ny, nx)``; voxel centres as in :func:`lorein.inr.hash_encoding.grid_coordinates`.
    out_features
        Number of real outputs; even for ``"complex"``.
    encoding_kwargs
        Keyword arguments of :class:`HashEncoding` (its defaults where None).
    mlp_kwargs
        Keyword arguments of :class:`MLP` other than the widths (its defaults where None).
    output
        ``"linear"``, ``"exp"`` or ``"complex"``.
    bounds
        ``(lower, upper)`` for ``"exp"``, each None (no bound), a float, or one value per
        output; lower bounds must be positive.
    separate_complex_mlps
        For ``"complex"``: two MLPs (True) or one (False).
    """

    def __init__(
        self,
        grid_shape: tuple[int, int, int],
        out_features: int,
        encoding_kwargs: dict[str, Any] | None = None,
        mlp_kwargs: dict[str, Any] | None = None,
        output: Output = "linear",
        bounds: tuple[float | Sequence[float] | None, float | Sequence[float] | None] = (
            None,
            None,
        ),
        separate_complex_mlps: bool = True,
    ) -> None:
        super().__init__()
        if output not in ("linear", "exp", "complex"):
            raise ValueError(f"unknown output {output!r}")
        if out_features < 1 or (output == "complex" and out_features % 2):
            raise ValueError(f"out_features {out_features} must be positive (even if complex)")
        if output != "exp" and bounds != (None, None):
            raise ValueError('bounds apply to output="exp" only')
        self.grid_shape = tuple(int(n) for n in grid_shape)
        self.out_features = out_features
        self.output = output
        encoding = HashEncoding(**(encoding_kwargs or {}))
        self.grid_encoding = GridHashEncoding(encoding, self.grid_shape)
        mlp_kwargs = mlp_kwargs or {}
        n_heads = 2 if output == "complex" and separate_complex_mlps else 1
        self.mlps = nn.ModuleList(
            MLP(encoding.out_features, out_features // n_heads, **mlp_kwargs)
            for _ in range(n_heads)
        )
        lower, upper = self._log_bound(bounds[0], -math.inf), self._log_bound(bounds[1], math.inf)
        self.register_buffer("log_lower", lower, persistent=False)
        self.register_buffer("log_upper", upper, persistent=False)
        if bool((self.log_lower > self.log_upper).any()):
            raise ValueError(f"lower bounds exceed upper bounds: {bounds}")

    def _log_bound(self, bound: float | Sequence[float] | None, default: float) -> torch.Tensor:
        """``[out_features]`` float32 log of a bound (``default`` where None)."""
        if bound is None:
            return torch.full((self.out_features,), default)
        values = torch.as_tensor(bound, dtype=torch.float64).expand(self.out_features)
        if bool((values <= 0).any()):
            raise ValueError(f"exp bounds must be positive, got {bound}")
        return values.log().float()

    @property
    def encoding(self) -> HashEncoding:
        """The hash encoding (shared by the grid and the arbitrary-coordinate paths)."""
        return self.grid_encoding.encoding

    def _decode(self, features: torch.Tensor) -> torch.Tensor:
        """MLP(s) and output transform: ``[N, L F]`` -> ``[N, out]`` or complex ``[N, out/2]``."""
        h = torch.cat([mlp(features) for mlp in self.mlps], dim=1)
        if self.output == "exp":
            return InwardClamp.apply(h, self.log_lower, self.log_upper).exp()
        if self.output == "complex":
            re, im = h.chunk(2, dim=1)
            return torch.complex(re, im)
        return h

    def forward(self) -> torch.Tensor:
        """Evaluate on the grid.

        Returns
        -------
        torch.Tensor
            ``[out_features, nz, ny, nx]`` float32, or ``[out_features // 2, nz, ny, nx]``
            complex64 for ``"complex"``.
        """
        values = self._decode(self.grid_encoding())
        return values.T.reshape(-1, *self.grid_shape)

    def at_voxels(self, voxels: torch.Tensor) -> torch.Tensor:
        """Evaluate at some voxels of the grid: ``[N]`` flat (C-order) indices -> ``[N, out]``.

        Same values as the rows of :meth:`forward`; complex64 ``[N, out // 2]`` for
        ``"complex"``.
        """
        return self._decode(self.grid_encoding.at_voxels(voxels))

    def at_planes(self, planes: slice) -> torch.Tensor:
        """Evaluate on a slab of x-planes (:func:`plane_voxels`, through :meth:`at_voxels`).

        Returns
        -------
        torch.Tensor
            ``[out_features, nz, ny, n]`` float32 (complex64 ``[out_features // 2, ...]``), the
            slab ``[..., planes]`` of :meth:`forward`.
        """
        nz, ny, _ = self.grid_shape
        voxels = plane_voxels(self.grid_shape, planes, self.log_lower.device)
        return self.at_voxels(voxels).T.reshape(-1, nz, ny, voxels.numel() // (nz * ny))

    def forward_at(self, coords: torch.Tensor) -> torch.Tensor:
        """Evaluate at arbitrary points (general encoding path, slower than :meth:`forward`).

        Parameters
        ----------
        coords
            ``[N, 3]`` float32 in ``[0, 1]``, columns ``(z, y, x)``; voxel ``(i_z, i_y, i_x)``
            of the grid is at ``((i_z + 0.5) / nz, (i_y + 0.5) / ny, (i_x + 0.5) / nx)``.

        Returns
        -------
        torch.Tensor
            ``[N, out_features]`` float32, or ``[N, out_features // 2]`` complex64.
        """
        return self._decode(self.encoding(coords))
