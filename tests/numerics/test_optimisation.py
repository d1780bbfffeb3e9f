"""Optimisation loop: convergence, schedule, exact resume, NaN rollback."""

from pathlib import Path

import pytest
import torch

from lorein.numerics.optimisation import LoopConfig, NonFiniteLossError, Optimisation


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


def test_before_step_runs_once_per_step_and_resume_keeps_the_trajectory(tmp_path: Path) -> None:
    def jump_at_10(module: Quadratic, calls: list[int]):
        def hook(it: int) -> None:
            calls.append(it)
            if it == 10:  # a stage change: the state is replaced, not optimised
                with torch.no_grad():
                    module.x.fill_(-3.0)

        return hook

    torch.manual_seed(0)
    straight, calls = Quadratic(), []
    cfg = LoopConfig(iterations=20, lr=0.05)
    Optimisation(
        straight,
        closure_for(straight),
        cfg,
        progress=False,
        before_step=jump_at_10(straight, calls),
    ).run()
    assert calls == list(range(20))

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt.pt"
    first, before = Quadratic(), []
    Optimisation(
        first,
        closure_for(first),
        LoopConfig(iterations=14, lr=0.05),
        ckpt,
        progress=False,
        before_step=jump_at_10(first, before),
    ).run()
    resumed, after = Quadratic(), []
    Optimisation(
        resumed,
        closure_for(resumed),
        cfg,
        ckpt,
        progress=False,
        before_step=jump_at_10(resumed, after),
    ).run(resume=True)
    assert before == list(range(14)) and after == list(range(14, 20))
    assert torch.equal(resumed.x, straight.x)
    without = Quadratic()
    torch.manual_seed(0)
    Optimisation(without, closure_for(without), cfg, progress=False).run()
    assert not torch.allclose(without.x, straight.x)  # the hook did act


def test_tail_average_is_the_mean_of_the_iterates_it_covers() -> None:
    torch.manual_seed(0)
    plain = Quadratic()
    iterates: list[torch.Tensor] = []
    closure = closure_for(plain)

    def recording(it: int) -> dict[str, torch.Tensor]:
        if it > 30:  # the parameters after step it - 1
            iterates.append(plain.x.detach().clone())
        return closure(it)

    Optimisation(plain, recording, LoopConfig(iterations=50, lr=0.2), progress=False).run()
    iterates.append(plain.x.detach().clone())  # after the last step
    torch.manual_seed(0)
    averaged = Quadratic()
    cfg = LoopConfig(iterations=50, lr=0.2, average_from=30)
    opt = Optimisation(averaged, closure_for(averaged), cfg, progress=False)
    opt.run()
    assert opt.state.averaged == 20 == len(iterates)
    assert torch.allclose(averaged.x, torch.stack(iterates).mean(0), atol=1e-6)
    assert not torch.allclose(averaged.x, plain.x, atol=1e-6)  # the noise moved the iterates


def test_resume_inside_the_averaged_tail_gives_the_same_average(tmp_path: Path) -> None:
    cfg = LoopConfig(iterations=40, lr=0.05, average_from=20)
    torch.manual_seed(0)
    straight = Quadratic()
    Optimisation(straight, closure_for(straight), cfg, progress=False).run()

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt.pt"
    first = Quadratic()
    short = LoopConfig(iterations=27, lr=0.05, average_from=20)
    Optimisation(first, closure_for(first), short, ckpt, progress=False).run()
    torch.manual_seed(123)
    resumed = Quadratic()
    opt = Optimisation(resumed, closure_for(resumed), cfg, ckpt, progress=False)
    opt.run(resume=True)
    assert opt.state.averaged == 20
    assert torch.equal(resumed.x, straight.x)
