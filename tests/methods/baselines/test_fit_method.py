"""The ``fit`` and ``summit`` methods through the common method interface on a tiny problem."""

import dataclasses
import math

import pytest
import torch

from lorein.eval.metrics import map_error
from lorein.methods.baselines.fit import FitConfig
from lorein.methods.baselines.summit import SummitConfig
from lorein.methods.registry import METHODS, reconstruct
from lorein.run import load_config
from lorein.sim.simulate import Simulation, simulate
from tests.helpers import TINY

ERRORS = ("T1", "T2star")


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(TINY, 8, seed=3, snr=30.0, progress=False)


@pytest.mark.parametrize("images", ["sense", "zero-filled"])
def test_fit_of_full_data_beats_fit_of_undersampled_data(images: str, sim: Simulation) -> None:
    full = simulate(TINY, 1, seed=3, snr=30.0, progress=False)
    truth, mask = full.truth, full.truth.mask
    errors = []
    for problem in (full.problem, sim.problem):
        maps = reconstruct("fit", problem, FitConfig(images=images), progress=False)
        assert maps.images is not None and maps.images.shape == (60, 4, 24, 24)
        errors.append([map_error(n, maps.values[n], getattr(truth, n), mask) for n in ERRORS])
    # The tiny grid's partial volume limits even full data (T1 0.42, T2* 0.34 without noise);
    # measured with SENSE: full 0.421 / 0.346, R = 8 0.467 / 0.468
    assert all(f < 0.95 * u for f, u in zip(*errors, strict=True)), errors


def test_summit_config_maps_onto_the_pmr_only_lorein_mode() -> None:
    config = SummitConfig(iterations=7, wnnm=0.0)
    lorein = config.lorein_config()
    assert (lorein.mode, lorein.pretrain, lorein.iterations, lorein.wnnm) == ("pmr-only", 0, 7, 0.0)
    assert config.map_encoding is not SummitConfig().map_encoding


def test_every_method_is_registered_with_a_loadable_default_config() -> None:
    for name, method in METHODS.items():
        assert method.name == name
        assert isinstance(load_config(method, None), method.config_class)
    with pytest.raises(ValueError, match="unknown summit setting"):
        load_config(METHODS["summit"], None, {"pretrain": 3})


def test_summit_runs_without_the_low_rank_block(sim: Simulation) -> None:
    small = {"n_levels": 4, "n_features": 2, "log2_table": 10, "n_min": 4, "growth": "auto"}
    config = SummitConfig(
        iterations=6,
        coil_warmup=5,
        warm_start=5,
        wnnm_start=3,
        hidden=16,
        layers=2,
        dictionary_atoms=500,
        map_encoding=small,
        phase_encoding=dict(small, n_min=1),
        coil_encoding={"n_levels": 3, "n_features": 2, "log2_table": 4, "n_min": 1, "growth": 1.5},
    )
    maps = reconstruct("summit", sim.problem, config, progress=False)
    assert maps.images is None and {"dc2", "wnnm"} <= set(maps.extras["history"][-1])
    assert all(torch.isfinite(v).all() for v in maps.values.values())
    assert math.isfinite(maps.extras["dc2_relative_difference"])


def test_known_coils_are_compressed_with_the_data() -> None:
    full = simulate(TINY, 1, seed=3, snr=math.inf, progress=False)
    problem = dataclasses.replace(full.problem, coils=full.truth.coils)
    truth, mask = full.truth, full.truth.mask
    errors = []
    for n in (None, 3):
        maps = reconstruct("fit", problem, FitConfig(coil_compression=n), progress=False).values
        errors.append([map_error(m, maps[m], getattr(truth, m), mask) for m in ERRORS])
    # fully sampled: SENSE with compressed known coils solves the same least-squares problem
    # (measured: equal to 4 digits; 0.6 % of the voxels, at the support's edge, differ)
    assert errors[1] == pytest.approx(errors[0], abs=2e-3)
