"""The contrast table: one row per acquired time point, sequence parameters in SI units."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class ContrastTable:
    """Sequence parameters of each contrast (time point).

    Attributes
    ----------
    flip_angle
        ``[T]`` float32, excitation flip angle [rad].
    echo_time
        ``[T]`` float32, echo time [s].
    repetition_time
        ``[T]`` float32, repetition time [s].
    prep_time
        ``[T]`` float32, T2-preparation duration tau [s]; ``t2ir_gre`` only.
    segment
        ``[T]`` int64, readout index n within the inversion-recovery period, counted from 1;
        ``t2ir_gre`` only.
    """

    flip_angle: torch.Tensor
    echo_time: torch.Tensor
    repetition_time: torch.Tensor
    prep_time: torch.Tensor | None = None
    segment: torch.Tensor | None = None

    @property
    def n_contrasts(self) -> int:
        """Number of contrasts T."""
        return int(self.echo_time.shape[0])

    def columns(self) -> dict[str, torch.Tensor]:
        """The non-empty columns by name, as stored in the problem file's ``contrasts/`` group."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    def subset(self, index: torch.Tensor | slice) -> ContrastTable:
        """The rows ``index`` of the table, as a new table."""
        return ContrastTable(**{name: col[index] for name, col in self.columns().items()})

    def to(self, device: torch.device | str) -> ContrastTable:
        """The table on ``device``."""
        return ContrastTable(**{name: col.to(device) for name, col in self.columns().items()})

    def echo_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of each contrast's echo time among the distinct echo times.

        Returns
        -------
        echo_times
            ``[E]`` sorted distinct echo times [s].
        index
            ``[T]`` int64, position of each contrast's echo time in ``echo_times``.
        """
        echo_times, index = torch.unique(self.echo_time, sorted=True, return_inverse=True)
        return echo_times, index

    def readout_index(self) -> torch.Tensor:
        """Readout (excitation) each contrast belongs to: contrasts that differ only in echo time.

        Echoes of one readout are acquired after the same excitation and share their (ky, kz) line
        when the sampling says so.

        Returns
        -------
        ``[T]`` int64 readout id, numbered in order of first appearance.
        """
        keys = [self.flip_angle, self.repetition_time]
        if self.prep_time is not None:
            keys.append(self.prep_time)
        if self.segment is not None:
            keys.append(self.segment.to(self.flip_angle.dtype))
        stacked = torch.stack([k.to(torch.float64) for k in keys], dim=1)
        _, inverse = torch.unique(stacked, dim=0, return_inverse=True)
        # renumber in order of first appearance so ids follow acquisition order
        order: dict[int, int] = {}
        out = torch.empty_like(inverse)
        for i, v in enumerate(inverse.tolist()):
            out[i] = order.setdefault(v, len(order))
        return out
