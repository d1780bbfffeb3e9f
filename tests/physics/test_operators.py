"""Operators: dot-product adjoint tests, composition, and the fast Gram form vs the naive one."""

import pytest
import torch

from lorein.physics.operators import (
    CoilOperator,
    ContrastDataTerm,
    EncodingOperator,
    FourierOperator,
    SamplingOperator,
    SubspaceDataTerm,
    SubspaceOperator,
    subspace_gram,
)
from tests.helpers import dotproduct_adjointness_test, randn_complex, rng

NZ, NY, NX, NC, T, K, L = 4, 6, 5, 3, 7, 3, 40


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


def test_coil_adjoint() -> None:
    op = CoilOperator(randn_complex(NC, NZ, NY, NX, seed=1))
    dotproduct_adjointness_test(
        op.forward,
        op.adjoint,
        randn_complex(T, NZ, NY, NX, seed=2),
        randn_complex(T, NC, NZ, NY, NX),
    )


def test_fourier_adjoint() -> None:
    op = FourierOperator()
    u, v = randn_complex(2, NZ, NY, NX, seed=3), randn_complex(2, NZ, NY, NX, seed=4)
    dotproduct_adjointness_test(op.forward, op.adjoint, u, v)


def test_subspace_adjoint(phi: torch.Tensor) -> None:
    op = SubspaceOperator(phi)
    u, v = randn_complex(K, NZ, NY, NX, seed=3), randn_complex(T, NZ, NY, NX, seed=4)
    dotproduct_adjointness_test(op.forward, op.adjoint, u, v)


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


@pytest.mark.parametrize("with_phi", [False, True])
def test_encoding_equals_composition(lines, phi: torch.Tensor, with_phi: bool) -> None:
    """The folded-modulation operator equals the explicit chain M F C (Phi)."""
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=10)
    p = phi if with_phi else None
    enc = EncodingOperator(coils, ky, kz, contrast, p, n_contrasts=T)
    chain = SamplingOperator(ky, kz, contrast, (T, NC, NZ, NY, NX)) @ FourierOperator()
    chain = chain @ CoilOperator(coils)
    if with_phi:
        chain = chain @ SubspaceOperator(phi)
    x = randn_complex(K if with_phi else T, NZ, NY, NX, seed=11)
    torch.testing.assert_close(enc(x), chain(x), rtol=1e-5, atol=1e-5)
    y = randn_complex(L, NC, NX, seed=12)
    torch.testing.assert_close(enc.H(y), chain.H(y), rtol=1e-5, atol=1e-5)
    dotproduct_adjointness_test(enc.forward, enc.adjoint, x, y)


def test_gram_matches_naive(lines, phi: torch.Tensor) -> None:
    ky, kz, contrast = lines
    gram = subspace_gram(ky, kz, contrast, phi, (NZ, NY))
    naive = torch.zeros(NZ, NY, K, K, dtype=torch.complex64)
    for y_, z_, t_ in zip(ky.tolist(), kz.tolist(), contrast.tolist(), strict=True):
        naive[z_, y_] += torch.outer(phi[t_].conj(), phi[t_])
    torch.testing.assert_close(gram, naive)


def test_normal_matches_naive(lines, phi: torch.Tensor) -> None:
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=13)
    enc = EncodingOperator(coils, ky, kz, contrast, phi)
    x = randn_complex(K, NZ, NY, NX, seed=14)
    torch.testing.assert_close(enc.normal(x), enc.H(enc(x)), rtol=1e-5, atol=1e-5)


def test_subspace_data_term_matches_naive(lines, phi: torch.Tensor) -> None:
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=13)
    x = randn_complex(K, NZ, NY, NX, seed=14)
    y = randn_complex(L, NC, NX, seed=15)
    naive = (y - EncodingOperator(coils, ky, kz, contrast, phi)(x)).abs().pow(2).sum()
    fast = SubspaceDataTerm(y, ky, kz, contrast, phi, (NZ, NY, NX))(x, coils)
    assert abs(fast - naive) <= 1e-5 * naive


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_contrast_data_term_matches_naive(lines, chunk: int) -> None:
    ky, kz, contrast = lines
    coils = randn_complex(NC, NZ, NY, NX, seed=19)
    images = randn_complex(T, NZ, NY, NX, seed=20)
    y = randn_complex(L, NC, NX, seed=21)
    naive = (y - EncodingOperator(coils, ky, kz, contrast, n_contrasts=T)(images)).abs().pow(2)
    exact = ContrastDataTerm(y, ky, kz, contrast, (NZ, NY, NX), chunk=chunk)(images, coils)
    assert abs(exact - naive.sum()) <= 1e-5 * naive.sum()


def test_data_terms_gradients_match_naive(lines, phi: torch.Tensor) -> None:
    """Gradients w.r.t. coefficients and coils of the fast forms equal the naive ones."""
    ky, kz, contrast = lines
    y = randn_complex(L, NC, NX, seed=17)
    fast = SubspaceDataTerm(y, ky, kz, contrast, phi, (NZ, NY, NX))
    x1 = randn_complex(K, NZ, NY, NX, seed=18).requires_grad_(True)
    c1 = randn_complex(NC, NZ, NY, NX, seed=22).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    c2 = c1.detach().clone().requires_grad_(True)
    fast(x1, c1).backward()
    (y - EncodingOperator(c2, ky, kz, contrast, phi)(x2)).abs().pow(2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c1.grad, c2.grad, rtol=1e-4, atol=1e-4)
