"""The shared ZS-SSL pieces: the line split, the residual block, the loss and early stopping."""

import math
from collections.abc import Callable

import pytest
import torch

from lorein.methods.baselines.zero_shot import (
    LineSplit,
    ResidualBlock,
    Training,
    central_lines,
    kspace_loss,
    loss_parts,
    normalised_loss,
    split_lines,
)
from tests.helpers import randn_complex, rng


def _assert_seeded_partitions(contrast: torch.Tensor, split: Callable[[int], LineSplit]) -> None:
    """``split(seed)``: each mask with the validation set partitions the lines; seeded draws."""
    first, again, other = split(5), split(5), split(6)
    assert torch.equal(first.validation, again.validation)
    assert not torch.equal(first.validation, other.validation)
    n_contrasts = int(contrast.max()) + 1
    for k, (dc, loss) in enumerate(zip(first.dc, first.loss, strict=True)):
        assert torch.equal(dc, again.dc[k]) and torch.equal(loss, again.loss[k])
        together = torch.cat([first.validation, dc, loss])
        assert torch.equal(together.sort().values, torch.arange(contrast.numel()))
        for part in (first.validation, dc, loss):
            assert torch.equal(part, part.sort().values)
        # every contrast keeps a DC line in every mask
        assert bool((torch.bincount(contrast[dc], minlength=n_contrasts) > 0).all())
    assert not torch.equal(first.loss[0], first.loss[1])  # the masks differ
    outside = torch.ones(contrast.numel(), dtype=torch.bool)
    outside[first.validation] = False
    assert torch.equal(first.remainder.sort().values, torch.nonzero(outside).squeeze(1))


def test_split_with_random_rounding_keeps_each_contrasts_share() -> None:
    # contrast 7 has a single line, contrast 8 two
    contrast = torch.cat([torch.randint(0, 7, (300,), generator=rng(1)), torch.tensor([7, 8, 8])])
    _assert_seeded_partitions(
        contrast, lambda seed: split_lines(contrast, 0.2, 0.4, 3, seed, stochastic_rounding=True)
    )
    split = split_lines(contrast, 0.2, 0.4, n_masks=3, seed=5, stochastic_rounding=True)
    counts = torch.bincount(contrast)
    held = torch.bincount(contrast[split.validation], minlength=9)
    assert bool((held >= torch.floor(0.2 * counts)).all())
    assert bool((held <= torch.ceil(0.2 * counts)).all())
    assert held[7] == 0  # a contrast's only line is never held out
    rest = (counts - held).float()
    for loss in split.loss:
        per_loss = torch.bincount(contrast[loss], minlength=9)
        assert bool((per_loss >= torch.floor(0.4 * rest)).all())
        assert bool((per_loss <= torch.ceil(0.4 * rest)).all())


def test_split_with_a_protected_centre_rounds_to_the_nearest_count() -> None:
    ny, nz, n_contrasts = 24, 4, 6
    g = rng(2)
    flat = torch.cat([torch.randperm(ny * nz, generator=g)[:30] for _ in range(n_contrasts)])
    ky, kz = flat % ny, flat // ny
    contrast = torch.arange(n_contrasts).repeat_interleave(30)
    centre = central_lines(ky, kz, (ny, nz), (4, 2))
    expected = (ky >= ny // 2 - 2) & (ky < ny // 2 + 2) & (kz >= nz // 2 - 1) & (kz < nz // 2 + 1)
    assert torch.equal(centre, expected) and centre.any()
    _assert_seeded_partitions(
        contrast, lambda seed: split_lines(contrast, 0.2, 0.4, 3, seed, protected=centre)
    )

    split = split_lines(contrast, 0.2, 0.4, 3, seed=1, protected=centre)
    # the central lines never leave the DC sets
    assert not centre[split.validation].any()
    assert not any(centre[loss].any() for loss in split.loss)
    # round(fraction n) per contrast, at most the unprotected lines and n - 1
    counts = torch.bincount(contrast)
    eligible = torch.bincount(contrast[~centre], minlength=n_contrasts)
    held = torch.bincount(contrast[split.validation], minlength=n_contrasts)
    assert torch.equal(held, torch.minimum(torch.round(0.2 * counts).long(), eligible))
    rest = counts - held
    eligible_rest = eligible - held
    for loss in split.loss:
        per_loss = torch.bincount(contrast[loss], minlength=n_contrasts)
        assert torch.equal(per_loss, torch.minimum(torch.round(0.4 * rest).long(), eligible_rest))


def test_split_rejects_bad_arguments() -> None:
    contrast = torch.arange(4).repeat(10)
    with pytest.raises(ValueError, match="fractions"):
        split_lines(contrast, 1.0, 0.4)
    with pytest.raises(ValueError, match="n_masks"):
        split_lines(contrast, 0.2, 0.4, n_masks=0)
    with pytest.raises(ValueError, match="empty"):
        split_lines(torch.zeros(2, dtype=torch.long), 0.2, 0.4)  # 0.4 lines rounds to none


def test_split_pools_the_lines_when_contrasts_have_one_line_each() -> None:
    """As sim2-small at R = 960: one line per acquired contrast, some contrasts without any."""
    contrast = torch.cat([torch.arange(0, 60, 2), torch.tensor([1, 1, 1])])  # median 1 line
    split = split_lines(contrast, 0.2, 0.4, n_masks=3, seed=4)
    n = contrast.numel()
    assert split.validation.numel() == round(0.2 * n)
    for dc, loss in zip(split.dc, split.loss, strict=True):
        assert loss.numel() == round(0.4 * (n - split.validation.numel()))
        together = torch.cat([split.validation, dc, loss]).sort().values
        assert torch.equal(together, torch.arange(n))
    again = split_lines(contrast, 0.2, 0.4, n_masks=3, seed=4)
    assert torch.equal(split.validation, again.validation)


def test_loss_matches_the_naive_formula() -> None:
    target = randn_complex(7, 3, 5, seed=1)
    prediction = target + 0.3 * randn_complex(7, 3, 5, seed=2)
    r, y = (prediction - target).to(torch.complex128), target.to(torch.complex128)
    l2 = math.sqrt(sum(abs(v) ** 2 for v in r.flatten().tolist()))
    l2 /= math.sqrt(sum(abs(v) ** 2 for v in y.flatten().tolist()))
    l1 = sum(abs(v.real) + abs(v.imag) for v in r.flatten().tolist())
    l1 /= sum(abs(v.real) + abs(v.imag) for v in y.flatten().tolist())
    naive = 0.5 * l2 + 0.5 * l1
    assert float(kspace_loss(prediction, target)) == pytest.approx(naive, rel=1e-5)
    # the parts add up over chunks of the samples
    parts = sum(loss_parts(p, t) for p, t in zip(prediction.split(3), target.split(3), strict=True))
    assert float(normalised_loss(parts)) == pytest.approx(naive, rel=1e-5)
    assert float(kspace_loss(target, target)) == 0.0


def test_residual_block_is_a_scaled_residual() -> None:
    torch.manual_seed(0)
    block = ResidualBlock(4)
    assert block.first.bias is None and block.second.bias is None
    assert ResidualBlock(4, bias=True).first.bias is not None
    x = torch.randn(2, 4, 5, 6, generator=rng(3))
    inner = torch.nn.functional.conv2d(
        torch.relu(torch.nn.functional.conv2d(x, block.first.weight, padding=1)),
        block.second.weight,
        padding=1,
    )
    torch.testing.assert_close(block(x), x + 0.1 * inner)


def test_early_stopping_keeps_the_best_weights() -> None:
    module = torch.nn.Linear(2, 1)
    training = Training(module, patience=2)
    stopping = training.stopping
    assert not stopping.stop and stopping.best_iteration == -1 and stopping.best_loss == math.inf
    stops = []
    for iteration, loss in enumerate([3.0, 2.0, 2.5, 1.5, 1.7, 1.6]):
        with torch.no_grad():
            module.weight.fill_(loss)
        stopping.update(loss, iteration, module)
        stops.append(stopping.stop)
    assert stops == [False, False, False, False, False, True]
    assert stopping.best_iteration == 3 and stopping.best_loss == 1.5
    assert stopping.best_state is not None
    assert torch.all(stopping.best_state["weight"] == 1.5)
    # the record travels with the module's state (checkpoints, rollbacks)
    restored = Training(torch.nn.Linear(2, 1), patience=2)
    restored.load_state_dict(training.state_dict())
    assert restored.stopping.stop and restored.stopping.losses == stopping.losses
    assert restored.stopping.best_state is not None
    assert torch.all(restored.stopping.best_state["weight"] == 1.5)
    assert torch.all(restored.net.weight == 1.6)
