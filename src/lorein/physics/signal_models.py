"""Differentiable sequence signal models: parametric maps -> complex weighted images.

Two models of the LoREIN paper (section III.A.2):

- ``vfa_megre`` (paper eq. 10): variable-flip-angle multi-echo spoiled gradient echo.
- ``t2ir_gre`` (paper eq. 9 with the physical T2-preparation term ``exp(-tau/T2)``): T2-prepared
  inversion-recovery segmented spoiled gradient echo.

Every model maps a dictionary of float maps of any spatial shape ``[...]`` to the complex signal
``[T, ...]`` of the ``T`` contrasts of a :class:`~lorein.physics.contrasts.ContrastTable`. The maps
are named as in the problem file's ``truth/`` group and are in SI units:

==========  ==========================================================  ======
name        meaning                                                     unit
==========  ==========================================================  ======
``M0``      equilibrium amplitude (the paper's ``A``)                   a.u.
``T1``      longitudinal relaxation time                                s
``T2``      transverse relaxation time (``t2ir_gre`` only)              s
``T2star``  effective transverse relaxation time                        s
``B0``      off-resonance frequency                                     Hz
``phase0``  phase at echo time 0                                        rad
``B``       inversion efficiency (``t2ir_gre`` with ``estimate_inversion``)  1
``phase``   ``[E, ...]`` free phase per distinct echo time (``phase="free"``)  rad
==========  ==========================================================  ======

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
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from lorein.physics.contrasts import ContrastTable

PhaseMode = Literal["b0", "free"]

MIN_RELAXATION_TIME = 1e-6
"""Relaxation times [s] are clamped to at least this value before they divide anything."""


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


def _spoiled_steady_state(
    t1: torch.Tensor, flip: torch.Tensor, repetition_time: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spoiled-GRE steady state and recovery ratio.

    Parameters
    ----------
    t1
        ``[...]`` T1 [s].
    flip, repetition_time
        ``[R, 1, ..., 1]`` flip angle [rad] and TR [s].

    Returns
    -------
    steady_state
        ``[R, ...]`` longitudinal steady state before each excitation over M0,
        ``(1 - E1) / (1 - E1 cos a)``.
    e1
        ``[R, ...]`` ``E1 = exp(-TR/T1)``.
    """
    ratio = -repetition_time / t1.clamp_min(MIN_RELAXATION_TIME)
    e1 = torch.exp(ratio)
    one_minus_e1 = -torch.expm1(ratio)
    # 1 - E1 cos a written as a sum of non-negative terms: no cancellation for small TR/T1 and a
    denominator = one_minus_e1 + e1 * (2.0 * torch.sin(0.5 * flip) ** 2)
    return one_minus_e1 / denominator, e1


class VfaMegre(SignalModel):
    """Variable-flip-angle multi-echo spoiled GRE, paper eq. 10.

    ``S_t = M0 (1 - E1) sin a / (1 - E1 cos a) exp(-TE/T2*) exp(i phi_e)``, ``E1 = exp(-TR/T1)``,
    the ideal-spoiling steady state of every flip angle, read at each echo time.

    Parameters
    ----------
    contrasts
        Needs ``flip_angle`` [rad], ``echo_time`` [s] and ``repetition_time`` [s].
    phase
        See :class:`SignalModel`.

    Maps: ``M0``, ``T1`` [s], ``T2star`` [s] and ``B0`` [Hz], ``phase0`` [rad] (or ``phase``).
    """

    name = "vfa_megre"

    def _magnitude_parameters(self) -> tuple[str, ...]:
        return ("M0", "T1", "T2star")

    def _readout_signal(
        self, maps: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        ndim = maps["M0"].ndim
        flip = self._readout_column(self.contrasts.flip_angle, dtype, device, ndim)
        tr = self._readout_column(self.contrasts.repetition_time, dtype, device, ndim)
        steady, _ = _spoiled_steady_state(maps["T1"], flip, tr)
        return maps["M0"] * steady * torch.sin(flip)


class T2irGre(SignalModel):
    """T2-prepared inversion-recovery segmented spoiled GRE, paper eq. 9 with ``E2 = exp(-tau/T2)``.

    ``S_t = M0 (1 - E1) / (1 - E1 cos a) [1 + (B E2 - 1)(E1 cos a)^n] sin a exp(-TE/T2*)
    exp(i phi_e)`` with ``E1 = exp(-TR/T1)``, ``E2 = exp(-tau/T2)``, ``tau`` the preparation time,
    ``n`` the segment (readout) index counted from 1 and ``B`` the inversion efficiency (-1: ideal).
    The paper prints ``exp(-TR/T2)`` in the bracket; ``exp(-tau/T2)`` is the T2-preparation term.

    The closed form is exact for this sequence (ideal spoiling, instantaneous pulses):

    1. before each preparation the longitudinal magnetisation is at the driven steady state
       ``Mss = M0 (1 - E1) / (1 - E1 cos a)``;
    2. T2 preparation of duration ``tau`` (90x, refocused transverse T2 decay, -90x; the transverse
       remainder is spoiled): ``Mz = E2 Mss``;
    3. inversion with efficiency ``B``: ``Mz = B E2 Mss``;
    4. immediately after, a train of excitations with flip ``a`` spaced by TR, each followed by
       spoiling at the end of its TR. The first excitation is not acquired; readout ``n`` is the
       excitation that follows ``n`` excitation + TR intervals after the preparation, so its
       longitudinal magnetisation is ``Mss + (B E2 Mss - Mss)(E1 cos a)^n``.

    Assumption 1 holds when the segments are long enough for Mz to return to ``Mss`` before the
    next preparation; shorter segments bias the signal of the first readouts.

    Parameters
    ----------
    contrasts
        Needs ``flip_angle`` [rad], ``echo_time`` [s], ``repetition_time`` [s], ``prep_time``
        [s] and ``segment`` (int, from 1).
    phase
        See :class:`SignalModel`.
    inversion_efficiency
        Fixed inversion efficiency ``B`` used when ``estimate_inversion`` is false.
    estimate_inversion
        If true, ``B`` is a map the model takes (name ``"B"``).

    Maps: ``M0``, ``T1`` [s], ``T2`` [s], ``T2star`` [s], optionally ``B``, and ``B0`` [Hz],
    ``phase0`` [rad] (or ``phase``).
    """

    name = "t2ir_gre"

    def __init__(
        self,
        contrasts: ContrastTable,
        phase: PhaseMode = "b0",
        inversion_efficiency: float = -1.0,
        estimate_inversion: bool = False,
    ) -> None:
        if contrasts.prep_time is None or contrasts.segment is None:
            raise ValueError("t2ir_gre needs the contrast columns prep_time and segment")
        if bool((contrasts.segment < 1).any()):
            raise ValueError("t2ir_gre: segment indices are counted from 1")
        super().__init__(contrasts, phase)
        self._prep_time = contrasts.prep_time
        self._segment = contrasts.segment
        self.inversion_efficiency = inversion_efficiency
        self.estimate_inversion = estimate_inversion

    def _magnitude_parameters(self) -> tuple[str, ...]:
        inversion = ("B",) if self.estimate_inversion else ()
        return ("M0", "T1", "T2", "T2star", *inversion)

    def _readout_signal(
        self, maps: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        ndim = maps["M0"].ndim
        flip = self._readout_column(self.contrasts.flip_angle, dtype, device, ndim)
        tr = self._readout_column(self.contrasts.repetition_time, dtype, device, ndim)
        tau = self._readout_column(self._prep_time, dtype, device, ndim)
        n = self._readout_column(self._segment, dtype, device, ndim)
        steady, e1 = _spoiled_steady_state(maps["T1"], flip, tr)
        e2 = torch.exp(-tau / maps["T2"].clamp_min(MIN_RELAXATION_TIME))
        b = maps["B"] if self.estimate_inversion else self.inversion_efficiency
        recovery = 1.0 + (b * e2 - 1.0) * torch.pow(e1 * torch.cos(flip), n)
        return maps["M0"] * steady * recovery * torch.sin(flip)


SIGNAL_MODEL_CLASSES: dict[str, type[SignalModel]] = {
    VfaMegre.name: VfaMegre,
    T2irGre.name: T2irGre,
}
"""Signal model classes by name."""


def signal_model(name: str, contrasts: ContrastTable, **kwargs: object) -> SignalModel:
    """Build the signal model called ``name``.

    Parameters
    ----------
    name
        ``"vfa_megre"`` or ``"t2ir_gre"``.
    contrasts
        Sequence parameters of the ``T`` contrasts.
    **kwargs
        Passed to the model's constructor (``phase``, and for ``t2ir_gre``
        ``inversion_efficiency``, ``estimate_inversion``).

    Raises
    ------
    ValueError
        If ``name`` is not a known model.
    """
    try:
        cls = SIGNAL_MODEL_CLASSES[name]
    except KeyError:
        known = ", ".join(sorted(SIGNAL_MODEL_CLASSES))
        raise ValueError(f"unknown signal model {name!r}; known models: {known}") from None
    return cls(contrasts, **kwargs)  # type: ignore[arg-type]
