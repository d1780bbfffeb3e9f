"""Centred orthonormal FFTs without fftshift copies.

The centred DFT of length ``n`` (centre index ``c = n // 2`` in both domains) factors as

    X[k] = a[k] * FFT(b * x)[k],   b[j] = exp(2 pi i c j / n),   a[k] = exp(2 pi i c (k - c) / n),

so the two ``fftshift`` copies become two unit-modulus modulations. Operators fold ``b`` into the
coil maps and ``a`` into the acquired lines once, and then call the plain FFT in every iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def modulation(
    n: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre- and post-modulation vectors of the centred DFT of length ``n``.

    Parameters
    ----------
    n
        Transform length.
    device
        Device of the returned tensors.

    Returns
    -------
    pre
        ``[n]`` complex64, ``b``: multiplies the image before the plain FFT.
    post
        ``[n]`` complex64, ``a``: multiplies the plain FFT's output.
    """
    c = n // 2
    j = torch.arange(n, dtype=torch.float64, device=device)
    pre = torch.polar(torch.ones_like(j), 2 * torch.pi * c * j / n)
    post = torch.polar(torch.ones_like(j), 2 * torch.pi * c * (j - c) / n)
    return pre.to(torch.complex64), post.to(torch.complex64)


def _broadcast_modulation(
    shape: Sequence[int], dims: Sequence[int], ndim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outer product of per-axis modulations, shaped to broadcast against a tensor."""
    pre_all = torch.ones((), dtype=torch.complex64, device=device)
    post_all = torch.ones((), dtype=torch.complex64, device=device)
    for d in dims:
        d = d % ndim
        pre, post = modulation(shape[d], device)
        view = [1] * ndim
        view[d] = shape[d]
        pre_all = pre_all * pre.view(view)
        post_all = post_all * post.view(view)
    return pre_all, post_all


def centered_fft(x: torch.Tensor, dim: Sequence[int] = (-3, -2, -1)) -> torch.Tensor:
    """Centred orthonormal FFT over ``dim``: ``fftshift(fftn(ifftshift(x)))`` without shifts.

    Parameters
    ----------
    x
        Complex tensor ``[..., *spatial]``; the centre of each transformed axis is at ``n // 2``.
    dim
        Axes to transform.

    Returns
    -------
    Complex tensor of the same shape, k-space centre at ``n // 2``.
    """
    pre, post = _broadcast_modulation(x.shape, dim, x.ndim, x.device)
    return torch.fft.fftn(x * pre, dim=tuple(dim), norm="ortho") * post


def centered_ifft(k: torch.Tensor, dim: Sequence[int] = (-3, -2, -1)) -> torch.Tensor:
    """Inverse of :func:`centered_fft` (its adjoint, the transform being unitary)."""
    pre, post = _broadcast_modulation(k.shape, dim, k.ndim, k.device)
    return torch.fft.ifftn(k * post.conj(), dim=tuple(dim), norm="ortho") * pre.conj()
