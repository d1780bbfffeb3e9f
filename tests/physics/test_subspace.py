"""Temporal subspace: dictionary simulation, bases from a dictionary and from calibration data."""

from __future__ import annotations

import pytest
import torch

from lorein.physics.models.base import SignalModel
from lorein.physics.models.t2ir_gre import T2irGre
from lorein.physics.models.vfa_megre import VfaMegre
from lorein.physics.subspace import (
    DictionaryRanges,
    Subspace,
    SubspaceProjection,
    calibration_matrix,
    simulate_dictionary,
    subspace_from_data,
    subspace_from_dictionary,
)
from tests.helpers import randn_complex, rng
from tests.physics import bloch_reference as bloch
from tests.physics.test_signal_models import random_maps

RANK = 15


def projector(phi: torch.Tensor) -> torch.Tensor:
    phi = phi.to(torch.complex128)
    return phi @ phi.mH


def orthonormal(t: int, k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(randn_complex(t, k, seed=seed).to(torch.complex128))
    return q


def sim1_model() -> VfaMegre:
    return VfaMegre(bloch.sim1_table())


def sim2_small_model(**kwargs: object) -> T2irGre:
    """Sim 2 protocol with 20 instead of 80 readouts per segment (T = 320)."""
    return T2irGre(bloch.sim2_table(20), **kwargs)  # type: ignore[arg-type]


def per_signal_errors(subspace: Subspace, signals: torch.Tensor) -> torch.Tensor:
    residual = signals - subspace.project(signals, dim=-1)
    return torch.linalg.vector_norm(residual, dim=-1) / torch.linalg.vector_norm(signals, dim=-1)


@pytest.mark.parametrize(
    ("model", "n_atoms", "max_error", "max_single_error"),
    [
        # measured: sim1 3.1e-2 overall, 8.6e-2 worst; sim2 (20 readouts) 2.0e-2, 5.2e-2
        (sim1_model(), 5000, 0.04, 0.15),
        (sim2_small_model(), 2000, 0.025, 0.08),
    ],
    ids=["sim1", "sim2-small"],
)
def test_dictionary_subspace_captures_in_range_signals(
    model: SignalModel, n_atoms: int, max_error: float, max_single_error: float
) -> None:
    signals, _ = simulate_dictionary(model, n_atoms, seed=0)
    assert signals.shape == (n_atoms, model.contrasts.n_contrasts)
    assert signals.dtype == torch.complex64
    subspace = subspace_from_dictionary(signals, RANK)
    t = model.contrasts.n_contrasts
    assert subspace.phi.shape == (t, RANK) and subspace.phi.dtype == torch.complex64
    gram = subspace.phi.mH @ subspace.phi
    torch.testing.assert_close(gram, torch.eye(RANK, dtype=torch.complex64), atol=2e-6, rtol=0)
    s = subspace.singular_values
    assert s.shape == (t,) and torch.all(s[:-1] >= s[1:])
    energy = s.double() ** 2
    assert subspace.captured_energy == pytest.approx(float(energy[:RANK].sum() / energy.sum()))
    assert subspace.captured_energy > 0.999
    # fresh signals of the same ranges, never seen by the decomposition
    fresh, _ = simulate_dictionary(model, 500, seed=1)
    assert subspace.projection_error(fresh, dim=-1) < max_error
    assert per_signal_errors(subspace, fresh).max() < max_single_error


@pytest.mark.parametrize("n_atoms", [600, 40], ids=["gram", "svd"])
def test_bases_match_a_direct_svd(n_atoms: int) -> None:
    signals, _ = simulate_dictionary(sim1_model(), n_atoms, seed=2)
    rank = 8
    subspace = subspace_from_dictionary(signals, rank, normalize=False)
    u, s, _ = torch.linalg.svd(signals.T.to(torch.complex128), full_matrices=False)
    assert subspace.singular_values.shape == (min(n_atoms, 60),)
    torch.testing.assert_close(subspace.singular_values.double(), s, rtol=1e-4, atol=1e-4 * s[0])
    torch.testing.assert_close(projector(subspace.phi), projector(u[:, :rank]), atol=1e-4, rtol=0)


def test_phase_convention_is_deterministic() -> None:
    signals, _ = simulate_dictionary(sim1_model(), 1000, seed=3)
    a = subspace_from_dictionary(signals, 6)
    rotated = subspace_from_dictionary(
        signals * torch.polar(torch.tensor(1.0), torch.tensor(2.2)), 6
    )
    torch.testing.assert_close(rotated.phi, a.phi, atol=1e-5, rtol=0)
    pivots = a.phi.gather(0, a.phi.abs().argmax(0, keepdim=True))
    assert torch.all(pivots.imag.abs() < 1e-6) and torch.all(pivots.real > 0)


def test_normalisation_weights_atoms_equally() -> None:
    signals, _ = simulate_dictionary(sim1_model(), 1000, seed=4)
    scales = torch.rand(1000, 1, generator=rng(4)) * 100
    plain = subspace_from_dictionary(signals, 6)
    scaled = subspace_from_dictionary(signals * scales, 6)
    torch.testing.assert_close(scaled.phi, plain.phi, atol=1e-4, rtol=0)
    unnormalised = subspace_from_dictionary(signals * scales, 6, normalize=False)
    assert (projector(unnormalised.phi) - projector(plain.phi)).abs().max() > 1e-3


def test_project_along_any_axis() -> None:
    phi = orthonormal(60, 5, seed=5).to(torch.complex64)
    subspace = Subspace(phi=phi, singular_values=torch.ones(5), captured_energy=1.0)
    x = randn_complex(60, 3, 4, seed=6)
    c = subspace.coefficients(x)
    assert c.shape == (5, 3, 4)
    torch.testing.assert_close(c, torch.einsum("tk,tab->kab", phi.conj(), x))
    projected = subspace.project(x)
    torch.testing.assert_close(subspace.project(x.movedim(0, -1), dim=-1), projected.movedim(0, -1))
    # idempotent; signals inside the span are left alone; float64 in, complex128 out
    torch.testing.assert_close(subspace.project(projected), projected, atol=1e-5, rtol=0)
    inside = subspace.expand(c)
    torch.testing.assert_close(subspace.project(inside), inside, atol=1e-5, rtol=0)
    assert subspace.project(x.to(torch.complex128)).dtype == torch.complex128
    assert subspace.projection_error(inside) < 1e-6
    expected = float((x - projected).norm() / x.norm())
    assert subspace.projection_error(x) == pytest.approx(expected, rel=1e-5)
    assert subspace.projection_error(x) > 0.5  # 5 of 60 dimensions of white noise


def test_subspace_from_data_recovers_a_known_subspace() -> None:
    q = orthonormal(60, 6, seed=7)
    weights = randn_complex(6, 400, seed=8).to(torch.complex128)
    data = q @ weights
    subspace = subspace_from_data(data.to(torch.complex64), 6)
    torch.testing.assert_close(projector(subspace.phi), projector(q), atol=1e-5, rtol=0)
    assert subspace.captured_energy == pytest.approx(1.0, abs=1e-6)
    # a complex64 Gram resolves singular values down to about sqrt(eps32) of the largest
    s = subspace.singular_values
    assert s[6:].max() < 1e-3 * s[0] < s[5]
    s = subspace_from_data(data, 6).singular_values
    assert s[6:].max() < 1e-6 * s[0]


def test_calibration_lines_to_subspace() -> None:
    t, k, n_coils, nz, ny, nx = 5, 3, 2, 4, 8, 6
    q = orthonormal(t, k, seed=9)
    spatial = randn_complex(k, nz, ny, nx, seed=10).to(torch.complex128)
    coils = randn_complex(n_coils, nz, ny, nx, seed=11).to(torch.complex128)
    images = torch.einsum("tk,kzyx->tzyx", q, spatial)[:, None] * coils
    kspace = torch.fft.fftn(images, dim=(-3, -2, -1)).to(torch.complex64)  # [t, c, z, y, x]
    # every contrast: the central 2 x 2 lines, one of them twice, plus lines of its own
    lines = [(ti, ky, kz) for ti in range(t) for ky in (3, 4) for kz in (1, 2)]
    lines += [(ti, 4, 2) for ti in range(t)]
    lines += [(ti, ti, 0) for ti in range(t)]
    contrast, ky, kz = (torch.tensor(c, dtype=torch.int32) for c in zip(*lines, strict=True))
    data = kspace[contrast.long(), :, kz.long(), ky.long(), :]  # [L, C, nx]
    calibration = calibration_matrix(data, ky, kz, contrast, t)
    assert calibration.shape == (t, 4 * n_coils * nx)
    central = kspace[:, :, 1:3, 3:5, :].permute(0, 3, 2, 1, 4).reshape(t, -1)  # (ky, kz) order
    torch.testing.assert_close(calibration, central)
    subspace = subspace_from_data(calibration, k)
    torch.testing.assert_close(projector(subspace.phi), projector(q), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="every contrast"):
        keep = ky != 4
        calibration_matrix(data[keep], ky[keep], kz[keep] * 0 + contrast[keep], contrast[keep], t)


def test_rank_is_validated() -> None:
    data = randn_complex(10, 4, seed=12)
    with pytest.raises(ValueError, match="rank"):
        subspace_from_data(data, 5)
    with pytest.raises(ValueError, match="rank"):
        subspace_from_data(data, 0)
    with pytest.raises(ValueError, match="zero"):
        subspace_from_data(torch.zeros(10, 4, dtype=torch.complex64), 2)


def test_dictionary_parameters_are_in_range_and_seeded() -> None:
    model = sim2_small_model(estimate_inversion=True)
    ranges = DictionaryRanges(b0=(-30.0, 30.0))
    signals, p = simulate_dictionary(model, 400, ranges=ranges, seed=13)
    assert set(p) == {"T1", "T2", "T2star", "B0", "B"}
    assert torch.all((p["T1"] >= 0.2 * (1 - 1e-6)) & (p["T1"] <= 5.0 * (1 + 1e-6)))
    assert torch.all(p["T2"] <= p["T1"]) and torch.all(p["T2star"] <= p["T2"])
    assert torch.all(p["B0"].abs() <= 30.0)
    assert torch.all((p["B"] >= -1.0) & (p["B"] <= -0.7))
    n_csf = round(0.05 * 400)
    assert torch.all(p["T2star"][-n_csf:] == 1.0) and torch.all(p["T2star"][:-n_csf] <= 0.2)
    # the signals are the model's, with M0 = 1 and phase0 = 0
    maps = {**p, "M0": torch.ones(400), "phase0": torch.zeros(400)}
    torch.testing.assert_close(signals, model(maps).T)
    again, _ = simulate_dictionary(model, 400, ranges=ranges, seed=13)
    assert torch.equal(again, signals)
    other, _ = simulate_dictionary(model, 400, ranges=ranges, seed=14)
    assert not torch.equal(other, signals)


def test_free_phase_dictionary_matches_b0_dictionary() -> None:
    b0_signals, p = simulate_dictionary(sim1_model(), 300, seed=15)
    free_signals, q = simulate_dictionary(VfaMegre(bloch.sim1_table(), phase="free"), 300, seed=15)
    assert set(q) == {"T1", "T2star"} and set(p) == {"T1", "T2star", "B0"}
    torch.testing.assert_close(free_signals, b0_signals, atol=1e-6, rtol=1e-5)


@pytest.mark.cuda
def test_projection_on_cuda_matches_cpu() -> None:
    phi = orthonormal(60, 5, seed=16).to(torch.complex64)
    subspace = Subspace(phi=phi, singular_values=torch.ones(5), captured_energy=1.0)
    x = randn_complex(60, 3, 4, seed=17)
    projected = subspace.project(x.cuda())
    assert projected.device.type == "cuda"
    torch.testing.assert_close(projected.cpu(), subspace.project(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", [sim1_model(), sim2_small_model()], ids=["sim1", "sim2-small"])
def test_factor_projection_matches_the_images(model: SignalModel) -> None:
    """``Phi^H S`` and ``||S||^2`` from the factors equal those of the T images, gradients too."""
    maps = {
        name: value.requires_grad_(True)
        for name, value in random_maps(model, (3, 4, 5), seed=31, dtype=torch.float64).items()
    }
    phi = orthonormal(model.contrasts.n_contrasts, RANK, seed=32)
    weight = randn_complex(RANK, 3, 4, 5, seed=33).to(torch.complex128)

    images = model(maps)
    naive_projected = torch.tensordot(phi.conj(), images, dims=([0], [0]))
    naive_norm2 = images.abs().square().sum()
    projection = SubspaceProjection(phi, model.readout_index, model.echo_index)
    projected, norm2 = projection(model.factors(maps))
    torch.testing.assert_close(projected, naive_projected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norm2, naive_norm2, rtol=1e-10, atol=0)

    def functional(p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.vdot(weight.flatten(), p.flatten()).real + 0.1 * n

    fast = torch.autograd.grad(functional(projected, norm2), list(maps.values()))
    naive = torch.autograd.grad(functional(naive_projected, naive_norm2), list(maps.values()))
    for name, a, b in zip(maps, fast, naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
