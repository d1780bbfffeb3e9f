"""Centred FFT: agrees with the shift-based definition, unitary, centre at n // 2."""

import pytest
import torch

from lorein.physics.fft import centered_fft, centered_ifft
from tests.helpers import dotproduct_adjointness_test, randn_complex


def _reference(x: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    shifted = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.fftn(shifted, dim=dim, norm="ortho"), dim=dim)


@pytest.mark.parametrize("shape", [(4, 6, 8), (5, 7, 3), (2, 9, 16, 11)])
def test_matches_fftshift_definition(shape: tuple[int, ...]) -> None:
    x = randn_complex(*shape, seed=1)
    dim = (-3, -2, -1)
    torch.testing.assert_close(centered_fft(x, dim), _reference(x, dim), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [8, 9])
def test_dc_at_centre(n: int) -> None:
    x = torch.ones(n, n, dtype=torch.complex64)
    k = centered_fft(x, dim=(-2, -1))
    assert k.abs().argmax().item() == (n // 2) * n + n // 2
    torch.testing.assert_close(k[n // 2, n // 2].abs(), torch.tensor(float(n)))


def test_inverse_and_adjoint() -> None:
    x = randn_complex(3, 6, 5, seed=2)
    y = randn_complex(3, 6, 5, seed=3)
    torch.testing.assert_close(centered_ifft(centered_fft(x)), x, rtol=1e-5, atol=1e-5)
    dotproduct_adjointness_test(centered_fft, centered_ifft, x, y)
