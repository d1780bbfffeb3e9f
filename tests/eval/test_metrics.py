"""Metrics: capped NRMSE, scale-invariant M0, B0 RMSE, SSIM against simple cases; the pure-tissue
region and the table of ``lorein eval``."""

import torch

from lorein.eval.metrics import (
    PURE_THRESHOLD,
    constant_map,
    interior_mask,
    map_error,
    nrmse,
    pure_mask,
    ssim,
    ssim_of_map,
)
from lorein.eval.tables import map_table
from tests.helpers import rng


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    g = rng(0)
    ref = 0.5 + torch.rand(3, 10, 12, generator=g)
    mask = torch.zeros(3, 10, 12, dtype=torch.uint8)
    mask[:, 2:8, 3:10] = 1
    return ref, mask


def test_nrmse_naive_formula() -> None:
    ref, mask = _maps()
    x = ref + 0.1
    m = mask.bool()
    expected = float(torch.sqrt(((x - ref)[m] ** 2).sum() / (ref[m] ** 2).sum()))
    assert abs(nrmse(x, ref, mask) - expected) < 1e-6
    assert nrmse(ref, ref, mask) == 0.0


def test_caps_hide_csf_like_outliers() -> None:
    ref, mask = _maps()
    ref[0, 4, 5] = 4.5  # CSF-like T1 above the 3.5 s cap
    x = ref.clone()
    x[0, 4, 5] = 9.0  # wildly wrong, but both above the cap
    assert map_error("T1", x, ref, mask) == 0.0
    x[0, 4, 6] += 0.2  # an error below the cap counts
    assert map_error("T1", x, ref, mask) > 0.0


def test_m0_is_scale_invariant_and_b0_in_hz() -> None:
    ref, mask = _maps()
    assert map_error("M0", 3.7 * ref, ref, mask) < 1e-6
    assert abs(map_error("B0", ref + 2.0, ref, mask) - 2.0) < 1e-5


def test_ssim_identity_and_noise() -> None:
    ref, mask = _maps()
    assert abs(ssim(ref, ref, mask, data_range=1.0) - 1.0) < 1e-6
    noisy = ref + 0.3 * torch.randn(ref.shape, generator=rng(1))
    assert ssim(noisy, ref, mask, data_range=1.0) < 0.9
    assert ssim_of_map("T1", ref, ref, mask) > 0.999


def test_constant_map_is_the_best_constant() -> None:
    """Scanning constants around it finds none with a lower error (T2: some truth above the
    0.2 s cap, whose plain mean would be the wrong constant)."""
    ref, mask = _maps()
    t2 = 0.1 * ref
    t2[0, 3, 4:9] = 2.0  # CSF-like
    for name, truth in (("T1", ref), ("T2", t2), ("B0", 40 * ref - 30)):
        best = map_error(name, constant_map(name, truth, mask), truth, mask)
        value = float(constant_map(name, truth, mask)[0, 0, 0])
        for delta in (-0.2, -0.02, -0.002, 0.002, 0.02, 0.2):
            other = torch.full_like(truth, value + delta * abs(value))
            assert map_error(name, other, truth, mask) > best
    plain_mean = torch.full_like(t2, float(t2[mask.bool()].mean()))
    best_t2 = map_error("T2", constant_map("T2", t2, mask), t2, mask)
    assert map_error("T2", plain_mean, t2, mask) > best_t2 + 0.05


def test_interior_mask_matches_a_neighbour_loop() -> None:
    """Naive check: a voxel is interior iff all 26 neighbours lie in the volume and have its
    label; two labelled boxes in a volume of a third label."""
    labels = torch.zeros(6, 9, 10, dtype=torch.int64)
    labels[:, 1:8, 1:6] = 1
    labels[1:5, 2:7, 6:10] = 2
    mask = (labels > 0).to(torch.uint8)
    got = interior_mask(labels, mask)
    nz, ny, nx = labels.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                inside = 0 < z < nz - 1 and 0 < y < ny - 1 and 0 < x < nx - 1
                near = labels[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] if inside else None
                expected = (
                    near is not None
                    and bool(mask[z, y, x])
                    and bool((near == labels[z, y, x]).all())
                )
                assert bool(got[z, y, x]) == expected, (z, y, x)
    assert bool(got[2, 4, 3])  # inside box 1
    assert not bool(got[0, 4, 3])  # box 1 reaches the first slice: a face voxel
    assert not bool(got[2, 4, 5])  # next to box 2
    assert bool(got[2:4, 3:6, 7:9].all()) and not bool(got[2, 4, 9])  # box 2, its face


def test_interior_of_a_single_slice_asks_its_in_plane_neighbours() -> None:
    """nz = 1: the 8 in-plane neighbours decide (a slice has none in z); each slice of a thicker
    volume is never interior alone, its faces in z being unknown."""
    labels = torch.zeros(1, 9, 10, dtype=torch.int64)
    labels[0, 1:8, 1:6] = 1
    mask = (labels > 0).to(torch.uint8)
    expected = torch.zeros_like(labels, dtype=torch.bool)
    expected[0, 2:7, 2:5] = True  # box 1 without its rim
    assert torch.equal(interior_mask(labels, mask), expected)
    assert not interior_mask(labels.expand(2, 9, 10), mask.expand(2, 9, 10)).any()


def test_pure_mask_keeps_mask_voxels_at_or_above_the_threshold() -> None:
    _, mask = _maps()
    purity = torch.rand(3, 10, 12, generator=rng(1))
    purity[0, 4, 5], purity[0, 4, 6] = PURE_THRESHOLD, PURE_THRESHOLD - 1e-3
    pure = pure_mask(purity, mask)
    assert pure.dtype == torch.bool
    assert torch.equal(pure, mask.bool() & (purity >= 0.9))
    assert pure[0, 4, 5] and not pure[0, 4, 6]


def test_map_table_leads_with_the_pure_region_and_names_the_paper_protocol() -> None:
    scores = {
        "T1": {"nrmse": 0.3, "ssim": 0.8, "pure": 0.05, "interior": 0.1, "constant_map": 0.5},
        "B0": {"rmse_hz": 2.0, "ssim": 0.9, "pure": 1.0, "interior": 1.5, "constant_map": 9.0},
    }
    header, t1, b0 = map_table(scores)
    assert header.split() == [
        "map",
        "pure",
        "paper",
        "protocol",
        "SSIM",
        "constant",
        "map",
        "interior",
    ]
    assert t1.split() == ["T1", "0.0500", "0.3000", "0.800", "0.5000", "0.1000"]
    assert b0.split()[:3] == ["B0", "1.00", "Hz"]
    without = {name: {k: v for k, v in s.items() if k != "pure"} for name, s in scores.items()}
    header, t1, _ = map_table(without)
    assert header.split()[:3] == ["map", "paper", "protocol"] and "pure" not in header
    assert t1.split()[:2] == ["T1", "0.3000"]
