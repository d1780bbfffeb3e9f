"""Step-by-step Bloch simulation of the two sequences, an independent reference for tests.

numpy float64, vectorised over ``P`` voxels; the magnetisation is ``m`` of shape ``[P, 3]``
(``Mx, My, Mz``). Instantaneous pulses are explicit rotation matrices, each free interval is one
affine step ``m <- A m + b`` with the relaxation matrix ``diag(E2, E2, E1)`` followed by the
off-resonance rotation about z, and spoiling zeroes the transverse magnetisation.

Conventions (matching ``lorein.physics.models``): excitation about +y so that a
longitudinal ``Mz`` becomes ``Mx = Mz sin a`` (a positive real signal at TE = 0); off-resonance
``df`` [Hz] rotates ``Mx + i My`` by ``exp(+i 2 pi df t)``. The contrast-table builders at the end
describe the sim1 / sim2 protocols of the paper.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

from lorein.physics.contrasts import ContrastTable

Array = NDArray[np.float64]


class Tissue(NamedTuple):
    """Per-voxel tissue, each ``[P]``: relaxation times [s], off-resonance [Hz], ``M0``."""

    t1: Array
    t2: Array
    t2star: Array
    df: Array
    m0: Array


def rotation_x(angle: Array | float) -> Array:
    """Right-handed rotation about x by ``angle`` [rad]; ``[..., 3, 3]``."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    return np.stack(
        [np.stack([one, zero, zero], -1), np.stack([zero, c, -s], -1), np.stack([zero, s, c], -1)],
        -2,
    )


def rotation_y(angle: Array | float) -> Array:
    """Right-handed rotation about y by ``angle`` [rad]; ``[..., 3, 3]``."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    return np.stack(
        [np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1), np.stack([-s, zero, c], -1)],
        -2,
    )


def rotation_z(angle: Array | float) -> Array:
    """Right-handed rotation about z by ``angle`` [rad]; ``[..., 3, 3]``."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    return np.stack(
        [np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)],
        -2,
    )


def rotate(m: Array, rotation: Array) -> Array:
    """Apply one rotation ``[3, 3]`` or one per voxel ``[P, 3, 3]`` to ``m`` ``[P, 3]``."""
    if rotation.ndim == 2:
        return m @ rotation.T
    return np.einsum("pij,pj->pi", rotation, m)


def free_interval(m: Array, dt: float, t1: Array, t2: Array, df: Array, m0: Array) -> Array:
    """Relaxation and off-resonance precession over ``dt`` [s].

    ``t1``, ``t2`` [s], ``df`` [Hz], ``m0`` are ``[P]``; returns the new ``[P, 3]``.
    """
    e1, e2 = np.exp(-dt / t1), np.exp(-dt / t2)
    relaxation = np.zeros((m.shape[0], 3, 3))
    relaxation[:, 0, 0] = e2
    relaxation[:, 1, 1] = e2
    relaxation[:, 2, 2] = e1
    step = rotation_z(2.0 * math.pi * df * dt) @ relaxation
    recovery = np.zeros_like(m)
    recovery[:, 2] = m0 * (1.0 - e1)
    return np.einsum("pij,pj->pi", step, m) + recovery


def spoil(m: Array) -> Array:
    """Zero the transverse magnetisation."""
    out = m.copy()
    out[:, :2] = 0.0
    return out


def equilibrium(m0: Array) -> Array:
    """``[P, 3]`` magnetisation at rest along z."""
    m = np.zeros((m0.shape[0], 3))
    m[:, 2] = m0
    return m


def gre_repetition(
    m: Array, flip: float, tr: float, echo_times: Array, tissue: Tissue
) -> tuple[Array, NDArray[np.complex128]]:
    """One spoiled GRE repetition: excitation, echoes, free interval TR, spoiling.

    Returns the magnetisation at the end of the TR ``[P, 3]`` and the transverse signal
    ``Mx + i My`` at each echo time ``[n_echoes, P]``.
    """
    t1, t2star, df, m0 = tissue.t1, tissue.t2star, tissue.df, tissue.m0
    excited = rotate(m, rotation_y(flip))
    echoes = np.zeros((len(echo_times), m.shape[0]), dtype=np.complex128)
    for e, te in enumerate(echo_times):
        at_te = free_interval(excited, float(te), t1, t2star, df, m0)
        echoes[e] = at_te[:, 0] + 1j * at_te[:, 1]
    after = spoil(free_interval(excited, tr, t1, t2star, df, m0))
    return after, echoes


def spoiled_gre_steady_state(
    flip: float, tr: float, echo_times: Array, tissue: Tissue, n_repetitions: int
) -> tuple[Array, NDArray[np.complex128]]:
    """Run ``n_repetitions`` spoiled GRE repetitions from equilibrium.

    Returns the magnetisation before the next excitation ``[P, 3]`` and the echo signals of the
    last repetition ``[n_echoes, P]`` (earlier repetitions are not read out).
    """
    m = equilibrium(tissue.m0)
    for _ in range(n_repetitions - 1):
        m, _ = gre_repetition(m, flip, tr, echo_times[:0], tissue)
    return gre_repetition(m, flip, tr, echo_times, tissue)


def t2_preparation(m: Array, tau: float, tissue: Tissue) -> Array:
    """T2 preparation of duration ``tau`` [s]: 90x, tau/2, 180y, tau/2, -90x, spoiling.

    The 180y refocusing pulse cancels the off-resonance phase, so ``Mz -> exp(-tau/T2) Mz``; what
    T1 recovered during ``tau`` ends up transverse after the -90x pulse and is spoiled.
    """
    t1, t2, df, m0 = tissue.t1, tissue.t2, tissue.df, tissue.m0
    m = rotate(m, rotation_x(0.5 * math.pi))
    m = free_interval(m, 0.5 * tau, t1, t2, df, m0)
    m = rotate(m, rotation_y(math.pi))
    m = free_interval(m, 0.5 * tau, t1, t2, df, m0)
    m = rotate(m, rotation_x(-0.5 * math.pi))
    return spoil(m)


def inversion(m: Array, efficiency: Array) -> Array:
    """Imperfect inversion ``Mz -> B Mz``: rotation about x by ``arccos(B)``, then spoiling.

    ``efficiency`` is ``[P]`` with values in [-1, 1].
    """
    return spoil(rotate(m, rotation_x(np.arccos(efficiency))))


def t2ir_segment(
    m: Array,
    tau: float,
    n_readouts: int,
    flip: float,
    tr: float,
    echo_times: Array,
    tissue: Tissue,
    efficiency: Array,
) -> tuple[Array, NDArray[np.complex128]]:
    """One T2IR-GRE segment: T2 prep, inversion, one non-acquired excitation, ``n_readouts``.

    Returns the magnetisation at the end of the segment ``[P, 3]`` and the echo signals
    ``[n_readouts, n_echoes, P]``; readout ``n`` (1-based) is the ``n + 1``-th excitation after
    the inversion.
    """
    m = inversion(t2_preparation(m, tau, tissue), efficiency)
    m, _ = gre_repetition(m, flip, tr, echo_times[:0], tissue)
    readouts = []
    for _ in range(n_readouts):
        m, echoes = gre_repetition(m, flip, tr, echo_times, tissue)
        readouts.append(echoes)
    return m, np.stack(readouts)


def vfa_table(flip_deg: list[float], echo_times: list[float], tr: float) -> ContrastTable:
    """Flip-major VFA multi-echo table: contrast ``t = flip_index * E + echo_index``."""
    n_e = len(echo_times)
    flip = torch.tensor(flip_deg, dtype=torch.float32).deg2rad().repeat_interleave(n_e)
    te = torch.tensor(echo_times, dtype=torch.float32).repeat(len(flip_deg))
    return ContrastTable(flip_angle=flip, echo_time=te, repetition_time=torch.full_like(te, tr))


def sim1_table() -> ContrastTable:
    """Sim 1: TE 2.15 to 35.70 ms step 3.05 ms, TR 46 ms, flips 5, 10, 20, 30, 40 deg (T = 60)."""
    echo_times = [2.15e-3 + 3.05e-3 * e for e in range(12)]
    return vfa_table([5.0, 10.0, 20.0, 30.0, 40.0], echo_times, 46e-3)


def t2ir_table(
    taus: list[float], n_segments: int, echo_times: list[float], tr: float, flip_deg: float
) -> ContrastTable:
    """T2IR-GRE table ordered ``t = (tau_index * n_segments + (n - 1)) * E + echo_index``."""
    n_tau, n_e = len(taus), len(echo_times)
    tau = torch.tensor(taus, dtype=torch.float32).repeat_interleave(n_segments * n_e)
    segment = torch.arange(1, n_segments + 1).repeat_interleave(n_e).repeat(n_tau)
    te = torch.tensor(echo_times, dtype=torch.float32).repeat(n_tau * n_segments)
    return ContrastTable(
        flip_angle=torch.full_like(te, math.radians(flip_deg)),
        echo_time=te,
        repetition_time=torch.full_like(te, tr),
        prep_time=tau,
        segment=segment,
    )


SIM2_TAUS = [25e-3, 50e-3, 70e-3, 90e-3]
SIM2_ECHO_TIMES = [4.5e-3, 11.2e-3, 17.9e-3, 24.6e-3]


def sim2_table(n_segments: int = 80) -> ContrastTable:
    """Sim 2: tau 25/50/70/90 ms, TE 4.5/11.2/17.9/24.6 ms, TR 30 ms, 10 deg (T = 16 n_segments)."""
    return t2ir_table(SIM2_TAUS, n_segments, SIM2_ECHO_TIMES, 30e-3, 10.0)
