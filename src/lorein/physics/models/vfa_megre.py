"""``vfa_megre``: variable-flip-angle multi-echo spoiled GRE (paper eq. 10)."""

from __future__ import annotations

import torch

from lorein.physics.models.base import MIN_RELAXATION_TIME, SignalModel


def spoiled_steady_state(
    t1: torch.Tensor, flip: torch.Tensor, repetition_time: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spoiled-GRE steady state and recovery ratio.

    Parameters
    ----------
    t1
        ``[...]`` T1 [s].
    flip, repetition_time
        ``[R, 1, ..., 1]`` flip angle [rad] and TR [s] (or scalars).

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
    # 1 - E1 cos a written as a sum of non-negative terms: no cancellation for small TR/T1 and
    # small flip angles
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
    description = "variable-flip-angle multi-echo spoiled GRE (paper eq. 10): M0, T1, T2*, B0"
    required_columns = ("flip_angle", "echo_time", "repetition_time")

    def _magnitude_parameters(self) -> tuple[str, ...]:
        return ("M0", "T1", "T2star")

    def _readout_signal(
        self, maps: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        ndim = maps["M0"].ndim
        flip = self._readout_column(self.contrasts.flip_angle, dtype, device, ndim)
        tr = self._readout_column(self.contrasts.repetition_time, dtype, device, ndim)
        steady, _ = spoiled_steady_state(maps["T1"], flip, tr)
        return maps["M0"] * steady * torch.sin(flip)
