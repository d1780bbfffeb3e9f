"""Receive coil sensitivities: simulation, normalisation, compression and ESPIRiT estimation.

Coil maps are complex64 ``[n_coils, nz, ny, nx]``. Grids follow the centred convention of the
problem file: voxel ``n // 2`` of each axis sits at the origin, and k-space is the centred
orthonormal FFT with its centre at index ``n // 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "apply_coil_compression",
    "calibration_region",
    "coil_compression",
    "espirit",
    "rss_normalise",
    "simulate_coils",
]


# --------------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------------


def _ring_sizes(n_coils: int, n_rings: int) -> list[int]:
    """Split ``n_coils`` over ``n_rings`` as evenly as possible, extra coils in central rings."""
    base, extra = divmod(n_coils, n_rings)
    sizes = [base] * n_rings
    centre = (n_rings - 1) / 2
    for ring in sorted(range(n_rings), key=lambda i: (abs(i - centre), i))[:extra]:
        sizes[ring] += 1
    return sizes


def _loop_array(
    rings: Sequence[int], semi_axes: tuple[float, float], radius: float | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Circular loops tangent to an elliptic cylinder around the z axis.

    Parameters
    ----------
    rings
        Number of loops in each ring, rings ordered along +z and centred on z = 0.
    semi_axes
        ``(a, b)`` semi-axes [mm] of the cylinder's elliptic cross-section along x and y.
    radius
        Loop radius [mm]; None: 0.6 times the arc length per loop of the largest ring (so that
        neighbours overlap by about 20 % of their diameter, as in head arrays), at most 0.75
        times the smaller semi-axis.

    Returns
    -------
    centres
        ``[n_coils, 3]`` float64 loop centres (x, y, z) [mm]; ring spacing 1.6 radii, loops of
        alternate rings staggered by half a loop.
    normals
        ``[n_coils, 3]`` float64 outward unit normals of the loop planes.
    radius
        Loop radius [mm].
    """
    a, b = semi_axes
    if radius is None:
        # Ramanujan's approximation of the ellipse perimeter
        h = ((a - b) / (a + b)) ** 2
        perimeter = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
        radius = min(0.6 * perimeter / max(rings), 0.75 * min(a, b))
    spacing = 1.6 * radius
    centres, normals = [], []
    for ring, n_loops in enumerate(rings):
        z0 = (ring - (len(rings) - 1) / 2) * spacing
        for i in range(n_loops):
            t = (i + 0.5 * (ring % 2)) * 2 * math.pi / n_loops
            c, s = math.cos(t), math.sin(t)
            norm = math.hypot(b * c, a * s)
            centres.append([a * c, b * s, z0])
            normals.append([b * c / norm, a * s / norm, 0.0])
    return (
        torch.tensor(centres, dtype=torch.float64),
        torch.tensor(normals, dtype=torch.float64),
        float(radius),
    )


def _ellipke(m: torch.Tensor, max_iter: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Complete elliptic integrals K(m) and E(m) of parameter ``m`` in [0, 1) by the AGM.

    ``K = pi / (2 AGM(1, sqrt(1 - m)))`` and ``E = K (1 - sum_n 2^(n-1) c_n^2)``. Convergence is
    quadratic: iterations stop once ``a`` and ``b`` agree to machine precision, after about six
    for ``1 - m >= 1e-6``.
    """
    a = torch.ones_like(m)
    b = torch.sqrt(1 - m)
    total = m / 2
    weight = 0.5
    tol = 4 * torch.finfo(m.dtype).eps
    for _ in range(max_iter):
        c = (a - b) / 2
        weight *= 2
        total += weight * c * c
        if bool((c <= tol * a).all()):
            break
        a, b = (a + b) / 2, torch.sqrt(a * b)
    k = (math.pi / 2) / a
    return k, k * (1 - total)


# Taylor coefficients of I(m) / (pi / 2), I(m) = int_0^(pi/2) sin^4 t (1 - m sin^2 t)^(-3/2) dt:
# c_0 = 3/8, c_(n+1) = c_n (2n + 3)(2n + 5) / ((2n + 2)(2n + 6)); 14 terms reach 1e-8 for m < 1/4
_I_SERIES = [3 / 8]
for _n in range(13):
    _I_SERIES.append(_I_SERIES[-1] * (2 * _n + 3) * (2 * _n + 5) / ((2 * _n + 2) * (2 * _n + 6)))
_I_SWITCH = 0.25


def _loop_field(d: torch.Tensor, normal: torch.Tensor, radius: float, wire: float) -> torch.Tensor:
    """Quasi-static magnetic field of a circular current loop (Biot-Savart, closed form).

    With ``rho`` the distance from the loop axis, ``z`` the height above the loop plane,
    ``alpha^2 = a^2 + rho^2 + z^2 - 2 a rho``, ``beta^2 = alpha^2 + 4 a rho`` and
    ``m = 4 a rho / beta^2``, the Biot-Savart integral over a loop of radius ``a`` carrying
    current I gives (Jackson, Classical Electrodynamics, sec. 5.5; Simpson et al., "Simple
    analytic expressions for the magnetic field of a circular current loop", NASA)

        B_rho = C z / (2 alpha^2 beta rho) [(a^2 + rho^2 + z^2) E(m) - alpha^2 K(m)]
              = 4 C a^2 z rho I(m) / beta^5,
        B_z   = C / (2 alpha^2 beta) [(a^2 - rho^2 - z^2) E(m) + alpha^2 K(m)],

    ``C = mu0 I / pi``, here set to 1, with K, E the complete elliptic integrals and
    ``I(m) = int_0^(pi/2) sin^4 t (1 - m sin^2 t)^(-3/2) dt`` (integration by parts). The
    bracket of the first form cancels to O(m^2) for small m, so there ``I`` is summed from its
    Taylor series; elsewhere it follows from K and E. Within ``wire`` of the wire ``alpha`` is
    held at ``wire``, which bounds the field as a conductor of finite thickness does; farther
    away the field is exact.

    Parameters
    ----------
    d
        ``[..., 3]`` float positions relative to the loop centre [mm].
    normal
        ``[..., 3]`` unit normal of the loop plane, broadcastable against ``d``, same dtype; the
        current circulates counter-clockwise about it.
    radius
        Loop radius [mm].
    wire
        Softening distance [mm].

    Returns
    -------
    ``[..., 3]`` field in units of ``mu0 I / (pi mm)``, dtype of ``d``.
    """
    a2 = radius * radius
    z = (d * normal).sum(-1)
    rho_vec = d - z[..., None] * normal
    rho2 = (rho_vec * rho_vec).sum(-1)
    two_a_rho = (2 * radius) * rho2.sqrt()
    r2 = rho2 + z * z
    total = a2 + r2
    alpha2 = total - two_a_rho
    near = alpha2 < wire * wire
    alpha2 = alpha2.clamp(min=wire * wire)
    beta2 = total + two_a_rho
    beta = beta2.sqrt()
    m = torch.where(near, 1 - alpha2 / beta2, 2 * two_a_rho / beta2)
    k, e = _ellipke(m)
    small = m.clamp(max=_I_SWITCH)
    series = torch.full_like(m, _I_SERIES[-1])
    for c in reversed(_I_SERIES[:-1]):
        series = series * small + c
    big = m.clamp(min=_I_SWITCH)
    closed = ((1 - big / 2) * e - (1 - big) * k) * (4 / math.pi) / (big * big * (1 - big))
    integral = (math.pi / 2) * torch.where(m < _I_SWITCH, series, closed)
    b_rho_over_rho = (4 * a2) * z * integral / (beta2 * beta2 * beta)
    b_z = ((a2 - r2) * e + alpha2 * k) / (2 * alpha2 * beta)
    return b_rho_over_rho[..., None] * rho_vec + b_z[..., None] * normal


def _grid_positions(
    matrix: tuple[int, int, int], voxel_size: tuple[float, float, float]
) -> torch.Tensor:
    """Voxel centres ``[nz * ny * nx, 3]`` float64 (x, y, z) [mm]; voxel ``n // 2`` is at 0."""
    nx, ny, nz = matrix
    axes = [
        (torch.arange(n, dtype=torch.float64) - n // 2) * d
        for n, d in zip((nz, ny, nx), voxel_size[::-1], strict=True)
    ]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], dim=1)


def simulate_coils(
    n_coils: int,
    matrix: Sequence[int],
    voxel_size: Sequence[float],
    *,
    rings: Sequence[int] | None = None,
    semi_axes: tuple[float, float] | None = None,
    loop_radius: float | None = None,
    seed: int = 0,
    chunk_size: int = 131_072,
) -> torch.Tensor:
    """Simulate head-array receive sensitivities with the Biot-Savart law.

    Circular loops are placed in rings on an elliptic cylinder around the z (B0) axis, tangent to
    it, with neighbouring loops overlapping; alternate rings are staggered by half a loop. The
    quasi-static field of each loop (the Biot-Savart line integral over the circle, evaluated in
    closed form with complete elliptic integrals) gives the receive sensitivity as the
    negatively rotating transverse component ``B1x - i B1y``, times a constant receiver phase per
    coil. Magnitudes fall off with the distance from each loop and phases vary smoothly across
    the object. Closer than 5 % of the loop radius to a wire the field is held bounded, as for a
    conductor of finite thickness; wires come that close only to voxels in the corners of the
    field of view.

    Parameters
    ----------
    n_coils
        Number of coils C.
    matrix
        ``(nx, ny, nz)`` grid size.
    voxel_size
        ``(dx, dy, dz)`` voxel size [mm]. The field of view ``matrix * voxel_size`` is centred:
        voxel ``n // 2`` of each axis sits at the origin.
    rings
        Number of loops per ring, ordered along +z; must sum to ``n_coils``. Coils are numbered
        ring by ring, counter-clockwise from +x within a ring. Default: ``floor(n_coils / 8 + 1/2)``
        rings (at least one) of as equal size as possible, e.g. 3 rings of 8 for 24 coils and 2
        rings of 7 for 14 coils.
    semi_axes
        ``(a, b)`` semi-axes [mm] of the cylinder along x and y. Default: 0.55 times the field of
        view along x and y, i.e. loop centres just outside the in-plane field of view.
    loop_radius
        Loop radius [mm]. Default: 0.6 times the arc length per loop of the largest ring, at most
        0.75 times the smaller semi-axis. Rings are 1.6 loop radii apart, centred on z = 0.
    seed
        Seed of the constant receiver phase of each coil.
    chunk_size
        Number of (coil, voxel) pairs evaluated at once; memory is about ``200 * chunk_size``
        bytes.

    Returns
    -------
    ``[n_coils, nz, ny, nx]`` complex64 sensitivities, scaled so that their root-sum-of-squares
    over coils is 1 at the centre of the field of view (voxel ``n // 2``). Deterministic for given
    arguments.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be positive, got {n_coils}")
    if len(matrix) != 3 or len(voxel_size) != 3:
        raise ValueError("matrix and voxel_size must have three entries (x, y, z)")
    matrix = tuple(int(n) for n in matrix)
    voxel_size = tuple(float(d) for d in voxel_size)
    if rings is None:
        rings = _ring_sizes(n_coils, max(1, math.floor(n_coils / 8 + 0.5)))
    rings = [int(r) for r in rings]
    if sum(rings) != n_coils or min(rings) < 1:
        raise ValueError(f"rings {rings} must be positive and sum to n_coils = {n_coils}")
    if semi_axes is None:
        semi_axes = (0.55 * matrix[0] * voxel_size[0], 0.55 * matrix[1] * voxel_size[1])
    centres, normals, radius = _loop_array(rings, semi_axes, loop_radius)

    positions = _grid_positions(matrix, voxel_size)  # [N, 3]
    n_vox = positions.shape[0]
    out = torch.empty(n_coils, n_vox, dtype=torch.complex64)
    step = max(1, chunk_size // n_coils)
    for start in range(0, n_vox, step):
        d = (positions[None, start : start + step] - centres[:, None, :]).float()  # [C, n, 3]
        b = _loop_field(d, normals[:, None, :].float(), radius, 0.05 * radius)
        out[:, start : start + step] = torch.complex(b[..., 0], -b[..., 1])

    nx, ny, nz = matrix
    maps = out.reshape(n_coils, nz, ny, nx)
    gen = torch.Generator().manual_seed(seed)
    phase = 2 * math.pi * torch.rand(n_coils, generator=gen, dtype=torch.float64)
    scale = maps[:, nz // 2, ny // 2, nx // 2].abs().square().sum().sqrt().item()
    factor = torch.polar(torch.full_like(phase, 1.0 / scale), phase).to(torch.complex64)
    return maps.mul_(factor[:, None, None, None])


# --------------------------------------------------------------------------------------------
# normalisation and compression
# --------------------------------------------------------------------------------------------


def rss_normalise(csm: torch.Tensor, eps: float = 1e-6, coil_dim: int = 0) -> torch.Tensor:
    """Divide coil maps by their root-sum-of-squares over coils.

    Parameters
    ----------
    csm
        Complex coil maps, e.g. ``[n_coils, nz, ny, nx]`` (arbitrary units).
    eps
        Relative threshold: voxels whose root-sum-of-squares is at most ``eps`` times its
        maximum are set to zero.
    coil_dim
        Coil axis of ``csm``.

    Returns
    -------
    Maps of the same shape and dtype with unit root-sum-of-squares where it was above the
    threshold, zero elsewhere.
    """
    rss = csm.abs().square().sum(dim=coil_dim, keepdim=True).sqrt()
    keep = rss > eps * rss.max()
    return torch.where(keep, csm / torch.where(keep, rss, 1.0), 0.0).to(csm.dtype)


def apply_coil_compression(
    x: torch.Tensor, matrix: torch.Tensor, coil_dim: int = 0
) -> torch.Tensor:
    """Combine coils into virtual coils: ``x_v = sum_c matrix[v, c] x_c``.

    The same combination applies to k-space data and to coil maps, the FFT being linear:
    compressed data are the k-space of the images times the compressed maps. Compressed maps of
    a unit-RSS set keep unit RSS only where the discarded components vanish.

    Parameters
    ----------
    x
        Complex tensor with ``n_coils`` entries along ``coil_dim`` (at least 2-D), e.g. k-space
        lines ``[n_lines, n_coils, nx]`` or maps ``[n_coils, nz, ny, nx]``.
    matrix
        ``[n_virtual, n_coils]`` complex compression matrix.
    coil_dim
        Coil axis of ``x``.

    Returns
    -------
    ``x`` with its coil axis replaced by ``n_virtual`` virtual coils.
    """
    if x.ndim < 2:
        raise ValueError("x must have at least two dimensions")
    coil_dim = coil_dim % x.ndim
    if x.shape[coil_dim] != matrix.shape[1]:
        raise ValueError(
            f"x has {x.shape[coil_dim]} coils along dim {coil_dim}, "
            f"matrix expects {matrix.shape[1]}"
        )
    # move coils to the second-last axis so that one broadcast matmul combines them
    if coil_dim == x.ndim - 1:
        return torch.matmul(x, matrix.to(x.dtype).transpose(0, 1))
    moved = x.movedim(coil_dim, -2)
    return torch.matmul(matrix.to(x.dtype), moved).movedim(-2, coil_dim)


def coil_compression(
    data: torch.Tensor, n_virtual: int, coil_dim: int = 1, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD (PCA) coil compression.

    The coil covariance ``R = sum x x^H`` over all samples is eigendecomposed; the compression
    matrix holds the conjugated leading eigenvectors as rows, so that virtual coil ``v`` is the
    projection of the data onto principal component ``v`` and keeps the largest possible energy.
    Each eigenvector's phase is fixed so that its largest-magnitude entry is real and positive.

    Parameters
    ----------
    data
        Complex data with coils along ``coil_dim`` (at least 2-D), e.g. k-space lines
        ``[n_lines, n_coils, nx]``.
    n_virtual
        Number of virtual coils V, ``1 <= V <= n_coils``.
    coil_dim
        Coil axis of ``data``.
    chunk
        The covariance is accumulated in complex128 over blocks of ``chunk`` rows of the data
        viewed as ``[rows, L, n_coils]`` (coils moved last, L the last other axis; for lines
        ``[n_lines, n_coils, nx]`` a row is a line), which bounds memory.

    Returns
    -------
    compressed
        ``data`` with ``n_virtual`` virtual coils along ``coil_dim``, same dtype.
    matrix
        ``[n_virtual, n_coils]`` complex64 compression matrix with orthonormal rows; apply it to
        coil maps with :func:`apply_coil_compression`.
    """
    if data.ndim < 2:
        raise ValueError("data must have at least two dimensions")
    coil_dim = coil_dim % data.ndim
    n_coils = data.shape[coil_dim]
    if not 1 <= n_virtual <= n_coils:
        raise ValueError(f"n_virtual must be in [1, {n_coils}], got {n_virtual}")
    blocks = data.movedim(coil_dim, -1)
    blocks = blocks.reshape(-1, blocks.shape[-2], n_coils)  # [B, L, C]
    cov = torch.zeros(n_coils, n_coils, dtype=torch.complex128, device=data.device)
    for start in range(0, blocks.shape[0], chunk):
        blk = blocks[start : start + chunk].to(torch.complex128)
        cov += torch.matmul(blk.mT, blk.conj()).sum(0)  # sum_s x_s x_s^H
    _, vecs = torch.linalg.eigh(cov)
    lead = vecs[:, -n_virtual:].flip(-1)  # [C, V], descending eigenvalues
    pivot = lead.abs().argmax(dim=0)
    ref = lead.gather(0, pivot[None]).squeeze(0)
    lead = lead * (ref.abs() / ref).conj()[None]
    matrix = lead.mH.to(torch.complex64)
    return apply_coil_compression(data, matrix, coil_dim), matrix


# --------------------------------------------------------------------------------------------
# calibration and ESPIRiT
# --------------------------------------------------------------------------------------------


def calibration_region(
    kspace_lines: torch.Tensor,
    ky: torch.Tensor,
    kz: torch.Tensor,
    shape: tuple[int, int],
    size: tuple[int, int],
) -> torch.Tensor:
    """Assemble the fully sampled central calibration region from acquired readout lines.

    All lines acquired at a calibration location (over all contrasts) are averaged.

    Parameters
    ----------
    kspace_lines
        ``[n_lines, n_coils, nx]`` complex acquired lines (centred k-space).
    ky, kz
        ``[n_lines]`` integer grid indices of each line, k-space centre at ``n // 2``.
    shape
        ``(ny, nz)`` phase-encoding grid size.
    size
        ``(ccy, ccz)`` calibration region size; it spans ``n // 2 - cc // 2`` to
        ``n // 2 - cc // 2 + cc - 1`` on each axis, so its centre is at index ``cc // 2``.

    Returns
    -------
    ``[n_coils, ccz, ccy, nx]`` calibration k-space, same dtype as ``kspace_lines``.

    Raises
    ------
    ValueError
        If a calibration location has no acquired line; the message lists the missing
        ``(ky, kz)`` locations.
    """
    ny, nz = shape
    ccy, ccz = size
    if not (0 < ccy <= ny and 0 < ccz <= nz):
        raise ValueError(f"calibration size {size} must fit in the grid {shape}")
    y0, z0 = ny // 2 - ccy // 2, nz // 2 - ccz // 2
    iy = ky.to(kspace_lines.device, torch.long) - y0
    iz = kz.to(kspace_lines.device, torch.long) - z0
    inside = (iy >= 0) & (iy < ccy) & (iz >= 0) & (iz < ccz)
    flat = (iz * ccy + iy)[inside]
    n_coils, nx = kspace_lines.shape[1:]
    sums = torch.zeros(ccz * ccy, n_coils, nx, dtype=kspace_lines.dtype, device=flat.device)
    sums.index_add_(0, flat, kspace_lines[inside])
    counts = torch.bincount(flat, minlength=ccz * ccy)
    missing = torch.nonzero(counts == 0).squeeze(1)
    if missing.numel():
        locs = [(int(m % ccy) + y0, int(m // ccy) + z0) for m in missing]
        shown = ", ".join(str(loc) for loc in locs[:20])
        more = f" and {len(locs) - 20} more" if len(locs) > 20 else ""
        raise ValueError(
            f"calibration region {size} not fully sampled: {len(locs)} (ky, kz) locations "
            f"missing: {shown}{more}"
        )
    calib = sums / counts[:, None, None].to(sums.real.dtype)
    return calib.reshape(ccz, ccy, n_coils, nx).permute(2, 0, 1, 3).contiguous()


def _signal_subspace(
    a: torch.Tensor, threshold: float, width: int = 256, n_power: int = 2
) -> torch.Tensor:
    """Right singular vectors of ``a`` with singular value above ``threshold * s_max``.

    Randomised subspace iteration (seeded, hence deterministic): an orthonormal basis of
    ``(a^H a)^(n_power + 1) omega`` for a Gaussian ``omega`` with ``width`` columns, then the
    Rayleigh-Ritz eigenpairs of ``a^H a`` in it. The calibration matrix has far fewer singular
    values above the threshold than columns, so this costs a few products with ``a`` instead of
    a full eigendecomposition. ``width`` doubles until the smallest Ritz value falls below the
    threshold (all wanted singular vectors captured); at ``width = n`` the result is exact.

    Parameters
    ----------
    a
        ``[m, n]`` complex calibration matrix.
    threshold
        Relative singular value threshold.
    width
        Initial block width.
    n_power
        Subspace iterations after the first product.

    Returns
    -------
    ``[n, r]`` orthonormal columns, dtype of ``a``.
    """
    n = a.shape[1]
    gen = torch.Generator(device=a.device).manual_seed(0)
    thr2 = threshold * threshold
    width = min(n, width)
    while True:
        q = torch.randn(n, width, generator=gen, dtype=a.dtype, device=a.device)
        for _ in range(n_power + 1):
            q = torch.linalg.qr(a.mH @ (a @ q)).Q
        b = a @ q
        lam, u = torch.linalg.eigh(b.mH @ b)
        if width == n or lam[0] <= thr2 * lam[-1]:
            break
        width = min(n, 2 * width)
    return q @ u[:, lam > thr2 * lam[-1]]


def _dft_matrix(n: int, k: int) -> torch.Tensor:
    """``[n, 2k - 1]`` complex64 ``exp(2 pi i d (j - n // 2) / n)`` for ``d = 1 - k .. k - 1``."""
    j = torch.arange(n, dtype=torch.float64) - n // 2
    d = torch.arange(1 - k, k, dtype=torch.float64)
    angle = 2 * math.pi * j[:, None] * d / n
    return torch.polar(torch.ones_like(angle), angle).to(torch.complex64)


def _inv_norm(u: torch.Tensor) -> torch.Tensor:
    """``[..., 1]`` reciprocal Euclidean norm of complex rows ``[..., n]``; 0 for zero rows."""
    norm2 = torch.view_as_real(u).square().sum((-2, -1))[..., None]
    return torch.where(norm2 > 0, norm2.rsqrt(), 0.0)


def _top_eigenpairs(
    g: torch.Tensor, bound: float, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading eigenpair of a batch of Hermitian matrices with eigenvalues in [0, 1].

    A Chebyshev filter of degree ``n_iter`` on ``[0, bound]`` is applied to the row of ``g``
    with the largest diagonal entry: components with eigenvalues in ``[0, bound]`` shrink,
    relative to an eigenvalue ``l > bound``, by ``2 / (t + sqrt(t^2 - 1))^n_iter`` with
    ``t = 2 l / bound - 1``. The eigenvalue estimate is the Rayleigh quotient, which never
    exceeds the leading eigenvalue. Vectors are kept as rows (``u = x^H``, ``u g = (g x)^H``),
    the fastest batched product for small matrices.

    Parameters
    ----------
    g
        ``[B, C, C]`` complex64 Hermitian matrices with eigenvalues in [0, 1].
    bound
        Upper end of the damped interval, in (0, 1).
    n_iter
        Filter degree (matrix-vector products).

    Returns
    -------
    values
        ``[B]`` float32 Rayleigh quotients.
    vectors
        ``[B, C]`` complex64 unit-norm eigenvector estimates (arbitrary phase).
    """
    n_batch = g.shape[0]
    pivot = g.diagonal(dim1=-2, dim2=-1).real.argmax(-1)
    prev = g[torch.arange(n_batch), pivot][:, None, :]  # [B, 1, C]
    prev = prev * _inv_norm(prev)
    scale, shift = 2.0 / bound, 1.0
    # T_1(A) u with A = scale * g - shift; then T_(k+1) = 2 A T_k - T_(k-1), both rescaled alike
    cur = scale * (prev @ g) - shift * prev
    for _ in range(n_iter - 1):
        inv = _inv_norm(cur)
        prev, cur = prev * inv, cur * inv
        cur, prev = 2 * (scale * (cur @ g) - shift * cur) - prev, cur
    u = cur * _inv_norm(cur)
    values = (u @ g @ u.mH).real.reshape(-1)
    return values, u.conj().squeeze(1)


def espirit(
    calib: torch.Tensor,
    matrix: Sequence[int],
    kernel_size: int | Sequence[int] = (5, 5, 3),
    threshold: float = 0.02,
    crop: float = 0.95,
    *,
    readout_width: int | None = None,
    reference_coil: int = 0,
    n_iter: int = 16,
    chunk_voxels: int = 8192,
) -> torch.Tensor:
    """ESPIRiT coil sensitivities (one set of maps) from a fully sampled calibration region.

    Steps: the calibration (block-Hankel) matrix of all kernel-sized patches; its right singular
    vectors with singular value above ``threshold * s_max`` span the kernel (signal) subspace;
    the projector onto that subspace, transformed to the image domain at the target matrix,
    gives at each voxel a C x C Hermitian matrix whose eigenvector with eigenvalue ~ 1 is the
    sensitivity vector. The per-voxel matrices are assembled by separable small DFTs from the
    projector summed along its kernel-offset differences, in chunks of voxels; the leading
    eigenpair is found by a Chebyshev-filtered power iteration (voxels whose matrix has a
    Frobenius norm below ``crop``, an upper bound of the eigenvalue, are skipped). The signal
    subspace comes from a seeded randomised subspace iteration, so results are deterministic.
    Maps are zero where the eigenvalue is below
    ``crop``, have unit norm over coils elsewhere, and are phase-referenced to
    ``reference_coil`` (its map is real and non-negative).

    Estimate at the full field of view of the acquisition: ``matrix`` must be the grid whose
    k-space the calibration region is the centre of (a cropped field of view folds the object
    and gives wrong maps).

    Parameters
    ----------
    calib
        ``[n_coils, ncz, ncy, ncx]`` complex fully sampled centred calibration k-space.
    matrix
        ``(nx, ny, nz)`` target grid.
    kernel_size
        ``(kx, ky, kz)`` kernel width in k-space samples, or one int for all axes. The default
        is narrow along z, where thin slabs give few calibration partitions and a small field
        of view. Each width is reduced to at most half the calibration width on its axis (at
        least 1), e.g. ``ncz = 4`` gives ``kz <= 2``.
    threshold
        Relative singular value threshold defining the signal subspace.
    crop
        Eigenvalue below which the maps are set to zero.
    readout_width
        Number of central readout (x) samples of ``calib`` used. Default: ``max(ncy, ncz)``
        (at most ``ncx``); the readout being fully sampled, a wider region adds calibration rows.
    reference_coil
        Coil whose phase is removed from all coils.
    n_iter
        Matrix-vector products per voxel in the eigen-solver, a Chebyshev filter that damps
        eigenvalues below ``0.9 * crop``: with the default 16 their components in the
        eigenvector shrink below 1e-3 where the leading eigenvalue is at least ``crop``.
    chunk_voxels
        Voxels per chunk of C x C matrices (memory about ``8 * C^2 * chunk_voxels`` bytes, a few
        times over).

    Returns
    -------
    ``[n_coils, nz, ny, nx]`` complex64 coil maps on the device of ``calib``.
    """
    if calib.ndim != 4:
        raise ValueError(f"calib must be [n_coils, ncz, ncy, ncx], got shape {tuple(calib.shape)}")
    nx, ny, nz = (int(n) for n in matrix)
    n_coils, ncz, ncy, ncx = calib.shape
    device = calib.device
    width = min(ncx, max(ncy, ncz)) if readout_width is None else min(int(readout_width), ncx)
    if ncz > nz or ncy > ny or width > nx:
        raise ValueError(f"calibration region {(ncz, ncy, width)} exceeds matrix {(nz, ny, nx)}")
    x0 = ncx // 2 - width // 2
    calib = calib[..., x0 : x0 + width].to(torch.complex64)
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size,) * 3
    kx, ky, kz = (
        max(1, min(int(k), n // 2)) for k, n in zip(kernel_size, (width, ncy, ncz), strict=True)
    )
    n_kernel = kx * ky * kz

    # calibration matrix: rows are patches, columns ordered (coil, dz, dy, dx)
    patches = calib.unfold(1, kz, 1).unfold(2, ky, 1).unfold(3, kx, 1)
    a = patches.permute(1, 2, 3, 0, 4, 5, 6).reshape(-1, n_coils * n_kernel)
    v = _signal_subspace(a, threshold)
    # rows of a lie in the span of conj(v): projector onto the patch space
    vc = v.conj()
    proj = (vc @ vc.mH).to(torch.complex64).reshape(n_coils, n_kernel, n_coils, n_kernel)

    # sum the projector along kernel-offset differences: q[c, c', dz, dy, dx]
    offsets = [torch.arange(k, device=device) for k in (kz, ky, kx)]
    oz, oy, ox = torch.meshgrid(*offsets, indexing="ij")
    oz, oy, ox = oz.reshape(-1), oy.reshape(-1), ox.reshape(-1)
    nqx, nqy, nqz = 2 * kx - 1, 2 * ky - 1, 2 * kz - 1
    diff = (
        (oz[:, None] - oz[None, :] + kz - 1) * nqy + (oy[:, None] - oy[None, :] + ky - 1)
    ) * nqx + (ox[:, None] - ox[None, :] + kx - 1)
    q = torch.zeros(n_coils, n_coils, nqz * nqy * nqx, dtype=torch.complex64, device=device)
    q.index_add_(2, diff.reshape(-1), proj.permute(0, 2, 1, 3).reshape(n_coils, n_coils, -1))
    q = q / n_kernel  # a consistent sensitivity vector then has eigenvalue 1
    # layout [dz, (dy, dx, c, c')] for the separable DFT
    q = q.reshape(n_coils * n_coils, nqz, nqy * nqx).permute(1, 2, 0).reshape(nqz, -1)

    bound = max(0.9 * crop, 1e-3)
    ez, ey, ex = (_dft_matrix(n, k).to(device) for n, k in ((nz, kz), (ny, ky), (nx, kx)))
    maps = torch.zeros(nz, ny, nx, n_coils, dtype=torch.complex64, device=device)
    rows = max(1, chunk_voxels // nx)
    for z in range(nz):
        tz = (ez[z] @ q).reshape(nqy, nqx * n_coils * n_coils)
        for y0 in range(0, ny, rows):
            ty = (ey[y0 : y0 + rows] @ tz).reshape(-1, nqx, n_coils * n_coils)
            g = torch.matmul(ex, ty).reshape(-1, n_coils, n_coils)  # [(y, x), C, C]
            # the leading eigenvalue is at most the Frobenius norm: skip voxels to be cropped
            frobenius = torch.linalg.vector_norm(torch.view_as_real(g), dim=(1, 2, 3))
            idx = torch.nonzero(frobenius >= crop).squeeze(1)
            if idx.numel() == 0:
                continue
            values, vectors = _top_eigenpairs(g[idx], bound, n_iter)
            ref = vectors[:, reference_coil]
            phase = torch.where(ref.abs() > 0, ref.conj() / ref.abs(), 1.0)
            vectors = torch.where((values >= crop)[:, None], vectors * phase[:, None], 0.0)
            maps[z, y0 : y0 + rows].view(-1, n_coils)[idx] = vectors
    return maps.permute(3, 0, 1, 2).contiguous()
