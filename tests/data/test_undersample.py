"""Retrospective undersampling: kept lines are measured lines, R, complementary contrasts,
shared echo lines, 2D, and the refusals."""

from __future__ import annotations

import pytest
import torch

from lorein.data.problem import Problem, ProblemFileError
from lorein.data.undersample import undersample
from lorein.physics.contrasts import ContrastTable
from tests.helpers import randn_complex


def fully_sampled(ny: int = 12, nz: int = 4, repeat: bool = False) -> Problem:
    """Two flip angles x two echoes; every contrast at every (ky, kz), plus repeats if asked."""
    ky, kz = (
        g.flatten() for g in torch.meshgrid(torch.arange(ny), torch.arange(nz), indexing="xy")
    )
    n = ny * nz
    contrast = torch.arange(4).repeat_interleave(n)
    ky, kz = ky.repeat(4), kz.repeat(4)
    if repeat:  # a second average of contrast 1
        contrast = torch.cat([contrast, torch.full((n,), 1)])
        ky, kz = torch.cat([ky, ky[:n]]), torch.cat([kz, kz[:n]])
    table = ContrastTable(
        flip_angle=torch.tensor([0.1, 0.1, 0.3, 0.3]),
        echo_time=torch.tensor([0.003, 0.008, 0.003, 0.008]),
        repetition_time=torch.full((4,), 0.02),
    )
    return Problem(
        signal_model="vfa_megre",
        kspace=randn_complex(len(ky), 2, 6, seed=2),
        ky=ky,
        kz=kz,
        contrast=contrast,
        contrasts=table,
        matrix=(6, ny, nz),
        voxel_size=(1.0, 1.0, 1.0),
        affine=torch.eye(4, dtype=torch.float64).numpy(),
    )


def test_kept_lines_are_the_measured_lines() -> None:
    full = fully_sampled(repeat=True)
    kept = undersample(full, 3.0, seed=4)
    assert kept.acceleration == pytest.approx(3.0, rel=0.02)
    # every kept line is the first acquisition of its (contrast, ky, kz) in the input
    for i in range(kept.n_lines):
        same = (
            (full.contrast == kept.contrast[i]) & (full.ky == kept.ky[i]) & (full.kz == kept.kz[i])
        )
        first = int(torch.nonzero(same)[0])
        assert torch.equal(kept.kspace[i], full.kspace[first])
    # complementary: the contrasts together cover more locations than any one of them
    locations = kept.kz * 12 + kept.ky
    per_contrast = [len(torch.unique(locations[kept.contrast == t])) for t in range(4)]
    assert len(torch.unique(locations)) > max(per_contrast)


def test_shared_echo_lines() -> None:
    kept = undersample(fully_sampled(), 2.0, shared_echo_lines=True, seed=1)
    for echo_a, echo_b in ((0, 1), (2, 3)):  # the two echoes of each flip angle
        a = kept.kz[kept.contrast == echo_a] * 12 + kept.ky[kept.contrast == echo_a]
        b = kept.kz[kept.contrast == echo_b] * 12 + kept.ky[kept.contrast == echo_b]
        assert torch.equal(torch.sort(a).values, torch.sort(b).values)


def test_2d_undersamples_ky_only() -> None:
    kept = undersample(fully_sampled(ny=40, nz=1), 4.0, pattern="poisson", seed=0)
    assert (kept.kz == 0).all() and kept.acceleration == pytest.approx(4.0, rel=0.02)
    # R = 4 over 4 contrasts: every ky once in the union
    assert torch.equal(torch.sort(kept.ky).values, torch.arange(40))


def test_refusals() -> None:
    half = undersample(fully_sampled(), 2.0)
    with pytest.raises(
        ProblemFileError,
        match=r"/kspace: expected a fully sampled problem .*"
        r"found contrast 0 without \d+ of them",
    ):
        undersample(half, 2.0)
    with pytest.raises(ValueError, match=r"--R: expected an acceleration factor >= 1, found 0.5"):
        undersample(fully_sampled(), 0.5)
    with pytest.raises(ValueError, match=r"--R 1000: the vd-random pattern cannot sample 4 "):
        undersample(fully_sampled(), 1000.0)
