"""Coil sensitivities: Biot-Savart simulation, RSS normalisation, compression, ESPIRiT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lorein.physics.coils import (
    _top_eigenpairs,
    apply_coil_compression,
    calibration_region,
    coil_compression,
    espirit,
    rss_normalise,
    simulate_coils,
)
from tests.helpers import randn_complex, rng

# a coarse head-sized grid: 220 x 220 x 80 mm field of view
MATRIX = (40, 40, 8)
VOXEL = (5.5, 5.5, 10.0)


def centred_fft(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3D FFT over the last three axes."""
    dims = (-3, -2, -1)
    k = torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho")
    return torch.fft.fftshift(k, dim=dims)


def centred_crop(k: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Central block ``shape`` of the last ``len(shape)`` axes (centre at ``n // 2``)."""
    index = [slice(None)] * (k.ndim - len(shape))
    for n_out, n_in in zip(shape, k.shape[-len(shape) :], strict=True):
        start = n_in // 2 - n_out // 2
        index.append(slice(start, start + n_out))
    return k[tuple(index)]


def head_object(matrix: tuple[int, int, int]) -> torch.Tensor:
    """``[nz, ny, nx]`` complex64 ellipsoid with smooth texture, a darker inner ellipse and a
    slow phase; it stays clear of the field-of-view edges on every axis."""
    nx, ny, nz = matrix
    z, y, x = torch.meshgrid(
        *(torch.linspace(-1, 1, n) if n > 1 else torch.zeros(1) for n in (nz, ny, nx)),
        indexing="ij",
    )
    inside = (x / 0.72) ** 2 + (y / 0.82) ** 2 + (z / 0.8) ** 2 < 1
    texture = 1 + 0.3 * torch.cos(6 * x) * torch.sin(5 * y)
    inner = ((x - 0.2) / 0.2) ** 2 + (y / 0.3) ** 2 < 1
    magnitude = inside.float() * texture - 0.5 * (inside & inner).float()
    return torch.polar(magnitude, 0.5 * x + 0.3 * y)


def object_mask(matrix: tuple[int, int, int], erode: float = 0.0) -> torch.Tensor:
    """Boolean ``[nz, ny, nx]`` support of :func:`head_object`, shrunk by ``erode`` (fraction)."""
    nx, ny, nz = matrix
    z, y, x = torch.meshgrid(
        *(torch.linspace(-1, 1, n) if n > 1 else torch.zeros(1) for n in (nz, ny, nx)),
        indexing="ij",
    )
    s = 1 - erode
    return (x / (0.72 * s)) ** 2 + (y / (0.82 * s)) ** 2 + (z / (0.8 * s)) ** 2 < 1


# --------------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coils24() -> torch.Tensor:
    return simulate_coils(24, MATRIX, VOXEL)


def test_simulate_shape_dtype_deterministic(coils24: torch.Tensor) -> None:
    nx, ny, nz = MATRIX
    assert coils24.shape == (24, nz, ny, nx)
    assert coils24.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(coils24)).all()
    # RSS is 1 at the centre of the field of view
    centre = coils24[:, nz // 2, ny // 2, nx // 2].abs().square().sum().sqrt()
    assert centre.item() == pytest.approx(1.0, abs=1e-5)
    # deterministic; the receiver phases depend on the seed, the magnitudes do not
    small = simulate_coils(24, (12, 12, 2), (18.0, 18.0, 30.0))
    assert torch.equal(small, simulate_coils(24, (12, 12, 2), (18.0, 18.0, 30.0)))
    other = simulate_coils(24, (12, 12, 2), (18.0, 18.0, 30.0), seed=1)
    torch.testing.assert_close(other.abs(), small.abs())
    assert not torch.allclose(other, small)


@pytest.mark.parametrize(("n_coils", "rings"), [(24, (8, 8, 8)), (14, (7, 7))])
def test_simulate_default_rings(coils24: torch.Tensor, n_coils: int, rings: tuple[int]) -> None:
    """Coil c of ring r peaks at its loop's azimuth, and its z-profile follows the ring."""
    maps = coils24 if n_coils == 24 else simulate_coils(n_coils, MATRIX, VOXEL)
    assert maps.shape[0] == n_coils
    nx, ny, nz = MATRIX
    power = maps.abs().square()
    y, x = torch.meshgrid(torch.arange(ny) - ny // 2, torch.arange(nx) - nx // 2, indexing="ij")
    disc = x.square() + y.square() < (0.35 * nx) ** 2  # away from the field-of-view corners
    inplane = (power * disc).sum(1)  # [C, ny, nx]
    angle = torch.atan2((inplane * y).sum((1, 2)), (inplane * x).sum((1, 2)))
    z_profile = (power * disc).sum((2, 3))  # [C, nz]
    z_centroid = (z_profile * torch.arange(nz)).sum(1) / z_profile.sum(1)
    z_centroid = z_centroid - z_centroid.mean()  # [voxels] relative to the array centre
    c = 0
    for ring, n_loops in enumerate(rings):
        for i in range(n_loops):
            expected = (i + 0.5 * (ring % 2)) * 2 * math.pi / n_loops
            diff = (angle[c] - expected + math.pi) % (2 * math.pi) - math.pi
            assert abs(diff) < math.radians(5), (c, angle[c], expected)
            offset = ring - (len(rings) - 1) / 2  # ring position along z
            if offset == 0:
                assert abs(z_centroid[c]) < 0.3
            else:
                assert z_centroid[c] * math.copysign(1, offset) > 1.0
            c += 1


def test_simulate_matches_numerical_biot_savart() -> None:
    """One loop: the closed form equals the Biot-Savart line integral, B1x - i B1y."""
    matrix, voxel = (16, 14, 4), (9.0, 9.0, 10.0)
    radius, semi = 30.0, (66.0, 66.0)
    maps = simulate_coils(1, matrix, voxel, rings=[1], semi_axes=semi, loop_radius=radius)[0]
    nx, ny, nz = matrix
    axes = [
        (torch.arange(n, dtype=torch.float64) - n // 2) * d
        for n, d in zip(matrix, voxel, strict=True)
    ]
    zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    r = torch.stack([xx, yy, zz], -1).reshape(-1, 3)
    # the loop: centre (66, 0, 0), in the y-z plane, counter-clockwise about +x
    n_seg = 720
    phi = (torch.arange(n_seg, dtype=torch.float64) + 0.5) * 2 * math.pi / n_seg
    wire = torch.stack(
        [torch.full_like(phi, semi[0]), radius * torch.cos(phi), radius * torch.sin(phi)], -1
    )
    dl = torch.stack([torch.zeros_like(phi), -torch.sin(phi), torch.cos(phi)], -1)
    dl = dl * (2 * math.pi * radius / n_seg)
    field = torch.zeros(r.shape[0], 3, dtype=torch.float64)
    for start in range(0, r.shape[0], 400):
        d = r[start : start + 400, None, :] - wire[None]
        dist3 = d.norm(dim=-1, keepdim=True) ** 3
        field[start : start + 400] = (torch.linalg.cross(dl.expand_as(d), d) / dist3).sum(1)
    reference = torch.complex(field[:, 0], -field[:, 1]).reshape(nz, ny, nx)
    dist_to_wire = (r[:, None, :] - wire[None]).norm(dim=-1).amin(1).reshape(nz, ny, nx)
    keep = dist_to_wire > 10.0
    sim = maps.to(torch.complex128)[keep]
    ref = reference[keep]
    scale = torch.vdot(ref, sim) / torch.vdot(ref, ref)  # global gain and receiver phase
    assert (sim - scale * ref).abs().max() <= 1e-4 * sim.abs().max()


def test_simulate_smooth_and_falls_off() -> None:
    nx, ny, nz = 64, 64, 4
    maps = simulate_coils(8, (nx, ny, nz), (3.4, 3.4, 10.0), rings=[8])
    head = object_mask((nx, ny, nz))
    head_xy = head[:, :, 1:] & head[:, :, :-1]
    # neighbouring voxels (3.4 mm apart) differ little in magnitude and phase inside the head
    ratio = maps[..., 1:] / maps[..., :-1]
    assert (ratio.abs()[:, head_xy] - 1).abs().max() < 0.25
    assert ratio.angle()[:, head_xy].abs().max() < 0.25
    # coil 0 sits at +x: along the x axis its magnitude falls monotonically towards -x
    line = maps[0, nz // 2, ny // 2].abs()
    assert (line[1:] >= line[:-1]).all()
    assert line[-1] > 5 * line[0]


def test_rss_normalise() -> None:
    csm = randn_complex(6, 3, 5, 7, seed=1)
    csm[:, 0, 0, :2] = 0  # no signal there
    out = rss_normalise(csm * 3.5)
    rss = out.abs().square().sum(0).sqrt()
    assert out.dtype == torch.complex64
    assert torch.equal(out[:, 0, 0, :2], torch.zeros(6, 2, dtype=torch.complex64))
    rss[0, 0, :2] = 1
    torch.testing.assert_close(rss, torch.ones_like(rss))
    torch.testing.assert_close(out, rss_normalise(csm))
    # the coil axis can be elsewhere
    torch.testing.assert_close(rss_normalise(csm.movedim(0, 2), coil_dim=2), out.movedim(0, 2))


# --------------------------------------------------------------------------------------------
# compression
# --------------------------------------------------------------------------------------------


def _lines(n_lines: int = 300, n_coils: int = 12, nx: int = 16) -> torch.Tensor:
    """Lines ``[n_lines, n_coils, nx]``: 4 strong sources mixed into the coils plus weak noise."""
    g = rng(3)
    mixing = torch.complex(
        torch.randn(n_coils, 4, generator=g), torch.randn(n_coils, 4, generator=g)
    )
    sources = randn_complex(n_lines, 4, nx, seed=4) * torch.tensor([4.0, 3.0, 2.0, 1.0])[:, None]
    return mixing @ sources + 0.01 * randn_complex(n_lines, n_coils, nx, seed=5)


def test_coil_compression_exact_when_all_coils_kept() -> None:
    data = _lines()
    compressed, matrix = coil_compression(data, 12)
    assert compressed.shape == data.shape and matrix.shape == (12, 12)
    eye = torch.eye(12, dtype=torch.complex64)
    torch.testing.assert_close(matrix @ matrix.mH, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_coil_compression(compressed, matrix.mH, 1), data)


def test_coil_compression_keeps_principal_energy() -> None:
    data = _lines()
    compressed, matrix = coil_compression(data, 3)
    assert compressed.shape == (300, 3, 16) and compressed.dtype == torch.complex64
    torch.testing.assert_close(matrix @ matrix.mH, torch.eye(3, dtype=torch.complex64))
    flat = data.movedim(1, -1).reshape(-1, 12).numpy().astype(np.complex128)
    s = np.linalg.svd(flat, compute_uv=False)
    kept = compressed.abs().square().sum().item()
    assert kept == pytest.approx(float((s[:3] ** 2).sum()), rel=1e-4)
    # virtual coils come in decreasing energy and beat any other orthonormal 3-coil projection
    energy = compressed.abs().square().sum((0, 2))
    assert (energy[1:] <= energy[:-1]).all()
    q, _ = torch.linalg.qr(randn_complex(12, 3, seed=6))
    assert apply_coil_compression(data, q.mH, 1).abs().square().sum() < kept
    with pytest.raises(ValueError, match="n_virtual"):
        coil_compression(data, 13)


def test_coil_compression_commutes_with_the_forward_model() -> None:
    """Compressed k-space of (maps x object) = k-space of (compressed maps x object)."""
    maps = rss_normalise(simulate_coils(8, (16, 16, 4), (12.0, 12.0, 15.0)))
    obj = head_object((16, 16, 4))
    kspace = centred_fft(maps * obj)  # [C, nz, ny, nx]
    lines = kspace.permute(1, 2, 0, 3).reshape(-1, 8, 16)  # [n_lines, C, nx]
    compressed, matrix = coil_compression(lines, 4)
    expected = centred_fft(apply_coil_compression(maps, matrix, coil_dim=0) * obj)
    torch.testing.assert_close(
        compressed, expected.permute(1, 2, 0, 3).reshape(-1, 4, 16), atol=1e-5, rtol=1e-4
    )
    # coils on the last axis
    last, _ = coil_compression(lines.movedim(1, -1), 4, coil_dim=-1)
    torch.testing.assert_close(last.movedim(-1, 1), compressed)


# --------------------------------------------------------------------------------------------
# calibration region
# --------------------------------------------------------------------------------------------


def test_calibration_region_averages_repeated_lines() -> None:
    n_coils, nx, ny, nz = 3, 10, 12, 8
    kspace = randn_complex(n_coils, nz, ny, nx, seed=7)
    kz, ky = torch.meshgrid(torch.arange(nz), torch.arange(ny), indexing="ij")
    ky, kz = ky.reshape(-1), kz.reshape(-1)
    lines = kspace[:, kz, ky].permute(1, 0, 2)  # [ny * nz, C, nx]
    # every line twice more (other contrasts): once unchanged, once with an offset of +-1
    lines = torch.cat([lines, lines + 1, lines - 1])
    ky, kz = ky.repeat(3), kz.repeat(3)
    order = torch.randperm(len(ky), generator=rng(8))
    calib = calibration_region(lines[order], ky[order], kz[order], (ny, nz), (6, 4))
    assert calib.shape == (n_coils, 4, 6, nx)
    torch.testing.assert_close(calib, kspace[:, 2:6, 3:9])  # centre at index 3 of 6, 2 of 4

    drop = (ky == 4) & (kz == 5)  # inside the region
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        calibration_region(lines[~drop], ky[~drop], kz[~drop], (ny, nz), (6, 4))


# --------------------------------------------------------------------------------------------
# ESPIRiT
# --------------------------------------------------------------------------------------------


def test_top_eigenpairs_matches_eigh() -> None:
    g = rng(9)
    n, c = 500, 12
    q, _ = torch.linalg.qr(
        torch.complex(torch.randn(n, c, c, generator=g), torch.randn(n, c, c, generator=g))
    )
    lam = 0.75 * torch.rand(n, c, generator=g)
    lam[:, 0] = 0.95 + 0.05 * torch.rand(n, generator=g)
    lam[:, 1] = 0.78 * lam[:, 0]  # the worst gap the ESPIRiT test problems show
    mats = (q * lam[:, None, :].to(torch.complex64)) @ q.mH
    values, vectors = _top_eigenpairs(mats, 0.9 * 0.95, 16)
    torch.testing.assert_close(values, lam[:, 0], atol=1e-5, rtol=0)
    overlap = (q[:, :, 0].conj() * vectors).sum(1).abs()
    assert (1 - overlap).max() < 1e-6  # angle below 1.5e-3


@pytest.fixture(scope="module")
def espirit_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truth maps (RSS-normalised), object and its 8-coil k-space on a 40 x 40 x 12 grid."""
    matrix = (40, 40, 12)
    maps = rss_normalise(simulate_coils(8, matrix, (5.5, 5.5, 5.0)))
    obj = head_object(matrix)
    return maps, obj, centred_fft(maps * obj)


def test_espirit_recovers_simulated_maps(espirit_problem) -> None:
    truth, obj, kspace = espirit_problem
    nz, ny, nx = obj.shape
    calib = centred_crop(kspace, (8, 20, nx))  # fully sampled readout
    maps = espirit(calib, (nx, ny, nz))
    assert maps.shape == truth.shape and maps.dtype == torch.complex64
    inside = object_mask((nx, ny, nz), erode=0.1)
    # magnitudes match inside the object (ESPIRiT phase is arbitrary)
    err = (maps.abs() - truth.abs())[:, inside]
    assert err.norm() / truth.abs()[:, inside].norm() < 0.008  # measured 0.0037
    assert err.abs().max() < 0.012  # measured 0.0059
    # unit norm over coils where kept; reference coil real and non-negative
    rss = maps.abs().square().sum(0).sqrt()
    assert ((rss - 1).abs() < 1e-4)[inside].all()
    assert (maps[0].imag.abs() < 1e-6).all() and (maps[0].real >= 0).all()
    # the maps reproduce the coil images: c_j sum_i conj(c_i) x_i = x_j
    images = truth * obj
    combined = (maps.conj() * images).sum(0)
    residual = (maps * combined - images)[:, inside]
    assert residual.norm() / images[:, inside].norm() < 0.008  # measured 0.0041


def test_espirit_calibration_from_lines(espirit_problem) -> None:
    """calibration_region + espirit on the problem-file layout give the same maps."""
    _, obj, kspace = espirit_problem
    nz, ny, nx = obj.shape
    kz, ky = torch.meshgrid(torch.arange(nz), torch.arange(ny), indexing="ij")
    ky, kz = ky.reshape(-1), kz.reshape(-1)
    lines = kspace[:, kz, ky].permute(1, 0, 2)
    calib = calibration_region(lines, ky, kz, (ny, nz), (20, 8))
    torch.testing.assert_close(calib, centred_crop(kspace, (8, 20, nx)))
    with pytest.raises(ValueError, match="exceeds"):
        espirit(calib, (nx, ny, 4))


def test_espirit_matches_sigpy() -> None:
    sigpy_mri = pytest.importorskip("sigpy.mri")
    matrix = (64, 64, 1)
    truth = rss_normalise(simulate_coils(8, matrix, (3.4, 3.4, 5.0)))
    obj = head_object(matrix)
    kspace = centred_fft(truth * obj)  # [C, 1, ny, nx]
    reference = sigpy_mri.app.EspiritCalib(
        kspace[:, 0].numpy(), calib_width=24, kernel_width=6, show_pbar=False
    ).run()
    calib = centred_crop(kspace, (1, 24, 24))
    maps = espirit(calib, matrix, kernel_size=(6, 6, 1))[:, 0]
    both = (np.abs(reference).sum(0) > 0) & (maps.abs().sum(0) > 0).numpy()
    inside = object_mask(matrix)[0].numpy()
    assert both[inside].all()
    diff = np.abs(np.abs(reference) - maps.abs().numpy())[:, both]
    assert diff.max() < 1e-4  # measured 1e-5
