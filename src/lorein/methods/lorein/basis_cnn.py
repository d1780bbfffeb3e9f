"""The CNN that refines the LRR block's spatial bases (paper Fig. 3).

The paper describes: complex bases split into real and imaginary channels, strided convolution
(stride 2) to down-sample, transposed convolution to up-sample, and a shared-feature-attention
module that extracts structure shared by all bases. It gives no channel counts or layer list, so
this is our design from that text:

- Each basis ``k`` is processed by the same encoder/decoder (weights shared across bases), on 2D
  slices along z (batch = z x K): in-plane is where the detail and the aliasing are.
- Each basis is scaled to unit RMS before the network and back after it, since the bases'
  energies differ by orders of magnitude (they follow the singular values).
- Shared feature attention, at the down-sampled scale: the features of all bases are averaged into
  a shared map ``s``; each basis gates it in with ``sigmoid(conv1x1([f_k, s]))`` and adds it:
  ``f_k <- f_k + g_k * s``. So structure seen in the strong bases can reach the weak ones, which
  are the hard ones to recover (paper section III.C.1).
- The output is a residual: ``U = U0 + net(U0)``, with the last convolution initialised to zero so
  that the refinement starts as the identity.

On a slab of x-planes (plane-batched optimisation): output plane ``x`` depends on input planes
``x - 7 .. x + 6`` (``x`` odd) or ``x - 6 .. x + 6`` (``x`` even), through the 3x3 convolutions
at full and half resolution and the 2x2 up-sampling, and the stride-2 grid must sit where it sits
on the whole volume. So :meth:`BasisCNN.slab` widens a slab by ``HALO = 6`` planes on each side,
out to even boundaries (clipped to the volume); refined there and cropped back, the slab equals
the whole volume's refinement, given the same scale (the per-basis RMS, passed as ``scale``: a
slab's own RMS is not the volume's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class SharedFeatureAttention(nn.Module):
    """Mix the mean feature over bases into each basis through a learned gate.

    Parameters
    ----------
    channels
        Feature channels per basis.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(2 * channels, channels, kernel_size=1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """``f [B, K, C, H, W] -> [B, K, C, H, W]``."""
        b, k, c, h, w = f.shape
        shared = f.mean(dim=1, keepdim=True).expand_as(f)
        both = torch.cat([f, shared], dim=2).reshape(b * k, 2 * c, h, w)
        gate = torch.sigmoid(self.gate(both)).reshape(b, k, c, h, w)
        return f + gate * shared


class BasisCNN(nn.Module):
    """Residual refinement of ``K`` complex spatial bases ``[K, nz, ny, nx]``.

    Parameters
    ----------
    channels
        Feature channels at full resolution (twice that after down-sampling).
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.inp = nn.Conv2d(2, c, 3, padding=1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.attention = SharedFeatureAttention(2 * c)
        self.up = nn.ConvTranspose2d(2 * c, c, kernel_size=2, stride=2)
        self.fuse = nn.Conv2d(2 * c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 2, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    HALO = 6
    """Planes of x beyond each side of a slab that its refinement reads (module docstring)."""

    @staticmethod
    def unit_scale(u: torch.Tensor) -> torch.Tensor:
        """``[K, 1, 1, 1]`` detached RMS of each basis of ``u [K, nz, ny, nx]`` (plus 1e-12)."""
        return u.abs().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().detach() + 1e-12

    @classmethod
    def slab(cls, planes: slice, nx: int) -> slice:
        """The x-planes to refine so that ``planes`` come out as on the whole volume.

        Parameters
        ----------
        planes
            ``slice(start, stop)`` of x-planes.
        nx
            Planes of the volume.

        Returns
        -------
        ``slice(lo, hi)``: ``HALO`` more planes each side, ``lo`` even, ``hi`` even or ``nx``.
        """
        lo = max(0, planes.start - cls.HALO - planes.start % 2)
        hi = min(nx, planes.stop + cls.HALO + planes.stop % 2)
        return slice(lo, hi)

    def forward(self, u: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Refine the bases.

        Parameters
        ----------
        u
            ``[K, nz, ny, nx]`` complex64 coarse bases from the MLP (or a :meth:`slab` of them).
        scale
            ``[K, 1, 1, 1]`` RMS of each basis on the whole volume; None: :meth:`unit_scale` of
            ``u``.

        Returns
        -------
        ``[K, nz, ny, nx]`` complex64 refined bases.
        """
        k, nz, ny, nx = u.shape
        scale = self.unit_scale(u) if scale is None else scale
        x = torch.view_as_real(u / scale)  # [K, nz, ny, nx, 2]
        x = x.permute(1, 0, 4, 2, 3).reshape(nz * k, 2, ny, nx)
        pad_y, pad_x = ny % 2, nx % 2
        x = F.pad(x, (0, pad_x, 0, pad_y), mode="replicate")
        x = x.contiguous(memory_format=torch.channels_last)  # 2-3x faster convolutions on CPU
        f1 = F.relu(self.inp(x))
        f2 = F.relu(self.mid(F.relu(self.down(f1))))
        _, c2, h, w = f2.shape
        f2 = self.attention(f2.reshape(nz, k, c2, h, w)).reshape(nz * k, c2, h, w)
        g = F.relu(self.fuse(torch.cat([F.relu(self.up(f2)), f1], dim=1)))
        r = self.out(g)[..., :ny, :nx]  # [nz*K, 2, ny, nx]
        r = r.reshape(nz, k, 2, ny, nx).permute(1, 0, 3, 4, 2).contiguous()
        return u + torch.view_as_complex(r) * scale
