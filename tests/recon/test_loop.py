"""Optimisation loop: convergence, schedule, exact resume, NaN rollback."""

from pathlib import Path

import pytest
import torch

from lorein.recon.loop import LoopConfig, NonFiniteLossError, Optimisation


class Quadratic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(torch.zeros(5))


TARGET = torch.arange(5.0)


def closure_for(module: Quadratic, fail_at: set[int] | None = None):
    failed: set[int] = set()

    def closure(it: int) -> dict[str, torch.Tensor]:
        noise = 0.01 * torch.randn(5)  # uses the global RNG: resume must restore it
        loss = ((module.x - TARGET - noise) ** 2).sum()
        if fail_at and it in fail_at and it not in failed:
            failed.add(it)
            loss = loss * float("nan")
        return {"total": loss, "data": loss.detach()}

    return closure


def test_converges_and_decays() -> None:
    m = Quadratic()
    cfg = LoopConfig(iterations=300, lr=0.1, decay_every=100)
    opt = Optimisation(m, closure_for(m), cfg, progress=False)
    history = opt.run()
    assert len(history) == 300
    assert history[-1]["total"] < 1e-2 < history[0]["total"]
    assert opt.learning_rate(250) == pytest.approx(0.1 * 0.25)


def test_resume_gives_the_same_result(tmp_path: Path) -> None:
    torch.manual_seed(0)
    straight = Quadratic()
    Optimisation(
        straight, closure_for(straight), LoopConfig(iterations=40, lr=0.05), progress=False
    ).run()

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt.pt"
    first = Quadratic()
    Optimisation(
        first, closure_for(first), LoopConfig(iterations=15, lr=0.05), ckpt, progress=False
    ).run()
    torch.manual_seed(123)  # a fresh process would start from another RNG state
    resumed = Quadratic()
    Optimisation(
        resumed, closure_for(resumed), LoopConfig(iterations=40, lr=0.05), ckpt, progress=False
    ).run(resume=True)
    assert torch.equal(resumed.x, straight.x)


def test_non_finite_loss_rolls_back_and_lowers_lr() -> None:
    m = Quadratic()
    opt = Optimisation(
        m,
        closure_for(m, fail_at={7}),
        LoopConfig(iterations=30, lr=0.1, snapshot_every=5),
        progress=False,
    )
    history = opt.run()
    assert len(history) == 30
    assert opt.state.rollbacks == 1 and opt.state.lr_scale == 0.5
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in history)


def test_persistent_nan_gives_a_clear_error() -> None:
    m = Quadratic()

    def closure(it: int) -> dict[str, torch.Tensor]:
        return {"total": m.x.sum() * float("nan")}

    opt = Optimisation(m, closure, LoopConfig(iterations=10, max_rollbacks=2), progress=False)
    with pytest.raises(NonFiniteLossError, match="after 2 rollbacks"):
        opt.run()
