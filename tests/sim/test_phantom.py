"""Digital brain phantom: maps and tables, anatomy, resolution independence, fields."""

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lorein.sim.phantom import (
    MAP_NAMES,
    TISSUE_GROUPS,
    TISSUE_JITTER,
    TISSUES,
    BrainPhantom,
    PhantomMaps,
    grid_affine,
)

SIM1 = ((112, 112, 16), (1.96, 1.96, 4.0))  # the paper's sim 1 grid: 219.5 x 219.5 x 64 mm


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """These tensors are small: on shared CPUs extra threads only add synchronisation time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantom() -> BrainPhantom:
    return BrainPhantom(seed=0)


@pytest.fixture(scope="module")
def sim1(phantom: BrainPhantom) -> PhantomMaps:
    return phantom.render(*SIM1)


def grid_points(maps: PhantomMaps) -> torch.Tensor:
    """``[nz, ny, nx, 3]`` voxel centres [mm] of a render, from its affine."""
    nx, ny, nz = maps.matrix
    k, j, i = torch.meshgrid(torch.arange(nz), torch.arange(ny), torch.arange(nx), indexing="ij")
    index = torch.stack([i, j, k, torch.ones_like(i)], -1).double()
    return (index @ torch.from_numpy(maps.affine).T)[..., :3].float()


def ray_labels(
    phantom: BrainPhantom, z: float, angles: np.ndarray, r_max: float, step: float
) -> torch.Tensor:
    """``[n_angles, n_steps]`` labels along rays in the axial plane at ``z`` [mm], from the
    outside (radius ``r_max`` [mm]) inwards to the z axis."""
    radii = torch.arange(r_max, 0.0, -step)
    a = torch.tensor(angles, dtype=torch.float32)[:, None]
    x, y = radii * torch.cos(a), radii * torch.sin(a)
    points = torch.stack([x, y, torch.full_like(x, z)], -1).reshape(-1, 3)
    return phantom.labels_at(points).view(len(angles), len(radii))


def test_maps_have_shapes_dtypes_and_geometry(sim1: PhantomMaps) -> None:
    for name in MAP_NAMES:
        v = getattr(sim1, name)
        assert v.shape == (16, 112, 112) and v.dtype == torch.float32, name
        assert torch.isfinite(v).all(), name
    assert sim1.mask.dtype == torch.uint8 and sim1.labels.dtype == torch.int8
    assert sim1.matrix == (112, 112, 16) and sim1.voxel_size == (1.96, 1.96, 4.0)
    np.testing.assert_allclose(sim1.affine @ [56, 56, 8, 1], [0, 0, 0, 1])
    np.testing.assert_allclose(sim1.affine @ [57, 55, 9, 1], [1.96, -1.96, 4.0, 1])
    np.testing.assert_array_equal(grid_affine((5, 4, 3), (2.0, 1.0, 3.0))[:3, 3], [-4, -2, -3])
    assert set(sim1.tissues) == set(TISSUES)


def test_map_values_follow_the_tissue_table(sim1: PhantomMaps) -> None:
    labels = sim1.labels
    air = labels == TISSUES["air"].label
    for name in MAP_NAMES:
        assert (getattr(sim1, name)[air] == 0).all(), name
    assert 0.0 <= sim1.M0.min() and sim1.M0.max() <= 1.0
    for name, t in sim1.tissues.items():
        if name == "air":
            continue
        inside = sim1.tissue_mask(name)
        assert inside.sum() > 0, f"{name} missing from the sim 1 slab"
        for map_name, value in (("M0", t.pd), ("T1", t.t1), ("T2", t.t2), ("T2star", t.t2star)):
            v = getattr(sim1, map_name)[inside]
            # Within-tissue texture: a few per cent, never piecewise constant.
            assert ((v - value).abs() <= 0.12 * value + 1e-6).all(), (name, map_name)
            # Small structures sit on one patch of the smooth texture: a looser median.
            tolerance = 0.03 if inside.sum() > 5000 else 0.08
            assert abs(float(v.median()) / value - 1) < tolerance, (name, map_name)
            if map_name != "M0" or value < 0.95:  # CSF M0 is clipped at 1
                assert float(v.std()) > 0.005 * value, (name, map_name)
    tissue = ~air
    assert (sim1.T2star[tissue] <= sim1.T2[tissue] * 1.3).all()
    assert (sim1.T2[tissue] < sim1.T1[tissue]).all()


@pytest.mark.parametrize("seed", range(5))
def test_tissue_values_are_physiological_at_3t(seed: int) -> None:
    t = BrainPhantom(seed).tissues
    for name, nominal in TISSUES.items():
        for field in ("pd", "t1", "t2", "t2star"):
            ratio = getattr(t[name], field) / max(getattr(nominal, field), 1e-12)
            assert getattr(nominal, field) == 0 or abs(ratio - 1) <= TISSUE_JITTER + 1e-9
    ranges = {  # [s], 3 T literature ranges (see the tissue notes)
        ("wm", "t1"): (0.83, 1.10),
        ("wm", "t2"): (0.070, 0.080),
        ("wm", "t2star"): (0.045, 0.055),
        ("gm", "t1"): (1.30, 1.60),
        ("gm", "t2"): (0.090, 0.110),
        ("gm", "t2star"): (0.050, 0.065),
        ("csf", "t1"): (4.0, 5.0),
        ("csf", "t2"): (1.5, 2.0),
        ("csf", "t2star"): (1.0, 2.0),
        ("fat", "t1"): (0.35, 0.40),
        ("fat", "t2"): (0.060, 0.080),
        ("putamen", "t2star"): (0.025, 0.035),
        ("globus_pallidus", "t2star"): (0.025, 0.035),
        ("caudate", "t2star"): (0.025, 0.045),
        ("thalamus", "t2star"): (0.025, 0.045),
        ("vein", "t2star"): (0.015, 0.025),
        ("wm", "pd"): (0.65, 0.72),
        ("gm", "pd"): (0.76, 0.84),
        ("csf", "pd"): (0.97, 1.0),
    }
    for name in TISSUE_GROUPS["deep_gm"]:
        ranges[(name, "t1")] = (1.10, 1.40)
    for (name, field), (lo, hi) in ranges.items():
        assert lo <= getattr(t[name], field) <= hi, (name, field, getattr(t[name], field))
    assert t["lesion"].t1 > t["wm"].t1 and t["lesion"].t2 > t["wm"].t2
    assert t["skull"].pd < 0.1 and t["skull"].t2star < 0.001


def test_mask_is_intracranial_tissue_and_csf(sim1: PhantomMaps) -> None:
    mask = sim1.mask.bool()
    torch.testing.assert_close(mask, sim1.tissue_mask("brain"))
    for outside in ("fat", "skull", "air"):
        assert not (mask & sim1.tissue_mask(outside)).any(), outside
    for inside in ("wm", "gm", "deep_gm", "lesion", "csf"):
        assert (sim1.tissue_mask(inside) <= mask).all(), inside
    # Brain size in the central slice: about 130 mm left-right, 165 mm anterior-posterior.
    central = mask[8]
    width = int(central.any(0).sum()) * 1.96
    length = int(central.any(1).sum()) * 1.96
    assert 110 < width < 150 and 140 < length < 185, (width, length)
    assert length > width
    # Scalp fat surrounds the skull: the outermost head voxel of each row is fat.
    head = sim1.labels[8] != 0
    rows = torch.nonzero(head.any(1)).squeeze(1)
    first = head[rows].float().argmax(1)
    assert (sim1.labels[8][rows, first] == TISSUES["fat"].label).float().mean() > 0.9


def test_tissue_groups_and_unknown_names(sim1: PhantomMaps) -> None:
    union = torch.zeros_like(sim1.mask, dtype=torch.bool)
    for name in TISSUE_GROUPS["deep_gm"]:
        union |= sim1.tissue_mask(name)
    torch.testing.assert_close(sim1.tissue_mask("deep_gm"), union)
    with pytest.raises(KeyError, match="unknown tissue"):
        sim1.tissue_mask("cerebellum")


def test_deep_structures_lie_in_both_paper_slabs(phantom: BrainPhantom, sim1: PhantomMaps) -> None:
    sim2 = phantom.render((60, 60, 14), (4.0, 4.0, 4.0))  # sim 2 slab: 56 mm
    for maps in (sim1, sim2):
        for name in (*TISSUE_GROUPS["deep_gm"], "vein"):
            assert maps.tissue_mask(name).sum() > 0, name
        # Lateral ventricles: CSF within 20 mm of the midline and 30 mm of the origin.
        p = grid_points(maps)
        central = (p[..., 0].abs() < 20) & (p[..., :2].norm(dim=-1) < 30)
        assert (maps.tissue_mask("csf") & central).sum() * math.prod(maps.voxel_size) > 3000
    assert sim1.tissue_mask("lesion").sum() > 0
    for centre, radius in phantom.lesions:
        assert abs(float(centre[2])) < 28 and 1.5 <= radius <= 3.0


def test_render_is_point_sampling_of_one_continuous_phantom(
    phantom: BrainPhantom, sim1: PhantomMaps
) -> None:
    """A 2x finer grid shares the origin: its even voxels are the coarse voxels, exactly."""
    coarse = phantom.render((56, 56, 8), (3.92, 3.92, 8.0))
    for name in (*MAP_NAMES, "labels", "mask"):
        torch.testing.assert_close(getattr(sim1, name)[::2, ::2, ::2], getattr(coarse, name))
    points = grid_points(coarse).reshape(-1, 3)
    torch.testing.assert_close(phantom.labels_at(points), coarse.labels.reshape(-1))
    # Each coarse voxel covers its fine voxel and half of each neighbour along every axis: the
    # footprint-weighted mean of the fine label indicators agrees with the coarse labels.
    n = max(t.label for t in TISSUES.values()) + 1
    onehot = F.one_hot(sim1.labels.long(), n).permute(3, 0, 1, 2).float()[None]
    w = torch.tensor([0.25, 0.5, 0.25])
    kernel = (w[:, None, None] * w[None, :, None] * w[None, None, :]).expand(n, 1, 3, 3, 3)
    fractions = F.conv3d(F.pad(onehot, (1,) * 6), kernel.contiguous(), stride=2, groups=n)[0]
    agree = fractions.argmax(0) == coarse.labels.long()
    assert agree.float().mean() > 0.95
    assert agree[coarse.mask.bool()].float().mean() > 0.85


def test_chunking_does_not_change_the_render(phantom: BrainPhantom) -> None:
    a = phantom.render((40, 48, 6), (5.0, 4.5, 8.0))
    b = phantom.render((40, 48, 6), (5.0, 4.5, 8.0), max_chunk_voxels=1)
    torch.testing.assert_close(a.labels, b.labels, rtol=0, atol=0)
    for name in MAP_NAMES:  # matrix products may round differently in other chunk sizes
        torch.testing.assert_close(getattr(a, name), getattr(b, name))


def test_same_seed_same_phantom_other_seed_other_anatomy(sim1: PhantomMaps) -> None:
    grid = ((48, 48, 8), (4.6, 4.6, 8.0))
    a, b = BrainPhantom(7).render(*grid), BrainPhantom(7).render(*grid)
    c = BrainPhantom(8).render(*grid)
    for name in (*MAP_NAMES, "labels"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    head = (a.labels != 0) | (c.labels != 0)
    assert (a.labels != c.labels)[head].float().mean() > 0.05
    assert a.tissues != c.tissues
    assert not torch.equal(a.B0, c.B0) and not torch.equal(a.phase0, c.phase0)


def test_b0_is_strongest_near_the_frontal_sinus(phantom: BrainPhantom, sim1: PhantomMaps) -> None:
    mask = sim1.mask.bool()
    b0 = sim1.B0
    assert b0[mask].abs().max() < 300.0
    assert 5.0 < float(b0[mask].std()) < 60.0  # a smooth field of tens of Hz
    p = grid_points(sim1)
    centre, radius = phantom.cavities["frontal_sinus"]
    assert float(centre[1]) > 60 and float(centre[2]) < 0  # anterior-inferior
    near = mask & ((p - centre).norm(dim=-1) < radius + 20)
    middle = mask & (p.norm(dim=-1) < 20)
    reference = b0[middle].median()
    near_offset = float((b0[near] - reference).abs().max())
    middle_offset = float((b0[middle] - reference).abs().max())
    assert near_offset > 40.0 and near_offset > 4 * middle_offset, (near_offset, middle_offset)
    # Smooth inside the brain: neighbouring voxels differ by a few Hz.
    both = mask[:, :, 1:] & mask[:, :, :-1] & ~near[:, :, 1:]
    assert (b0[:, :, 1:] - b0[:, :, :-1])[both].abs().max() < 10.0


def test_cortex_is_a_folded_ribbon_of_plausible_thickness(phantom: BrainPhantom) -> None:
    gm, wm, csf = (TISSUES[n].label for n in ("gm", "wm", "csf"))
    angles = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    step = 0.1
    profiles = ray_labels(phantom, z=20.0, angles=angles, r_max=100.0, step=step)
    thickness, first_wm = [], []
    for row in profiles:
        is_gm = (row == gm).int()
        start = int(is_gm.argmax())
        end = start + int((1 - is_gm[start:]).argmax())
        if row[end] == wm:  # the ray crossed the ribbon, not along a sulcus
            thickness.append((end - start) * step)
        first_wm.append(int((row == wm).int().argmax()) * step)
    assert len(thickness) > 0.5 * len(angles)
    assert 2.0 <= float(np.median(thickness)) <= 4.0, np.median(thickness)
    # Folding: along rays that run down a sulcus, white matter starts much deeper.
    first_wm = np.array(first_wm)
    assert np.mean(first_wm > np.median(first_wm) + 4.0) > 0.1
    # CSF fills the sulci: GM-CSF-GM sequences below the outer CSF layer.
    sulcal = 0
    for row in profiles:
        inner = row[int((row == gm).int().argmax()) :]
        runs = torch.unique_consecutive(inner)
        sulcal += int(((runs[:-2] == gm) & (runs[1:-1] == csf) & (runs[2:] == gm)).sum())
    assert sulcal > 0.1 * len(angles)


def test_thin_structures_near_the_resolution_limit(phantom: BrainPhantom) -> None:
    """Third ventricle and septum pellucidum are 1-4 mm thin."""
    csf = TISSUES["csf"].label
    x = torch.arange(-20.0, 20.0, 0.05)

    def csf_runs(y: float, z: float) -> list[tuple[float, float]]:
        """(start, end) [mm] of the CSF runs along x at (y, z)."""
        line = torch.stack([x, torch.full_like(x, y), torch.full_like(x, z)], -1)
        is_csf = (phantom.labels_at(line) == csf).int()
        edges = x[torch.nonzero(torch.diff(is_csf)).squeeze(1)].tolist()
        return list(zip(edges[::2], edges[1::2], strict=False))

    third_ventricle = [b - a for a, b in csf_runs(y=-10.0, z=-3.0) if a < 0 < b]
    assert len(third_ventricle) == 1 and 1.0 < third_ventricle[0] < 4.5, third_ventricle
    horns = csf_runs(y=14.0, z=6.0)
    septum = [c - b for (_, b), (c, _) in zip(horns[:-1], horns[1:], strict=True) if b < 0 < c]
    assert len(septum) == 1 and 0.5 < septum[0] < 4.0, horns
