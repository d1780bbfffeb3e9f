"""Checkpoints: tensors and plain data only, no code run on load, one-line errors, the run's
identity checked on resume."""

from pathlib import Path

import pytest
import torch

from lorein.numerics.checkpoint import (
    CheckpointError,
    check_identity,
    read_checkpoint,
    save_checkpoint,
)
from lorein.numerics.optimisation import LoopConfig, Optimisation
from tests.numerics.test_optimisation import Quadratic, closure_for

IDENTITY = {
    "problem": "ab" * 32,
    "method": "lorein",
    "config": {"iterations": 20, "lr": 0.01, "encoding": {"n_levels": 4}},
    "seed": 0,
    "lorein_version": "1.0",
}


class WritesMarker:
    """Unpickling this runs code: it writes ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.path)!r}, 'w').write('ran')",))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint-shaped file whose loading with ``weights_only=False`` writes ``marker``."""
    torch.save({"module": {"x": torch.zeros(5)}, "state": WritesMarker(marker)}, path)
    return path


def _loop(module: Quadratic, ckpt: Path, iterations: int, identity: dict | None = IDENTITY):
    cfg = LoopConfig(iterations=iterations, lr=0.05)
    return Optimisation(module, closure_for(module), cfg, ckpt, progress=False, identity=identity)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ckpt = crafted_checkpoint(tmp_path / "ckpt.pt", marker)
    torch.load(ckpt, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.read_text() == "ran"
    marker.unlink()
    with pytest.raises(CheckpointError) as caught:
        _loop(Quadratic(), ckpt, 10).run(resume=True)
    message = str(caught.value)
    assert "\n" not in message and str(ckpt) in message and "refers to exec" in message
    assert not marker.exists()


def test_checkpoints_hold_plain_data_and_record_the_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _loop(Quadratic(), ckpt, 3).run()
    state = torch.load(ckpt, weights_only=True)  # tensors and plain data only
    assert state["identity"] == IDENTITY and state["state"]["iteration"] == 3
    assert isinstance(state["rng"], torch.Tensor)
    assert not (tmp_path / "ckpt.pt.tmp").exists()


def test_kill_and_resume_reproduces_the_run_bit_for_bit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    straight = Quadratic()
    _loop(straight, tmp_path / "straight.pt", 20).run()

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt.pt"
    killed = Quadratic()
    closure = closure_for(killed)

    def dies_at_13(it: int) -> dict[str, torch.Tensor]:
        if it == 13:
            raise KeyboardInterrupt
        return closure(it)

    cfg = LoopConfig(iterations=20, lr=0.05, checkpoint_seconds=0.0)  # a checkpoint every step
    with pytest.raises(KeyboardInterrupt):
        Optimisation(killed, dies_at_13, cfg, ckpt, progress=False, identity=IDENTITY).run()
    assert torch.load(ckpt, weights_only=True)["state"]["iteration"] == 13
    torch.manual_seed(99)  # a new process starts from another RNG state
    resumed = Quadratic()
    _loop(resumed, ckpt, 20).run(resume=True)
    assert torch.equal(resumed.x, straight.x)


def test_a_truncated_or_foreign_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _loop(Quadratic(), ckpt, 2).run()
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged") as caught:
        _loop(Quadratic(), ckpt, 4).run(resume=True)
    assert "\n" not in str(caught.value)
    save_checkpoint({"identity": IDENTITY, "module": {"y": torch.zeros(2)}}, ckpt)
    with pytest.raises(CheckpointError, match="does not fit this run's model") as caught:
        _loop(Quadratic(), ckpt, 4).run(resume=True)
    assert "\n" not in str(caught.value)
    torch.save([1, 2], ckpt)
    with pytest.raises(CheckpointError, match="not a lorein checkpoint"):
        read_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_checkpoint(tmp_path / "none.pt")


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _loop(Quadratic(), ckpt, 2).run()
    other = dict(IDENTITY, seed=1)
    with pytest.raises(CheckpointError, match=r"seed 0 \(this run: 1\)"):
        _loop(Quadratic(), ckpt, 4, other).run(resume=True)
    _loop(Quadratic(), ckpt, 4, None).run(resume=True)  # a loop without identity checks nothing


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"problem": "cd" * 32}, "problem 'abababab"),
        ({"method": "summit"}, "method 'lorein' (this run: 'summit')"),
        ({"seed": 3}, "seed 0 (this run: 3)"),
        ({"config": dict(IDENTITY["config"], lr=0.1)}, "setting lr = 0.01 (this run: 0.1)"),
        ({"config": dict(IDENTITY["config"], encoding={})}, "setting encoding"),
        ({"config": {"iterations": 20}}, "setting lr = 0.01 (this run: None)"),
    ],
)
def test_identity_differences_are_named_in_one_line(change: dict, named: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        check_identity(Path("out/checkpoint.pt"), IDENTITY, dict(IDENTITY, **change))
    message = str(caught.value)
    assert message.startswith("out/checkpoint.pt belongs to another run") and "\n" not in message
    assert named in message


def test_iterations_and_version_may_change_a_missing_identity_may_not() -> None:
    extended = dict(IDENTITY, config=dict(IDENTITY["config"], iterations=50), lorein_version="2")
    check_identity(Path("ckpt.pt"), IDENTITY, extended)
    with pytest.raises(CheckpointError, match="records no run"):
        check_identity(Path("ckpt.pt"), None, IDENTITY)
