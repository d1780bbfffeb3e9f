"""A finished run judges its own result (no truth): the reasons and the CLI's exit status."""

import math
from pathlib import Path

import pytest
import torch

from lorein.cli import main
from lorein.data.output import Maps
from lorein.data.problem import write_problem
from lorein.methods.plausibility import SUSPECT_STATUS, suspect_reasons
from lorein.sim.simulate import simulate
from tests.helpers import TINY, TINY_LOREIN_SETTINGS


def plausible() -> Maps:
    g = torch.Generator().manual_seed(0)
    shape = (2, 6, 6)
    values = {
        "M0": 1 + torch.rand(shape, generator=g),
        "T1": 0.8 + torch.rand(shape, generator=g),
        "T2star": 0.04 + 0.02 * torch.rand(shape, generator=g),
        "B0": torch.randn(shape, generator=g),
    }
    mask = torch.ones(shape, dtype=torch.bool)
    mask[:, 0] = False
    return Maps(values=values, mask=mask, extras={"relative_residual": 0.1})


def test_plausible_maps_have_no_reason() -> None:
    assert suspect_reasons(plausible()) == []


def test_each_sign_of_garbage_is_named() -> None:
    maps = plausible()
    maps.values["B0"][1, 2, 2] = math.nan
    maps.values["M0"][:, 1:] = 0
    maps.values["T1"][:, 1:] = 0.05  # FitBounds' and LoREIN's lower bound
    maps.extras["relative_residual"] = 0.99
    reasons = suspect_reasons(maps)
    assert reasons[0].startswith("B0 is not finite in 2% of the mask")
    assert reasons[1] == "M0 is zero in 100% of the mask"
    assert reasons[2] == "T1 at its lower bound 0.05 s in 100% of the mask"
    assert reasons[3].startswith("the maps leave 99% of the data energy unexplained")


def test_outside_the_mask_nothing_counts() -> None:
    maps = plausible()
    maps.values["M0"][:, 0] = 0
    maps.values["T2star"][:, 0] = math.inf
    assert suspect_reasons(maps) == []


def test_diverged_run_is_written_marked_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sim = simulate(TINY, 8, seed=2, snr=40, progress=False)
    problem = tmp_path / "p.h5"
    write_problem(problem, sim.problem)
    settings = {**TINY_LOREIN_SETTINGS, "lr": 0.3, "iterations": 30}
    lines = ["[lorein]"] + [f"{k} = {_toml(v)}" for k, v in settings.items()]
    config = tmp_path / "c.toml"
    config.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["recon", str(problem), "-o", str(out), "--config", str(config), "--quiet"]
    assert main(argv) == SUSPECT_STATUS
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out}: suspect result (" in err[0]
    assert "of the data energy unexplained" in err[0]
    report = (out / "report.json").read_text()
    assert '"status": "suspect"' in report and (out / "maps.h5").exists()


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return f'"{value}"' if isinstance(value, str) else repr(value)
