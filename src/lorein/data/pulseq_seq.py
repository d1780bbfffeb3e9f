"""What a Pulseq ``.seq`` file (format 1.4) says about a Cartesian GRE acquisition.

A Siemens raw file written by a Pulseq sequence numbers every readout in the line counter; the
protocol's matrix, TE, TR and flip angle are those of the interpreter, not of the sequence. The
sequence file holds the truth, and :func:`read_seq` reads just enough of it: the block table,
RF pulses, trapezoid gradients, ADC events and shapes. From them, per ADC event, the k-space
position at the readout centre (gradient areas since the centre of the last RF pulse), the
echo time (RF centre to ADC centre, the readout's k-space centre sample being ``n // 2``),
and per excitation the flip angle and TR.

Conventions of the Pulseq 1.4 format used here: gradient amplitudes in Hz/m, times in us,
ADC dwell in ns, RF amplitude in Hz, RF phase shapes in cycles; an RF pulse's centre is the
mean time of its magnitude peak (as ``mr.calcRfCenter`` of Pulseq 1.4), its flip angle
``2 pi amplitude |sum(m exp(2 pi i p)) dt|``. Arbitrary-shape gradients, refocusing pulses and
other format versions are refused; give the sequence parameters in the import sidecar then.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from lorein.data.problem import ProblemFileError

_PHASE_TOLERANCE = 0.05  # |area * FOV - nearest integer| allowed for a phase-encoding step


def _fail(source: str, where: str, message: str) -> NoReturn:
    raise ProblemFileError(source, where, message)


@dataclass(frozen=True)
class SeqReadouts:
    """The ADC events of a Pulseq sequence, in acquisition order.

    Attributes
    ----------
    k_index
        ``[n_adc, 3]`` int64 k-space grid offsets (kx, ky, kz) from the centre at the readout's
        centre sample: gradient area since the last RF centre times the field of view.
    echo
        ``[n_adc]`` int64 index of the ADC among those of its excitation (0 = first echo).
    echo_time
        ``[n_echoes]`` float64 echo times [s], RF centre to ADC centre.
    repetition_time
        TR [s]: time between consecutive RF centres.
    flip_angle
        Flip angle [rad] of the excitation pulses.
    fov
        ``[3]`` float64 field of view [m] from ``[DEFINITIONS] FOV``.
    readout_fov
        Encoded field of view along the readout [m]: ``1 / (readout amplitude * dwell)``;
        larger than ``fov[0]`` for an oversampled readout.
    n_samples
        Samples per ADC event.
    """

    k_index: np.ndarray
    echo: np.ndarray
    echo_time: np.ndarray
    repetition_time: float
    flip_angle: float
    fov: np.ndarray
    readout_fov: float
    n_samples: int

    @property
    def echoes_per_excitation(self) -> int:
        """ADC events per excitation."""
        return len(self.echo_time)


def _sections(text: str) -> dict[str, list[list[str]]]:
    """``[NAME]`` sections as lists of whitespace-split lines, comments dropped."""
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None:
            current.append(line.split())
    return sections


def _table(rows: list[list[str]], width: int, name: str, source: str) -> dict[int, np.ndarray]:
    """``id value...`` rows of a section as id -> ``[width]`` float64."""
    out = {}
    for row in rows:
        if len(row) != width + 1:
            _fail(source, f"[{name}]", f"expected {width + 1} numbers per line, found {row}")
        out[int(row[0])] = np.asarray(row[1:], dtype=np.float64)
    return out


def _shapes(rows: list[list[str]], source: str) -> dict[int, np.ndarray]:
    """``[SHAPES]``: id -> decompressed samples (run-length-coded derivative, as Pulseq)."""
    shapes: dict[int, np.ndarray] = {}
    i = 0
    while i < len(rows):
        if rows[i][0] != "shape_id" or rows[i + 1][0] != "num_samples":
            _fail(source, "[SHAPES]", f"expected shape_id and num_samples, found {rows[i]}")
        shape_id, n = int(rows[i][1]), int(rows[i + 1][1])
        i += 2
        packed = []
        while i < len(rows) and rows[i][0] != "shape_id":
            packed.append(float(rows[i][0]))
            i += 1
        shapes[shape_id] = _decompress(np.asarray(packed), n, shape_id, source)
    return shapes


def _decompress(packed: np.ndarray, n: int, shape_id: int, source: str) -> np.ndarray:
    if len(packed) == n:  # stored uncompressed
        return packed
    deltas = []
    k = 0
    while k < len(packed):
        deltas.append(packed[k])
        if k + 2 < len(packed) and packed[k] == packed[k + 1]:
            deltas.extend([packed[k]] * (int(round(packed[k + 2])) + 1))
            k += 3
        else:
            k += 1
    if len(deltas) != n:
        _fail(source, f"[SHAPES] {shape_id}", f"expected {n} samples, found {len(deltas)}")
    return np.cumsum(deltas)


def _trap_area(trap: np.ndarray, start: float, lo: float, hi: float) -> float:
    """Area [1/m] of a trapezoid (amplitude, rise, flat, fall, delay [us]) starting at block
    time ``start`` [s] between times ``lo`` and ``hi`` [s]."""
    amplitude, rise, flat, fall, delay = trap
    corners = start + 1e-6 * np.cumsum([delay, rise, flat, fall])
    times = np.array([corners[0], corners[1], corners[2], corners[3]])
    values = np.array([0.0, amplitude, amplitude, 0.0])
    grid = np.unique(np.clip(np.concatenate([times, [lo, hi]]), lo, hi))
    wave = np.interp(grid, times, values, left=0.0, right=0.0)
    return float(np.sum((wave[1:] + wave[:-1]) / 2 * np.diff(grid)))


def read_seq(path: str | os.PathLike[str]) -> SeqReadouts:
    """Read the readouts of a Cartesian GRE Pulseq sequence (format 1.4).

    Parameters
    ----------
    path
        The ``.seq`` file the raw data were acquired with.

    Returns
    -------
    Per ADC event its k-space offsets and echo index; echo times, TR, flip angle and fields of
    view (:class:`SeqReadouts`).

    Raises
    ------
    ProblemFileError
        One line naming the file and section: missing file or section, another format version,
        arbitrary gradients, a gradient area that is no whole phase-encoding step, echo times,
        TR or echoes per excitation that change between excitations.
    """
    source = str(path)
    p = Path(path)
    if not p.is_file():
        _fail(source, "/", "expected a Pulseq .seq file, found no such file")
    sections = _sections(p.read_text(errors="replace"))
    version = {row[0]: row[1] for row in sections.get("VERSION", []) if len(row) == 2}
    if (version.get("major"), version.get("minor")) != ("1", "4"):
        found = f"{version.get('major')}.{version.get('minor')}" if version else "none"
        _fail(source, "[VERSION]", f"expected Pulseq format 1.4, found {found}")
    for name in ("DEFINITIONS", "BLOCKS", "RF", "ADC", "SHAPES"):
        if name not in sections:
            _fail(source, f"[{name}]", "expected the section, found none")
    if "GRADIENTS" in sections:
        _fail(
            source,
            "[GRADIENTS]",
            "expected trapezoid gradients only; give echoes_per_excitation, echo_time_ms, "
            "repetition_time_ms and flip_angle_deg in the import sidecar instead",
        )
    definitions = {row[0]: row[1:] for row in sections["DEFINITIONS"]}
    if len(definitions.get("FOV", [])) != 3:
        _fail(source, "[DEFINITIONS] FOV", "expected three numbers [m], found none")
    fov = np.asarray(definitions["FOV"], dtype=np.float64)
    block_raster = float(definitions.get("BlockDurationRaster", ["1e-5"])[0])
    rf_raster = float(definitions.get("RadiofrequencyRasterTime", ["1e-6"])[0])

    blocks = np.asarray(sections["BLOCKS"], dtype=np.int64)
    if blocks.ndim != 2 or blocks.shape[1] != 8:
        _fail(source, "[BLOCKS]", "expected 8 numbers per block (1.4 format)")
    starts = np.concatenate([[0.0], np.cumsum(blocks[:, 1] * block_raster)[:-1]])
    rfs = _table(sections["RF"], 7, "RF", source)
    traps = _table(sections.get("TRAP", []), 5, "TRAP", source)
    adcs = _table(sections["ADC"], 5, "ADC", source)
    shapes = _shapes(sections["SHAPES"], source)

    rf_centres: list[float] = []
    flips: list[float] = []
    readout = []  # (centre [s], samples, dwell [s], readout trapezoid, excitation)
    areas = []  # gradient areas [1/m] from the RF centre to each ADC centre
    pending: list[tuple[np.ndarray, float, int]] = []  # (trapezoid, block start, axis) since RF
    for number, (_, _, rf, gx, gy, gz, adc, _), start in zip(
        blocks[:, 0], blocks, starts, strict=True
    ):
        if rf:
            amplitude, mag_id, phase_id, time_id, delay = rfs[rf][:5]
            if time_id:
                _fail(source, f"[RF] {rf}", "expected the default RF raster, found a time shape")
            magnitude = shapes[int(mag_id)]
            t = (np.arange(len(magnitude)) + 0.5) * rf_raster
            peak = np.abs(magnitude) >= 0.99999 * np.abs(magnitude).max()
            rf_centres.append(start + delay * 1e-6 + float(t[peak].mean()))
            pulse = magnitude * np.exp(2j * math.pi * shapes[int(phase_id)])
            flips.append(2 * math.pi * amplitude * abs(pulse.sum()) * rf_raster)
            pending = []
        for axis, g in enumerate((gx, gy, gz)):
            if g:
                if g not in traps:
                    _fail(source, f"[BLOCKS] {number}", f"expected a [TRAP] event, found id {g}")
                pending.append((traps[g], start, axis))
        if adc:
            if not rf_centres:
                _fail(source, f"[BLOCKS] {number}", "expected an RF pulse before the ADC")
            num, dwell, delay = adcs[adc][:3]
            centre = start + delay * 1e-6 + num / 2 * dwell * 1e-9
            area = np.zeros(3)
            for trap, t0, axis in pending:
                area[axis] += _trap_area(trap, t0, rf_centres[-1], centre)
            areas.append(area)
            readout.append((centre, int(num), dwell * 1e-9, traps.get(gx), len(rf_centres) - 1))
    if not readout:
        _fail(source, "[ADC]", "expected ADC events, found none")
    samples = {r[1] for r in readout}
    if len(samples) != 1:
        _fail(source, "[ADC]", f"expected one number of samples, found {sorted(samples)}")
    which_rf = np.array([r[4] for r in readout])
    area = np.array(areas)

    readout_trap = readout[0][3]
    if readout_trap is None or readout_trap[0] == 0:
        _fail(source, "[BLOCKS]", "expected a readout gradient (GX) during each ADC")
    n_samples = samples.pop()
    readout_fov = 1.0 / abs(readout_trap[0] * readout[0][2])
    k = area * np.array([readout_fov, fov[1], fov[2]])
    k_index = np.round(k).astype(np.int64)
    off = np.abs(k - k_index)
    bad = off.max(axis=0) > _PHASE_TOLERANCE
    if bad.any():
        axis = "xyz"[int(np.flatnonzero(bad)[0])]
        _fail(
            source,
            f"[BLOCKS] G{axis.upper()}",
            f"expected gradient areas at the readout centre in whole steps of 1/FOV, found "
            f"{off.max():.2f} steps off on {axis} (asymmetric echo, or a FOV other than "
            f"[DEFINITIONS] FOV)",
        )

    # echoes: ADC index within its excitation
    echo_index = np.zeros(len(readout), dtype=np.int64)
    for a in range(1, len(readout)):
        same = which_rf[a] == which_rf[a - 1]
        echo_index[a] = echo_index[a - 1] + 1 if same else 0
    n_echoes = int(echo_index.max()) + 1
    counts = np.bincount(which_rf[which_rf >= 0])
    counts = counts[counts > 0]
    if (counts != n_echoes).any():
        _fail(
            source,
            "[BLOCKS]",
            f"expected the same number of ADC events after each excitation, found "
            f"{sorted(set(counts.tolist()))}",
        )
    te = np.array([r[0] for r in readout]) - np.array(rf_centres)[which_rf]
    echo_times = np.array([te[echo_index == e].mean() for e in range(n_echoes)])
    if np.abs(te - echo_times[echo_index]).max() > 1e-6:
        _fail(source, "[BLOCKS]", "expected the same echo times after every excitation")
    excited = np.unique(which_rf)
    centres = np.array(rf_centres)[excited]
    tr = np.diff(centres)
    if len(tr) and np.abs(tr - tr[0]).max() > 1e-6:
        _fail(source, "[BLOCKS]", f"expected one TR, found {tr.min():.6g} .. {tr.max():.6g} s")
    flip = np.array(flips)[excited]
    if np.abs(flip - flip[0]).max() > 1e-3:
        _fail(source, "[RF]", "expected one flip angle for all excitations")
    return SeqReadouts(
        k_index=k_index,
        echo=echo_index,
        echo_time=echo_times,
        repetition_time=float(tr[0]) if len(tr) else float("nan"),
        flip_angle=float(flip[0]),
        fov=fov,
        readout_fov=readout_fov,
        n_samples=n_samples,
    )
