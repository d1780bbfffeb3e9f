"""Operators: dot-product adjoint tests, the ``M F C Phi`` factorisation of the encoding
operator, its fast normal form vs ``E^H E`` naive, and the data terms vs ``||y - E x||^2``."""

import pytest
import torch

from lorein.physics.operators import (
    ContrastDataTerm,
    EncodingOperator,
    SamplingOperator,
    SubspaceDataTerm,
    subspace_gram,
)
from tests.helpers import dotproduct_adjointness_test, randn_complex, rng

NZ, NY, NX, NC, T, K, L = 4, 6, 5, 3, 7, 3, 40
SPATIAL = (-3, -2, -1)


@pytest.fixture
def lines() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = rng(5)
    ky = torch.randint(0, NY, (L,), generator=g)
    kz = torch.randint(0, NZ, (L,), generator=g)
    contrast = torch.randint(0, T, (L,), generator=g)
    return ky, kz, contrast


@pytest.fixture
def phi() -> torch.Tensor:
    q, _ = torch.linalg.qr(randn_complex(T, K, seed=6))
    return q


def naive_forward(
    x: torch.Tensor, coils: torch.Tensor, sampling: SamplingOperator, phi: torch.Tensor | None
) -> torch.Tensor:
    """``M F C Phi x`` factor by factor, ``F`` written with explicit shifts."""
    images = x if phi is None else torch.tensordot(phi, x, dims=([1], [0]))  # Phi: [T, z, y, x]
    coil_images = images.unsqueeze(1) * coils  # C: [T, coil, z, y, x]
    shifted = torch.fft.ifftshift(coil_images, dim=SPATIAL)
    k = torch.fft.fftshift(torch.fft.fftn(shifted, dim=SPATIAL, norm="ortho"), dim=SPATIAL)
    return sampling(k)  # M


def naive_adjoint(
    y: torch.Tensor, coils: torch.Tensor, sampling: SamplingOperator, phi: torch.Tensor | None
) -> torch.Tensor:
    """``Phi^H C^H F^H M^H y`` factor by factor."""
    k = torch.fft.ifftshift(sampling.adjoint(y), dim=SPATIAL)
    coil_images = torch.fft.fftshift(torch.fft.ifftn(k, dim=SPATIAL, norm="ortho"), dim=SPATIAL)
    images = (coil_images * coils.conj()).sum(1)
    return images if phi is None else torch.tensordot(phi.conj(), images, dims=([0], [0]))


@pytest.mark.parametrize("with_phi", [False, True])
def test_sampling_adjoint(lines, phi: torch.Tensor, with_phi: bool) -> None:
    ky, kz, contrast = lines
    frames = K if with_phi else T
    op = SamplingOperator(ky, kz, contrast, (frames, NC, NZ, NY, NX), phi if with_phi else None)
    u = randn_complex(frames, NC, NZ, NY, NX, seed=7)
    v = randn_complex(L, NC, NX, seed=8)
    dotproduct_adjointness_test(op.forward, op.adjoint, u, v)


def test_sampling_reads_the_right_line(lines) -> None:
    ky, kz, contrast = lines
    op = SamplingOperator(ky, kz, contrast, (T, NC, NZ, NY, NX))
    x = randn_complex(T, NC, NZ, NY, NX, seed=9)
    y = op(x)
    torch.testing.assert_close(y[3], x[contrast[3], :, kz[3], ky[3], :])


def test_subspace_sampling_is_sampling_of_phi(lines, phi: torch.Tensor) -> None:
    """``M Phi`` on coefficient k-space equals ``M`` on the ``T`` contrast k-spaces ``Phi x``."""
    ky, kz, contrast = lines
    x = randn_complex(K, NC, NZ, NY, NX, seed=23)
    folded = SamplingOperator(ky, kz, contrast, (K, NC, NZ, NY, NX), phi)(x)
    plain = SamplingOperator(ky, kz, contrast, (T, NC, NZ, NY, NX))
    torch.testing.assert_close(folded, plain(torch.tensordot(phi, x, dims=([1], [0]))))


@pytest.mark.parametrize("with_phi", [False, True])
def test_encoding_is_the_factorisation(lines, phi: torch.Tensor, with_phi: bool) -> None:
    """The folded-modulation operator and its adjoint equal ``M F C (Phi)`` factor by factor."""
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=10)
    p = phi if with_phi else None
    enc = EncodingOperator(coils, ky, kz, contrast, p, n_contrasts=T)
    sampling = SamplingOperator(ky, kz, contrast, (T, NC, NZ, NY, NX))
    x = randn_complex(K if with_phi else T, NZ, NY, NX, seed=11)
    y = randn_complex(L, NC, NX, seed=12)
    torch.testing.assert_close(enc(x), naive_forward(x, coils, sampling, p), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.H(y), naive_adjoint(y, coils, sampling, p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_phi", [False, True])
def test_encoding_adjoint(lines, phi: torch.Tensor, with_phi: bool) -> None:
    """``<E x, y> = <x, E^H y>``, for ``E`` and for its adjoint operator ``E.H``."""
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=24)
    enc = EncodingOperator(coils, ky, kz, contrast, phi if with_phi else None, n_contrasts=T)
    x = randn_complex(K if with_phi else T, NZ, NY, NX, seed=25)
    y = randn_complex(L, NC, NX, seed=26)
    dotproduct_adjointness_test(enc.forward, enc.adjoint, x, y)
    dotproduct_adjointness_test(enc.H.forward, enc.H.adjoint, y, x)
    assert enc.H.H is enc


def test_gram_matches_naive(lines, phi: torch.Tensor) -> None:
    ky, kz, contrast = lines
    gram = subspace_gram(ky, kz, contrast, phi, (NZ, NY))
    naive = torch.zeros(NZ, NY, K, K, dtype=torch.complex64)
    for y_, z_, t_ in zip(ky.tolist(), kz.tolist(), contrast.tolist(), strict=True):
        naive[z_, y_] += torch.outer(phi[t_].conj(), phi[t_])
    torch.testing.assert_close(gram, naive)


@pytest.mark.parametrize("with_phi", [False, True])
def test_normal_matches_naive(lines, phi: torch.Tensor, with_phi: bool) -> None:
    """``E.normal`` (the Gram fast path with a subspace) equals ``E^H E x`` factor by factor."""
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=13)
    p = phi if with_phi else None
    enc = EncodingOperator(coils, ky, kz, contrast, p, n_contrasts=T)
    sampling = SamplingOperator(ky, kz, contrast, (T, NC, NZ, NY, NX))
    x = randn_complex(K if with_phi else T, NZ, NY, NX, seed=14)
    naive = naive_adjoint(naive_forward(x, coils, sampling, p), coils, sampling, p)
    torch.testing.assert_close(enc.normal(x), naive, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.normal(x), enc.H(enc(x)), rtol=1e-5, atol=1e-5)
    dotproduct_adjointness_test(enc.normal, enc.normal, x, randn_complex(*x.shape, seed=27))


def test_subspace_data_term_matches_naive(lines, phi: torch.Tensor) -> None:
    """The Gram-form data term equals ``||y - E x||^2`` with ``E = M F C Phi``."""
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=13)
    x = randn_complex(K, NZ, NY, NX, seed=14)
    y = randn_complex(L, NC, NX, seed=15)
    naive = (y - EncodingOperator(coils, ky, kz, contrast, phi)(x)).abs().pow(2).sum()
    fast = SubspaceDataTerm(y, ky, kz, contrast, phi, (NZ, NY, NX))(x, coils)
    assert abs(fast - naive) <= 1e-5 * naive


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_contrast_data_term_matches_naive(lines, chunk: int) -> None:
    """The chunked data term equals ``||y - E I||^2`` with ``E = M F C``."""
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=19)
    images = randn_complex(T, NZ, NY, NX, seed=20)
    y = randn_complex(L, NC, NX, seed=21)
    naive = (y - EncodingOperator(coils, ky, kz, contrast, n_contrasts=T)(images)).abs().pow(2)
    exact = ContrastDataTerm(y, ky, kz, contrast, (NZ, NY, NX), chunk=chunk)(images, coils)
    assert abs(exact - naive.sum()) <= 1e-5 * naive.sum()


@pytest.mark.parametrize("with_phi", [False, True])
def test_data_terms_gradients_match_naive(lines, phi: torch.Tensor, with_phi: bool) -> None:
    """Gradients w.r.t. frames and coils of both data terms equal those of ``||y - E x||^2``."""
    ky, kz, contrast = lines
    y = randn_complex(L, NC, NX, seed=17)
    if with_phi:
        term = SubspaceDataTerm(y, ky, kz, contrast, phi, (NZ, NY, NX))
    else:
        term = ContrastDataTerm(y, ky, kz, contrast, (NZ, NY, NX), chunk=3)
    x1 = randn_complex(K if with_phi else T, NZ, NY, NX, seed=18).requires_grad_(True)
    c1 = randn_complex(NC, NZ, NY, NX, seed=22).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    c2 = c1.detach().clone().requires_grad_(True)
    term(x1, c1).backward()
    enc = EncodingOperator(c2, ky, kz, contrast, phi if with_phi else None, n_contrasts=T)
    (y - enc(x2)).abs().pow(2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c1.grad, c2.grad, rtol=1e-4, atol=1e-4)


SLABS = [slice(0, 2), slice(2, 3), slice(3, NX)]
"""Disjoint slabs of x-planes covering the volume (one epoch of plane batches)."""


def _hybrid_term(with_phi: bool, y, lines, phi, hybrid: bool = True):
    ky, kz, contrast = lines
    if with_phi:
        return SubspaceDataTerm(y, ky, kz, contrast, phi, (NZ, NY, NX), hybrid=hybrid)
    return ContrastDataTerm(y, ky, kz, contrast, (NZ, NY, NX), chunk=3, hybrid=hybrid)


@pytest.mark.parametrize("with_phi", [False, True])
def test_plane_terms_sum_to_the_volume_term(lines, phi: torch.Tensor, with_phi: bool) -> None:
    """Summed over disjoint slabs of x-planes, the hybrid terms and their gradients (frames and
    coils) equal the whole-volume k-space term."""
    y = randn_complex(L, NC, NX, seed=31)
    x = randn_complex(K if with_phi else T, NZ, NY, NX, seed=32).requires_grad_(True)
    coils = randn_complex(NC, NZ, NY, NX, seed=33).requires_grad_(True)
    volume = _hybrid_term(with_phi, y, lines, phi, hybrid=False)(x, coils)
    x_grad, coils_grad = torch.autograd.grad(volume, (x, coils))
    term = _hybrid_term(with_phi, y, lines, phi)
    planes = sum(term(x[..., s], coils[..., s], s) for s in SLABS)
    whole = term(x, coils)  # every plane at once
    for value in (planes, whole):
        assert abs(value.detach() - volume.detach()) <= 1e-5 * volume.detach()
    torch.testing.assert_close(
        torch.autograd.grad(planes, (x, coils)), (x_grad, coils_grad), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("with_phi", [False, True])
def test_plane_term_is_the_residual_energy_of_its_planes(
    lines, phi: torch.Tensor, with_phi: bool
) -> None:
    """Each slab's term is the energy of ``y - E x`` (``EncodingOperator``) in those x-planes
    after the centred inverse FFT along the readout."""
    ky, kz, contrast = lines
    y = randn_complex(L, NC, NX, seed=34)
    x = randn_complex(K if with_phi else T, NZ, NY, NX, seed=35)
    coils = randn_complex(NC, NZ, NY, NX, seed=36)
    enc = EncodingOperator(coils, ky, kz, contrast, phi if with_phi else None, n_contrasts=T)
    residual = torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(y - enc(x), dim=-1), dim=-1, norm="ortho"), dim=-1
    )
    term = _hybrid_term(with_phi, y, lines, phi)
    for s in SLABS:
        naive = residual[..., s].abs().pow(2).sum()
        assert abs(term(x[..., s], coils[..., s], s) - naive) <= 1e-5 * naive


def test_planes_need_a_hybrid_term(lines, phi: torch.Tensor) -> None:
    y = randn_complex(L, NC, NX, seed=37)
    term = _hybrid_term(True, y, lines, phi, hybrid=False)
    x, coils = randn_complex(K, NZ, NY, 2, seed=38), randn_complex(NC, NZ, NY, 2, seed=39)
    with pytest.raises(ValueError, match="hybrid=True"):
        term(x, coils, slice(0, 2))
