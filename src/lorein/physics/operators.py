"""The operator layer of the MRI forward model, its fast Gram form, and the data terms.

Shapes: images ``[frames, z, y, x]`` (frames = contrasts T, or subspace coefficients K), coil
images ``[frames, coil, z, y, x]``, acquired lines ``[n_lines, coil, x]`` (all complex64; lines
in the arbitrary units of the acquired data, images in the units that ``E`` maps onto them). The
forward model is ``E = M F C`` (per-contrast images) or
``E = M F C Phi`` (subspace), with ``M`` the line sampling, ``F`` the centred orthonormal 3D FFT,
``C`` the coil sensitivities and ``Phi`` the temporal subspace.

One layer: :class:`LinearOperator` (``forward``, ``adjoint``, ``.H``, ``normal``), with
:class:`SamplingOperator` (``M``, or ``M Phi``) and :class:`EncodingOperator` (``E``, whose
``normal`` is the fast Gram form). :class:`SubspaceDataTerm` and :class:`ContrastDataTerm` are the
data terms ``||y - E x||^2`` of :class:`EncodingOperator` with and without a subspace, evaluated
without forming ``E x``, for any coil maps (which they take as an argument, so that coils can be
learned).

Readout planes (``hybrid=True``). The readout x is fully sampled, so ``M`` is the same for every
``kx`` and ``F = F_x F_yz`` with ``F_x`` unitary along each line. With ``y_x`` the lines after
the centred inverse FFT along x (hybrid ``(x, ky, kz)`` space), the data term splits into one
term per x-plane,

    ||y - M F C Phi u||^2 = sum_x ||y_x - M Phi F_yz (C u)_x||^2,

and so does its Gram form: the per-location Gram matrices ``G`` act on ``(ky, kz)`` alone and
commute with ``F_x``, so ``<F C u, G F C u> = <V, G V>`` and ``<F C u, Y> = <V, F_x^H Y>`` with
``V = F_yz (C u)`` (2D FFTs per plane, plain, with the modulation ``b`` of the centred FFT folded
into the coils as before) and ``F_x^H Y`` the precomputed ``(M Phi)^H y`` taken to hybrid space by
a plain inverse FFT along x. A term built with ``hybrid=True`` keeps only that hybrid data and
evaluates any slab of planes ``planes = slice(start, stop)`` from frames and coils given on that
slab; ``planes=None`` is every plane at once (the whole-volume term, to float round-off). The
terms return the plain sum over the slab's planes; how a batch is scaled is the caller's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from lorein.physics.fft import modulation


class LinearOperator(ABC):
    """A linear map ``A`` with its adjoint ``A^H`` and normal form ``A^H A``.

    Subclasses implement :meth:`forward` and :meth:`adjoint`; ``A(x)`` is ``A.forward(x)`` and
    ``A.H`` is the adjoint as an operator. :meth:`normal` defaults to ``A^H (A x)``; operators
    with a cheaper Gram form (:class:`EncodingOperator`) override it.
    """

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator: ``A x``.

        Parameters
        ----------
        x
            A tensor of the operator's domain.

        Returns
        -------
        ``A x``, a tensor of the operator's range.
        """

    @abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint: ``A^H y``, with ``<A x, y> = <x, A^H y>``.

        Parameters
        ----------
        y
            A tensor of the operator's range.

        Returns
        -------
        ``A^H y``, a tensor of the operator's domain.
        """

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the normal (Gram) operator: ``A^H A x``, a tensor of the domain.

        Parameters
        ----------
        x
            A tensor of the operator's domain.

        Returns
        -------
        ``A^H A x``, same shape as ``x``.
        """
        return self.adjoint(self.forward(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def H(self) -> LinearOperator:  # noqa: N802 (mathematical notation)
        """The adjoint operator ``A^H``."""
        return AdjointOperator(self)


class AdjointOperator(LinearOperator):
    """The adjoint ``A^H`` of an operator ``A`` (what ``A.H`` returns); ``A.H.H`` is ``A``.

    Parameters
    ----------
    op
        The operator ``A``.
    """

    def __init__(self, op: LinearOperator) -> None:
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.op


class SamplingOperator(LinearOperator):
    """Cartesian line sampling ``M``: k-space ``[frames, coil, z, y, x] -> lines [L, coil, x]``.

    Line ``l`` reads location ``(kz[l], ky[l])`` of frame ``contrast[l]``. With ``phi`` given, the
    frames are subspace coefficients and line ``l`` reads ``sum_k phi[contrast[l], k] x[k]``:
    this is ``M Phi`` applied in k-space without forming the ``T`` contrast k-spaces (``Phi``
    commutes with ``F`` and ``C``). Repeated locations are summed by the adjoint.

    Parameters
    ----------
    ky, kz, contrast
        ``[L]`` int64 grid indices (k-space centre at ``n // 2``) and contrast of each line.
    shape
        ``(frames, coil, nz, ny, nx)`` of the k-space the lines are read from (frames = T, or K
        with ``phi``).
    phi
        Optional ``[T, K]`` complex64 temporal basis.
    """

    def __init__(
        self,
        ky: torch.Tensor,
        kz: torch.Tensor,
        contrast: torch.Tensor,
        shape: tuple[int, int, int, int, int],
        phi: torch.Tensor | None = None,
    ) -> None:
        self.ky = ky.long()
        self.kz = kz.long()
        self.contrast = contrast.long()
        self.shape = shape
        self.weights = None if phi is None else phi[self.contrast]  # [L, K]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``M x`` (or ``M Phi x``): k-space ``[frames, coil, nz, ny, nx]`` -> ``[L, coil, nx]``."""
        if self.weights is None:
            return x[self.contrast, :, self.kz, self.ky, :]
        gathered = x[:, :, self.kz, self.ky, :]  # [K, coil, L, x]
        return torch.einsum("lk,kclx->lcx", self.weights, gathered)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``M^H y`` (or ``Phi^H M^H y``): lines ``[L, coil, nx]`` -> k-space of ``shape``."""
        out = torch.zeros(self.shape, dtype=y.dtype, device=y.device)
        if self.weights is None:
            view = out.permute(0, 2, 3, 1, 4)  # [T, nz, ny, coil, x], shares memory with out
            view.index_put_((self.contrast, self.kz, self.ky), y, accumulate=True)
            return out
        spread = torch.einsum("lk,lcx->lkcx", self.weights.conj(), y)
        # index_put_ accumulates along the leading indexed axes: put (z, y) first
        view = out.permute(2, 3, 0, 1, 4)  # [nz, ny, K, coil, x], shares memory with out
        view.index_put_((self.kz, self.ky), spread, accumulate=True)
        return out


def subspace_gram(
    ky: torch.Tensor,
    kz: torch.Tensor,
    contrast: torch.Tensor,
    phi: torch.Tensor,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Per-location Gram matrices of the subspace sampling ``(M Phi)^H (M Phi)``.

    Parameters
    ----------
    ky, kz, contrast
        ``[L]`` line locations and contrasts.
    phi
        ``[T, K]`` complex64 temporal basis.
    grid
        ``(nz, ny)``.

    Returns
    -------
    ``[nz, ny, K, K]`` complex64, ``G[z, y] = sum_{l at (z, y)} conj(phi[t_l])^T phi[t_l]``.
    """
    nz, ny = grid
    k = phi.shape[1]
    rows = phi[contrast.long()]  # [L, K]
    outer = rows.conj().unsqueeze(2) * rows.unsqueeze(1)  # [L, K, K]
    flat = kz.long() * ny + ky.long()
    gram = torch.zeros(nz * ny, k, k, dtype=phi.dtype, device=phi.device)
    gram.index_add_(0, flat, outer)
    return gram.view(nz, ny, k, k)


def image_modulation(grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """``[nz, ny, nx]`` image-side modulation ``b`` of the centred 3D FFT (see ``fft.py``)."""
    nz, ny, nx = grid
    pz, py, px = (modulation(n, device)[0] for n in grid)
    return pz.view(nz, 1, 1) * py.view(1, ny, 1) * px.view(1, 1, nx)


def line_modulation(ky: torch.Tensor, kz: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``[L, 1, nx]`` k-space-side modulation ``a`` of the centred 3D FFT at each line."""
    nz, ny, nx = grid
    az, ay, ax = (modulation(n, ky.device)[1] for n in grid)
    return (az[kz.long()] * ay[ky.long()]).view(-1, 1, 1) * ax.view(1, 1, nx)


def apply_gram(gram: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``G k``: per-location ``[nz, ny, K, K]`` matrices on k-space ``[K, coil, nz, ny, nx]``."""
    return torch.einsum("zyab,bczyx->aczyx", gram, k)


class EncodingOperator(LinearOperator):
    """Full forward model ``E = M F C Phi`` from coefficient images to acquired lines.

    ``[K, nz, ny, nx] -> [L, coil, nx]`` with a subspace ``phi [T, K]``; without one, frames are the
    ``T`` contrast images (``E = M F C``). The centred FFT's modulations are folded into the coil
    maps and the lines once, so each application costs ``K * n_coils`` plain FFTs. With a
    subspace, :meth:`normal` is the fast Gram form; without one it is ``E^H (E x)``.

    Parameters
    ----------
    coils
        ``[n_coils, nz, ny, nx]`` complex64.
    ky, kz, contrast
        ``[L]`` line locations and contrasts.
    phi
        Optional ``[T, K]`` complex64 temporal basis.
    n_contrasts
        Number of contrasts T when there is no ``phi`` (default: the largest contrast index + 1).
    """

    def __init__(
        self,
        coils: torch.Tensor,
        ky: torch.Tensor,
        kz: torch.Tensor,
        contrast: torch.Tensor,
        phi: torch.Tensor | None = None,
        n_contrasts: int | None = None,
    ) -> None:
        n_coils, nz, ny, nx = coils.shape
        self.grid = (nz, ny, nx)
        self.n_coils = n_coils
        self.coils = coils * image_modulation(self.grid, coils.device)  # b folded in
        self.line_phase = line_modulation(ky, kz, self.grid)  # a folded into the lines
        if phi is not None:
            n_frames = phi.shape[1]
        else:
            n_frames = n_contrasts if n_contrasts is not None else int(contrast.max()) + 1
        self.sampling = SamplingOperator(ky, kz, contrast, (n_frames, n_coils, nz, ny, nx), phi)
        self.phi = phi
        self._gram: torch.Tensor | None = None

    def _kspace(self, x: torch.Tensor) -> torch.Tensor:
        """Plain FFT of the (modulated) coil images: ``[frames, coil, nz, ny, nx]``."""
        return torch.fft.fftn(x.unsqueeze(1) * self.coils, dim=(-3, -2, -1), norm="ortho")

    def _image(self, k: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`_kspace`: coil-combine the plain inverse FFT."""
        return (torch.fft.ifftn(k, dim=(-3, -2, -1), norm="ortho") * self.coils.conj()).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``E x``: frames ``[K or T, nz, ny, nx]`` -> lines ``[L, coil, nx]``."""
        return self.sampling.forward(self._kspace(x)) * self.line_phase

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``E^H y``: lines ``[L, coil, nx]`` -> frames ``[K or T, nz, ny, nx]``."""
        return self._image(self.sampling.adjoint(y * self.line_phase.conj()))

    @property
    def gram(self) -> torch.Tensor:
        """``[nz, ny, K, K]`` per-location Gram matrices (subspace only), computed once."""
        if self.phi is None:
            raise TypeError("the Gram form needs a subspace phi")
        if self._gram is None:
            s = self.sampling
            self._gram = subspace_gram(s.ky, s.kz, s.contrast, self.phi, self.grid[:2])
        return self._gram

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``E^H E x`` for frames ``x [K or T, nz, ny, nx]``, same shape out.

        With a subspace, through the Gram form ``F^H G F`` (:attr:`gram`): ``K * n_coils`` FFTs
        each way, no line gathering. Without one, ``E^H (E x)``.
        """
        if self.phi is None:
            return super().normal(x)
        return self._image(apply_gram(self.gram, self._kspace(x)))


class _GramQuadratic(torch.autograd.Function):
    """``Re <k, G k - 2 Y>`` with its gradient ``2 (G k - Y)`` w.r.t. ``k`` written out.

    ``G`` is Hermitian per location (:func:`subspace_gram`), so the gradient needs no second Gram
    application: one forward, none backward (autograd would apply ``G`` twice more and keep ``k``
    and ``G k``). ``G`` and ``Y`` are constants. ``k`` is ``[K, coil, nz, ny, nx]``; ``Y`` comes
    in the location-major layout ``[nz, ny, K, coil, nx]``, where ``G k`` is one batched matrix
    product with a contiguous result (no strided copies: 25 % faster at 112x112x16).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        k: torch.Tensor,
        gram: torch.Tensor,
        yk_by_location: torch.Tensor,
    ) -> torch.Tensor:
        kl = k.permute(2, 3, 0, 1, 4).contiguous()  # [nz, ny, K, coil, nx]
        nz, ny, n_k, n_coils, nx = kl.shape
        gk = torch.matmul(gram, kl.view(nz, ny, n_k, n_coils * nx)).view(kl.shape)
        value = torch.vdot(kl.flatten(), gk.flatten()).real
        value = value - 2 * torch.vdot(kl.flatten(), yk_by_location.flatten()).real
        ctx.save_for_backward(gk.sub_(yk_by_location))  # G k - Y
        return value

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        (residual,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return (2 * grad * residual).permute(2, 3, 0, 1, 4), None, None


class _DataTerm:
    """What both data terms share: where the data live (k-space, or hybrid space for planes),
    the image-side modulation ``b`` and the plain FFT of the modulated coil images.

    Parameters
    ----------
    y
        ``[L, coil, nx]`` complex64 acquired lines.
    grid
        ``(nz, ny, nx)``.
    hybrid
        Keep the data in hybrid ``(x, ky, kz)`` space, so that slabs of x-planes can be
        evaluated (module docstring); else in k-space, whole volumes only.
    """

    def __init__(self, y: torch.Tensor, grid: tuple[int, int, int], hybrid: bool) -> None:
        self.hybrid = hybrid
        self.dims = (-3, -2) if hybrid else (-3, -2, -1)
        self.image_phase = image_modulation(grid, y.device)

    def _lines(
        self, y: torch.Tensor, ky: torch.Tensor, kz: torch.Tensor, grid: tuple[int, int, int]
    ) -> torch.Tensor:
        """``[L, coil, nx]`` lines with ``a`` removed; in hybrid space (plain inverse FFT along
        x) when :attr:`hybrid`."""
        lines = y * line_modulation(ky, kz, grid).conj()
        return torch.fft.ifft(lines, dim=-1, norm="ortho") if self.hybrid else lines

    def _modulated(self, coils: torch.Tensor, planes: slice | None) -> torch.Tensor:
        """Coils ``[C, nz, ny, n]`` of the whole volume or of ``planes``, times ``b`` there."""
        if planes is None:
            return coils * self.image_phase
        if not self.hybrid:
            raise ValueError("a data term evaluates x-planes only when built with hybrid=True")
        return coils * self.image_phase[..., planes]

    def _kspace(self, frames: torch.Tensor, modulated: torch.Tensor) -> torch.Tensor:
        """Plain FFT of ``frames [F, nz, ny, n]`` times the modulated coils, over (z, y, x), or
        over (z, y) in hybrid space: ``[F, coil, nz, ny, n]``."""
        return torch.fft.fftn(frames.unsqueeze(1) * modulated, dim=self.dims, norm="ortho")


class SubspaceDataTerm(_DataTerm):
    """``||y - M F C Phi u||^2`` for any coefficients ``u`` AND coil maps ``C``, in Gram form.

    The data term of ``E = EncodingOperator(coils, ky, kz, contrast, phi)``: a function of ``u``
    and ``coils``, not an operator. With ``Y = (M Phi)^H y`` kept in (modulated) k-space once and
    ``G`` the per-location Gram matrices of ``M Phi`` (:func:`subspace_gram`), it is
    ``||y||^2 - 2 Re<Y, F C u> + <F C u, G F C u>``: ``K * n_coils`` FFTs per evaluation, no
    per-contrast FFTs, no line gathering, and exact (also for learned coils). With ``hybrid``,
    ``Y`` and ``||y_x||^2`` are kept per x-plane and any slab of planes can be evaluated (module
    docstring).

    Parameters
    ----------
    y
        ``[L, coil, nx]`` complex64 acquired lines.
    ky, kz, contrast
        ``[L]`` line locations and contrasts.
    phi
        ``[T, K]`` complex64 orthonormal temporal basis.
    grid
        ``(nz, ny, nx)``.
    hybrid
        Keep the data in hybrid ``(x, ky, kz)`` space (x-planes can be evaluated).
    """

    def __init__(
        self,
        y: torch.Tensor,
        ky: torch.Tensor,
        kz: torch.Tensor,
        contrast: torch.Tensor,
        phi: torch.Tensor,
        grid: tuple[int, int, int],
        hybrid: bool = False,
    ) -> None:
        super().__init__(y, grid, hybrid)
        n_coils = y.shape[1]
        shape = (phi.shape[1], n_coils, *grid)
        sampling = SamplingOperator(ky, kz, contrast, shape, phi)
        lines = self._lines(y, ky, kz, grid)
        yk = sampling.adjoint(lines)  # [K, coil, nz, ny, nx]
        self.yk_by_location = yk.permute(2, 3, 0, 1, 4).contiguous()
        self.gram = subspace_gram(ky, kz, contrast, phi, grid[:2])
        # ||y||^2, per x-plane [nx] in hybrid space
        self.y_norm2 = lines.abs().pow(2).sum((0, 1)) if hybrid else y.abs().pow(2).sum()

    def __call__(
        self, u: torch.Tensor, coils: torch.Tensor, planes: slice | None = None
    ) -> torch.Tensor:
        """The data term for coefficients ``u [K, nz, ny, n]`` and coils ``[C, nz, ny, n]``.

        Parameters
        ----------
        u, coils
            On the whole volume (``n = nx``), or on the x-planes ``planes``.
        planes
            ``slice(start, stop)`` of x-planes (``hybrid`` terms only), or None: every plane.

        Returns
        -------
        Real scalar tensor ``||y - E u||^2`` (units of the data, squared), summed over the
        planes evaluated; differentiable in ``u`` and ``coils``.
        """
        k = self._kspace(u, self._modulated(coils, planes))
        if not self.hybrid:
            return self.y_norm2 + _GramQuadratic.apply(k, self.gram, self.yk_by_location)
        planes = slice(None) if planes is None else planes
        target = self.yk_by_location[..., planes]
        return self.y_norm2[planes].sum() + _GramQuadratic.apply(k, self.gram, target)


class ContrastDataTerm(_DataTerm):
    """``||y - M F C I||^2`` for contrast images ``I [T, nz, ny, nx]`` and coils, exactly.

    The data term of ``E = EncodingOperator(coils, ky, kz, contrast, n_contrasts=T)`` (no
    subspace; ``T`` = the largest contrast index + 1): a function of ``I`` and ``coils``, not an
    operator. Contrasts are processed in chunks so that only ``chunk * n_coils`` volumes of
    k-space exist at once: the exact (per-contrast FFT) path, memory bounded. With ``hybrid``,
    the lines are kept in hybrid space and any slab of x-planes can be evaluated (2D FFTs per
    plane; module docstring).

    Parameters
    ----------
    y
        ``[L, coil, nx]`` complex64 acquired lines.
    ky, kz, contrast
        ``[L]`` line locations and contrasts.
    grid
        ``(nz, ny, nx)``.
    chunk
        Contrasts per chunk.
    hybrid
        Keep the lines in hybrid ``(x, ky, kz)`` space (x-planes can be evaluated).
    """

    def __init__(
        self,
        y: torch.Tensor,
        ky: torch.Tensor,
        kz: torch.Tensor,
        contrast: torch.Tensor,
        grid: tuple[int, int, int],
        chunk: int = 16,
        hybrid: bool = False,
    ) -> None:
        super().__init__(y, grid, hybrid)
        target = self._lines(y, ky, kz, grid)
        n_contrasts = int(contrast.max()) + 1
        self.chunks: list[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
        self.chunks = []
        for lo in range(0, n_contrasts, chunk):
            hi = min(lo + chunk, n_contrasts)
            rows = torch.nonzero((contrast >= lo) & (contrast < hi)).squeeze(1)
            if len(rows):
                self.chunks.append(
                    (lo, hi, contrast[rows] - lo, kz[rows].long(), ky[rows].long(), target[rows])
                )

    def __call__(
        self, images: torch.Tensor, coils: torch.Tensor, planes: slice | None = None
    ) -> torch.Tensor:
        """The data term for ``images [T, nz, ny, n]`` and ``coils [C, nz, ny, n]``.

        Parameters
        ----------
        images, coils
            On the whole volume (``n = nx``), or on the x-planes ``planes``.
        planes
            ``slice(start, stop)`` of x-planes (``hybrid`` terms only), or None: every plane.

        Returns
        -------
        Real scalar tensor ``||y - E I||^2`` (units of the data, squared), summed over the
        planes evaluated; differentiable in ``images`` and ``coils``.
        """
        modulated = self._modulated(coils, planes)
        total = images.new_zeros((), dtype=images.real.dtype)
        for lo, hi, t, kz, ky, target in self.chunks:
            k = self._kspace(images[lo:hi], modulated)
            lines = target if planes is None else target[..., planes]
            total = total + (k[t, :, kz, ky, :] - lines).abs().pow(2).sum()
        return total
