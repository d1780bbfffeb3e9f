"""Settings chosen from the problem: the rules, their use by ``load_config``, presets unchanged."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from lorein.methods.baselines.summit import SummitConfig
from lorein.methods.lorein.config import LoreinConfig, resolve_encoding
from lorein.methods.lorein.defaults import VIRTUAL_COILS, problem_config, table_size
from lorein.methods.registry import get_method
from lorein.run import load_config
from lorein.sim.simulate import simulate
from tests.helpers import TINY

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.fixture(scope="module")
def problem():
    many_coils = dataclasses.replace(TINY, n_coils=12)
    return simulate(many_coils, 8, seed=0, snr=math.inf, progress=False).problem


def test_table_size_holds_four_entries_per_voxel_within_bounds() -> None:
    assert table_size(56 * 56 * 8) == 17  # 100 352 entries -> 2^17
    assert table_size(10) == 12
    assert table_size(240 * 240 * 176) == 19


def test_rules_follow_the_problem_and_the_device(problem) -> None:
    cpu = problem_config(problem, torch.device("cpu"))
    assert cpu.coil_compression == VIRTUAL_COILS < problem.n_coils
    assert (cpu.lrr_start, cpu.pmr_start) == ("scratch", "scratch")
    assert cpu.dc2_path == "subspace"  # 60 contrasts > 2 x rank 15
    assert cpu.map_encoding.log2_table == table_size(problem.grid.n_voxels)
    assert cpu.decay_every < cpu.iterations and cpu.wnnm_start < cpu.iterations
    assert problem_config(problem, "cuda").coil_compression is None  # all 12 coils kept
    few = dataclasses.replace(problem, kspace=problem.kspace[:, :4])
    assert problem_config(few).coil_compression is None


def test_load_config_starts_from_the_problem_and_the_file_wins(problem, tmp_path: Path) -> None:
    method = get_method("lorein")
    assert load_config(method, None) == LoreinConfig()
    chosen = load_config(method, None, {"lr": 3e-3}, problem)
    assert chosen == dataclasses.replace(problem_config(problem), lr=3e-3)
    path = tmp_path / "c.toml"
    path.write_text("[lorein]\niterations = 7\n")
    assert load_config(method, path, None, problem).iterations == 7
    summit = load_config(get_method("summit"), None, None, problem)
    assert isinstance(summit, SummitConfig) and summit.pmr_start == "scratch"
    assert summit.lr == problem_config(problem).lr


@pytest.mark.parametrize("preset", ["sim1-small", "sim1", "sim2-small", "sim2"])
@pytest.mark.parametrize("name", ["lorein", "summit"])
def test_preset_files_mean_the_same_with_or_without_the_problem(problem, preset, name) -> None:
    """The presets name every setting the problem's rules choose: their tables stay."""
    method = get_method(name)
    path = CONFIGS / f"{preset}.toml"
    assert load_config(method, path, None, problem) == load_config(method, path)


def test_finest_level_at_the_grid(problem) -> None:
    encoding = resolve_encoding(problem_config(problem).map_encoding, problem.grid.shape)
    finest = encoding["n_min"] * encoding["growth"] ** (encoding["n_levels"] - 1)
    assert finest == pytest.approx(max(problem.grid.shape))
