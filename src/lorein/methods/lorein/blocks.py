"""LoREIN's two blocks as modules: LRR (spatial bases + coils) and PMR (parameter maps).

- :class:`CoilField`: a low-resolution hash field whose complex outputs, normalised to unit
  root-sum-of-squares, are the coil sensitivities (paper eq. 13).
- :class:`LowRankBlock`: the spatial-basis field ``f_theta`` giving ``K`` complex bases, refined by
  the CNN ``g_phi`` (paper eq. 12), and the coil field.
- :class:`ParameterBlock`: one field per parameter map the signal model estimates (paper eq. 15):
  exponential outputs with physical bounds for M0, T1, T2, T2*; a sigmoid between its bounds for
  ``t2ir_gre``'s inversion efficiency B; a linear two-output field for B0 [Hz] and phase0 [rad].

Each block is evaluated on the whole volume or, for the plane-batched optimisation, on a slab of
x-planes (coils, bases) or at some voxels (maps). The bases of a slab are refined by the CNN on
the slab widened by its halo (:meth:`~.basis_cnn.BasisCNN.slab`) with a per-basis scale that
:meth:`LowRankBlock.refresh_scale` sets from the whole volume's coarse bases (once per epoch),
kept as a buffer so that checkpoints and rollbacks restore it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lorein.inr.field import Field
from lorein.methods.lorein.basis_cnn import BasisCNN
from lorein.physics.models.base import MAPS

POSITIVE_BOUNDS: dict[str, tuple[float, float]] = {
    "M0": (1e-8, 1e8),
    "T1": (0.05, 5.0),
    "T2": (0.005, 2.0),
    "T2star": (0.002, 1.0),
}
"""Clamps [s] of the positive maps (M0 in data units), tighter than the voxel fit's ranges."""

BOUNDED_MARGIN = 1e-3
"""A bounded map starts and is regressed at least this fraction of its range inside its bounds
(the logit of the bounds themselves is infinite)."""

B0_UNIT_HZ = 50.0
"""The phase field's first output times this is B0 [Hz]: keeps the MLP output of order one."""


def _start_at(field: Field, values: torch.Tensor, output_scale: float = 0.1) -> None:
    """Make a fresh field output ``values`` (after its output transform) almost everywhere.

    The last layer's weights are shrunk by ``output_scale`` and its bias set so that the output
    starts near ``values`` (``[out_features]``, log-domain for exponential outputs).
    """
    last = field.mlps[-1].net[-1]
    with torch.no_grad():
        last.weight.mul_(output_scale)
        last.bias.copy_(values)


class CoilField(nn.Module):
    """Coil sensitivities ``[n_coils, nz, ny, nx]`` from a low-resolution complex field.

    With a ``support`` (bool ``[nz, ny, nx]``) the sensitivities vanish outside it, as ESPIRiT
    maps do: a support constraint, so that no image, basis or map can put energy (aliasing) where
    no object is.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        n_coils: int,
        encoding: dict[str, Any],
        hidden: int = 64,
        layers: int = 2,
        support: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        mlp = {"hidden": hidden, "n_hidden_layers": layers}
        self.field = Field(
            grid, 2 * n_coils, encoding, mlp, output="complex", separate_complex_mlps=False
        )
        weight = None if support is None else support.float().cpu()
        self.register_buffer("support", weight, persistent=False)

    @staticmethod
    def _unit_rss(raw: torch.Tensor, dim: int) -> torch.Tensor:
        """``raw`` divided by its root-sum-of-squares over the coil axis ``dim``."""
        rss = raw.abs().pow(2).sum(dim, keepdim=True).sqrt()
        return raw / rss.clamp_min(1e-8)

    def forward(self) -> torch.Tensor:
        coils = self._unit_rss(self.field(), 0)
        return coils if self.support is None else coils * self.support

    def at_voxels(self, voxels: torch.Tensor) -> torch.Tensor:
        """``[N, n_coils]`` sensitivities at flat voxel indices ``voxels [N]``."""
        coils = self._unit_rss(self.field.at_voxels(voxels), 1)
        return coils if self.support is None else coils * self.support.flatten()[voxels, None]

    def at_planes(self, planes: slice) -> torch.Tensor:
        """``[n_coils, nz, ny, n]`` sensitivities on the x-planes ``planes``."""
        coils = self._unit_rss(self.field.at_planes(planes), 0)
        return coils if self.support is None else coils * self.support[..., planes]


class LowRankBlock(nn.Module):
    """Spatial bases ``U = g(f(x, y, z))`` ``[K, nz, ny, nx]`` and coil maps (paper eqs. 12-13).

    Parameters
    ----------
    grid
        ``(nz, ny, nx)``.
    rank
        Number of bases K.
    n_coils
        Number of (virtual) coils.
    basis_encoding, coil_encoding
        Hash-encoding settings of the two fields.
    hidden, layers
        MLP width and depth of the basis field.
    cnn_channels
        Channels of the refinement CNN; 0 switches the CNN off (ablation).
    batched
        The bases are evaluated on slabs of planes (:meth:`bases_at_planes`): the CNN's scale is
        the buffer ``basis_rms`` ``[K, 1, 1, 1]`` (:meth:`refresh_scale`) on slabs and on the
        whole volume alike, not each evaluation's own RMS.
    support
        Bool ``[nz, ny, nx]`` outside which the coils vanish (:class:`CoilField`), or None.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        rank: int,
        n_coils: int,
        basis_encoding: dict[str, Any],
        coil_encoding: dict[str, Any],
        hidden: int = 64,
        layers: int = 3,
        cnn_channels: int = 16,
        batched: bool = False,
        support: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        mlp = {"hidden": hidden, "n_hidden_layers": layers}
        self.bases = Field(
            grid, 2 * rank, basis_encoding, mlp, output="complex", separate_complex_mlps=False
        )
        self.cnn = BasisCNN(cnn_channels) if cnn_channels > 0 else None
        self.coils = CoilField(grid, n_coils, coil_encoding, support=support)
        scaled = batched and self.cnn is not None  # a None buffer is not in the state dict
        self.register_buffer("basis_rms", torch.ones(rank, 1, 1, 1) if scaled else None)

    def spatial_bases(self) -> torch.Tensor:
        """``[K, nz, ny, nx]`` complex64."""
        u = self.bases()
        return self.cnn(u, self.basis_rms) if self.cnn is not None else u

    def bases_at_planes(self, planes: slice) -> torch.Tensor:
        """``[K, nz, ny, n]`` complex64 bases on the x-planes ``planes`` (the slab of
        :meth:`spatial_bases`); the basis field is evaluated on the CNN's widened slab."""
        if self.cnn is None:
            return self.bases.at_planes(planes)
        if self.basis_rms is None:
            raise RuntimeError("bases on planes need a LowRankBlock built with batched=True")
        wide = BasisCNN.slab(planes, self.bases.grid_shape[2])
        u = self.cnn(self.bases.at_planes(wide), self.basis_rms)
        return u[..., planes.start - wide.start : planes.stop - wide.start]

    def refresh_scale(self) -> None:
        """Set the CNN's scale ``basis_rms`` to the RMS of the whole volume's coarse bases."""
        if self.basis_rms is not None:
            with torch.no_grad():
                self.basis_rms.copy_(BasisCNN.unit_scale(self.bases()))


class ParameterBlock(nn.Module):
    """One field per parameter map (paper eq. 15).

    Positive maps (``M0`` and the relaxation times) are exponential outputs clamped to
    :data:`POSITIVE_BOUNDS`, or, for a time the table lacks, to the map's physical range
    (:data:`~lorein.physics.models.base.MAPS`); a map of another bounded range (``t2ir_gre``'s
    inversion efficiency ``B``) is ``lo + (hi - lo) sigmoid(h)``; ``B0`` and ``phase0`` are the
    two linear outputs of one field.

    Parameters
    ----------
    grid
        ``(nz, ny, nx)``.
    parameters
        The signal model's map names (e.g. ``M0, T1, T2star, B0, phase0``).
    initial
        Starting value of each map but ``B0`` and ``phase0`` (e.g. ``{"M0": 3.0, "T1": 1.0,
        "T2star": 0.05}``); a map it does not name starts at its ``MAPS`` typical value.
    map_encoding, phase_encoding
        Hash-encoding settings of the maps and of the B0/phase0 field.
    hidden, layers
        MLP width and depth.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        parameters: tuple[str, ...],
        initial: dict[str, float],
        map_encoding: dict[str, Any],
        phase_encoding: dict[str, Any],
        hidden: int = 64,
        layers: int = 3,
    ) -> None:
        super().__init__()
        unknown = unrepresentable(parameters)
        if unknown:
            raise ValueError(f"the parameter block cannot represent maps {unknown}")
        mlp = {"hidden": hidden, "n_hidden_layers": layers}
        self.positive = nn.ModuleDict()
        self.bounded = nn.ModuleDict()
        for name in parameters:
            kind = _kind(name)
            if kind == "phase":
                continue
            start = initial[name] if name in initial else MAPS[name].typical
            if start is None:
                raise ValueError(f"the parameter block needs a starting value of {name}")
            bounds = map_bounds(name)
            if kind == "positive":
                f = Field(grid, 1, map_encoding, mlp, output="exp", bounds=bounds)
                self.positive[name] = f
            else:
                f = Field(grid, 1, map_encoding, mlp, output="linear")
                self.bounded[name] = f
            _start_at(f, self.raw(name, torch.tensor([start], dtype=torch.float64)))
        self.phase = Field(grid, 2, phase_encoding, mlp, output="linear")
        _start_at(self.phase, torch.zeros(2))

    @property
    def raw_names(self) -> tuple[str, ...]:
        """The maps with a field of their own (all but ``B0`` and ``phase0``)."""
        return (*self.positive, *self.bounded)

    def raw(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """The output ``h`` of the map's MLP that gives ``values`` (clamped into its bounds):
        ``log`` for positive maps, the logit of the bounded fraction for bounded ones."""
        lo, hi = map_bounds(name)
        if name in self.positive:
            return values.clamp(lo, hi).log()
        fraction = ((values - lo) / (hi - lo)).clamp(BOUNDED_MARGIN, 1.0 - BOUNDED_MARGIN)
        return torch.logit(fraction)

    def raw_at_voxels(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``h`` of every map but ``B0`` and ``phase0`` at flat voxel indices ``voxels [N]``
        (positive maps: after the clamp), ``[N]`` each."""
        raw = {name: f.at_voxels(voxels)[:, 0].log() for name, f in self.positive.items()}
        raw.update({name: f.at_voxels(voxels)[:, 0] for name, f in self.bounded.items()})
        return raw

    def forward(self) -> dict[str, torch.Tensor]:
        """The maps, float32 ``[nz, ny, nx]`` each: M0 (data units), times [s], B0 [Hz], rad."""
        return self._maps(lambda field: field())

    def at_voxels(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps at flat voxel indices ``voxels [N]``, float32 ``[N]`` each."""
        return self._maps(lambda field: field.at_voxels(voxels).T)

    def _maps(self, evaluate: Callable[[Field], torch.Tensor]) -> dict[str, torch.Tensor]:
        """The maps from ``evaluate(field) -> [outputs, ...]`` of each field."""
        maps = {name: evaluate(field)[0] for name, field in self.positive.items()}
        for name, field in self.bounded.items():
            lo, hi = map_bounds(name)
            maps[name] = lo + (hi - lo) * torch.sigmoid(evaluate(field)[0])
        phase = evaluate(self.phase)
        maps["B0"] = B0_UNIT_HZ * phase[0]
        maps["phase0"] = phase[1]
        return maps


def map_bounds(name: str) -> tuple[float, float]:
    """Range of a map of the parameter block: :data:`POSITIVE_BOUNDS`, else the map's physical
    range (:data:`~lorein.physics.models.base.MAPS`)."""
    bounds = POSITIVE_BOUNDS.get(name, MAPS[name].bounds)
    assert bounds is not None, name
    return bounds


def unrepresentable(parameters: tuple[str, ...]) -> list[str]:
    """The maps among ``parameters`` that the parameter block has no field for."""
    return [name for name in parameters if _kind(name) is None]


def _kind(name: str) -> str | None:
    """How the parameter block represents a map: ``"positive"``, ``"bounded"``, ``"phase"``
    (``B0``, ``phase0``), or None (it cannot: a free per-echo ``phase``, an unknown name)."""
    if name in ("B0", "phase0"):
        return "phase"
    info = MAPS.get(name)
    if name in POSITIVE_BOUNDS or (info is not None and info.log):
        return "positive"
    if info is not None and info.bounds is not None:
        return "bounded"
    return None
