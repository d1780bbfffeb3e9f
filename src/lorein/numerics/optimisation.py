"""The shared optimisation loop: Adam with step decay, progress bar, checkpoints, NaN guard.

A method supplies a module holding all trainable parameters and a closure that returns named
losses for an iteration (``"total"`` is minimised). The loop owns everything else:

- step learning-rate decay (``lr * decay ** (iteration // decay_every)``);
- a tqdm bar that shows the current losses;
- a checkpoint (module, optimiser, iteration, learning-rate scale, RNG state, loss history and
  the run's identity; tensors and plain data only, :mod:`lorein.numerics.checkpoint`) written
  atomically every ``checkpoint_seconds`` and at the end, from which ``resume`` continues a
  killed run to the same result;
- a guard against non-finite losses or gradients: it rolls back to the last good state, halves the
  learning rate and tries again, and gives up with a clear error after ``max_rollbacks``;
- optional tail averaging (Polyak-Ruppert): from step ``average_from`` on, the running mean of the
  parameters after each step, ``bar_theta_n = bar_theta_{n-1} + (theta_n - bar_theta_{n-1}) / n``,
  which :meth:`Optimisation.run` puts into the module at the end. Late Adam steps at a fixed rate
  oscillate around the optimum and follow the noise of the data; their mean keeps what the
  iterates agree on.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lorein.numerics.checkpoint import (
    CheckpointError,
    check_identity,
    read_checkpoint,
    save_checkpoint,
)


@dataclass
class LoopConfig:
    """Optimisation settings.

    Attributes
    ----------
    iterations
        Number of optimiser steps.
    lr
        Initial Adam learning rate.
    decay_every
        Iterations between learning-rate halvings (0: no decay).
    decay
        Factor applied every ``decay_every`` iterations.
    checkpoint_seconds
        Wall time between checkpoints [s].
    snapshot_every
        Iterations between in-memory snapshots used to roll back after a non-finite loss.
    max_rollbacks
        Non-finite events tolerated before giving up.
    average_from
        First step whose parameters enter the tail average that the module holds at the end
        (None: no averaging, the last iterate).
    """

    iterations: int = 1000
    lr: float = 1e-3
    decay_every: int = 0
    decay: float = 0.5
    checkpoint_seconds: float = 120.0
    snapshot_every: int = 25
    max_rollbacks: int = 5
    average_from: int | None = None


class NonFiniteLossError(RuntimeError):
    """The loss stayed non-finite after the allowed number of rollbacks."""


@dataclass
class LoopState:
    """What a checkpoint holds besides the module and optimiser states."""

    iteration: int = 0
    lr_scale: float = 1.0
    rollbacks: int = 0
    averaged: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


LossClosure = Callable[[int], dict[str, torch.Tensor]]


def adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam; the fused kernel where the parameters' device supports it (much faster on CPU)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


class Optimisation:
    """Run ``config.iterations`` Adam steps on ``module``'s parameters.

    Parameters
    ----------
    module
        Holds every trainable parameter (and buffers that belong in a checkpoint).
    closure
        ``closure(iteration) -> {"total": loss, ...}``; other entries are shown and recorded.
    config
        Loop settings.
    checkpoint
        Path of the checkpoint file, or None for no checkpoints.
    progress
        Show a progress bar.
    description
        Progress bar label.
    before_step
        ``before_step(iteration)``, called before every step (e.g. to
        re-initialise a block when a stage begins). A rollback re-runs it for the steps it repeats,
        and a resumed run calls it only for the steps still to come, so the trajectory is that of
        an uninterrupted run.
    identity
        The run the checkpoint belongs to (plain data: problem digest, method, configuration,
        seed, lorein version; :func:`~lorein.numerics.checkpoint.check_identity`), recorded in
        every checkpoint and checked on resume; None records and checks nothing.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        closure: LossClosure,
        config: LoopConfig,
        checkpoint: Path | None = None,
        progress: bool = True,
        description: str = "optimise",
        before_step: Callable[[int], None] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.module = module
        self.closure = closure
        self.before_step = before_step
        self.identity = None if identity is None else dict(identity)
        self.config = config
        self.checkpoint = checkpoint
        self.progress = progress
        self.seconds_per_step: float | None = None
        self.description = description
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optimiser = adam(self.params, config.lr)
        self.state = LoopState()
        self.average: list[torch.Tensor] = []

    def learning_rate(self, iteration: int) -> float:
        """Step-decayed learning rate at ``iteration``, including rollback reductions."""
        c = self.config
        steps = iteration // c.decay_every if c.decay_every > 0 else 0
        return c.lr * c.decay**steps * self.state.lr_scale

    def _snapshot(self) -> dict[str, Any]:
        return {
            "module": copy.deepcopy(self.module.state_dict()),
            "optimiser": copy.deepcopy(self.optimiser.state_dict()),
            "state": copy.deepcopy(self.state),
            "average": [a.clone() for a in self.average],
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        self.module.load_state_dict(snap["module"])
        self.optimiser.load_state_dict(snap["optimiser"])
        self.state = copy.deepcopy(snap["state"])
        self.average = [a.clone() for a in snap["average"]]

    def save(self) -> None:
        """Write the checkpoint (atomically)."""
        if self.checkpoint is None:
            return
        save_checkpoint(
            {
                "module": self.module.state_dict(),
                "optimiser": self.optimiser.state_dict(),
                "state": asdict(self.state),
                "config": asdict(self.config),
                "rng": torch.get_rng_state(),
                "identity": self.identity,
                "average": self.average,
            },
            self.checkpoint,
        )

    def load(self) -> None:
        """Continue from the checkpoint file.

        Raises
        ------
        FileNotFoundError
            No checkpoint file.
        CheckpointError
            One line: the file holds more than tensors and plain data, is damaged, belongs to
            another run (when this loop has an ``identity``) or does not fit the module.
        """
        if self.checkpoint is None:
            raise FileNotFoundError("no checkpoint to resume from (none was given)")
        ckpt = read_checkpoint(self.checkpoint)
        if self.identity is not None:
            check_identity(self.checkpoint, ckpt.get("identity"), self.identity)
        try:
            self.module.load_state_dict(ckpt["module"])
            self.optimiser.load_state_dict(ckpt["optimiser"])
            self.state = LoopState(**ckpt["state"])
            torch.set_rng_state(ckpt["rng"])
            average = list(ckpt.get("average", []))
            if len(average) != (len(self.params) if self.state.averaged else 0):
                raise ValueError("tail average does not match the parameters")
            # the checkpoint is read onto the CPU; the average lives beside its parameters
            self.average = [a.to(p.device) for a, p in zip(average, self.params, strict=False)]
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointError(
                f"{self.checkpoint}: does not fit this run's model or loop ({reason}); start "
                "afresh without --resume"
            ) from err

    def _finite_step(self, iteration: int) -> dict[str, float] | None:
        """One step; None (and no parameter update) when the loss or a gradient is non-finite."""
        for group in self.optimiser.param_groups:
            group["lr"] = self.learning_rate(iteration)
        self.optimiser.zero_grad(set_to_none=True)
        losses = self.closure(iteration)
        total = losses["total"]
        if not torch.isfinite(total):
            return None
        total.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads and not all(torch.isfinite(g).all() for g in grads):
            return None
        self.optimiser.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def _accumulate(self) -> None:
        """Add the current parameters to the tail average."""
        self.state.averaged += 1
        if self.state.averaged == 1:
            self.average = [p.detach().clone() for p in self.params]
            return
        weight = 1.0 / self.state.averaged
        for mean, p in zip(self.average, self.params, strict=True):
            mean.lerp_(p.detach(), weight)

    @torch.no_grad()
    def _apply_average(self) -> None:
        """Put the tail average into the module's parameters."""
        for mean, p in zip(self.average, self.params, strict=True):
            p.copy_(mean)

    def run(self, resume: bool = False) -> list[dict[str, float]]:
        """Optimise; returns the loss history (one dict per iteration).

        Afterwards the module holds the tail average when ``config.average_from`` is set (the
        checkpoint keeps the last iterate and the average, so a resumed run ends the same), and
        ``seconds_per_step`` holds the mean wall time of this call's steps
        (checkpoint writes included; None if it ran none).
        """
        if resume:
            self.load()
        c = self.config
        first = self.state.iteration
        started = last_save = time.monotonic()
        snap = self._snapshot()
        bar = tqdm(
            total=c.iterations,
            initial=self.state.iteration,
            desc=self.description,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        while self.state.iteration < c.iterations:
            it = self.state.iteration
            if self.before_step is not None:
                self.before_step(it)
            record = self._finite_step(it)
            if record is None:
                rollbacks = self.state.rollbacks + 1
                if rollbacks > c.max_rollbacks:
                    raise NonFiniteLossError(
                        f"loss or gradient non-finite at iteration {it} after "
                        f"{c.max_rollbacks} rollbacks with halved learning rates"
                    )
                self._restore(snap)
                self.state.rollbacks = rollbacks
                self.state.lr_scale *= 0.5
                bar.n = self.state.iteration
                bar.set_postfix_str(f"non-finite loss: rolled back to {self.state.iteration}")
                continue
            self.state.history.append(record)
            self.state.iteration = it + 1
            if c.average_from is not None and it >= c.average_from:
                self._accumulate()
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in record.items()}, refresh=False)
            if self.state.iteration % c.snapshot_every == 0:
                snap = self._snapshot()
            if time.monotonic() - last_save > c.checkpoint_seconds:
                self.save()
                last_save = time.monotonic()
        bar.close()
        self.save()
        if self.state.averaged:
            self._apply_average()
        steps = self.state.iteration - first
        self.seconds_per_step = (time.monotonic() - started) / steps if steps else None
        return self.state.history
