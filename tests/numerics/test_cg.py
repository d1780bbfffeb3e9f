"""Conjugate gradient: exact solves of small HPD systems, damping, early stop, batches, autograd,
and CG-SENSE through the encoding operator."""

import pytest
import torch

from lorein.numerics.cg import conjugate_gradient
from lorein.physics.coils import rss_normalise, simulate_coils
from lorein.physics.operators import EncodingOperator
from tests.helpers import randn_complex

N = 12


def hpd_matrix(n: int, seed: int, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    """A random Hermitian positive definite ``n x n`` matrix, condition number about 10^2."""
    q, _ = torch.linalg.qr(randn_complex(n, n, seed=seed).to(dtype))
    eigenvalues = torch.logspace(0, 2, n, dtype=torch.float64).to(dtype)
    return (q * eigenvalues) @ q.mH


def matrix_normal(a: torch.Tensor, shape: tuple[int, ...]):
    """``x -> A x`` for ``x`` of ``shape`` flattened to a vector."""
    return lambda x: (a @ x.reshape(-1)).reshape(shape)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_solves_hpd_system(dtype: torch.dtype) -> None:
    a = hpd_matrix(N, seed=1, dtype=dtype)
    shape = (3, 4)
    b = randn_complex(*shape, seed=2).to(dtype)
    # stop at a relative residual of ``tol``: the error is then at most ``cond(A) tol`` (cond 100);
    # in single precision the residual stalls near ``cond(A) eps``, so every step runs
    tol = 1e-6 if dtype == torch.complex64 else 1e-13
    x = conjugate_gradient(matrix_normal(a, shape), b, iterations=3 * N, tol=tol)
    expected = torch.linalg.solve(a.to(torch.complex128), b.reshape(-1).to(torch.complex128))
    bound = 100 * max(tol, 10 * torch.finfo(x.real.dtype).eps)
    assert x.dtype == dtype and x.shape == shape
    error = (x.reshape(-1).to(torch.complex128) - expected).norm() / expected.norm()
    assert error < bound


def test_real_system() -> None:
    a = hpd_matrix(N, seed=3).real.contiguous()
    a = a @ a.T + torch.eye(N, dtype=torch.float64)
    b = torch.randn(N, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=3 * N, tol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-12)


def test_damping_adds_identity() -> None:
    a = hpd_matrix(N, seed=5)
    b = randn_complex(N, seed=6).to(torch.complex128)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=3 * N, tol=1e-12, damping=3.0)
    expected = torch.linalg.solve(a + 3.0 * torch.eye(N, dtype=a.dtype), b)
    torch.testing.assert_close(x, expected, rtol=1e-9, atol=1e-12)


def test_early_stop_on_relative_residual() -> None:
    n = 40
    q, _ = torch.linalg.qr(randn_complex(n, n, seed=7).to(torch.complex128))
    a = (q * torch.logspace(0, 1, n, dtype=torch.float64)) @ q.mH  # condition number 10
    b = randn_complex(n, seed=8).to(torch.complex128)
    calls = []

    def normal(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return a @ v

    x = conjugate_gradient(normal, b, iterations=100, tol=1e-3)
    n_early = len(calls)
    assert (b - a @ x).norm() <= 1e-3 * b.norm()
    assert n_early < n // 2  # stopped long before the n steps that solve it exactly
    calls.clear()
    conjugate_gradient(normal, b, iterations=100, tol=0.0)
    assert len(calls) == 100  # tol = 0 never stops early


def test_initial_guess_and_zero_rhs() -> None:
    a = hpd_matrix(N, seed=9)
    b = randn_complex(N, seed=10).to(torch.complex128)
    solution = torch.linalg.solve(a, b)
    calls = []

    def normal(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return a @ v

    x = conjugate_gradient(normal, b, x0=solution, iterations=5, tol=1e-8)
    assert len(calls) == 1  # only the initial residual: x0 already solves it
    torch.testing.assert_close(x, solution)
    zero = conjugate_gradient(lambda v: a @ v, torch.zeros_like(b), iterations=5, tol=0.0)
    assert torch.equal(zero, torch.zeros_like(b))  # no 0/0: the iterate stays at 0


def test_semidefinite_system_stays_in_range() -> None:
    # A = P diag P with a null space; b in the range: the minimum-norm solution, no NaN
    a = hpd_matrix(N, seed=11)
    null = torch.zeros(N, dtype=torch.float64)
    null[: N // 2] = 1.0
    a = a * null[:, None] * null[None, :]
    b = randn_complex(N, seed=12).to(torch.complex128) * null
    x = conjugate_gradient(lambda v: a @ v, b, iterations=3 * N, tol=0.0)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, torch.linalg.pinv(a) @ b, rtol=1e-7, atol=1e-9)


def test_batched_systems_have_their_own_step_sizes() -> None:
    # two systems with very different spectra: per-system steps solve both in N iterations,
    # and each equals the CG of that system alone
    a = torch.stack([hpd_matrix(N, seed=13), 1e3 * hpd_matrix(N, seed=14)])
    b = randn_complex(2, N, seed=15).to(torch.complex128)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return (a @ v[..., None]).squeeze(-1)

    x = conjugate_gradient(normal, b, iterations=6, tol=0.0, batch_dims=1)
    for i in range(2):
        alone = conjugate_gradient(lambda v, i=i: a[i] @ v, b[i], iterations=6, tol=0.0)
        torch.testing.assert_close(x[i], alone, rtol=1e-10, atol=1e-12)
    solved = conjugate_gradient(normal, b, iterations=3 * N, tol=1e-10, batch_dims=1)
    torch.testing.assert_close(solved, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    joint = conjugate_gradient(normal, b, iterations=6, tol=0.0)
    assert not torch.allclose(joint, x)  # one system over both: different iterates


def test_differentiable_through_iterations() -> None:
    a = hpd_matrix(4, seed=16)
    b = randn_complex(4, seed=17).to(torch.complex128).requires_grad_()
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda rhs, s: conjugate_gradient(lambda v: s * (a @ v), rhs, iterations=3, tol=0.0),
        (b, scale),
    )


def test_gradient_stays_finite_after_convergence() -> None:
    # (mu I) x = mu z converges in one step; the later steps of an unrolled network's fixed
    # iteration count must not divide rounding noise by rounding noise (they made it NaN)
    mu = torch.tensor(0.05, requires_grad=True)
    z = randn_complex(3, 2, 16, seed=18).requires_grad_()
    x = conjugate_gradient(lambda v: mu * v, mu * z, iterations=6, tol=0.0, batch_dims=2)
    grad_mu, grad_z = torch.autograd.grad(x.abs().square().sum(), (mu, z))
    torch.testing.assert_close(x, z)  # x = z whatever mu
    assert abs(grad_mu.item()) < 1e-5
    torch.testing.assert_close(grad_z, 2 * z.detach())


def test_cg_sense_fully_sampled_is_exact() -> None:
    nz, ny, nx, n_coils, n_frames = 4, 8, 6, 4, 2
    # unit-RSS coils times a smooth profile: E^H E = diag(profile^2) is not the identity
    profile = 1.0 + torch.linspace(0.0, 1.0, nz * ny * nx).reshape(nz, ny, nx)
    coils = rss_normalise(simulate_coils(n_coils, (nx, ny, nz), (3.0, 3.0, 5.0))) * profile
    grid = torch.meshgrid(torch.arange(nz), torch.arange(ny), indexing="ij")
    kz, ky = (k.flatten() for k in grid)
    contrast = torch.arange(n_frames).repeat_interleave(nz * ny)
    op = EncodingOperator(coils, ky.repeat(n_frames), kz.repeat(n_frames), contrast)
    truth = randn_complex(n_frames, nz, ny, nx, seed=18)
    rhs = op.adjoint(op.forward(truth))
    x = conjugate_gradient(
        lambda v: op.adjoint(op.forward(v)), rhs, iterations=60, tol=1e-7, batch_dims=1
    )
    assert (x - truth).norm() / truth.norm() < 1e-5
    one_step = conjugate_gradient(lambda v: op.adjoint(op.forward(v)), rhs, iterations=1)
    assert (one_step - truth).norm() / truth.norm() > 1e-2  # so the test needs the iterations
