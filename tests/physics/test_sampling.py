"""Tests of line sampling: R (paper eq. 19), complementarity, calibration, density, determinism."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from lorein.physics.sampling import (
    LineSampling,
    acceleration_factor,
    lines_per_readout,
    sample_lines,
)
from lorein.sim.presets import t2ir_gre_table

SIM1_R = (12, 20, 27, 48)
SIM2_R = (160, 240, 320, 480, 640, 960)
SIM1_PER_CONTRAST = torch.arange(60)  # every contrast its own lines (paper, Zero-DeepSub style)
SIM1_SHARED = torch.arange(60) // 12  # 5 flip angles x 12 echoes sharing their lines
SIM2_SHARED = torch.arange(1280) // 4  # 4 preps x 80 segments x 4 echoes sharing their lines

# (ny, nz, readout of each contrast, R values): full datasets and CPU-sized variants
R_CASES = [
    (ny, nz, readout, R)
    for ny, nz, readouts, rs in (
        (112, 16, (SIM1_PER_CONTRAST, SIM1_SHARED), SIM1_R),
        (56, 8, (SIM1_PER_CONTRAST, SIM1_SHARED), SIM1_R),
        (240, 14, (SIM2_SHARED,), SIM2_R),
        (80, 8, (SIM2_SHARED,), SIM2_R),
        (56, 8, (SIM2_SHARED,), SIM2_R),
    )
    for readout in readouts
    for R in rs
]


def first_echo_lines(sampling: LineSampling, readout: torch.Tensor) -> torch.Tensor:
    """Flat locations ``kz * ny + ky`` of the readout-lines, in acquisition (row) order."""
    first_contrast = torch.zeros(readout.numel(), dtype=torch.bool)
    for r in torch.unique(readout):
        first_contrast[torch.nonzero(readout == r)[0]] = True
    rows = first_contrast[sampling.contrast]
    return (sampling.kz * sampling.shape[0] + sampling.ky)[rows]


def radius(ny: int, nz: int) -> torch.Tensor:
    """``[nz, ny]`` normalised elliptical k-space radius, 1 at the edge centres."""
    kz, ky = torch.meshgrid(torch.arange(nz), torch.arange(ny), indexing="ij")
    return torch.hypot((ky - ny // 2) / (ny / 2), (kz - nz // 2) / (nz / 2))


def test_acceleration_factor_is_eq19() -> None:
    # 60 contrasts on 112 x 16 with 2240 lines: 60 * 1792 / 2240
    assert acceleration_factor(60, 112, 16, 2240) == pytest.approx(48.0)
    with pytest.raises(ValueError, match="positive"):
        acceleration_factor(60, 112, 16, 0)


def test_line_sampling_mask_counts_union_and_r() -> None:
    sampling = LineSampling(
        ky=torch.tensor([0, 3, 3, 1]),
        kz=torch.tensor([1, 0, 0, 1]),
        contrast=torch.tensor([0, 1, 1, 1]),
        shape=(4, 2),
        n_contrasts=3,
    )
    mask = sampling.mask()
    assert mask.shape == (3, 2, 4) and mask.dtype == torch.float32
    assert mask[0, 1, 0] == 1 and mask[1, 0, 3] == 2 and mask[1, 1, 1] == 1
    assert mask.sum() == 4 and mask[2].sum() == 0
    expected_union = torch.tensor([[False, False, False, True], [True, True, False, False]])
    assert torch.equal(sampling.union(), expected_union)
    assert sampling.acceleration() == pytest.approx(3 * 4 * 2 / 4)


@pytest.mark.parametrize(
    "change",
    [
        {"ky": torch.tensor([0, 4])},  # out of range
        {"contrast": torch.tensor([0, 3])},  # out of range
        {"kz": torch.tensor([0, 1], dtype=torch.int32)},  # wrong dtype
        {"kz": torch.tensor([0])},  # wrong length
    ],
)
def test_line_sampling_rejects_bad_rows(change: dict[str, torch.Tensor]) -> None:
    rows = {
        "ky": torch.tensor([0, 1]),
        "kz": torch.tensor([0, 1]),
        "contrast": torch.tensor([0, 2]),
    }
    rows.update(change)
    with pytest.raises(ValueError):
        LineSampling(**rows, shape=(4, 2), n_contrasts=3)


@pytest.mark.parametrize(("ny", "nz", "readout", "R"), R_CASES)
def test_planned_r_within_two_percent(ny: int, nz: int, readout: torch.Tensor, R: float) -> None:
    per = lines_per_readout(ny, nz, readout, R)
    echoes = torch.bincount(readout)
    achieved = acceleration_factor(readout.numel(), ny, nz, int((per * echoes).sum()))
    assert abs(achieved / R - 1) <= 0.02
    assert int(per.max() - per.min()) <= 1


@pytest.mark.parametrize("pattern", ["vd-random", "poisson"])
@pytest.mark.parametrize(
    ("ny", "nz", "readout", "R"),
    [
        (56, 8, SIM1_PER_CONTRAST, 27),
        (56, 8, SIM1_SHARED, 48),
        (80, 8, SIM2_SHARED, 960),
        (56, 8, SIM2_SHARED, 960),
    ],
)
def test_sampling_reaches_r_and_spreads_lines(
    ny: int, nz: int, readout: torch.Tensor, R: float, pattern: str
) -> None:
    sampling = sample_lines(ny, nz, readout, R, pattern=pattern, calib=(8, 2), seed=3)
    assert abs(sampling.acceleration() / R - 1) <= 0.02
    assert sampling.shape == (ny, nz) and sampling.n_contrasts == readout.numel()
    n_readouts = int(readout.max()) + 1
    rows = torch.bincount(readout[sampling.contrast], minlength=n_readouts)
    per_readout = rows // torch.bincount(readout)
    assert torch.equal(per_readout, lines_per_readout(ny, nz, readout, R))
    # a contrast never samples a location twice
    assert sampling.mask().max() == 1


@pytest.mark.parametrize("pattern", ["vd-random", "poisson"])
def test_sim2_full_size_covers_k_space(pattern: str) -> None:
    sampling = sample_lines(240, 14, SIM2_SHARED, 160, pattern=pattern, calib=(24, 6), seed=0)
    assert sampling.acceleration() == pytest.approx(160.0)
    assert sampling.union().all()


@pytest.mark.parametrize(
    ("ny", "nz", "readout", "R"),
    [
        (56, 8, SIM1_PER_CONTRAST, 12),  # 2240 readout-lines > 448 locations
        (56, 8, SIM1_PER_CONTRAST, 48),  # 560 > 448
        (80, 8, SIM2_SHARED, 320),  # 640 == 640
        (80, 8, SIM2_SHARED, 960),  # 213 < 640
    ],
)
@pytest.mark.parametrize("pattern", ["vd-random", "poisson"])
def test_first_pass_is_distinct_and_union_covers_when_budget_allows(
    ny: int, nz: int, readout: torch.Tensor, R: float, pattern: str
) -> None:
    sampling = sample_lines(ny, nz, readout, R, pattern=pattern, calib=(4, 2), seed=1)
    lines = first_echo_lines(sampling, readout)
    first = lines[: min(lines.numel(), ny * nz)]
    assert torch.unique(first).numel() == first.numel()
    union = sampling.union()
    if lines.numel() >= ny * nz:
        assert union.all()
    else:
        assert int(union.sum()) == lines.numel()


def test_readouts_get_different_lines() -> None:
    # sim1 with shared echoes at R = 12: 5 readouts share 747 lines, fewer than 1792 locations
    sampling = sample_lines(112, 16, SIM1_SHARED, 12, calib=(24, 8), seed=0)
    masks = sampling.mask()[::12]  # first echo of each flip angle
    assert masks.sum(0).max() == 1  # no location twice before every location once


@pytest.mark.parametrize("pattern", ["vd-random", "poisson"])
def test_calibration_region_is_covered(pattern: str) -> None:
    ny, nz, ccy, ccz = 80, 8, 12, 4
    sampling = sample_lines(ny, nz, SIM2_SHARED, 960, pattern=pattern, calib=(ccy, ccz), seed=2)
    union = sampling.union()
    assert not union.all()
    y0, z0 = ny // 2 - ccy // 2, nz // 2 - ccz // 2
    assert union[z0 : z0 + ccz, y0 : y0 + ccy].all()


def test_echoes_of_a_readout_share_their_lines() -> None:
    table = t2ir_gre_table(n_segments=6)  # 4 preps x 6 segments x 4 echoes = 96 contrasts
    readout = table.readout_index()
    sampling = sample_lines(40, 6, readout, 60, pattern="poisson", calib=(4, 2), seed=0)
    mask = sampling.mask()
    for r in range(int(readout.max()) + 1):
        contrasts = torch.nonzero(readout == r).squeeze(1)
        assert contrasts.numel() == 4
        for t in contrasts[1:]:
            assert torch.equal(mask[t], mask[contrasts[0]])
    # rows of one readout-line are consecutive, one per echo, in contrast order
    groups = sampling.contrast.view(-1, 4)
    assert torch.equal(groups, groups[:, :1] + torch.arange(4))
    assert torch.equal(sampling.ky.view(-1, 4), sampling.ky.view(-1, 4)[:, :1].expand(-1, 4))


@pytest.mark.parametrize(
    ("ny", "nz", "readout", "R"),
    [
        (112, 16, SIM1_PER_CONTRAST, 27),  # 3982 lines: one pass and density-weighted repeats
        (80, 8, SIM2_SHARED, 960),  # 213 lines: a density-weighted subset
    ],
)
def test_centre_is_sampled_more_often_than_periphery(
    ny: int, nz: int, readout: torch.Tensor, R: float
) -> None:
    rho = radius(ny, nz)
    edges = (0.0, 0.3, 0.6, 0.9, 1.5)

    def profile(power: float) -> list[float]:
        sampling = sample_lines(ny, nz, readout, R, calib=(0, 0), seed=4, density_power=power)
        counts = sampling.mask().sum(0)
        return [float(counts[(rho >= a) & (rho < b)].mean()) for a, b in pairwise(edges)]

    dense = profile(2.0)
    assert all(a > b for a, b in pairwise(dense)), dense
    assert dense[0] > 2 * dense[-1]
    flat = profile(0.0)
    assert max(flat) < 1.3 * min(flat), flat


def test_poisson_spaces_lines_within_a_readout() -> None:
    def mean_nearest_neighbour(pattern: str) -> float:
        sampling = sample_lines(112, 16, SIM1_PER_CONTRAST, 27, pattern=pattern, calib=(0, 0))
        distances = []
        for t in range(0, 60, 6):
            rows = sampling.contrast == t
            points = torch.stack([sampling.ky[rows], sampling.kz[rows]], 1).float()
            d = torch.cdist(points, points).fill_diagonal_(float("inf"))
            distances.append(d.min(1).values.mean())
        return float(torch.stack(distances).mean())

    assert mean_nearest_neighbour("poisson") > 1.2 * mean_nearest_neighbour("vd-random")


@pytest.mark.parametrize("pattern", ["vd-random", "poisson"])
def test_seed_determines_the_pattern(pattern: str) -> None:
    def draw(seed: int) -> LineSampling:
        return sample_lines(56, 8, SIM1_PER_CONTRAST, 20, pattern=pattern, calib=(8, 2), seed=seed)

    a, b, c = draw(7), draw(7), draw(8)
    assert torch.equal(a.ky, b.ky) and torch.equal(a.kz, b.kz)
    assert torch.equal(a.contrast, b.contrast)
    assert not torch.equal(a.mask(), c.mask())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"R": 0.5}, "R must be >= 1"),
        ({"R": 1e6}, "cannot be reached"),
        ({"calib": (60, 2)}, "does not fit"),
        ({"calib": (8, 9)}, "does not fit"),
        ({"calib": (56, 8), "R": 400}, "too few to cover"),
        ({"pattern": "radial"}, "unknown pattern"),
        ({"density_power": -1.0}, "density_power"),
        ({"readout": torch.zeros(60)}, "integer"),
        ({"readout": torch.zeros(6, 10, dtype=torch.int64)}, "1-D"),
        ({"ny": 0}, "does not fit|at least"),
    ],
)
def test_impossible_requests_raise(kwargs: dict[str, object], message: str) -> None:
    args = {"ny": 56, "nz": 8, "readout": SIM1_PER_CONTRAST, "R": 20}
    options = {"pattern": "vd-random", "calib": (8, 2)}
    for key, value in kwargs.items():
        (args if key in args else options)[key] = value
    with pytest.raises(ValueError, match=message):
        sample_lines(args["ny"], args["nz"], args["readout"], args["R"], **options)


@pytest.mark.parametrize("pattern", ["vd-random", "poisson"])
def test_a_single_slice_is_undersampled_along_ky_alone(pattern: str) -> None:
    """nz = 1 (2D): every line at kz = 0, each contrast about ny / R of the ky lines, the
    calibration lines in the union, the centre sampled more often than the edges."""
    ny, R = 64, 3
    readout = torch.arange(12)
    sampling = sample_lines(ny, 1, readout, R, pattern=pattern, calib=(12, 1), seed=3)
    assert sampling.shape == (ny, 1) and bool((sampling.kz == 0).all())
    assert abs(sampling.acceleration() / R - 1) <= 0.02
    per_contrast = sampling.mask()[:, 0, :]  # [T, ny]
    assert per_contrast.max() == 1
    lines = per_contrast.sum(1)
    assert int(lines.max() - lines.min()) <= 1 and abs(float(lines.mean()) - ny / R) <= 1
    assert bool(sampling.union()[0, ny // 2 - 6 : ny // 2 + 6].all())
    density = per_contrast.mean(0)
    assert (
        density[ny // 2 - 8 : ny // 2 + 8].mean()
        > 2 * torch.cat([density[:8], density[-8:]]).mean()
    )
