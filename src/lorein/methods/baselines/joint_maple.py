"""Joint-MAPLE baseline: zero-shot self-supervised unrolled reconstruction, then joint map fitting.

Follows Heydari et al., "Joint-MAPLE" (MRM 2024), in two stages:

1. **Zero-shot self-supervised unrolled reconstruction of all contrasts jointly** (ZS-SSL,
   :mod:`lorein.methods.baselines.zero_shot`). The acquired lines are split, per contrast and with
   a fixed seed, into a held-out set (for early stopping only) and, ``n_masks`` times, into a
   data-consistency (DC) set and a loss set
   (:func:`~lorein.methods.baselines.zero_shot.split_lines`); each contrast's counts are rounded up
   or down at random, so contrasts with 3-4 lines, as in sim 2, still contribute their share, and
   every contrast keeps at least one DC line. The network is ``x_0 = DC(0)``, then ``unrolls``
   times ``z = D(x); x = DC(z)`` with one shared CNN ``D`` and ``DC(z) = argmin_x ||M_dc (y - E
   x)||^2 + mu ||x - z||^2`` solved by conjugate gradients per contrast and plane (learned ``mu``).
   Training minimises ``0.5 relL2 + 0.5 relL1`` of the loss lines predicted from the DC lines; it
   stops once the held-out loss (DC on DC + loss lines) has not improved for ``patience``
   iterations and keeps the best weights. The final images use DC on every acquired line.
2. **Joint parameter estimation.** Maps are initialised by
   :func:`~lorein.numerics.voxel_fit.fit_maps` of the network images, then refined by Adam on
   ``||I - S(maps)||^2 / (T V) + beta ||y - E S(maps)||^2 / n_samples``: image consistency with the
   network images ``I`` inside the support (``V`` voxels) and k-space consistency of the signal
   model ``S`` with every acquired sample (``beta = 100`` as in the original, both terms means;
   the k-space term in the cheaper of two equal forms, :func:`kspace_data_term`).
   Relaxation times are refined as clamped logarithms
   (:class:`~lorein.numerics.voxel_fit.FitBounds`), ``|B0| <= 1 / (2 dTE)``, ``M0 >= 0``.

Coils are ESPIRiT maps (:func:`~lorein.methods.calibration.espirit_coils`); the data are scaled by
the calibration estimate as LoREIN does, and ``M0`` and the images are returned in data units.

Where it departs from the original:

- **Hybrid space, plane minibatches.** The readout is fully sampled, so after one inverse FFT
  along x each (z, y) plane is an independent problem. The CNN is 2D over (z, y) planes (the
  plane where Cartesian ky-kz undersampling aliases), the CG systems are independent per plane and
  contrast, and training uses ``planes_per_step`` planes per step (deterministic permutations).
  ``E^H M E`` is applied with a multiplicity mask on the 2D k-space of the plane instead of
  gathering lines: 2D FFTs only, no 3D FFT per contrast and coil.
- **Many contrasts.** Complex contrast images enter the CNN as ``2T`` real channels that a 1x1
  convolution projects to ``channels`` features (and another maps back, as a residual correction
  initialised to zero), so the cost of the 3x3 layers does not grow with ``T`` (sim 2 has
  ``T = 1280``); inference runs over chunks of planes.
- **Sizes.** The original uses 8 unrolls, a ResNet of 12 blocks x 128 channels and 6 CG
  iterations (``full_size=True``); the CPU defaults are 4 unrolls, 2 blocks x 32 channels and
  4 CG iterations. The original trains per slice with many masks over hours; here ``n_masks``
  masks, at most ``iterations`` steps.
- ``x_0`` is the damped CG-SENSE solution ``DC(0)`` (ZS-SSL starts the unrolls from ``E^H y``),
  and each DC solve is warm-started at ``z``.
- ``dc_solver = "exact"`` (not in the original) solves each DC step exactly instead of by
  ``cg_iterations`` CG steps. A contrast with ``m`` distinct sampled locations in a plane has
  ``E^H M E = B^H B`` with ``B`` of rank ``C m``, so by the Woodbury identity
  ``x = (r - B^H (mu I + B B^H)^{-1} B r) / mu`` for ``r = E^H M y + mu z``: one ``B`` and
  one ``B^H`` per DC step instead of a normal operator per CG iteration, and a ``C m x C m``
  Cholesky factorisation per plane and contrast, shared by all unrolls. ``B`` is a DFT at the
  ``m`` locations (a matrix product, no FFT of every coil image); ``B B^H`` needs no image at
  all: its entries are the 2D FFTs of the coil products ``S_c conj(S_c')`` at the differences
  of the sampled locations. Worth it where ``C m`` is small (sim 2: at most 4 lines per
  contrast, ``C m <= 32`` against ``nz ny = 640``); the CG path is the default, cheaper where
  contrasts sample many locations (step times: docs/tuning/joint-maple.md).
- The voxel fit uses the shared :func:`fit_maps` (echo analysis, dictionary, Levenberg-Marquardt)
  as the initialisation of the gradient-based joint refinement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.base import Method, RunContext, finish, prepare
from lorein.methods.baselines.zero_shot import (
    EarlyStopping,
    LineSplit,
    ResidualBlock,
    Training,
    kspace_loss,
    loss_parts,
    normalised_loss,
    split_lines,
)
from lorein.methods.calibration import espirit_coils
from lorein.numerics.cg import conjugate_gradient
from lorein.numerics.optimisation import LoopConfig, Optimisation
from lorein.numerics.voxel_fit import FitBounds, default_b0_max, fit_maps
from lorein.physics.fft import centered_ifft, modulation
from lorein.physics.models.base import SignalModel
from lorein.physics.operators import ContrastDataTerm
from lorein.settings import Count, NonNegative, Positive, PositiveCount, validate

FULL_SIZE = {"unrolls": 8, "channels": 128, "blocks": 12, "cg_iterations": 6}
"""Network sizes of the original Joint-MAPLE."""

_INFERENCE_BYTES = 2**28
"""Budget [bytes] of one chunk's coil k-space ``[planes, T, coils, nz, ny]`` at inference."""

_LOG_TIMES = ("T1", "T2", "T2star")

DcSolver = Literal["cg", "exact"]


@dataclass
class JointMapleConfig:
    """Hyper-parameters of Joint-MAPLE (CPU-reduced network; ``full_size`` for the original).

    Attributes
    ----------
    unrolls
        Unrolled CNN + DC blocks after the initial DC (original: 8).
    channels
        Feature channels of the CNN (original: 128).
    blocks
        Residual blocks of the CNN (original: 12).
    cg_iterations
        Conjugate-gradient iterations per DC step (original: 6); unused by the exact solver.
    dc_solver
        ``"cg"``: ``cg_iterations`` CG steps per DC step, as the original; ``"exact"``: the
        Woodbury solution (module docstring), fast where each contrast samples few locations.
    full_size
        Use the original sizes :data:`FULL_SIZE` instead of the four fields above.
    iterations
        Largest number of training steps.
    lr
        Adam learning rate of the network (ZS-SSL: 5e-4, for far longer training).
    planes_per_step
        (z, y) planes (readout positions) in one training step.
    validate_every
        Steps between evaluations of the held-out loss.
    patience
        Steps without a lower held-out loss after which training stops.
    heldout_fraction
        Fraction of each contrast's lines held out for early stopping (ZS-SSL: 0.2).
    loss_fraction
        Fraction of the remaining lines in each loss set; the rest are DC lines (ZS-SSL: 0.4).
    n_masks
        Number of DC / loss partitions, used in turn. Many partitions keep the network from
        memorising the loss lines (docs/tuning/joint-maple.md).
    mu
        Initial weight of the DC proximal term (learned; ZS-SSL: 0.05).
    map_iterations
        Adam steps of the joint map refinement (learning rate halved every quarter).
    map_lr
        Adam learning rate of the refinement, in its internal units (log-times, rad, relative M0).
    beta
        Weight of the k-space term against the image term (original: 100).
    coil_compression
        Number of virtual coils (SVD compression); None keeps all coils.
    """

    unrolls: Count = 4
    channels: PositiveCount = 32
    blocks: Count = 2
    cg_iterations: Count = 4
    dc_solver: DcSolver = "cg"
    full_size: bool = False
    iterations: Count = 300
    lr: Positive = 1e-3
    planes_per_step: PositiveCount = 8
    validate_every: PositiveCount = 10
    patience: PositiveCount = 50
    heldout_fraction: float = 0.2
    loss_fraction: float = 0.4
    n_masks: PositiveCount = 25
    mu: NonNegative = 0.05
    map_iterations: Count = 100
    map_lr: Positive = 1e-2
    beta: NonNegative = 100.0
    coil_compression: PositiveCount | None = None

    def __post_init__(self) -> None:
        validate(self)

    def network_sizes(self) -> dict[str, int]:
        """``unrolls``, ``channels``, ``blocks`` and ``cg_iterations`` in effect."""
        if self.full_size:
            return dict(FULL_SIZE)
        return {k: getattr(self, k) for k in FULL_SIZE}


# --------------------------------------------------------------------------------------------
# encoding in hybrid (x, ky, kz) space
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampledLocations:
    """The distinct (kz, ky) locations each contrast samples, padded to the largest count ``m``.

    Attributes
    ----------
    index
        ``[T, m]`` int64 flat locations ``kz * ny + ky`` (unsampled ones on padding).
    root_weight
        ``[T, m]`` float32 square roots of the multiplicities (0 on padding).
    dft
        ``[T, m, nz ny]`` complex64 rows of the orthonormal 2D DFT at those locations, times
        ``root_weight``.
    """

    index: torch.Tensor
    root_weight: torch.Tensor
    dft: torch.Tensor

    @staticmethod
    def count(weights: torch.Tensor) -> int:
        """``m``, the most distinct locations any contrast samples (at least 1), of the
        multiplicities ``[T, nz, ny]``, without building the DFT rows."""
        return max(int((weights.flatten(1) > 0).sum(1).max()), 1)

    @classmethod
    def of(cls, weights: torch.Tensor) -> SampledLocations:
        """From the multiplicities ``[T, nz, ny]`` of :meth:`PlaneEncoding.weights`."""
        _, nz, ny = weights.shape
        flat = weights.flatten(1)
        sampled = (flat > 0).to(torch.uint8)
        m = cls.count(weights)
        index = torch.argsort(sampled, dim=1, descending=True, stable=True)[:, :m]
        root_weight = flat.gather(1, index).sqrt()
        z, y = (torch.arange(n, device=weights.device, dtype=torch.float64) for n in (nz, ny))
        kz, ky = (index // ny).double(), (index % ny).double()
        turns = kz[..., None, None] * z[:, None] / nz + ky[..., None, None] * y / ny
        dft = torch.polar(
            root_weight[..., None, None].double() / math.sqrt(nz * ny), -2 * math.pi * turns
        )
        return cls(index, root_weight, dft.flatten(-2).to(torch.complex64))


class PlaneEncoding:
    """``E = M F_zy C`` on (z, y) planes after an inverse FFT of the lines along the readout x.

    Plane images are ``[B, T, nz, ny]`` (``B`` readout positions ``xs``). The centred 2D FFT's
    modulations are folded into the coils and the lines once (see :mod:`lorein.physics.fft`), so
    every transform is a plain 2D FFT.

    Parameters
    ----------
    kspace
        ``[L, C, nx]`` complex64 acquired lines (centred k-space).
    ky, kz, contrast
        ``[L]`` line locations and contrasts.
    coils
        ``[C, nz, ny, nx]`` complex64 sensitivities.
    n_contrasts
        Number of contrasts ``T``.
    """

    def __init__(
        self,
        kspace: torch.Tensor,
        ky: torch.Tensor,
        kz: torch.Tensor,
        contrast: torch.Tensor,
        coils: torch.Tensor,
        n_contrasts: int,
    ) -> None:
        n_coils, nz, ny, nx = coils.shape
        dev = coils.device
        self.shape = (n_contrasts, nz, ny, nx)
        self.ky, self.kz, self.contrast = (
            ky.long().to(dev),
            kz.long().to(dev),
            contrast.long().to(dev),
        )
        pre_z, post_z = modulation(nz, dev)
        pre_y, post_y = modulation(ny, dev)
        pre = pre_z[:, None] * pre_y[None, :]
        post = post_z[self.kz] * post_y[self.ky]
        # planes first: coils [nx, C, nz, ny], lines [L, nx, C]
        self.coils = (coils * pre[:, :, None]).permute(3, 0, 1, 2).contiguous()
        hybrid = centered_ifft(kspace.to(dev), dim=(-1,)) * post.conj()[:, None, None]
        self.lines = hybrid.permute(0, 2, 1).contiguous()

    @property
    def n_planes(self) -> int:
        """Number of readout positions ``nx``."""
        return self.shape[3]

    def weights(self, rows: torch.Tensor) -> torch.Tensor:
        """``[T, nz, ny]`` float32 number of times ``rows`` sample each location (``M^H M``)."""
        t, nz, ny, _ = self.shape
        w = torch.zeros(t, nz, ny, device=self.ky.device)
        ones = torch.ones(rows.numel(), device=w.device)
        return w.index_put_((self.contrast[rows], self.kz[rows], self.ky[rows]), ones, True)

    def kspace(self, u: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Coil k-space ``[B, T, C, nz, ny]`` of plane images ``u [B, T, nz, ny]``."""
        return torch.fft.fft2(u.unsqueeze(2) * self.coils[xs].unsqueeze(1), norm="ortho")

    def _combine(self, k: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`kspace`."""
        return (torch.fft.ifft2(k, norm="ortho") * self.coils[xs].conj().unsqueeze(1)).sum(2)

    def predict(self, u: torch.Tensor, rows: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Lines ``rows`` of plane images ``u``: ``[n, B, C]``."""
        k = self.kspace(u, xs)
        return k[:, self.contrast[rows], :, self.kz[rows], self.ky[rows]]

    def measured(self, rows: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Acquired lines ``rows`` at planes ``xs``, ``[n, B, C]``, modulated as :meth:`predict`."""
        return self.lines[rows][:, xs]

    def adjoint(self, rows: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """``E^H y`` of the lines ``rows`` at planes ``xs``: ``[B, T, nz, ny]``."""
        t, nz, ny, _ = self.shape
        k = torch.zeros(
            xs.numel(), t, self.coils.shape[1], nz, ny, dtype=self.lines.dtype, device=xs.device
        )
        index = (self.contrast[rows], self.kz[rows], self.ky[rows])
        k.permute(1, 3, 4, 0, 2).index_put_(index, self.measured(rows, xs), accumulate=True)
        return self._combine(k, xs)

    def normal(self, u: torch.Tensor, weights: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """``E^H M E u`` for multiplicities ``weights [T, nz, ny]`` (from :meth:`weights`)."""
        return self._combine(self.kspace(u, xs) * weights[:, None], xs)

    def sample(
        self, u: torch.Tensor, locations: SampledLocations, xs: torch.Tensor
    ) -> torch.Tensor:
        """``B u``: coil k-space at the sampled locations, times ``sqrt(multiplicity)``.

        ``u [B, T, nz, ny] -> [B, T, C, m]``; ``B^H B`` is :meth:`normal` with the weights that
        ``locations`` came from. A DFT at the ``m`` locations (a matrix product over the plane)
        instead of an FFT of every coil image.
        """
        t, m = locations.index.shape
        s = self.coils[xs].flatten(-2)  # [B, C, P]
        weighted = u.flatten(-2)[:, :, None] * locations.dft  # [B, T, m, P]
        k = weighted.flatten(1, 2) @ s.transpose(1, 2)  # [B, T m, C]
        return k.unflatten(1, (t, m)).transpose(2, 3)

    def spread(
        self, v: torch.Tensor, locations: SampledLocations, xs: torch.Tensor
    ) -> torch.Tensor:
        """``B^H v``, the adjoint of :meth:`sample`: ``[B, T, C, m] -> [B, T, nz, ny]``."""
        _, nz, ny, _ = self.shape
        s = self.coils[xs].flatten(-2)  # [B, C, P]
        combined = v.transpose(2, 3).flatten(1, 2) @ s.conj()  # [B, T m, P]
        images = (combined.unflatten(1, locations.index.shape) * locations.dft.conj()).sum(2)
        return images.unflatten(-1, (nz, ny))

    def sampled_gram(self, locations: SampledLocations, xs: torch.Tensor) -> torch.Tensor:
        """``B B^H`` of :meth:`sample`: ``[B, T, C m, C m]`` (coil-major, as ``sample``'s output).

        Entry ``((c, k), (c', k'))`` is ``sqrt(w_k w_k') F(S_c conj(S_c'))[k - k'] / sqrt(nz ny)``
        (``F`` the orthonormal 2D FFT, differences modulo the grid): no transform of any image.
        """
        t, nz, ny, _ = self.shape
        s = self.coils[xs]
        products = torch.fft.fft2(s[:, :, None] * s[:, None].conj(), norm="ortho")
        products = products.flatten(-2) / math.sqrt(nz * ny)  # [B, C, C, nz ny]
        kz, ky = locations.index // ny, locations.index % ny
        dz, dy = (kz[:, :, None] - kz[:, None]) % nz, (ky[:, :, None] - ky[:, None]) % ny
        difference = dz * ny + dy  # [T, m, m]
        w = locations.root_weight
        gram = products[..., difference] * (w[:, :, None] * w[:, None])  # [B, C, C, T, m, m]
        b, c, m = s.shape[0], s.shape[1], w.shape[1]
        return gram.permute(0, 3, 1, 4, 2, 5).reshape(b, t, c * m, c * m)


class SampledDataTerm:
    """``||y - E I||^2`` over every acquired sample, evaluated at the distinct sampled locations.

    Equal to :class:`~lorein.physics.operators.ContrastDataTerm` (readout FFT: Parseval in hybrid
    space) without a 3D FFT per contrast and coil: :meth:`PlaneEncoding.sample` on every plane.
    A location sampled ``w`` times with lines ``y_1 .. y_w`` contributes
    ``sum_r |p - y_r|^2 = |sqrt(w) p - s / sqrt(w)|^2 + sum_r |y_r|^2 - |s|^2 / w`` with
    ``s = sum_r y_r``, so the term is ``||B I - y~||^2 + const`` with ``y~ = s / sqrt(w)``.

    Parameters
    ----------
    encoding
        The encoding; all of its acquired lines enter.
    """

    def __init__(self, encoding: PlaneEncoding) -> None:
        t, nz, ny, nx = encoding.shape
        dev = encoding.ky.device
        self.encoding = encoding
        self.locations = SampledLocations.of(
            encoding.weights(torch.arange(encoding.lines.shape[0], device=dev))
        )
        index, root = self.locations.index, self.locations.root_weight
        m = index.shape[1]
        slot = torch.zeros(t, nz * ny, dtype=torch.long, device=dev)
        slot.scatter_(1, index, torch.arange(m, device=dev).expand(t, m).contiguous())
        line_slot = slot[encoding.contrast, encoding.kz * ny + encoding.ky]  # [L]
        sums = encoding.lines.new_zeros(t, m, nx, encoding.lines.shape[2])
        sums.index_put_((encoding.contrast, line_slot), encoding.lines, accumulate=True)
        scale = torch.where(root > 0, 1 / root.clamp_min(1e-30), 0.0)
        self.target = (sums * scale[:, :, None, None]).permute(2, 0, 3, 1).contiguous()
        self.constant = encoding.lines.abs().square().sum() - self.target.abs().square().sum()
        per_plane = t * m * nz * ny * 8
        self.chunks = torch.arange(nx, device=dev).split(max(1, _INFERENCE_BYTES // per_plane))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The data term of ``images [T, nz, ny, nx]`` (the encoding's coils)."""
        planes = plane_images(images)
        total = self.constant
        for xs in self.chunks:
            predicted = self.encoding.sample(planes[xs], self.locations, xs)
            total = total + (predicted - self.target[xs]).abs().square().sum()
        return total


def kspace_data_term(
    encoding: PlaneEncoding, kspace: torch.Tensor, coils: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``I -> ||y - E I||^2`` by whichever of two equal forms is cheaper for this sampling.

    :class:`SampledDataTerm` costs about ``m`` (distinct locations per contrast) image-sized
    products per contrast, the per-contrast FFT term
    (:class:`~lorein.physics.operators.ContrastDataTerm`) about ``C`` (coils) FFTs: the first
    when ``m <= C`` (timings: docs/tuning/joint-maple.md).

    Parameters
    ----------
    encoding
        The encoding (its coils, lines and locations).
    kspace, coils
        ``[L, C, nx]`` acquired lines and ``[C, nz, ny, nx]`` sensitivities that ``encoding`` was
        built from.
    """
    rows = torch.arange(kspace.shape[0], device=encoding.ky.device)
    if SampledLocations.count(encoding.weights(rows)) <= coils.shape[0]:
        return SampledDataTerm(encoding)
    _, nz, ny, nx = encoding.shape
    term = ContrastDataTerm(kspace, encoding.ky, encoding.kz, encoding.contrast, (nz, ny, nx))
    return lambda images: term(images, coils)


def plane_images(images: torch.Tensor) -> torch.Tensor:
    """``[T, nz, ny, nx] -> [nx, T, nz, ny]``."""
    return images.permute(3, 0, 1, 2)


def volume_images(planes: torch.Tensor) -> torch.Tensor:
    """``[nx, T, nz, ny] -> [T, nz, ny, nx]``."""
    return planes.permute(1, 2, 3, 0).contiguous()


# --------------------------------------------------------------------------------------------
# the unrolled network
# --------------------------------------------------------------------------------------------


class Denoiser(nn.Module):
    """Residual CNN on the complex images of all contrasts of (z, y) planes.

    ``2T`` real channels -> 1x1 projection to ``channels`` -> 3x3 conv -> residual blocks -> 3x3
    conv (+ skip) -> 1x1 expansion to ``2T``, added to the input. The expansion starts at zero,
    so the untrained network is the identity.

    Parameters
    ----------
    n_contrasts
        ``T``.
    channels
        Feature channels.
    blocks
        Residual blocks.
    """

    def __init__(self, n_contrasts: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(2 * n_contrasts, channels, 1)
        self.head = nn.Conv2d(channels, channels, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(channels, bias=True) for _ in range(blocks)))
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.expand = nn.Conv2d(channels, 2 * n_contrasts, 1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, nz, ny]`` complex64 -> refined ``[B, T, nz, ny]``."""
        b, t, nz, ny = x.shape
        real = torch.view_as_real(x).permute(0, 1, 4, 2, 3).reshape(b, 2 * t, nz, ny)
        f = self.head(self.project(real))
        f = f + self.tail(self.body(f))
        out = self.expand(f).reshape(b, t, 2, nz, ny).permute(0, 1, 3, 4, 2).contiguous()
        return x + torch.view_as_complex(out)


class UnrolledNetwork(nn.Module):
    """``x_0 = DC(0)``, then ``unrolls`` x (``z = D(x)``, ``x = DC(z)``) with a shared ``D``.

    ``DC(z)`` solves ``(E^H M E + mu I) x = E^H M y + mu z`` per plane and contrast, by
    ``cg_iterations`` CG steps from ``z`` or exactly (``dc_solver = "exact"``, module
    docstring); ``mu = exp(log_mu)`` is learned.

    Parameters
    ----------
    n_contrasts
        ``T``.
    sizes
        ``unrolls``, ``channels``, ``blocks``, ``cg_iterations``.
    mu
        Initial ``mu``.
    dc_solver
        ``"cg"`` or ``"exact"``.
    """

    def __init__(
        self, n_contrasts: int, sizes: dict[str, int], mu: float, dc_solver: DcSolver = "cg"
    ) -> None:
        super().__init__()
        self.denoiser = Denoiser(n_contrasts, sizes["channels"], sizes["blocks"])
        self.log_mu = nn.Parameter(torch.tensor(math.log(mu)))
        self.unrolls = sizes["unrolls"]
        self.cg_iterations = sizes["cg_iterations"]
        self.dc_solver = dc_solver

    def forward(
        self,
        encoding: PlaneEncoding,
        rows: torch.Tensor,
        xs: torch.Tensor,
    ) -> torch.Tensor:
        """Images ``[B, T, nz, ny]`` of planes ``xs`` from the DC lines ``rows``."""
        rhs = encoding.adjoint(rows, xs)
        weights = encoding.weights(rows)
        mu = self.log_mu.exp()
        dc = self._data_consistency(encoding, weights, xs, rhs, mu)
        x = dc(None)
        for _ in range(self.unrolls):
            x = dc(self.denoiser(x))
        return x

    def _data_consistency(
        self,
        encoding: PlaneEncoding,
        weights: torch.Tensor,
        xs: torch.Tensor,
        rhs: torch.Tensor,
        mu: torch.Tensor,
    ) -> Callable[[torch.Tensor | None], torch.Tensor]:
        """``z -> DC(z)`` (``None``: ``z = 0``): ``cg_iterations`` CG steps from ``z``, or the
        Woodbury solution with one Cholesky factorisation shared by every call."""
        if self.dc_solver == "exact":
            locations = SampledLocations.of(weights)
            gram = encoding.sampled_gram(locations, xs)
            eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
            factor = torch.linalg.cholesky(gram + mu * eye)

            def exact(z: torch.Tensor | None) -> torch.Tensor:
                r = rhs if z is None else rhs + mu * z
                br = encoding.sample(r, locations, xs)
                v = torch.cholesky_solve(br.flatten(2).unsqueeze(-1), factor).squeeze(-1)
                return (r - encoding.spread(v.view_as(br), locations, xs)) / mu

            return exact

        def normal(v: torch.Tensor) -> torch.Tensor:
            return encoding.normal(v, weights, xs) + mu * v

        def cg(z: torch.Tensor | None) -> torch.Tensor:
            b = rhs if z is None else rhs + mu * z
            return conjugate_gradient(
                normal, b, x0=z, iterations=self.cg_iterations, tol=0.0, batch_dims=2
            )

        return cg


def _plane_chunks(
    net: UnrolledNetwork, encoding: PlaneEncoding, rows: torch.Tensor
) -> list[torch.Tensor]:
    """All planes in chunks whose coil k-space (and, for the exact DC, ``B B^H``) stays under
    :data:`_INFERENCE_BYTES`, for DC on the lines ``rows``."""
    t, nz, ny, nx = encoding.shape
    n_coils = encoding.coils.shape[1]
    per_plane = t * n_coils * nz * ny * 8
    if net.dc_solver == "exact":
        m = SampledLocations.count(encoding.weights(rows))
        per_plane = max(per_plane, t * (n_coils * m) ** 2 * 8)
    size = max(1, _INFERENCE_BYTES // per_plane)
    return list(torch.arange(nx, device=encoding.ky.device).split(size))


@torch.no_grad()
def heldout_loss(net: UnrolledNetwork, encoding: PlaneEncoding, split: LineSplit) -> float:
    """ZS-SSL loss of the held-out lines predicted from all other lines, over all planes."""
    rows = split.remainder.to(encoding.ky.device)
    held = split.validation.to(rows.device)
    parts = torch.zeros(4, device=rows.device)
    for xs in _plane_chunks(net, encoding, rows):
        x = net(encoding, rows, xs)
        parts += loss_parts(encoding.predict(x, held, xs), encoding.measured(held, xs))
    return float(normalised_loss(parts))


@torch.no_grad()
def network_images(net: UnrolledNetwork, encoding: PlaneEncoding) -> torch.Tensor:
    """``[T, nz, ny, nx]`` images with DC on every acquired line."""
    rows = torch.arange(encoding.lines.shape[0], device=encoding.ky.device)
    planes = [net(encoding, rows, xs) for xs in _plane_chunks(net, encoding, rows)]
    return volume_images(torch.cat(planes))


def _planes_of_step(step: int, n_planes: int, per_step: int, seed: int) -> torch.Tensor:
    """Planes of training step ``step``: consecutive slices of a per-epoch seeded permutation."""
    per_step = min(per_step, n_planes)
    steps_per_epoch = n_planes // per_step
    epoch, k = divmod(step, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_planes, generator=generator)
    return order[k * per_step : (k + 1) * per_step].sort().values


def train_network(
    net: UnrolledNetwork,
    encoding: PlaneEncoding,
    split: LineSplit,
    config: JointMapleConfig,
    seed: int,
    checkpoint: Path | None,
    resume: bool,
    progress: bool,
    identity: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, float]], EarlyStopping]:
    """ZS-SSL training with early stopping on the held-out loss; loads the best weights.

    The held-out loss is evaluated every ``config.validate_every`` steps; training stops once
    ``config.patience`` steps passed without a new minimum, i.e. after
    ``ceil(patience / validate_every)`` evaluations. The early-stopping record is checkpointed
    with the network (:class:`~lorein.methods.baselines.zero_shot.Training`), and the checkpoint
    records the run ``identity`` (:class:`~lorein.methods.base.RunContext`).

    Returns
    -------
    One dict per step: ``loss`` (= ``total``), and ``heldout`` on the steps after which it was
    evaluated; and the early-stopping record (its iterations index this history).
    """
    dev = encoding.ky.device
    dc = [rows.to(dev) for rows in split.dc]
    loss = [rows.to(dev) for rows in split.loss]

    def closure(step: int) -> dict[str, torch.Tensor]:
        k = step % len(dc)
        xs = _planes_of_step(step, encoding.n_planes, config.planes_per_step, seed).to(dev)
        x = net(encoding, dc[k], xs)
        value = kspace_loss(encoding.predict(x, loss[k], xs), encoding.measured(loss[k], xs))
        return {"total": value, "loss": value.detach()}

    training = Training(net, math.ceil(config.patience / config.validate_every))
    stopping = training.stopping  # a rollback in the loop restores its contents in place
    loop = LoopConfig(iterations=0, lr=config.lr, snapshot_every=config.validate_every)
    optimisation = Optimisation(
        training, closure, loop, checkpoint, progress=False, identity=identity
    )
    if resume:
        optimisation.load()
    bar = tqdm(
        total=config.iterations,
        initial=optimisation.state.iteration,
        desc="joint-maple network",
        disable=not progress,
        dynamic_ncols=True,
    )
    while optimisation.state.iteration < config.iterations and not stopping.stop:
        loop.iterations = min(
            optimisation.state.iteration + config.validate_every, config.iterations
        )
        optimisation.run()
        value = heldout_loss(net, encoding, split)
        last = optimisation.state.history[-1]
        last["heldout"] = value
        stopping.update(value, optimisation.state.iteration - 1, net)
        bar.update(optimisation.state.iteration - bar.n)
        bar.set_postfix(loss=f"{last['loss']:.3g}", heldout=f"{value:.3g}")
        optimisation.save()
    bar.close()
    if stopping.best_state is not None:
        net.load_state_dict(stopping.best_state)
    return optimisation.state.history, stopping


# --------------------------------------------------------------------------------------------
# joint map estimation
# --------------------------------------------------------------------------------------------


class MapParameters(nn.Module):
    """Per-voxel parameters of the signal model, in units where Adam's steps are comparable.

    Internally: ``M0 / m0_unit`` with ``m0_unit`` the median initial ``M0``; ``log T`` for the
    relaxation times (clamped to the bounds); ``B0`` as the phase it accrues over the echo span
    [rad] (clamped to ``|B0| <= b0_max``); ``phase0`` [rad]; ``B`` as is.

    Parameters
    ----------
    initial
        ``[V]`` float32 starting maps named as in the model's parameters, SI units.
    model
        The signal model.
    bounds
        Bounds of the relaxation times and ``B``.
    """

    def __init__(
        self, initial: dict[str, torch.Tensor], model: SignalModel, bounds: FitBounds
    ) -> None:
        super().__init__()
        span = float(model.echo_times.max() - model.echo_times.min())
        positive = initial["M0"][initial["M0"] > 0]
        self.m0_unit = float(positive.median()) if positive.numel() else 1.0
        self.b0_unit = 1.0 / (2 * math.pi * max(span, 1e-6))
        self.b0_max = default_b0_max(model)
        self.limits = {n: bounds.of(n) for n in model.parameters if n in (*_LOG_TIMES, "B")}
        internal = {}
        for name in model.parameters:
            v = initial[name].float()
            if name in _LOG_TIMES:
                lo, hi = self.limits[name]
                v = v.clamp(lo, hi).log()
            elif name == "M0":
                v = v / self.m0_unit
            elif name == "B0":
                v = v.clamp(-self.b0_max, self.b0_max) / self.b0_unit
            internal[name] = nn.Parameter(v.clone())
        self.internal = nn.ParameterDict(internal)

    def forward(self) -> dict[str, torch.Tensor]:
        """``[V]`` maps in SI units (``M0`` in the images' units)."""
        maps = {}
        for name, v in self.internal.items():
            if name in _LOG_TIMES:
                lo, hi = self.limits[name]
                maps[name] = v.clamp(math.log(lo), math.log(hi)).exp()
            elif name == "M0":
                maps[name] = v.clamp_min(0.0) * self.m0_unit
            elif name == "B0":
                maps[name] = (v * self.b0_unit).clamp(-self.b0_max, self.b0_max)
            elif name == "B":
                maps[name] = v.clamp(*self.limits["B"])
            else:
                maps[name] = v
        return maps


def refine_maps(
    images: torch.Tensor,
    support: torch.Tensor,
    model: SignalModel,
    initial: dict[str, torch.Tensor],
    kspace_term: Callable[[torch.Tensor], torch.Tensor],
    beta: float,
    iterations: int,
    lr: float,
    bounds: FitBounds | None = None,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Refine maps by Adam on image consistency + ``beta`` x k-space consistency of the model.

    Objective ``||I - S(maps)||^2 / (T V) + beta * kspace_term(S(maps))`` over the ``V`` support
    voxels; ``S(maps)`` is zero outside the support. The learning rate halves every quarter of the
    iterations.

    Parameters
    ----------
    images
        ``[T, nz, ny, nx]`` complex64 images ``I``.
    support
        ``[nz, ny, nx]`` bool voxels whose maps are estimated.
    model
        Signal model ``S``.
    initial
        ``[nz, ny, nx]`` float32 starting maps (``model.parameters``), SI units.
    kspace_term
        Images ``[T, nz, ny, nx]`` -> mean squared k-space residual (a scalar).
    beta
        Weight of the k-space term.
    iterations, lr
        Adam steps and learning rate (internal units of :class:`MapParameters`).
    bounds
        Bounds of the relaxation times (default :class:`FitBounds`).
    progress
        Show a progress bar.

    Returns
    -------
    The refined ``[nz, ny, nx]`` float32 maps (zero outside the support) and the per-step history
    (``image``, ``kspace``, ``total``).
    """
    bounds = bounds if bounds is not None else FitBounds()
    index = torch.nonzero(support.flatten()).squeeze(1)
    shape = tuple(images.shape)
    inside = images.reshape(shape[0], -1)[:, index]
    params = MapParameters(
        {k: initial[k].flatten()[index] for k in model.parameters}, model, bounds
    )

    def closure(_: int) -> dict[str, torch.Tensor]:
        signal = model(params())  # [T, V]
        image = (inside - signal).abs().square().mean()
        full = torch.zeros(shape[0], math.prod(shape[1:]), dtype=signal.dtype, device=signal.device)
        kspace = kspace_term(full.index_copy(1, index, signal).reshape(shape))
        return {"total": image + beta * kspace, "image": image, "kspace": kspace}

    loop = LoopConfig(iterations=iterations, lr=lr, decay_every=max(1, iterations // 4))
    history = Optimisation(params, closure, loop, progress=progress, description="joint maps").run()
    maps = {}
    for name, v in params().items():
        v = v.detach()
        full = torch.zeros(math.prod(shape[1:]), device=v.device)
        maps[name] = full.index_copy(0, index, v.float()).reshape(shape[1:])
    return maps, history


# --------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------


class JointMaple(Method):
    """Joint-MAPLE: zero-shot unrolled multi-contrast network, then joint map estimation.

    The seed draws the line split, the plane order and the network initialisation; the network
    training checkpoints and resumes (the map stage is short and deterministic and is rerun).
    Returns maps inside the calibration support (zero outside), the support as ``mask``, the
    network images, the ESPIRiT coils and ``extras`` with the per-step ``history`` (network
    steps, then map steps), ``network_steps``, ``heldout_best`` and ``mu``.
    """

    name = "joint-maple"
    description = (
        "Joint-MAPLE: zero-shot unrolled multi-contrast network, then joint map estimation"
    )
    config_class = JointMapleConfig

    def reconstruct(self, problem: Problem, config: JointMapleConfig, context: RunContext) -> Maps:
        prepared = prepare(problem, context, config.coil_compression)
        kspace, calib, model = prepared.kspace, prepared.calibration, prepared.model
        coils = espirit_coils(problem, kspace).to(prepared.device)
        support = calib.support.to(prepared.device)
        encoding = PlaneEncoding(
            kspace, prepared.ky, prepared.kz, prepared.contrast, coils, problem.n_contrasts
        )
        split = split_lines(
            problem.contrast,
            config.heldout_fraction,
            config.loss_fraction,
            config.n_masks,
            context.seed,
            stochastic_rounding=True,
        )
        net = UnrolledNetwork(
            problem.n_contrasts, config.network_sizes(), config.mu, config.dc_solver
        ).to(prepared.device)
        history, stopping = train_network(
            net,
            encoding,
            split,
            config,
            context.seed,
            context.checkpoint,
            context.resume,
            context.progress,
            context.identity,
        )
        images = network_images(net, encoding)
        initial = fit_maps(images, model, mask=support)
        data_term = kspace_data_term(encoding, kspace, coils)
        n_samples = kspace.numel()
        maps, map_history = refine_maps(
            images,
            support,
            model,
            initial,
            lambda x: data_term(x) / n_samples,
            config.beta,
            config.map_iterations,
            config.map_lr,
            progress=context.progress,
        )
        extras = {
            "history": history + map_history,
            "network_steps": len(history),
            "heldout_best": stopping.best_loss,
            "mu": float(net.log_mu.detach().exp()),
        }
        return finish(
            maps,
            model=model,
            mask=support,
            images=images,
            coils=coils,
            extras=extras,
            config=config,
            started=prepared.started,
            scale=calib.scale,
        )
