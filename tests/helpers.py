"""Shared test helpers: seeded random data and operator checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from lorein.sim.presets import Preset, VfaProtocol


def rng(seed: int = 0) -> torch.Generator:
    """Return a seeded CPU generator; every test draws its data from one."""
    return torch.Generator().manual_seed(seed)


def randn_complex(*shape: int, seed: int = 0) -> torch.Tensor:
    """Complex64 standard normal tensor of the given shape."""
    g = rng(seed)
    re = torch.randn(*shape, generator=g)
    im = torch.randn(*shape, generator=g)
    return torch.complex(re, im)


def dotproduct_adjointness_test(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    u: torch.Tensor,
    v: torch.Tensor,
    rtol: float = 1e-5,
) -> None:
    """Assert <A u, v> == <u, A^H v> for random u (domain) and v (range)."""
    au = forward(u)
    assert au.shape == v.shape, f"range shape {tuple(au.shape)} != {tuple(v.shape)}"
    ahv = adjoint(v)
    assert ahv.shape == u.shape, f"domain shape {tuple(ahv.shape)} != {tuple(u.shape)}"
    lhs = torch.vdot(au.flatten().to(torch.complex128), v.flatten().to(torch.complex128))
    rhs = torch.vdot(u.flatten().to(torch.complex128), ahv.flatten().to(torch.complex128))
    scale = au.abs().norm() * v.abs().norm()
    assert (lhs - rhs).abs() <= rtol * scale, f"<Au,v>={lhs} != <u,A^H v>={rhs}"


TINY = Preset(
    name="tiny",
    signal_model="vfa_megre",
    matrix=(24, 24, 4),
    voxel_size=(9.0, 9.0, 16.0),
    n_coils=4,
    accelerations=(8,),
    calibration=(8, 2),
    shared_echo_lines=False,
)
"""A 24 x 24 x 4, 4-coil ``vfa_megre`` problem for end-to-end tests of reconstruction methods
(simulate it with ``simulate(TINY, 8, seed=..., snr=..., progress=False)``)."""

TINY_MEGRE = replace(
    TINY,
    name="tiny-megre",
    signal_model="megre",
    accelerations=(4,),
    protocol=VfaProtocol((15.0,), 3.0, 4.0, 6, 40.0),
)
""":data:`TINY` as a single-flip-angle ``megre`` protocol: 6 echoes 3-23 ms, TR 40 ms, 15 deg."""


TINY_HASH = {"n_levels": 4, "n_features": 2, "log2_table": 10, "n_min": 4, "growth": "auto"}
TINY_LOREIN_SETTINGS = {
    "rank": 6,
    "dictionary_atoms": 500,
    "iterations": 40,
    "pretrain": 10,
    "coil_warmup": 20,
    "warm_start": 20,
    "lr": 1e-2,
    "decay_every": 20,
    "wnnm_start": 30,
    "cnn_channels": 4,
    "hidden": 16,
    "layers": 2,
    "basis_encoding": TINY_HASH,
    "map_encoding": TINY_HASH,
    "phase_encoding": dict(TINY_HASH, n_min=1, log2_table=8),
    "coil_encoding": {"n_levels": 3, "n_features": 2, "log2_table": 4, "n_min": 1, "growth": 1.5},
}
"""LoREIN settings for :data:`TINY` problems: small hash tables, fields and budgets (seconds)."""
