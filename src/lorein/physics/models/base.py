"""The signal-model interface: what every sequence model declares, and the maps it speaks of.

A signal model maps a dictionary of float maps of any spatial shape ``[...]`` to the complex
signal ``[T, ...]`` of the ``T`` contrasts of a :class:`~lorein.physics.contrasts.ContrastTable`.
One module of :mod:`lorein.physics.models` holds each model, one :class:`SignalModel` subclass
each, listed in :mod:`lorein.physics.models.registry`. Everything the rest of the package needs to
know about a model, it asks the class (docs/SIGNAL_MODELS.md):

- ``name``, ``description``: the problem file's ``signal_model`` attribute and one line;
- ``required_columns``: the contrast-table columns it reads;
- :attr:`SignalModel.parameters`: the maps it estimates, described in :data:`MAPS` (unit, bounds,
  NIfTI name);
- ``options``: constructor settings a reconstruction may set (``lorein recon --model-option``);
- ``dictionary_ranges``: tissue ranges of the dictionary of its temporal subspace;
- ``structure_map``: the map whose patches guide WNNM's block matching;
- ``derived``: maps computed from the estimated ones and written too (``R2star``);
- :meth:`SignalModel.from_tissue`: its maps of a tissue (simulations, truth);
- :meth:`SignalModel.fixed_values`: the values of maps it holds fixed (voxel fit).

The signal factorises into a real part that depends on the excitation (flip angle, TR, and for
``t2ir_gre`` the preparation and segment) and a complex echo part ``exp(-TE/T2*) exp(i phi_e)``.
Each part is evaluated once per distinct readout and echo time (:class:`SignalFactors`) and then
gathered to the ``T`` contrasts, which keeps the cost at one complex product per output element;
:class:`~lorein.physics.subspace.SubspaceProjection` projects the factors onto a temporal subspace
without forming the ``T`` images at all.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from lorein.physics.contrasts import ContrastTable

PhaseMode = Literal["b0", "free"]

MIN_RELAXATION_TIME = 1e-6
"""Relaxation times [s] are clamped to at least this value before they divide anything."""


@dataclass(frozen=True)
class MapInfo:
    """What a map means, for every part of the package that handles it.

    Attributes
    ----------
    description
        One line.
    unit
        SI unit as sidecars write it (``s``, ``Hz``, ``rad``, ``1/s``, ``1``, ``arbitrary``).
    bounds
        ``(min, max)`` physical range [SI] of the voxel fit's box and its dictionary grid (the
        default of :class:`~lorein.numerics.voxel_fit.FitBounds`), or None: unbounded.
    log
        Fitted and represented as a logarithm (relaxation times).
    typical
        Starting value of a field trained from scratch, or None (set from the data).
    bids
        Stem of the NIfTI file in the output folder (BIDS naming), or None: ``maps.h5`` only.
    """

    description: str
    unit: str
    bounds: tuple[float, float] | None = None
    log: bool = False
    typical: float | None = None
    bids: str | None = None


MAPS: dict[str, MapInfo] = {
    "M0": MapInfo(
        "equilibrium amplitude (the paper's A); megre: apparent, T1 saturation included",
        "arbitrary",
        bids="M0map",
    ),
    "T1": MapInfo("longitudinal relaxation time", "s", (0.05, 6.0), True, 1.0, "T1map"),
    "T2": MapInfo("transverse relaxation time", "s", (0.005, 3.0), True, 0.08, "T2map"),
    "T2star": MapInfo(
        "effective transverse relaxation time", "s", (0.002, 3.0), True, 0.05, "T2starmap"
    ),
    "R2star": MapInfo("effective transverse relaxation rate 1 / T2*", "1/s", bids="R2starmap"),
    "B0": MapInfo("off-resonance frequency", "Hz", bids="B0map"),
    "phase0": MapInfo("phase at echo time 0", "rad"),
    "B": MapInfo("inversion efficiency (-1: ideal inversion)", "1", (-1.0, 0.0), typical=-0.95),
    "phase": MapInfo("free phase per distinct echo time, [E, ...]", "rad"),
}
"""Every map a model estimates or derives, by name (the problem file's ``truth/`` names)."""


@dataclass(frozen=True)
class DictionaryRanges:
    """Parameter ranges of a simulated dictionary at 3 T (SI units).

    Relaxation times are drawn log-uniformly, ``B0`` and ``B`` uniformly. Physical orderings are
    kept: ``T2 <= T1`` and, for models with a ``T2`` map, ``T2* <= T2``. A fraction of the atoms
    is CSF-like (long ``T1``, ``T2`` and a fixed long ``T2*``).

    Attributes
    ----------
    t1, t2, t2star
        ``(min, max)`` [s] of tissue atoms.
    b0
        ``(min, max)`` off-resonance [Hz].
    inversion
        ``(min, max)`` inversion efficiency ``B`` (used when the model estimates it).
    csf_fraction
        Fraction of CSF-like atoms.
    csf_t1, csf_t2
        ``(min, max)`` [s] of the CSF-like atoms.
    csf_t2star
        ``T2*`` [s] of the CSF-like atoms.
    """

    t1: tuple[float, float] = (0.2, 5.0)
    t2: tuple[float, float] = (0.01, 2.0)
    t2star: tuple[float, float] = (0.005, 0.2)
    b0: tuple[float, float] = (-60.0, 60.0)
    inversion: tuple[float, float] = (-1.0, -0.7)
    csf_fraction: float = 0.05
    csf_t1: tuple[float, float] = (3.0, 5.0)
    csf_t2: tuple[float, float] = (1.0, 2.0)
    csf_t2star: float = 1.0


@dataclass(frozen=True)
class SignalFactors:
    """The signal of every contrast as a per-readout times a per-echo factor.

    ``S[t] = readout[readout_index[t]] * echo[echo_index[t]]``.

    Attributes
    ----------
    readout
        ``[R, ...]`` real signal at TE = 0 of each distinct readout, ``M0`` included.
    echo
        ``[E, ...]`` complex echo factor ``exp(-TE/T2*) exp(i phi_e)`` of each echo time.
    readout_index, echo_index
        ``[T]`` int64 readout and echo of each contrast.
    """

    readout: torch.Tensor
    echo: torch.Tensor
    readout_index: torch.Tensor
    echo_index: torch.Tensor

    def images(self) -> torch.Tensor:
        """``[T, ...]`` complex signal of every contrast."""
        readout = self.readout.index_select(0, self.readout_index)
        return readout * self.echo.index_select(0, self.echo_index)


def reciprocal(values: torch.Tensor) -> torch.Tensor:
    """``1 / values`` where positive, 0 elsewhere (voxels a method did not fit hold 0)."""
    positive = values > 0
    return torch.where(positive, 1.0 / torch.where(positive, values, 1.0), 0.0)


DERIVATIONS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "R2star": ("T2star", reciprocal)
}
"""Derived map -> (the estimated map it is computed from, the function)."""


class SignalModel(ABC):
    """Base class of the sequence signal models.

    Parameters
    ----------
    contrasts
        Sequence parameters of the ``T`` contrasts.
    phase
        ``"b0"``: the phase at echo ``e`` is ``phase0 + 2 pi B0 TE_e`` (maps ``B0`` [Hz] and
        ``phase0`` [rad]). ``"free"``: one unconstrained phase per distinct echo time, given as the
        map ``phase`` of shape ``[E, ...]`` [rad], ``E`` distinct echo times in ascending order as
        returned by :meth:`ContrastTable.echo_index`.

    Notes
    -----
    Calling the model returns complex64 for float32 maps and complex128 for float64 maps; the
    contrast table is cast to the maps' dtype and device on each call. Maps that the model does not
    use are ignored, so a whole ``truth/`` group can be passed.
    """

    name: ClassVar[str]
    """Model name as stored in the problem file's ``signal_model`` attribute."""

    description: ClassVar[str]
    """One line: the sequence and the maps."""

    required_columns: ClassVar[tuple[str, ...]]
    """Contrast-table columns the model reads (the problem file must have them)."""

    options: ClassVar[Mapping[str, type]] = {}
    """Constructor settings besides ``phase`` that a reconstruction may set, with their types;
    each is an attribute of the same name."""

    dictionary_ranges: ClassVar[DictionaryRanges] = DictionaryRanges()
    """Tissue ranges of the dictionary that spans the temporal subspace."""

    structure_map: ClassVar[str] = "T1"
    """The estimated map whose patches guide WNNM's block matching."""

    derived: ClassVar[tuple[str, ...]] = ()
    """Maps computed from the estimated ones (:data:`DERIVATIONS`) and written with them."""

    def __init__(self, contrasts: ContrastTable, phase: PhaseMode = "b0") -> None:
        if phase not in ("b0", "free"):
            raise ValueError(f"phase must be 'b0' or 'free', got {phase!r}")
        self.contrasts = contrasts
        self.phase_mode: PhaseMode = phase
        self.echo_times, self._echo_index = contrasts.echo_index()
        readout = contrasts.readout_index()
        n_readouts = int(readout.max()) + 1
        positions = torch.arange(readout.numel(), device=readout.device)
        first = torch.full((n_readouts,), readout.numel(), dtype=torch.int64, device=readout.device)
        first = first.scatter_reduce(0, readout, positions, reduce="amin")
        self._readout_index = readout
        self._readout_first = first

    @property
    def readout_index(self) -> torch.Tensor:
        """``[T]`` int64 distinct readout (excitation) of each contrast."""
        return self._readout_index

    @property
    def echo_index(self) -> torch.Tensor:
        """``[T]`` int64 distinct echo time of each contrast."""
        return self._echo_index

    @property
    def n_echoes(self) -> int:
        """Number ``E`` of distinct echo times."""
        return int(self.echo_times.numel())

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the maps the model takes, in a fixed order."""
        phase_maps = ("B0", "phase0") if self.phase_mode == "b0" else ("phase",)
        return self._magnitude_parameters() + phase_maps

    @property
    def option_values(self) -> dict[str, Any]:
        """The model's ``options`` and their values."""
        return {name: getattr(self, name) for name in self.options}

    @property
    def fixed_values(self) -> dict[str, float]:
        """Values of maps the model holds fixed unless it estimates them (none by default)."""
        return {}

    def with_contrasts(self, contrasts: ContrastTable) -> SignalModel:
        """The same model (phase mode, options) on another contrast table."""
        return type(self)(contrasts, phase=self.phase_mode, **self.option_values)

    def from_tissue(self, tissue: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's maps of a tissue described by ``M0``, ``T1``, ``T2``, ``T2star``, ``B0``,
        ``phase0`` (a phantom's maps): the same maps unless the model redefines one (``megre``'s
        apparent ``M0``)."""
        return dict(tissue)

    def output_maps(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The estimated maps and the ``derived`` ones computed from them."""
        out = dict(values)
        for name in self.derived:
            source, derive = DERIVATIONS[name]
            out[name] = derive(values[source])
        return out

    @abstractmethod
    def _magnitude_parameters(self) -> tuple[str, ...]:
        """Names of the maps that enter the magnitude, ``M0`` and ``T2star`` included."""

    @abstractmethod
    def _readout_signal(
        self, maps: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Real signal at TE = 0 of each distinct readout, ``[R, ...]`` (``M0`` included)."""

    def _readout_column(
        self, column: torch.Tensor, dtype: torch.dtype, device: torch.device, ndim: int
    ) -> torch.Tensor:
        """One contrast-table column reduced to the distinct readouts, shaped ``[R, 1, ..., 1]``.

        ``ndim`` is the number of spatial dimensions of the maps.
        """
        values = column[self._readout_first].to(device=device, dtype=dtype)
        return values.reshape(-1, *([1] * ndim))

    def _echo_signal(
        self, maps: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Complex echo factor ``exp(-TE/T2*) exp(i phi_e)`` per distinct echo, ``[E, ...]``."""
        t2star = maps["T2star"]
        te = self.echo_times.to(device=device, dtype=dtype).reshape(-1, *([1] * t2star.ndim))
        decay = torch.exp(-te / t2star.clamp_min(MIN_RELAXATION_TIME))
        if self.phase_mode == "b0":
            angle = maps["phase0"] + (2.0 * math.pi) * te * maps["B0"]
        else:
            angle = maps["phase"]
        return torch.polar(decay, angle.expand_as(decay))

    def _validated(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Check names, shapes and dtypes; return the used maps cast to one floating dtype."""
        missing = [p for p in self.parameters if p not in maps]
        if missing:
            raise KeyError(
                f"{self.name}: missing maps {missing}; the model takes {list(self.parameters)}"
            )
        used = {p: maps[p] for p in self.parameters}
        for p, m in used.items():
            if not m.is_floating_point():
                raise TypeError(f"{self.name}: map {p!r} must be real floating, got {m.dtype}")
        spatial = used["M0"].shape
        for p, m in used.items():
            expected = (self.n_echoes, *spatial) if p == "phase" else spatial
            if m.shape != expected:
                raise ValueError(
                    f"{self.name}: map {p!r} has shape {tuple(m.shape)}, expected {tuple(expected)}"
                )
        dtype = used["M0"].dtype
        for m in used.values():
            dtype = torch.promote_types(dtype, m.dtype)
        return {p: m.to(dtype) for p, m in used.items()}

    def __call__(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """Evaluate the signal of every contrast.

        Parameters
        ----------
        maps
            Float maps named as in :attr:`parameters`, each of shape ``[...]`` (``phase``:
            ``[E, ...]``), SI units. Extra entries are ignored.

        Returns
        -------
        ``[T, ...]`` complex signal (complex64 for float32 maps, complex128 for float64), in the
        units of ``M0``. Differentiable with respect to every map.
        """
        return self.factors(maps).images()

    def factors(self, maps: dict[str, torch.Tensor]) -> SignalFactors:
        """The signal as :class:`SignalFactors` (maps as in :meth:`__call__`), differentiable."""
        used = self._validated(maps)
        m0 = used["M0"]
        return SignalFactors(
            readout=self._readout_signal(used, m0.dtype, m0.device),
            echo=self._echo_signal(used, m0.dtype, m0.device),
            readout_index=self._readout_index.to(m0.device),
            echo_index=self._echo_index.to(m0.device),
        )
