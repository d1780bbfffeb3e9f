"""``t2ir_gre``: T2-prepared inversion-recovery segmented spoiled GRE (paper eq. 9)."""

from __future__ import annotations

from typing import ClassVar

import torch

from lorein.physics.contrasts import ContrastTable
from lorein.physics.models.base import MIN_RELAXATION_TIME, PhaseMode, SignalModel
from lorein.physics.models.vfa_megre import spoiled_steady_state


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
    next preparation; shorter segments bias the signal of the first readouts. With
    ``estimate_inversion`` the map ``B`` absorbs most of that bias: ``B E2 Mss`` is then the
    magnetisation after the inversion, whatever the preparation started from.

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
    description = (
        "T2-prepared inversion-recovery segmented GRE (paper eq. 9): M0, T1, T2, T2*, B0 "
        "(and the inversion efficiency B with estimate_inversion)"
    )
    required_columns = ("flip_angle", "echo_time", "repetition_time", "prep_time", "segment")
    options: ClassVar[dict[str, type]] = {"estimate_inversion": bool, "inversion_efficiency": float}

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

    @property
    def fixed_values(self) -> dict[str, float]:
        """``B``: the fixed inversion efficiency (also the voxel fit's dictionary value)."""
        return {"B": self.inversion_efficiency}

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
        steady, e1 = spoiled_steady_state(maps["T1"], flip, tr)
        e2 = torch.exp(-tau / maps["T2"].clamp_min(MIN_RELAXATION_TIME))
        b = maps["B"] if self.estimate_inversion else self.inversion_efficiency
        recovery = 1.0 + (b * e2 - 1.0) * torch.pow(e1 * torch.cos(flip), n)
        return maps["M0"] * steady * recovery * torch.sin(flip)
