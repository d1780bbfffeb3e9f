"""``megre``: single-flip-angle multi-echo spoiled GRE (apparent M0, T2*, B0; no T1)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lorein.physics.contrasts import ContrastTable
from lorein.physics.models.base import DictionaryRanges, PhaseMode, SignalModel
from lorein.physics.models.vfa_megre import spoiled_steady_state


class Megre(SignalModel):
    """Multi-echo spoiled GRE at one flip angle and TR: ``S(TE) = M0 exp(-TE/T2*) exp(i phi)``.

    ``phi = phase0 + 2 pi B0 TE`` (or one free phase per echo). ``M0`` is the apparent amplitude,
    the steady state of the flip angle included: ``M0 = M0_eq (1 - E1) sin a / (1 - E1 cos a)``
    with ``E1 = exp(-TR/T1)`` (:meth:`from_tissue`). One flip angle cannot separate ``M0_eq``
    from ``T1``, so ``T1`` is neither estimated nor written. ``R2star = 1 / T2star`` [1/s] is
    written with the maps.

    Parameters
    ----------
    contrasts
        Needs ``flip_angle`` [rad], ``echo_time`` [s] and ``repetition_time`` [s], one flip angle
        and TR for all contrasts (one readout; several flip angles: ``vfa_megre``).
    phase
        See :class:`SignalModel`.

    Maps: ``M0``, ``T2star`` [s] and ``B0`` [Hz], ``phase0`` [rad] (or ``phase``).
    """

    name = "megre"
    description = "single-flip-angle multi-echo spoiled GRE: apparent M0, T2* (R2*), B0; no T1"
    required_columns = ("flip_angle", "echo_time", "repetition_time")
    structure_map = "M0"
    derived = ("R2star",)
    dictionary_ranges = DictionaryRanges(t2star=(0.003, 0.5))

    def __init__(self, contrasts: ContrastTable, phase: PhaseMode = "b0") -> None:
        super().__init__(contrasts, phase)
        n_readouts = int(self._readout_first.numel())
        if n_readouts != 1:
            raise ValueError(
                f"megre: expected one flip angle and TR for every contrast, found {n_readouts} "
                "different (flip angle, TR) readouts; several flip angles are vfa_megre"
            )

    def from_tissue(self, tissue: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``M0`` becomes the apparent amplitude ``M0 (1 - E1) sin a / (1 - E1 cos a)`` of the
        protocol's flip angle and TR (needs ``T1`` [s]); the other maps stay."""
        t1 = tissue["T1"]
        flip = self.contrasts.flip_angle[0].to(t1)
        tr = self.contrasts.repetition_time[0].to(t1)
        steady, _ = spoiled_steady_state(t1, flip, tr)
        return {**tissue, "M0": tissue["M0"] * steady * torch.sin(flip)}

    def _magnitude_parameters(self) -> tuple[str, ...]:
        return ("M0", "T2star")

    def _readout_signal(
        self, maps: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        return maps["M0"].unsqueeze(0)
