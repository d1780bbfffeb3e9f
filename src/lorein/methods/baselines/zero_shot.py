"""Zero-shot self-supervised learning (ZS-SSL) pieces shared by the zero-shot baselines.

ZS-SSL (Yaman et al., ICLR 2022) trains an unrolled network on the scan being reconstructed
alone. Both :mod:`lorein.methods.baselines.zero_deepsub` and
:mod:`lorein.methods.baselines.joint_maple` use it, with different networks and data-consistency
(DC) blocks but the same machinery, kept here:

- **The line split** (:func:`split_lines`, :class:`LineSplit`). The acquired lines ``Omega`` are
  split, with a fixed seed, into a held-out validation set ``Gamma`` and, for each of ``n_masks``
  masks, a loss set ``Lambda`` and a DC set ``Theta``. ZS-SSL's fractions are ``rho_val = 0.2`` of
  ``Omega`` in ``Gamma`` and ``rho_train = 0.4`` of the rest in ``Lambda``.
- **The residual block** (:class:`ResidualBlock`) of ZS-SSL's ResNet denoiser:
  ``x + 0.1 conv(ReLU(conv(x)))``.
- **The loss** (:func:`kspace_loss`): ``0.5 ||y - A x||_2 / ||y||_2 + 0.5 ||y - A x||_1 / ||y||_1``
  of the predicted loss lines, the L1 norm over real and imaginary parts.
- **Early stopping** (:class:`EarlyStopping`, :class:`Training`): the loss of ``Gamma`` predicted
  with ``Omega \\ Gamma`` as the DC set is evaluated regularly; training stops after ``patience``
  evaluations without a new minimum and the weights of the minimum are kept.

Departures from ZS-SSL:

- The split is drawn **per contrast** (Zero-DeepSub draws its masks per time point; ZS-SSL
  reconstructs a single contrast), so every contrast keeps its share in each set.
- The number of lines a contrast puts into a set is either rounded to the nearest integer or
  rounded up or down at random (``stochastic_rounding``), so that contrasts with 3-4 lines still
  contribute their share on average; either way every contrast keeps at least one line outside
  ``Gamma`` and at least one line in ``Theta``.
- Lines to protect (ZS-SSL's ``small_acs_block``, :func:`central_lines`) are optional.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LineSplit:
    """A seeded partition of the acquired lines (sorted row indices into the problem's lines).

    For every mask ``j``: ``dc[j]``, ``loss[j]`` and ``validation`` are disjoint and together hold
    every line exactly once.

    Attributes
    ----------
    dc
        Per mask, ``[L_theta]`` int64 indices of the DC set ``Theta``.
    loss
        Per mask, ``[L_lambda]`` int64 indices of the loss set ``Lambda``.
    validation
        ``[L_gamma]`` int64 indices of the held-out validation set ``Gamma``.
    """

    dc: list[torch.Tensor]
    loss: list[torch.Tensor]
    validation: torch.Tensor

    @property
    def remainder(self) -> torch.Tensor:
        """``[L - L_gamma]`` indices of ``Omega \\ Gamma`` (``dc[0]``, then ``loss[0]``).

        The DC set with which the validation loss on ``Gamma`` is evaluated.
        """
        return torch.cat([self.dc[0], self.loss[0]])


def central_lines(
    ky: torch.Tensor, kz: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Lines inside the central ``(ky, kz)`` block (ZS-SSL's ``small_acs_block``).

    Parameters
    ----------
    ky, kz
        ``[L]`` line locations.
    grid
        ``(ny, nz)``.
    size
        ``(ky, kz)`` size of the block, centred at ``(ny // 2, nz // 2)``.

    Returns
    -------
    ``[L]`` bool, True for the lines in the block.
    """
    (ny, nz), (cy, cz) = grid, size
    y0, z0 = ny // 2 - cy // 2, nz // 2 - cz // 2
    ky, kz = ky.long().cpu(), kz.long().cpu()
    return (ky >= y0) & (ky < y0 + cy) & (kz >= z0) & (kz < z0 + cz)


def _rank_within_contrast(
    contrast: torch.Tensor, protected: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Random rank ``[L]`` (0-based) of each line among the lines of its contrast.

    The protected lines of a contrast rank after all its other lines.
    """
    order = torch.argsort(torch.rand(contrast.numel(), generator=generator))
    order = order[torch.argsort(protected[order].long(), stable=True)]  # protected last ...
    order = order[torch.argsort(contrast[order], stable=True)]  # ... within each contrast
    counts = torch.bincount(contrast)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(contrast)
    rank[order] = torch.arange(contrast.numel()) - starts[contrast[order]]
    return rank


def _draw(
    contrast: torch.Tensor,
    protected: torch.Tensor,
    n_contrasts: int,
    fraction: float,
    stochastic_rounding: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw ``fraction`` of the lines of each contrast; ``[L]`` bool, True for the drawn ones.

    A contrast with ``n`` lines gives ``fraction n`` of them, rounded to the nearest integer or
    (``stochastic_rounding``) up or down at random with the probabilities that make the mean
    ``fraction n``; at most ``n - 1`` and never a protected line.
    """
    counts = torch.bincount(contrast, minlength=n_contrasts)
    eligible = torch.bincount(contrast[~protected], minlength=n_contrasts)
    if stochastic_rounding:
        offset = torch.rand(n_contrasts, generator=generator)
    else:
        offset = torch.full((n_contrasts,), 0.5)
    quota = torch.floor(fraction * counts + offset).long()
    quota = torch.minimum(quota, torch.minimum(counts - 1, eligible).clamp_min(0))
    return _rank_within_contrast(contrast, protected, generator) < quota[contrast]


def split_lines(
    contrast: torch.Tensor,
    validation_fraction: float = 0.2,
    loss_fraction: float = 0.4,
    n_masks: int = 1,
    seed: int = 0,
    *,
    protected: torch.Tensor | None = None,
    stochastic_rounding: bool = False,
) -> LineSplit:
    """Split the lines of every contrast into ``Gamma`` and, per mask, ``Theta`` and ``Lambda``.

    Per contrast with ``n`` lines, ``validation_fraction n`` random lines go to ``Gamma``; of the
    ``m`` others, each mask puts ``loss_fraction m`` random ones into its ``Lambda`` and the rest
    into its ``Theta``. Every contrast keeps at least one line outside ``Gamma`` and one in each
    ``Theta``; protected lines always stay in ``Theta``. Where the median acquired contrast has a
    single line (sim2-small at R = 960: one line in each of 852 of 1280 contrasts), no contrast
    could give any, so all lines are split as one group instead and a contrast may be left
    without DC lines in a mask (its DC step then returns the network's image).

    Parameters
    ----------
    contrast
        ``[L]`` contrast of each acquired line.
    validation_fraction, loss_fraction
        Fractions in ``[0, 1)`` (ZS-SSL: 0.2 and 0.4).
    n_masks
        Number of ``(Theta, Lambda)`` pairs.
    seed
        Seeds the draws; the same arguments give the same split.
    protected
        ``[L]`` bool lines that never leave ``Theta`` (e.g. :func:`central_lines`); None: none.
    stochastic_rounding
        Round each contrast's counts up or down at random (mean ``fraction n``) instead of to
        the nearest integer, so that contrasts with few lines still contribute to ``Gamma`` and
        ``Lambda``.

    Returns
    -------
    The split, with ``n_masks`` DC and loss sets.

    Raises
    ------
    ValueError
        If a fraction is out of range, ``n_masks < 1`` or ``Gamma`` is empty.
    """
    if not (0 <= validation_fraction < 1 and 0 <= loss_fraction < 1) or n_masks < 1:
        raise ValueError(
            f"fractions must be in [0, 1) and n_masks >= 1, got {validation_fraction}, "
            f"{loss_fraction}, {n_masks}"
        )
    contrast = contrast.long().cpu()
    if protected is None:
        protected = torch.zeros(contrast.shape, dtype=torch.bool)
    protected = protected.bool().cpu()
    counts = torch.bincount(contrast)
    if counts[counts > 0].float().median() < 2:  # nothing to hold out per contrast: pool
        contrast = torch.zeros_like(contrast)
    n_contrasts = torch.bincount(contrast).numel()
    generator = torch.Generator().manual_seed(seed)
    held_out = _draw(
        contrast, protected, n_contrasts, validation_fraction, stochastic_rounding, generator
    )
    if not bool(held_out.any()):
        raise ValueError("the validation set is empty: too few lines per contrast")
    rest = torch.nonzero(~held_out).squeeze(1)
    dc, loss = [], []
    for _ in range(n_masks):
        drawn = _draw(
            contrast[rest],
            protected[rest],
            n_contrasts,
            loss_fraction,
            stochastic_rounding,
            generator,
        )
        dc.append(rest[~drawn])
        loss.append(rest[drawn])
    return LineSplit(dc, loss, torch.nonzero(held_out).squeeze(1))


class ResidualBlock(nn.Module):
    """``x + 0.1 conv(ReLU(conv(x)))``, 3x3 convolutions (ZS-SSL's residual block).

    Parameters
    ----------
    channels
        Input, hidden and output channels ``C``.
    bias
        Give the convolutions biases (ZS-SSL's have none).
    """

    def __init__(self, channels: int, bias: bool = False) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)
        self.second = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        return x + 0.1 * self.second(torch.relu(self.first(x)))


def loss_parts(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sums :func:`normalised_loss` needs, additive over subsets of the samples.

    Parameters
    ----------
    prediction, target
        Complex predicted and acquired k-space samples ``A x`` and ``y``, any equal shapes.

    Returns
    -------
    ``[4]`` real ``[||r||_2^2, ||r||_1, ||y||_2^2, ||y||_1]`` with ``r = y - A x``, the L1 norms
    over real and imaginary parts.
    """
    r = torch.view_as_real(prediction - target)
    y = torch.view_as_real(target)
    return torch.stack([r.square().sum(), r.abs().sum(), y.square().sum(), y.abs().sum()])


def normalised_loss(parts: torch.Tensor) -> torch.Tensor:
    """ZS-SSL's loss ``0.5 ||r||_2 / ||y||_2 + 0.5 ||r||_1 / ||y||_1`` from :func:`loss_parts`.

    ``parts`` may be summed over chunks of the samples first; returns a 0-d tensor.
    """
    return 0.5 * (parts[0] / parts[2]).sqrt() + 0.5 * parts[1] / parts[3]


def kspace_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ZS-SSL's loss of ``prediction`` against ``target``, 0-d (see :func:`loss_parts`)."""
    return normalised_loss(loss_parts(prediction, target))


class EarlyStopping:
    """Validation record: every validation loss, the best one and a copy of the weights there.

    Parameters
    ----------
    patience
        Validations without a new minimum after which :attr:`stop` is set.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.losses: list[tuple[int, float]] = []
        self.best = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def best_iteration(self) -> int:
        """Iteration of the best validation (-1 before any finite one)."""
        return self.losses[self.best][0] if self.best >= 0 else -1

    @property
    def best_loss(self) -> float:
        """The lowest validation loss so far (inf before any finite one)."""
        return self.losses[self.best][1] if self.best >= 0 else math.inf

    @property
    def stop(self) -> bool:
        """Whether ``patience`` validations passed without a new minimum."""
        return len(self.losses) - 1 - self.best >= self.patience

    def update(self, loss: float, iteration: int, module: nn.Module) -> None:
        """Record the validation ``loss`` of ``module``'s current weights after ``iteration``."""
        if loss < self.best_loss:
            self.best = len(self.losses)
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.losses.append((iteration, loss))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (for checkpoints)."""
        return {"losses": list(self.losses), "best": self.best, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.losses = [(int(i), float(v)) for i, v in state["losses"]]
        self.best = state["best"]
        self.best_state = copy.deepcopy(state["best_state"])


class Training(nn.Module):
    """A network with its early-stopping record as extra state.

    Give this module to :class:`~lorein.numerics.optimisation.Optimisation`: its checkpoints and its
    rollbacks after non-finite losses then hold the record with the weights.

    Parameters
    ----------
    net
        The network being trained.
    patience
        Of the :class:`EarlyStopping` record :attr:`stopping`.
    """

    def __init__(self, net: nn.Module, patience: int) -> None:
        super().__init__()
        self.net = net
        self.stopping = EarlyStopping(patience)

    def get_extra_state(self) -> dict[str, Any]:
        return self.stopping.state_dict()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.stopping.load_state_dict(state)
