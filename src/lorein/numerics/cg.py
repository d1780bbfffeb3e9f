"""Conjugate gradient for Hermitian positive (semi)definite systems on tensors of any shape.

Solves ``(A + damping I) x = rhs`` where ``A`` is given as a function (typically a normal operator
``E^H E``). Every step is a plain, out-of-place torch operation, so the solver is differentiable
through its iterations and can sit inside an unrolled network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _inner(a: torch.Tensor, b: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """``Re <a, b>`` over all but the first ``batch_dims`` axes; shape ``a.shape[:batch_dims]``."""
    batch = a.shape[:batch_dims]
    return torch.linalg.vecdot(a.reshape(*batch, -1), b.reshape(*batch, -1)).real


def _expand(scalar: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-system scalars ``[*batch]`` shaped to broadcast against ``like`` ``[*batch, ...]``."""
    return scalar.reshape(*scalar.shape, *([1] * (like.ndim - scalar.ndim)))


def _safe_ratio(num: torch.Tensor, den: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``live`` and ``den > 0``, else 0; the gradient stays finite in both
    branches (the masked division never sees a zero or vanishing denominator)."""
    ok = live & (den > 0)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), 0.0)


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    iterations: int = 10,
    tol: float = 1e-6,
    damping: float = 0.0,
    *,
    batch_dims: int = 0,
) -> torch.Tensor:
    """Solve ``(A + damping I) x = rhs`` for a Hermitian positive (semi)definite ``A``.

    Parameters
    ----------
    normal
        ``x -> A x``, same shape and dtype in and out; ``A`` Hermitian positive semidefinite
        (for example ``E^H E`` of an encoding operator ``E``).
    rhs
        Right-hand side, real or complex tensor of any shape ``[*batch, ...]``.
    x0
        Initial guess, shape of ``rhs`` (default zeros).
    iterations
        Maximum number of iterations, one application of ``normal`` each (plus one for the
        initial residual when ``x0`` is given).
    tol
        Stop early once ``||r|| <= tol ||rhs||`` for the residual ``r = rhs - (A + damping I) x``
        of every system; 0 never stops early and never synchronises with the device (for unrolled
        networks on a GPU).
    damping
        Tikhonov weight ``lambda >= 0`` added to ``A``.
    batch_dims
        Number of leading axes of ``rhs`` that index independent systems, each with its own step
        sizes; ``normal`` must act on them independently. 0 (default): one system over the whole
        tensor.

    Returns
    -------
    ``x``, shape and dtype of ``rhs``. Differentiable with respect to ``rhs``, ``x0`` and anything
    ``normal`` depends on (backpropagation through the iterations).

    Notes
    -----
    A system whose residual or search direction vanishes (``rhs = 0``, converged, or a direction
    in the null space of a semidefinite ``A``) keeps its iterate: its step size is set to 0
    instead of dividing by zero. Converged means ``||r|| <= eps ||rhs||`` (``eps`` of the dtype):
    iterating further only divides rounding noise by rounding noise, whose derivatives overflow
    (a system that converged before the last of ``iterations`` made the whole backward pass NaN).
    """
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    if damping < 0:
        raise ValueError(f"damping must be non-negative, got {damping}")
    if not 0 <= batch_dims <= rhs.ndim:
        raise ValueError(f"batch_dims must be in [0, {rhs.ndim}], got {batch_dims}")

    def apply(v: torch.Tensor) -> torch.Tensor:
        av = normal(v)
        return av + damping * v if damping > 0 else av

    if x0 is None:
        x = torch.zeros_like(rhs)
        r = rhs
    else:
        x = x0
        r = rhs - apply(x0)
    p = r
    rr = _inner(r, r, batch_dims)
    rhs_norm = _inner(rhs, rhs, batch_dims).detach()
    threshold = (tol**2) * rhs_norm
    floor = torch.finfo(rr.dtype).eps ** 2 * rhs_norm
    for _ in range(iterations):
        if tol > 0 and bool((rr <= threshold).all()):
            break
        live = rr > floor
        ap = apply(p)
        alpha = _safe_ratio(rr, _inner(p, ap, batch_dims), live)
        x = x + _expand(alpha, x) * p
        r = r - _expand(alpha, r) * ap
        rr_new = _inner(r, r, batch_dims)
        beta = _safe_ratio(rr_new, rr, live)
        p = r + _expand(beta, p) * p
        rr = rr_new
    return x
